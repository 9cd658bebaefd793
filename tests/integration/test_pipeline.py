"""The pipeline end to end on the real Kafka, Mosquitto and PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import (
    Stack,
    Workers,
    publish,
    register_device,
    rows_for,
    verify_database,
    wait_consumed,
    wait_parameters,
)

from f2stream.agents.stages import DECODE_GROUP, SINK_GROUP
from f2stream.codec.values import encode_modbus_frame
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, DECODED_TOPIC, RAW_TOPIC
from f2stream.simulator import device_ids, register_demo_parameters
from f2stream.storage.migrate import detect_timescaledb, load_migrations
from f2stream.verify import read_manifest

pytestmark = pytest.mark.integration

STAMP = "2025-03-01 10:00:00.000001"


async def dead_letters_about(
    stack: Stack, needle: str, expected: int, timeout_s: float = 60
) -> list[dict[str, object]]:
    """Dead letters whose MQTT topic contains `needle`, read from the beginning."""
    consumer = AIOKafkaConsumer(
        DEAD_LETTER_TOPIC,
        **kafka_options(stack.settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {k: v.decode(errors="replace") for k, v in record.headers}  # fuzz leaves any bytes
                    if needle in headers.get("mqtt_topic", ""):
                        found.append({"headers": headers, "value": record.value})
    finally:
        await consumer.stop()
    return found


async def test_simulated_traffic_lands_exactly_once(stack: Stack, workers: Workers, device_numbers: int) -> None:
    manifest = stack.var_dir / f"manifest-{device_numbers}.jsonl"
    result = stack.faust(
        "simulate",
        "--devices",
        "4",
        "--first-device",
        str(device_numbers),
        "--rate",
        "400",
        "--count",
        "700",
        "--register-params",
        "--manifest",
        str(manifest),
    )
    assert result.returncode == 0, result.stderr
    assert "700 messages published" in result.stdout
    verdict = await verify_database(stack.settings, read_manifest(manifest), timeout_s=60)
    assert verdict.ok, str(verdict)
    assert verdict.messages == 700
    assert verdict.rows_found == verdict.rows_expected


async def test_malformed_messages_are_dead_lettered_while_good_ones_land(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = device_ids(1, device_numbers)[0]
    other = device_ids(1, device_numbers + 1)[0]  # never registered
    await register_demo_parameters(stack.settings, [device])
    await wait_parameters(stack, workers.pipeline, device)
    good = orjson.dumps({"timestamp": STAMP, "state": "locked", "voltage": 12.1, "current": 1.5})
    sensor = orjson.dumps({"timestamp": STAMP, "data": encode_modbus_frame(1, 3, (235).to_bytes(2, "big"))})
    await publish(
        stack,
        [
            (f"stat/{device}/access-control-mode/1/strike-1", good),
            (f"stat/{device}/access-control-mode/1/door-sensors", b"{not json"),
            (f"stat/{device}/no-such-mode/1/strike-1", good),
            (f"stat/{other}/access-control-mode/1/strike-1", good),
            (
                f"cmnd/{device}/sensor-mode/4/sensor-3",
                orjson.dumps({"timestamp": STAMP, "data": "01 03 02 00 EB 00 00"}),
            ),
            (f"cmnd/{device}/sensor-mode/4/sensor-3", sensor),
        ],
    )
    rows = await rows_for(stack, device, expected=4)
    assert [(r["component"], r["data_point"], r["value"], r["text_value"], r["unit"]) for r in rows] == [
        ("sensor-3", "data", pytest.approx(23.5), None, "celsius"),
        ("strike-1", "current", 1.5, None, None),
        ("strike-1", "state", 1.0, "locked", "state"),
        ("strike-1", "voltage", 12.1, None, None),
    ]
    dead = await dead_letters_about(stack, device, expected=3) + await dead_letters_about(stack, other, expected=1)
    reasons = sorted(str(d["headers"]["reason"]) for d in dead)
    assert reasons == ["bad_crc", "bad_json", "bad_topic", "unknown_device"]
    by_reason = {d["headers"]["reason"]: d for d in dead}
    assert by_reason["bad_json"]["value"] == b"{not json"  # the original bytes
    assert by_reason["unknown_device"]["value"] == good
    assert by_reason["bad_topic"]["headers"]["mqtt_topic"] == f"stat/{device}/no-such-mode/1/strike-1"


async def test_a_redelivered_raw_message_lands_once(stack: Stack, workers: Workers, device_numbers: int) -> None:
    device = device_ids(1, device_numbers)[0]
    await register_demo_parameters(stack.settings, [device])
    await wait_parameters(stack, workers.pipeline, device)
    topic = f"stat/{device}/alarm-mode/3/motion-sensor-1"
    payload = orjson.dumps({"timestamp": STAMP, "motion_detected": True, "sensitivity": 7, "zone": "zone_1"})
    producer = AIOKafkaProducer(**kafka_options(stack.settings), acks="all")
    await producer.start()
    try:
        for _ in range(3):  # as after a crash between Kafka's ack and the MQTT ack
            await producer.send_and_wait(
                RAW_TOPIC,
                payload,
                key=device.encode(),
                headers=[("mqtt_topic", topic.encode()), ("received_at", b"2025-03-01T10:00:01.000000+00:00")],
            )
    finally:
        await producer.stop()
    # Every copy has been decoded and written (both groups committed past them) before the rows are counted.
    await wait_consumed(stack, DECODE_GROUP, RAW_TOPIC)
    await wait_consumed(stack, SINK_GROUP, DECODED_TOPIC)
    rows = await rows_for(stack, device, expected=3)
    assert sorted((r["data_point"], r["value"], r["text_value"]) for r in rows) == [
        ("motion_detected", 1.0, None),
        ("sensitivity", 7.0, None),
        ("zone", None, "zone_1"),
    ]


async def test_latest_is_the_newest_by_device_time_not_the_last_received(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = await register_device(stack, workers.pipeline, device_numbers)
    await rows_for(stack, device, 3, component="strike-1")
    newer = datetime.now(UTC)
    older = newer - timedelta(hours=1)

    def strike(at: datetime, voltage: float) -> tuple[str, bytes]:
        body = {"timestamp": at.strftime("%Y-%m-%d %H:%M:%S.%f"), "state": "locked", "voltage": voltage}
        return f"stat/{device}/access-control-mode/1/strike-1", orjson.dumps(body)

    await publish(stack, [strike(newer, 13.5)])
    await rows_for(stack, device, 3 + 2, component="strike-1")
    await publish(stack, [strike(older, 10.5)])  # received last, older by the device's clock
    assert len(await rows_for(stack, device, 3 + 4, component="strike-1")) == 3 + 4
    code, body = workers.pipeline.get(f"/devices/{device}/latest")
    assert code == 200, body
    voltage = next(p for p in json.loads(body)["data_points"] if p["data_point"] == "voltage")
    assert voltage["value"] == 13.5, voltage
    assert datetime.fromisoformat(voltage["time"]) == newer


async def test_the_seed_insert_statement_works_as_written(stack: Stack) -> None:
    settings = stack.settings
    assert settings.params_password is not None
    conn = await asyncpg.connect(settings.params_dsn, password=settings.params_password.reveal())
    try:
        async with conn.transaction():
            await conn.execute("""INSERT INTO device_parameters VALUES
('f2-e4fd45f654be', 'access-control-mode', 'door-sensors', NULL, 'boolean_map', 'state', 1.0),
('f2-e4fd45f654be', 'access-control-mode', 'strike', '1', 'boolean', 'state', 1.0),
('f2-e4fd45f654be', 'sensor-mode', 'sensor', '3', 'hex_to_float', 'celsius', 0.1),
('f2-e4fd45f654be', 'alarm-mode', 'motion-sensor', '1', 'boolean', 'presence', 1.0),
('f2-e4fd45f654be', 'access-control-mode', 'reader', '1', 'raw_string', 'text', 1.0);""")
            count = await conn.fetchval("SELECT count(*) FROM device_parameters WHERE device_id = 'f2-e4fd45f654be'")
            assert count == 5
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    """Leaves the seed rows out of the shared database."""


async def test_migrate_twice_applies_nothing_the_second_time(stack: Stack) -> None:
    result = stack.faust("migrate")
    assert result.returncode == 0, result.stderr
    assert "params: 0 migration(s) applied" in result.stdout
    assert "timeseries: 0 migration(s) applied" in result.stdout
    settings = stack.settings
    assert settings.timeseries_password is not None
    conn = await asyncpg.connect(settings.timeseries_dsn, password=settings.timeseries_password.reveal())
    try:
        timescaledb = await detect_timescaledb(conn)
        applied = {r["name"] for r in await conn.fetch("SELECT name FROM f2stream_migrations")}
    finally:
        await conn.close()
    timescaledb_only = {m.name for m in load_migrations("timeseries") if m.requires_timescaledb}
    # The stack preloads TimescaleDB wherever it is installed: a server is plain or ready, never in between.
    if timescaledb.ready:
        assert "timeseries: TimescaleDB available: hypertable, compression" in result.stdout
        assert timescaledb_only <= applied
    else:
        assert not timescaledb.installed, "TimescaleDB is installed but the stack did not preload it"
        assert "timeseries: TimescaleDB not available: plain PostgreSQL tables" in result.stdout
        assert not timescaledb_only & applied
        assert not timescaledb.created


def test_tail_prints_one_json_record_per_line(stack: Stack, workers: Workers) -> None:
    result = stack.faust("tail", "raw_iot_data", "--from-beginning", "--max-messages", "3", "--idle-timeout-s", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        record = orjson.loads(line)
        assert record["topic"] == "raw_iot_data"
        assert "mqtt_topic" in record["headers"]


def test_tail_of_an_unknown_topic_says_so_in_one_line(stack: Stack) -> None:
    result = stack.faust("tail", "no_such_topic", "--idle-timeout-s", "1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [errors[-1]] and "topic 'no_such_topic' does not exist; known topics:" in errors[-1]
