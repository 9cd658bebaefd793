"""f2stream.kafka_client: one builder of Kafka connection options, used by every client in the sources."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path

import faust
import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from f2stream.agents.batchloop import BatchLoop
from f2stream.agents.producer import Producer
from f2stream.appbase import F2App
from f2stream.kafka_client import describe, diagnose, faust_credentials, kafka_options, refusal, ssl_context
from f2stream.pki import init_pki, issue_service_certificate
from f2stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_pki(root)
    issue_service_certificate(root, "f2-tools")
    return root


def sasl_ssl(pki: Path, **more: str) -> Settings:
    return Settings.from_env(
        {
            "F2_KAFKA_BROKER": "kafka://127.0.0.1:9096",
            "F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "F2_KAFKA_USERNAME": "f2-pipeline",
            "F2_KAFKA_PASSWORD": "s3cret",
            "F2_KAFKA_CA_FILE": str(pki / "ca.crt"),
            **more,
        }
    )


def mtls(pki: Path, **more: str) -> Settings:
    return Settings.from_env(
        {
            "F2_KAFKA_BROKER": "kafka://127.0.0.1:9094",
            "F2_KAFKA_SECURITY_PROTOCOL": "SSL",
            "F2_KAFKA_CA_FILE": str(pki / "ca.crt"),
            "F2_KAFKA_CERT_FILE": str(pki / "services" / "f2-tools.crt"),
            "F2_KAFKA_KEY_FILE": str(pki / "services" / "f2-tools.key"),
            **more,
        }
    )


def test_plaintext_is_the_bootstrap_list_and_nothing_else() -> None:
    settings = Settings(kafka_broker="kafka://a:9092;kafka://b:9093")
    assert kafka_options(settings) == {"bootstrap_servers": "a:9092,b:9093", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_logs_in_over_tls_that_verifies_the_broker(pki: Path) -> None:
    options = kafka_options(sasl_ssl(pki))
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9096",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "f2-pipeline",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.cert_store_stats()["x509_ca"] == 1  # the CA of F2_KAFKA_CA_FILE, not the system's


def test_faust_gets_the_same_login_and_tls(pki: Path) -> None:
    settings = sasl_ssl(pki, F2_KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    faust_side = dict(credentials_to_aiokafka_auth(credentials))  # what Faust passes its aiokafka clients
    ours = kafka_options(settings)
    del ours["bootstrap_servers"]
    assert faust_side == ours
    assert faust_side["security_protocol"] == "SASL_SSL"
    assert faust_side["sasl_mechanism"] == "SCRAM-SHA-256"
    assert "s3cret" not in repr(credentials)


def test_sasl_plaintext_has_no_tls() -> None:
    settings = Settings.from_env(
        {"F2_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "F2_KAFKA_USERNAME": "u", "F2_KAFKA_PASSWORD": "p"}
    )
    assert "ssl_context" not in kafka_options(settings)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SASL_PLAINTEXT"


def test_mtls_presents_the_client_certificate(pki: Path) -> None:
    settings = mtls(pki)
    options = kafka_options(settings)
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SSL",
        "ssl_context": options["ssl_context"],
    }
    assert describe(settings) == f"127.0.0.1:9094 (SSL, client certificate {pki / 'services' / 'f2-tools.crt'})"


def test_the_hostname_check_can_be_switched_off_and_the_context_is_shared(pki: Path) -> None:
    assert ssl_context(mtls(pki, F2_KAFKA_CHECK_HOSTNAME="false")).check_hostname is False
    assert ssl_context(mtls(pki)).check_hostname is True
    assert ssl_context(mtls(pki)) is ssl_context(mtls(pki))  # one per distinct setting, read once


def test_every_kind_of_client_carries_the_options(pki: Path) -> None:
    settings = sasl_ssl(pki)
    kafka = kafka_options(settings)
    assert F2App("f2stream-test-credentials", settings).conf.broker_credentials is not None
    assert Producer(kafka, "p").options.items() >= kafka.items()
    loop = BatchLoop(name="x", topic="t", group_id="g", handler=None, kafka=kafka, max_records=1)  # type: ignore[arg-type]
    assert loop.consumer_options.items() >= kafka.items()


def test_every_producer_waits_for_all_in_sync_replicas() -> None:
    """acks=all, the guarantee the three-broker fault scenario rests on, which a kill rarely catches broken.

    Broken on purpose (acks=1), that scenario's short form passed: a leader dies with a record its
    followers have not fetched only within milliseconds of the write (docs/reliability.md).
    """
    kafka = kafka_options(Settings.from_env({}))
    assert Producer(kafka, "p").options["acks"] == "all"
    assert Producer(kafka, "p").options["enable_idempotence"] is True
    assert F2App("f2stream-test-acks", Settings.from_env({})).conf.producer_acks == -1


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (TopicAuthorizationFailedError("decoded_iot_data"), "refused by its ACLs (TopicAuthorizationFailedError"),
        (GroupAuthorizationFailedError("g"), "refused by its ACLs (GroupAuthorizationFailedError"),
        (SaslAuthenticationFailed("invalid credentials"), "refused the login: wrong user name or password"),
        (UnsupportedSaslMechanismError(), "does not offer SCRAM-SHA-512: set F2_KAFKA_SASL_MECHANISM"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "its TLS certificate is not trusted"),
    ],
)
def test_refusals_are_told_apart(pki: Path, error: Exception, says: str) -> None:
    line = refusal(sasl_ssl(pki), error)
    assert line is not None
    assert line.startswith("Kafka at 127.0.0.1:9096 (SASL_SSL, SCRAM-SHA-512 as f2-pipeline)")
    assert says in line
    assert "s3cret" not in line


def test_a_refusal_is_found_along_the_cause_chain(pki: Path) -> None:
    try:
        try:
            raise TopicAuthorizationFailedError("raw_iot_data")
        except TopicAuthorizationFailedError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert "refused by its ACLs" in (refusal(sasl_ssl(pki), outer) or "")


def test_an_outage_is_no_refusal(pki: Path) -> None:
    assert refusal(sasl_ssl(pki), KafkaConnectionError("Unable to bootstrap")) is None


async def test_diagnose_nobody_listening_is_no_refusal() -> None:
    assert await diagnose(Settings(kafka_broker="kafka://127.0.0.1:1"), timeout_s=2) is None


async def test_diagnose_a_listener_that_closes_on_a_plaintext_client() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the client's first request: a TLS listener would fail its handshake
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        line = await diagnose(Settings(kafka_broker=f"kafka://127.0.0.1:{port}"), timeout_s=5)
    assert line is not None
    assert f"Kafka at 127.0.0.1:{port} (PLAINTEXT) closed the connection at once" in line
    assert "check F2_KAFKA_SECURITY_PROTOCOL" in line


# --- Nothing reaches for a broker without the builder ----------------------------------

#: Where Kafka clients are made: the package, the bench, the tests.
SOURCES = ("f2stream", "agents", "tables", "pki", "bench", "tests")
#: aiokafka's client classes and its connection factory.
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient", "create_conn"}
BUILDER = ROOT / "f2stream" / "kafka_client.py"
#: The builder's own test spells the options out to check them.
EXEMPT = {BUILDER, Path(__file__).resolve()}


def python_files() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def violations(path: Path) -> list[str]:
    """Kafka clients made without the builder's options, and connection options spelled out by hand."""
    found = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            if called_name(node) in CLIENTS and path not in EXEMPT and not any(k.arg is None for k in node.keywords):
                found.append(f"{where}:{node.lineno}: {called_name(node)}(...) without **kafka_options(settings)")
            for keyword in node.keywords:
                if keyword.arg in ("bootstrap_servers", "security_protocol") and path not in EXEMPT:
                    found.append(f"{where}:{node.lineno}: {keyword.arg}= by hand: take kafka_options(settings)")
        elif isinstance(node, ast.Dict) and path not in EXEMPT:
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value in ("bootstrap_servers", "security_protocol"):
                    found.append(f"{where}:{node.lineno}: {key.value!r} by hand: take kafka_options(settings)")
    return found


def test_every_kafka_client_in_the_sources_takes_the_builders_options() -> None:
    """A client made with `bootstrap_servers=` by hand, or with no options, would skip TLS and the login.

    Every aiokafka client is given `**` options, and only f2stream.kafka_client
    spells out `bootstrap_servers` or `security_protocol`: options that reach a
    broker at all came from kafka_options.
    """
    files = python_files()
    assert len(files) > 100  # the scan found the sources
    assert [v for path in files for v in violations(path)] == []


def test_the_scan_catches_a_client_made_by_hand(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "from aiokafka import AIOKafkaConsumer, AIOKafkaProducer\n"
        "a = AIOKafkaConsumer('t', bootstrap_servers='h:9092')\n"
        "b = AIOKafkaProducer()\n"
        "c = {'bootstrap_servers': 'h:9092'}\n"
    )
    assert [v.split(": ", 1)[1] for v in violations(bad)] == [
        "AIOKafkaConsumer(...) without **kafka_options(settings)",
        "bootstrap_servers= by hand: take kafka_options(settings)",
        "AIOKafkaProducer(...) without **kafka_options(settings)",
        "'bootstrap_servers' by hand: take kafka_options(settings)",
    ]
