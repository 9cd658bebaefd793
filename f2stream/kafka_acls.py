"""The Kafka ACLs each principal of the pipeline needs, written down once, and their application.

Three principals (docs/operations.md, "Kafka security"):

- the ingest worker writes (and may create) raw_iot_data and iot_dead_letter,
  and uses its Faust app's own group and leader topic: nothing else;
- the pipeline worker reads raw_iot_data, device_parameters and the topics
  of its own stages, writes decoded_iot_data, iot_dead_letter,
  device_status, device_liveness and device_parameters (the leader
  publishes parameter sets), creates the pipeline's topics, and uses its
  consumer groups and its Faust app's internal topics (prefix `f2stream-`,
  with the ingest app's `f2stream-ingest` denied);
- the tools (`tail`, `replay`, `redrive`) read the pipeline's topics, the
  retention of raw_iot_data, and the offsets the decode and sink groups
  committed; they write nothing.

Applied through Kafka's admin API (CreateAcls) by `faust -A f2stream
kafka-acls --apply`, as a super user; without `--apply` the same ACLs are
printed as `kafka-acls.sh` command lines for a managed cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.admin import CreateAclsRequest

from f2stream.errors import F2StreamError
from f2stream.kafka_client import diagnose, kafka_options, refusal, unreachable
from f2stream.kafka_topics import (
    ALARM_EVENTS_TOPIC,
    ALARM_STATE_TOPIC,
    ALARMS_GROUP,
    DEAD_LETTER_TOPIC,
    DECODE_GROUP,
    DECODED_TOPIC,
    INGEST_APP_ID,
    LIVENESS_TOPIC,
    PARAMETERS_TOPIC,
    PIPELINE_APP_ID,
    PIPELINE_TOPICS,
    RAW_TOPIC,
    SINK_GROUP,
    STATUS_GROUP,
    STATUS_TOPIC,
)
from f2stream.settings import Settings

__all__ = ["Acl", "AclError", "Principals", "apply_acls", "kafka_acls_command", "pipeline_acls"]

Operation = Literal["All", "Read", "Write", "Create", "Describe", "DescribeConfigs"]
Resource = Literal["topic", "group", "cluster"]

# Kafka's codes (org.apache.kafka.common.acl, org.apache.kafka.common.resource).
_RESOURCE: Final[dict[Resource, int]] = {"topic": 2, "group": 3, "cluster": 4}
_OPERATION: Final[dict[Operation, int]] = {
    "All": 2,
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Describe": 8,
    "DescribeConfigs": 10,
}
_LITERAL, _PREFIXED = 3, 4
_DENY, _ALLOW = 2, 3


class AclError(F2StreamError):
    """Kafka did not take an ACL."""


@dataclass(frozen=True, slots=True)
class Principals:
    """The user names (SASL) or certificate CNs (mTLS) of the three principals."""

    ingest: str = "f2-ingest"
    pipeline: str = "f2-pipeline"
    tools: str = "f2-tools"


@dataclass(frozen=True, slots=True)
class Acl:
    """Operations on one resource (or every resource whose name starts with `name`) for one principal."""

    principal: str
    resource: Resource
    name: str
    operations: tuple[Operation, ...]
    prefixed: bool = False
    deny: bool = False


def pipeline_acls(principals: Principals) -> list[Acl]:
    """Every ACL the three principals need, and the denial that keeps the pipeline off the ingest app's topics."""
    ingest, pipeline, tools = principals.ingest, principals.pipeline, principals.tools
    produce: tuple[Operation, ...] = ("Write", "Describe", "Create")
    return [
        Acl(ingest, "topic", RAW_TOPIC, produce),
        Acl(ingest, "topic", DEAD_LETTER_TOPIC, produce),
        # Its Faust app joins a group of its own and reads its leader topic.
        Acl(ingest, "topic", f"{INGEST_APP_ID}-", ("Read", "Describe", "Create"), prefixed=True),
        Acl(ingest, "group", INGEST_APP_ID, ("Read", "Describe")),
        Acl(pipeline, "topic", RAW_TOPIC, ("Read", "Describe", "Create")),
        *(
            Acl(pipeline, "topic", topic, ("Read", "Write", "Describe", "Create"))
            for topic in (
                DECODED_TOPIC, PARAMETERS_TOPIC, STATUS_TOPIC, LIVENESS_TOPIC, ALARM_EVENTS_TOPIC, ALARM_STATE_TOPIC,
            )
        ),
        Acl(pipeline, "topic", DEAD_LETTER_TOPIC, produce),
        Acl(pipeline, "topic", f"{PIPELINE_APP_ID}-", ("Read", "Write", "Describe", "Create"), prefixed=True),
        Acl(pipeline, "topic", INGEST_APP_ID, ("All",), prefixed=True, deny=True),
        *(Acl(pipeline, "group", group, ("Read", "Describe")) for group in (PIPELINE_APP_ID, DECODE_GROUP,
                                                                              SINK_GROUP, STATUS_GROUP, ALARMS_GROUP)),
        *(Acl(tools, "topic", topic, ("Read", "Describe")) for topic in PIPELINE_TOPICS),
        Acl(tools, "topic", RAW_TOPIC, ("DescribeConfigs",)),  # replay --show-window: the retention
        *(Acl(tools, "group", group, ("Describe",)) for group in (DECODE_GROUP, SINK_GROUP)),  # replay's frontier
    ]  # fmt: skip


def kafka_acls_command(acl: Acl, bootstrap: str) -> str:
    """Kafka's own tool's command line that adds `acl` (`kafka-acls.sh`, a super user's client properties)."""
    words = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", "admin.properties", "--add"]
    words += ["--deny-principal" if acl.deny else "--allow-principal", f"User:{acl.principal}"]
    for operation in acl.operations:
        words += ["--operation", operation]
    words += ["--cluster"] if acl.resource == "cluster" else [f"--{acl.resource}", acl.name]
    if acl.prefixed:
        words += ["--resource-pattern-type", "prefixed"]
    return " ".join(words)


async def apply_acls(settings: Settings, acls: Sequence[Acl]) -> int:
    """Create `acls` (Kafka keeps one copy of an ACL created twice) as the settings' principal, a super user.

    Returns:
        How many bindings (principal, resource, operation) were sent.

    Raises:
        AclError: Kafka could not be reached, refused this principal, or refused an ACL.
    """
    admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="f2stream-acls")
    sent = 0
    try:
        await admin.start()
        node = admin._client.get_random_node()  # noqa: SLF001  # aiokafka's admin has no call for ACLs
        for acl in acls:
            for operation in acl.operations:
                request = CreateAclsRequest(
                    _RESOURCE[acl.resource],
                    "kafka-cluster" if acl.resource == "cluster" else acl.name,
                    _PREFIXED if acl.prefixed else _LITERAL,
                    f"User:{acl.principal}",
                    "*",
                    _OPERATION[operation],
                    _DENY if acl.deny else _ALLOW,
                )
                response = await admin._client.send(node, request)  # noqa: SLF001
                ((code, message),) = response.creation_responses
                if code != 0:
                    raise AclError(f"Kafka refused {operation} on {acl.resource} {acl.name} for {acl.principal}: "
                                   f"error {code} {message}")  # fmt: skip
                sent += 1
    except KafkaConnectionError as exc:
        raise AclError(await diagnose(settings) or unreachable(settings)) from exc
    except KafkaError as exc:
        raise AclError(refusal(settings, exc) or f"creating ACLs failed: {exc}") from exc
    finally:
        await admin.close()
    return sent
