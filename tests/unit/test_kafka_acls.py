"""f2stream.kafka_acls: each principal gets what it uses and nothing more; the ACLs print as kafka-acls.sh lines."""

from __future__ import annotations

from f2stream.kafka_acls import Acl, Principals, kafka_acls_command, pipeline_acls
from f2stream.kafka_topics import PIPELINE_TOPICS

ACLS = pipeline_acls(Principals())


def allowed(principal: str, operation: str) -> set[str]:
    """The literal topics `principal` may do `operation` on."""
    return {
        a.name
        for a in ACLS
        if a.principal == principal and a.resource == "topic" and not a.prefixed and not a.deny
        and operation in a.operations
    }  # fmt: skip


def test_the_ingest_principal_writes_its_two_topics_and_reads_none() -> None:
    assert allowed("f2-ingest", "Write") == {"raw_iot_data", "iot_dead_letter"}
    assert allowed("f2-ingest", "Read") == set()
    assert {(a.resource, a.name, a.prefixed) for a in ACLS if a.principal == "f2-ingest"} >= {
        ("group", "f2stream-ingest", False),
        ("topic", "f2stream-ingest-", True),  # its Faust leader topic
    }


def test_the_pipeline_principal_reads_and_writes_what_its_stages_use() -> None:
    assert allowed("f2-pipeline", "Read") == {
        "raw_iot_data", "decoded_iot_data", "device_parameters", "device_status", "device_liveness",
        "alarm_events", "alarm_state",
    }  # fmt: skip
    assert "iot_dead_letter" not in allowed("f2-pipeline", "Read")  # it writes dead letters, never reads them
    assert allowed("f2-pipeline", "Write") == set(PIPELINE_TOPICS) - {"raw_iot_data"}
    assert allowed("f2-pipeline", "Create") == set(PIPELINE_TOPICS)
    groups = {a.name for a in ACLS if a.principal == "f2-pipeline" and a.resource == "group"}
    assert groups == {"f2stream", "f2stream-decode", "f2stream-sink", "f2stream-status", "f2stream-alarms"}
    # Its prefix f2stream- would cover the ingest app's topics: they are denied.
    assert Acl("f2-pipeline", "topic", "f2stream-ingest", ("All",), prefixed=True, deny=True) in ACLS


def test_the_tools_principal_writes_nothing() -> None:
    assert allowed("f2-tools", "Read") == set(PIPELINE_TOPICS)
    assert not [a for a in ACLS if a.principal == "f2-tools" and {"Write", "Create", "All"} & set(a.operations)]


def test_nobody_but_an_admin_touches_the_cluster() -> None:
    assert [a for a in ACLS if a.resource == "cluster"] == []


def test_the_principals_are_settings_of_the_command() -> None:
    names = {a.principal for a in pipeline_acls(Principals(ingest="sa-1", pipeline="sa-2", tools="sa-3"))}
    assert names == {"sa-1", "sa-2", "sa-3"}


def test_kafka_acls_sh_lines() -> None:
    deny = Acl("f2-pipeline", "topic", "f2stream-ingest", ("All",), prefixed=True, deny=True)
    assert kafka_acls_command(deny, "b:9096") == (
        "kafka-acls.sh --bootstrap-server b:9096 --command-config admin.properties --add "
        "--deny-principal User:f2-pipeline --operation All --topic f2stream-ingest --resource-pattern-type prefixed"
    )
    group = Acl("f2-tools", "group", "f2stream-sink", ("Describe",))
    assert kafka_acls_command(group, "b:9096").endswith("--allow-principal User:f2-tools --operation Describe "
                                                        "--group f2stream-sink")  # fmt: skip
