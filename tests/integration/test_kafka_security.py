"""Kafka secured (issue 25): the pipeline end to end over SASL_SSL with ACLs, and every refusal said in one line.

One secure stack for the session (`F2_STACK_SECURE=1 deploy/stack.sh up`, one
broker): clients log in with SCRAM-SHA-512 over TLS, brokers and controllers
use mTLS, and each principal has only its ACLs (f2stream.kafka_acls). The
workers run as f2-ingest and f2-pipeline, the commands as f2-tools; the
pipeline worker logs in to both databases as f2_pipeline (test_postgres_roles).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from harness import Stack, Worker, Workers, principal

from bench.stack import free_ports
from f2stream.kafka_client import kafka_options, refusal
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, DECODED_TOPIC, RAW_TOPIC
from f2stream.pki import init_pki, issue_device_certificate, issue_service_certificate
from f2stream.settings import Settings


def as_principal(stack: Stack, name: str, **more: str) -> Settings:
    """The secure stack's settings, logged in as one of its principals."""
    return Settings.from_env({**stack.env, **principal(stack, name), **more})


async def end_offsets(stack: Stack, *topics: str) -> dict[TopicPartition, int]:
    """Where every partition of `topics` ends, as the admin (a super user) sees it."""
    consumer = AIOKafkaConsumer(**kafka_options(as_principal(stack, "ADMIN")), group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # the public call drops the partitions
        partitions = [TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t) or ()]
        assert partitions, f"no partitions of {topics}"
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def produce(settings: Settings, topic: str) -> BaseException | None:
    """Produce one record as `settings` log in; the exception that stopped it, or None when Kafka took it."""
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", request_timeout_ms=10_000)
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"must not land", key=b"f2-000000000000")
    except Exception as exc:  # noqa: BLE001  # whatever refused it is the answer
        return exc
    finally:
        await producer.stop()
    return None


def said(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a command ended with: `f2stream: ...` on stderr, and no other line of ours."""
    ours = [line for line in result.stderr.splitlines() if line.startswith("f2stream: ")]
    assert len(ours) == 1, f"expected one line of ours, got:\n{result.stderr[-3000:]}"
    return ours[0]


def passwords_in_logs(stack: Stack) -> list[str]:
    """The logs of the stack (workers, Kafka, PostgreSQL, the ACL step) that hold a Kafka or database password."""
    files = [stack.env[f"F2_KAFKA_{name}_PASSWORD_FILE"] for name in ("INGEST", "PIPELINE", "ADMIN")]
    files += [stack.env[name] for name in ("F2_KAFKA_PASSWORD_FILE", "F2_PARAMS_PASSWORD_FILE",
                                           "F2_DB_PIPELINE_PASSWORD_FILE", "F2_DB_REPAIR_PASSWORD_FILE")]  # fmt: skip
    passwords = [Path(file).read_text().strip() for file in files]
    return [str(log) for log in (stack.var_dir / "log").glob("*.log")
            if any(pw in log.read_text(errors="replace") for pw in passwords)]  # fmt: skip


def tail(stack: Stack, topic: str, **env: str) -> subprocess.CompletedProcess[str]:
    return stack.faust("tail", topic, "--from-beginning", "--max-messages", "1", "--idle-timeout-s", "3", **env)


async def test_the_pipeline_runs_end_to_end_on_sasl_ssl(
    secure_stack: Stack, secure_workers: Workers, device_numbers: int
) -> None:
    stack = secure_stack
    assert stack.settings.kafka_security_protocol == "SASL_SSL"
    assert stack.settings.kafka_username == "f2-tools"
    for worker in (secure_workers.pipeline, secure_workers.ingest):
        status, body = worker.health()
        assert status == 200, body
    manifest = stack.var_dir / f"manifest-{device_numbers}.jsonl"
    simulated = stack.faust(
        "simulate", "--devices", "4", "--first-device", str(device_numbers), "--rate", "400", "--count", "700",
        "--register-params", "--manifest", str(manifest),
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    assert "700 messages published" in simulated.stdout
    verified = stack.faust("verify", "--manifest", str(manifest), "--timeout-s", "90")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    assert "700 messages sent, 700 complete, 0 missing, 0 with a wrong row count" in verified.stdout
    # The tools' principal reads what the pipeline wrote.
    read = tail(stack, DECODED_TOPIC)
    assert read.returncode == 0, read.stderr[-3000:]
    assert '"topic":"decoded_iot_data"' in read.stdout
    assert passwords_in_logs(stack) == []
    # The pipeline worker ran as f2_pipeline (as the owner it would have refused to start here), with every right
    # its jobs need and none beyond.
    log = secure_workers.pipeline.log_path.read_text(errors="replace")
    assert "holds database rights" not in log and " lacks " not in log


async def test_a_plaintext_client_on_the_sasl_ssl_port_is_refused(secure_stack: Stack) -> None:
    stack = secure_stack
    plaintext = {"F2_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "F2_KAFKA_USERNAME": "", "F2_KAFKA_PASSWORD_FILE": "",
                 "F2_KAFKA_CA_FILE": ""}  # fmt: skip
    result = tail(stack, RAW_TOPIC, **plaintext)
    assert result.returncode == 2
    assert said(result).startswith(f"f2stream: Kafka at {stack.settings.kafka_bootstrap} (PLAINTEXT) closed the "
                                   "connection at once: its listener wants TLS or another protocol")  # fmt: skip
    before = await end_offsets(stack, RAW_TOPIC)
    assert await produce(Settings.from_env({**stack.env, **plaintext}), RAW_TOPIC) is not None
    assert await end_offsets(stack, RAW_TOPIC) == before


async def test_a_wrong_kafka_password_stops_a_worker_with_one_line(secure_stack: Stack, tmp_path: Path) -> None:
    stack = secure_stack
    wrong = tmp_path / "wrong_password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    before = await end_offsets(stack, RAW_TOPIC, DEAD_LETTER_TOPIC)
    worker = Worker(
        stack, "f2stream.ingest", free_ports(1)[0], "ingest-wrong-password",
        **{**principal(stack, "INGEST"), "F2_KAFKA_PASSWORD_FILE": str(wrong)},
        F2_MQTT_CLIENT_ID="f2stream-ingest-wrong-password",  # never the real ingest worker's session
    )  # fmt: skip
    worker.start()
    try:
        assert worker.process is not None
        code = worker.process.wait(timeout=90)  # it stops by itself, at once: a refusal is not retried
    finally:
        worker.stop(timeout_s=10)
    assert code != 0
    assert (
        f"f2stream: Kafka at {stack.settings.kafka_bootstrap} (SASL_SSL, SCRAM-SHA-512 as f2-ingest) refused the "
        "login: wrong user name or password" in worker.log_tail(5)
    )
    assert "not-the-password" not in worker.log_path.read_text()
    assert await end_offsets(stack, RAW_TOPIC, DEAD_LETTER_TOPIC) == before
    result = tail(stack, RAW_TOPIC, F2_KAFKA_PASSWORD_FILE=str(wrong))  # a command says the same
    assert result.returncode == 2
    assert "(SASL_SSL, SCRAM-SHA-512 as f2-tools) refused the login" in said(result)


async def test_the_ingest_principal_may_write_only_its_own_topics(secure_stack: Stack) -> None:
    stack = secure_stack
    ingest = as_principal(stack, "INGEST")
    before = await end_offsets(stack, DECODED_TOPIC)
    refused = await produce(ingest, DECODED_TOPIC)
    assert refused is not None and refused.__class__.__name__ == "TopicAuthorizationFailedError", repr(refused)
    line = refusal(ingest, refused)
    assert line is not None and "refused by its ACLs (TopicAuthorizationFailedError" in line, line
    assert await end_offsets(stack, DECODED_TOPIC) == before
    # The same login writes its own topics: the refusal above is the ACL, not a broken login.
    dead_before = await end_offsets(stack, DEAD_LETTER_TOPIC)
    assert await produce(ingest, DEAD_LETTER_TOPIC) is None
    assert sum((await end_offsets(stack, DEAD_LETTER_TOPIC)).values()) == sum(dead_before.values()) + 1


async def test_the_pipeline_principal_may_not_read_a_topic_it_has_no_acl_for(secure_stack: Stack) -> None:
    result = tail(secure_stack, DEAD_LETTER_TOPIC, **principal(secure_stack, "PIPELINE"))  # it writes them only
    assert result.returncode == 2
    line = said(result)
    assert "(SASL_SSL, SCRAM-SHA-512 as f2-pipeline) refused by its ACLs (TopicAuthorizationFailedError" in line
    assert "iot_dead_letter" in line
    assert result.stdout == ""


async def test_a_broker_certificate_from_another_ca_is_refused(secure_stack: Stack, tmp_path: Path) -> None:
    stack = secure_stack
    init_pki(tmp_path / "other")  # a CA of the same name, but not the one that issued the broker's certificate
    other_ca = str(tmp_path / "other" / "ca.crt")
    result = tail(stack, RAW_TOPIC, F2_KAFKA_CA_FILE=other_ca)
    assert result.returncode == 2
    assert "its TLS certificate is not trusted (unable to get local issuer certificate)" in said(result)
    assert "set F2_KAFKA_CA_FILE to the CA that issued it" in said(result)
    before = await end_offsets(stack, RAW_TOPIC)
    refused = await produce(as_principal(stack, "INGEST", F2_KAFKA_CA_FILE=other_ca), RAW_TOPIC)
    assert refused is not None
    assert await end_offsets(stack, RAW_TOPIC) == before


async def test_a_client_certificate_logs_in_as_its_cn(secure_stack: Stack) -> None:
    """mTLS on the brokers' TLS listener: CN f2-tools gets f2-tools' ACLs; a device's certificate gets none."""
    stack = secure_stack
    pki = Path(stack.env["F2_PKI_DIR"])
    issue_service_certificate(pki, "f2-tools")
    issue_device_certificate(pki, "f2-0000000000aa", force=True)
    mtls = {"F2_KAFKA_BROKER": stack.env["F2_KAFKA_MTLS_BROKER"], "F2_KAFKA_SECURITY_PROTOCOL": "SSL",
            "F2_KAFKA_USERNAME": "", "F2_KAFKA_PASSWORD_FILE": ""}  # fmt: skip
    tools = tail(stack, RAW_TOPIC, **mtls, F2_KAFKA_CERT_FILE=str(pki / "services" / "f2-tools.crt"),
                 F2_KAFKA_KEY_FILE=str(pki / "services" / "f2-tools.key"))  # fmt: skip
    assert tools.returncode == 0, tools.stderr[-3000:]
    device = tail(stack, RAW_TOPIC, **mtls, F2_KAFKA_CERT_FILE=str(pki / "devices" / "f2-0000000000aa" / "device.crt"),
                  F2_KAFKA_KEY_FILE=str(pki / "devices" / "f2-0000000000aa" / "device.key"))  # fmt: skip
    assert device.returncode == 2
    assert "does not exist or this client's principal may not see it (Kafka's ACLs)" in said(device)
    no_certificate = tail(stack, RAW_TOPIC, **mtls)
    assert no_certificate.returncode == 2
    assert "the TLS handshake failed" in said(no_certificate)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"F2_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "F2_KAFKA_SECURITY_PROTOCOL: 'SASL_TLS' is not one of"),
        ({"F2_KAFKA_SASL_MECHANISM": "GSSAPI"}, "F2_KAFKA_SASL_MECHANISM: 'GSSAPI' is not one of"),
        ({"F2_KAFKA_USERNAME": ""}, "F2_KAFKA_USERNAME: SASL_SSL logs in with a user name and a password"),
        ({"F2_KAFKA_CA_FILE": "/nonexistent/ca.crt"}, "F2_KAFKA_CA_FILE: cannot read /nonexistent/ca.crt"),
        ({"F2_KAFKA_CERT_FILE": "@pki/server.crt"}, "F2_KAFKA_KEY_FILE: is needed too"),
        (
            {"F2_KAFKA_CERT_FILE": "@pki/server.crt", "F2_KAFKA_KEY_FILE": "@pki/ca.key"},
            "F2_KAFKA_KEY_FILE: @pki/server.crt and @pki/ca.key are not a PEM certificate and its private key",
        ),
    ],
)
def test_bad_kafka_settings_are_one_line_and_exit_status_2(secure_stack: Stack, env: dict[str, str], line: str) -> None:
    pki = secure_stack.env["F2_PKI_DIR"]
    env = {name: value.replace("@pki", pki) for name, value in env.items()}
    started = time.monotonic()
    for command in (("tail", RAW_TOPIC), ("worker", "--web-port", str(free_ports(1)[0]))):
        result = secure_stack.faust(*command, app="f2stream.ingest" if command[0] == "worker" else "f2stream", **env)
        assert result.returncode == 2, result.stderr[-3000:]
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr[-3000:]  # nothing else: no connection was tried
        assert lines[0].startswith(f"f2stream: bad setting {line.replace('@pki', pki)}"), lines[0]
    assert time.monotonic() - started < 60  # no connection was tried, let alone waited for
