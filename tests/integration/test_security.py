"""Device security on the real Mosquitto: mTLS, per-device topics, revocation, service logins."""

from __future__ import annotations

import asyncio
import ssl
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from harness import Stack, Workers, rows_for, wait_parameters

from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import RAW_TOPIC
from f2stream.pki import PkiPaths, init_pki, issue_device_certificate
from f2stream.simulator import device_ids, register_demo_parameters

pytestmark = pytest.mark.integration


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def device_client(stack: Stack, device_id: str, pki: Path | None = None) -> aiomqtt.Client:
    """An MQTT client on the device listener with the device's certificate."""
    paths = PkiPaths(pki or stack.settings.pki_dir)
    ca = PkiPaths(stack.settings.pki_dir).ca_cert
    context = tls_context(ca, paths.device_cert(device_id), paths.device_key(device_id))
    settings = stack.settings
    return aiomqtt.Client(
        settings.mqtt_host, settings.mqtt_tls_port, identifier=device_id, tls_context=context, timeout=10
    )


def register(stack: Stack, mac: str, *extra: str) -> str:
    done = stack.faust("register-device", mac, "--serial", f"SN-{mac[-4:]}", *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def refused(client: aiomqtt.Client) -> bool:
    """True when the broker refuses the connection or drops it before a publish is acknowledged."""
    try:
        async with asyncio.timeout(15), client:
            await client.publish("tele/probe", b"x", qos=1)
    except (aiomqtt.MqttError, OSError, TimeoutError):
        return True
    return False


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_pki_files_are_owner_only_and_init_keeps_the_ca(stack: Stack) -> None:
    paths = PkiPaths(stack.settings.pki_dir)
    register(stack, "02:f2:00:00:00:01")
    for path in [paths.root, paths.devices, *paths.root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    ca_before, key_before = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    again = stack.faust("pki", "init")
    assert again.returncode == 0, again.stderr
    assert "CA kept" in again.stdout
    assert (paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()) == (ca_before, key_before)


def test_an_existing_device_is_not_overwritten(stack: Stack) -> None:
    register(stack, "02-F2-00-00-00-02")
    cert = PkiPaths(stack.settings.pki_dir).device_cert("f2-02f200000002")
    before = cert.read_bytes()
    again = stack.faust("register-device", "02f200000002", "--serial", "other")
    assert again.returncode != 0
    assert again.stderr.strip().count("\n") == 0 and "--force" in again.stderr
    assert cert.read_bytes() == before
    register(stack, "f2-02f200000002", "--force")
    assert cert.read_bytes() != before


async def test_a_registered_device_reaches_the_database(stack: Stack, workers: Workers, device_numbers: int) -> None:
    (device,) = device_ids(1, device_numbers)
    register(stack, device)
    await register_demo_parameters(stack.settings, [device])
    await wait_parameters(stack, workers.pipeline, device)
    rows = await publish_until_rows(stack, device)
    assert {r["data_point"] for r in rows} == {"state", "voltage", "current"}


async def test_the_broker_refuses_devices_without_a_valid_certificate(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings
    paths = PkiPaths(settings.pki_dir)
    host, port = settings.mqtt_host, settings.mqtt_tls_port
    # No client certificate.
    assert await refused(aiomqtt.Client(host, port, tls_context=tls_context(paths.ca_cert), timeout=10))
    # Plain TCP on the TLS port.
    assert await refused(aiomqtt.Client(host, port, identifier="f2-02f2000000aa", timeout=10))
    # A certificate from another CA.
    other = tmp_path / "other-pki"
    init_pki(other)
    issue_device_certificate(other, "f2-02f2000000ab")
    assert await refused(device_client(stack, "f2-02f2000000ab", pki=other))
    # An expired certificate from our CA.
    issue_device_certificate(settings.pki_dir, "f2-02f2000000ac", days=1, now=datetime.now(UTC) - timedelta(days=3))
    assert await refused(device_client(stack, "f2-02f2000000ac"))
    # And the service listener refuses a wrong password.
    wrong = aiomqtt.Client(host, settings.mqtt_port, username="f2-ingest", password="not-the-password", timeout=10)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with wrong:
            pass


async def test_a_device_cannot_publish_under_another_id(stack: Stack, workers: Workers, device_numbers: int) -> None:
    mine, other = device_ids(2, device_numbers)
    register(stack, mine)
    await register_demo_parameters(stack.settings, [mine, other])
    await wait_parameters(stack, workers.pipeline, mine, other)
    forged = f"stat/{other}/access-control-mode/1/strike-1"
    own = f"stat/{mine}/access-control-mode/1/strike-1"
    payload = orjson.dumps({"timestamp": stamp(), "state": "locked", "voltage": 12.0, "current": 0.1})
    async with device_client(stack, mine) as client:
        await client.publish(forged, payload, qos=1)  # MQTT 3.1.1: acknowledged, then dropped
        await client.publish(own, payload, qos=1)
    # The own message is the marker: once it is in Kafka, the forged one would be too.
    topics = await raw_topics_until(stack, own)
    assert own in topics and forged not in topics
    assert await publish_until_rows(stack, mine)
    assert await rows_for(stack, other, 1, timeout_s=2) == []


async def test_revoking_cuts_the_session_and_refuses_the_next_connection(stack: Stack, device_numbers: int) -> None:
    (device,) = device_ids(1, device_numbers)
    register(stack, device)
    async with device_client(stack, device) as client:
        await client.subscribe(f"cmnd/{device}/#", qos=1)
        revoked = await asyncio.to_thread(stack.faust, "revoke-device", device)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(10):
                async for _ in client.messages:
                    pass
        assert time.monotonic() - started < 5
    assert await refused(device_client(stack, device))
    listing = stack.faust("devices")
    assert listing.returncode == 0, listing.stderr
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith(device)]
    assert " revoked " in line
    assert "BEGIN" not in listing.stdout and "PRIVATE" not in listing.stdout


async def publish_until_rows(stack: Stack, device: str, timeout_s: float = 120) -> list[asyncpg.Record]:
    """Publish a strike reading over mTLS every few seconds until rows of the device land.

    A freshly started pipeline worker may not have the device's parameters
    yet (the message is then dead-lettered as unknown_device): each retry
    carries a new timestamp, so every landed publication gives three rows.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        payload = orjson.dumps({"timestamp": stamp(), "state": "locked", "voltage": 12.0, "current": 0.1})
        async with device_client(stack, device) as client:
            await client.publish(f"stat/{device}/access-control-mode/1/strike-1", payload, qos=1)
        rows = await rows_for(stack, device, 3, timeout_s=5)
        if rows or time.monotonic() > deadline:
            return rows


async def raw_topics_until(stack: Stack, marker: str, timeout_s: float = 60) -> list[str]:
    """The MQTT topics of raw_iot_data, from the beginning until `marker` shows up."""
    consumer = AIOKafkaConsumer(RAW_TOPIC, **kafka_options(stack.settings), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    topics: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while marker not in topics and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                # errors="replace": the fuzz test leaves records with undecodable headers in the topic
                topics += [dict(r.headers).get("mqtt_topic", b"").decode(errors="replace") for r in records]
    finally:
        await consumer.stop()
    return topics
