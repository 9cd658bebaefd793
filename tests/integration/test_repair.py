"""Repairing history against the real stack: replay after a parameter fix, redrive after a late registration.

Everything here runs while a simulator sends live traffic through both
workers (the `live` fixture); the last test checks with `verify` that the
live traffic lost nothing and was not disturbed by the repairs.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from harness import (
    Stack,
    Workers,
    dead_letters_since,
    parameter_versions,
    rows_for,
    service_client,
    verify_database,
    wait_consumed,
    wait_parameters,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from f2stream.codec.values import encode_modbus_frame
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DECODE_GROUP
from f2stream.simulator import device_ids, write_demo_parameters
from f2stream.storage.db import connect
from f2stream.verify import read_manifest

SENSOR = "sensor-mode/4/sensor-3"
_INSERT_SENSOR = """
INSERT INTO device_parameters
    (device_id, mode, component_type, component_number, encoding, unit, scale_factor,
     data_point, byte_offset, data_type)
VALUES ($1, 'sensor-mode', 'sensor', NULL, 'hex_to_float', 'celsius', $2, $3, $4, $5)
"""


class Live:
    """A simulator sending to the pipeline while the repairs run."""

    def __init__(self, stack: Stack) -> None:
        self.manifest = stack.var_dir / "repair-live.jsonl"
        self.log = (stack.var_dir / "log" / "repair-live.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "f2stream", "simulate", "--devices", "4", "--first-device", "9001",
             "--rate", "100", "--register-params", "--manifest", str(self.manifest)],
            env=stack.run_env(), cwd=stack.var_dir, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop sending (SIGINT: the simulator finishes what it sent, and its manifest)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def live(stack: Stack, workers: Workers) -> Iterator[Live]:
    """Live traffic for the whole module (the last test stops it and checks it)."""
    running = Live(stack)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def timeseries(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    settings = stack.settings
    conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
    try:
        yield conn
    finally:
        await conn.close()


async def params_execute(stack: Stack, sql: str, *args: object) -> None:
    settings = stack.settings
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def sensor_message(device: str, at: datetime, registers: Sequence[int]) -> tuple[str, bytes]:
    data = b"".join(r.to_bytes(2, "big", signed=r < 0) for r in registers)
    body = {"timestamp": at.strftime("%Y-%m-%d %H:%M:%S.%f"), "data": encode_modbus_frame(1, 3, data)}
    return f"cmnd/{device}/{SENSOR}", orjson.dumps(body)


async def publish_fast(stack: Stack, messages: Sequence[tuple[str, bytes]]) -> None:
    """QoS 1 over the service listener, 200 in flight at a time, every PUBACK awaited."""
    async with service_client(stack) as client:
        for start in range(0, len(messages), 200):
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages[start : start + 200]))


def registers(count: int, seed: int) -> list[int]:
    """Register values, none 0 (whose value no scale changes)."""
    return [((i * 7919 + seed * 104729) % 600) - 100 or 1 for i in range(count)]


async def sensor_device(stack: Stack, workers: Workers, number: int, *points: tuple[str | None, int, str]) -> str:
    """A device with parameters for its sensor only: (data point, byte offset, data type) per point, scale 1.0."""
    [device] = device_ids(1, number)
    for point, offset, kind in points:
        await params_execute(stack, _INSERT_SENSOR, device, 1.0, point, offset, kind)
    await wait_parameters(stack, workers.pipeline, device)
    return device


def replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.faust("replay", *args, timeout=300)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def snapshot(conn: asyncpg.Connection, *, but: str, before: datetime) -> set[tuple[object, ...]]:
    """Every row of every other device written before `before`, with what a repair could change."""
    rows = await conn.fetch(
        "SELECT device_id, mode, connector, component, data_point, time, value, text_value, unit, param_version,"
        " written_at FROM iot_measurements WHERE device_id <> $1 AND written_at < $2",
        but,
        before,
    )
    return {tuple(r) for r in rows}


def summary_line(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("replay: read ")]
    return line


async def test_replay_stale_repairs_a_wrong_scale_and_nothing_else(
    stack: Stack, workers: Workers, live: Live, device_numbers: int, timeseries: asyncpg.Connection
) -> None:
    device = await sensor_device(stack, workers, device_numbers, (None, 0, "int16"))  # scale 1.0 where 0.1 was meant
    started = datetime.now(UTC) - timedelta(seconds=2)
    values = registers(1000, seed=1)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    await publish_fast(stack, [sensor_message(device, base + timedelta(seconds=i), [v]) for i, v in enumerate(values)])
    wrong = await rows_for(stack, device, 1000)
    assert sorted(r["value"] for r in wrong) == sorted(float(v) for v in values)
    old_version = wrong[0]["param_version"]

    await wait_consumed(stack, DECODE_GROUP, "raw_iot_data")  # replay stops at the decode group's commits
    await params_execute(stack, "UPDATE device_parameters SET scale_factor = 0.1 WHERE device_id = $1", device)
    await wait_parameters(stack, workers.pipeline, device)
    version = (await parameter_versions(stack, [device]))[device]
    assert version > old_version
    cutoff = datetime.now(UTC)
    others = await snapshot(timeseries, but=device, before=cutoff)

    dry = replay(stack, "--stale", "--since", iso(started), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert re.search(rf"^{device}\s+1,000\s+1,000\s+0\s+1,000\s+0\s+0\s+0$", dry.stdout, re.M), dry.stdout
    assert "-> would be " in dry.stdout
    assert {r["value"] for r in await rows_for(stack, device, 1000)} == {float(v) for v in values}, "dry run wrote"

    run = replay(stack, "--stale", "--since", iso(started))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1,000 of 1,000 messages repaired" in summary_line(run.stdout), run.stdout
    assert re.search(r"^replay: [\d,]+ of [\d,]+ records \(100%\), [\d,]+/s, 0 s left$", run.stderr, re.M), run.stderr
    fixed = await rows_for(stack, device, 1000)
    assert len(fixed) == 1000
    expected = {base + timedelta(seconds=i): v * 0.1 for i, v in enumerate(values)}
    assert {r["time"]: r["value"] for r in fixed} == expected
    assert {r["param_version"] for r in fixed} == {version}
    assert all(r["raw_partition"] is not None and r["raw_offset"] is not None for r in fixed)
    assert await snapshot(timeseries, but=device, before=cutoff) == others, "replay changed another device's rows"

    again = replay(stack, "--stale", "--since", iso(started))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 of 0 messages repaired" in summary_line(again.stdout), again.stdout
    assert {(r["time"], r["written_at"]) for r in await rows_for(stack, device, 1000)} == {
        (r["time"], r["written_at"]) for r in fixed
    }, "the second run rewrote rows"

    metrics = stack.settings.metrics_textfile_dir / "f2stream_replay.prom"
    samples = {
        (s.name, s.labels.get("change", "")): s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }
    assert samples[("f2_replay_rows_total", "changed")] >= 1000


async def test_a_row_traces_back_to_the_raw_record_it_came_from(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = await sensor_device(stack, workers, device_numbers, (None, 0, "int16"))
    at = datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=UTC)
    topic, payload = sensor_message(device, at, [321])
    await publish_fast(stack, [(topic, payload)])
    [row] = await rows_for(stack, device, 1)
    shown = stack.faust(
        "tail", "raw_iot_data", "--partition", str(row["raw_partition"]), "--offset", str(row["raw_offset"]),
        "--max-messages", "1",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    record = orjson.loads(shown.stdout)
    assert (record["partition"], record["offset"]) == (row["raw_partition"], row["raw_offset"])
    assert orjson.dumps(record["value"]) == payload
    assert {"mqtt_topic": topic}.items() <= record["headers"].items()


async def test_a_record_stamped_in_the_future_does_not_end_the_window_before_later_records(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    # Producers set Kafka timestamps: Kafka's time index, asked for the window's end, would answer with the
    # offset of this record and end the partition's span before the messages that follow it.
    device = await sensor_device(stack, workers, device_numbers, (None, 0, "int16"))
    started = datetime.now(UTC) - timedelta(seconds=2)
    producer = AIOKafkaProducer(**kafka_options(stack.settings), acks="all")
    await producer.start()
    try:
        future = int((datetime.now(UTC) + timedelta(minutes=30)).timestamp() * 1000)  # Kafka 4 refuses > 1 h ahead
        topic = sensor_message(device, started, [1])[0].encode()
        await producer.send_and_wait(
            "raw_iot_data", b"not json", key=device.encode(), timestamp_ms=future, headers=[("mqtt_topic", topic)]
        )
    finally:
        await producer.stop()
    values = registers(20, seed=5)
    base = datetime(2026, 3, 5, tzinfo=UTC)
    await publish_fast(stack, [sensor_message(device, base + timedelta(seconds=i), [v]) for i, v in enumerate(values)])
    assert len(await rows_for(stack, device, 20)) == 20
    await wait_consumed(stack, DECODE_GROUP, "raw_iot_data")
    await params_execute(stack, "UPDATE device_parameters SET scale_factor = 0.1 WHERE device_id = $1", device)
    await wait_parameters(stack, workers.pipeline, device)

    run = replay(stack, "--stale", "--since", iso(started), "--device", device)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "20 of 20 messages repaired" in summary_line(run.stdout), run.stdout
    assert {r["time"]: r["value"] for r in await rows_for(stack, device, 20)} == {
        base + timedelta(seconds=i): v * 0.1 for i, v in enumerate(values)
    }


async def test_replay_removes_exactly_the_rows_of_a_dropped_data_point(
    stack: Stack, workers: Workers, live: Live, device_numbers: int
) -> None:
    device = await sensor_device(stack, workers, device_numbers, ("temperature", 0, "int16"), ("humidity", 2, "uint16"))
    started = datetime.now(UTC) - timedelta(seconds=2)
    base = datetime(2026, 3, 3, tzinfo=UTC)
    values = registers(200, seed=2)
    await publish_fast(
        stack, [sensor_message(device, base + timedelta(seconds=i), [v, 500 + i]) for i, v in enumerate(values)]
    )
    before = await rows_for(stack, device, 400)
    assert len(before) == 400
    await params_execute(
        stack, "DELETE FROM device_parameters WHERE device_id = $1 AND data_point = 'humidity'", device
    )
    await wait_parameters(stack, workers.pipeline, device)
    version = (await parameter_versions(stack, [device]))[device]

    run = replay(stack, "--device", device.removeprefix("f2-").upper(), "--since", iso(started))
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(rf"^{device}\s+200\s+200\s+0\s+0\s+200\s+200\s+0$", run.stdout, re.M), run.stdout
    after = await rows_for(stack, device, 200)
    assert {r["data_point"] for r in after} == {"temperature"}
    kept = {(r["time"], r["value"]) for r in before if r["data_point"] == "temperature"}
    assert {(r["time"], r["value"]) for r in after} == kept
    assert {r["param_version"] for r in after} == {version}


async def test_redrive_lands_the_letters_of_a_device_registered_late_once(
    stack: Stack, workers: Workers, live: Live, device_numbers: int, tmp_path: Path
) -> None:
    [device] = device_ids(1, device_numbers)
    manifest = tmp_path / "late.jsonl"
    since_ms = int(time.time() * 1000) - 1000
    sent = stack.faust(
        "simulate", "--devices", "1", "--first-device", str(device_numbers), "--count", "500", "--rate", "0",
        "--register-devices", "--manifest", str(manifest), timeout=300,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr[-2000:]

    async def letters() -> int:
        found = await dead_letters_since(stack, since_ms)
        return sum(1 for headers, _ in found if headers.get("reason") == b"unknown_device" and device.encode() in
                   headers.get("mqtt_topic", b""))  # fmt: skip

    counted: list[int] = []

    async def all_there() -> bool:
        counted.append(await letters())
        return counted[-1] >= 500

    await wait_until(all_there, 60, "500 unknown_device letters", seen=lambda: counted[-1:])
    assert counted[-1] == 500
    dry = stack.faust("redrive", "--reason", "unknown_device", "--device", device, "--dry-run", timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "still failing: unknown_device 500 (now unknown_device)" in dry.stdout, dry.stdout

    settings = stack.settings
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await write_demo_parameters(conn, [device])
    finally:
        await conn.close()
    await wait_parameters(stack, workers.pipeline, device)

    dry = stack.faust("redrive", "--reason", "unknown_device", "--device", device, "--dry-run", timeout=300)
    assert "decode now, would land: unknown_device 500" in dry.stdout, dry.stdout
    first = stack.faust("redrive", "--reason", "unknown_device", "--device", device, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "decode now, landed: unknown_device 500" in first.stdout, first.stdout
    verdict = await verify_database(settings, read_manifest(manifest), timeout_s=30)
    assert verdict.ok, str(verdict)

    second = stack.faust("redrive", "--reason", "unknown_device", "--device", device, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "landed" not in second.stdout and "rows already there: unknown_device 500" in second.stdout, second.stdout
    verdict = await verify_database(settings, read_manifest(manifest), timeout_s=5)
    assert verdict.ok, str(verdict)  # exactly once: verify counts duplicates too


async def test_replay_killed_halfway_and_run_again_ends_as_one_run(
    stack: Stack, workers: Workers, live: Live, device_numbers: int, timeseries: asyncpg.Connection
) -> None:
    device = await sensor_device(stack, workers, device_numbers, (None, 0, "int16"))
    started = datetime.now(UTC) - timedelta(seconds=2)
    base = datetime(2026, 3, 4, tzinfo=UTC)
    values = registers(10_000, seed=3)
    await publish_fast(stack, [sensor_message(device, base + timedelta(seconds=i), [v]) for i, v in enumerate(values)])
    assert len(await rows_for(stack, device, 10_000, timeout_s=120)) == 10_000
    await wait_consumed(stack, DECODE_GROUP, "raw_iot_data")  # replay stops at the decode group's commits
    await params_execute(stack, "UPDATE device_parameters SET scale_factor = 0.1 WHERE device_id = $1", device)
    await wait_parameters(stack, workers.pipeline, device)
    version = (await parameter_versions(stack, [device]))[device]
    count = "SELECT count(*) FROM iot_measurements WHERE device_id = $1 AND param_version = $2"

    log = stack.var_dir / "log" / "replay-killed.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: ASYNC220  # started, never waited on here: the test kills it
            [sys.executable, "-m", "faust", "-A", "f2stream", "replay", "--stale", "--since", iso(started)],
            env=stack.run_env(), cwd=stack.var_dir, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            ended = process.poll() is not None
            if await timeseries.fetchval(count, device, version):
                break
            assert not ended, (
                f"replay ended (status {process.returncode}) before it repaired anything:\n"
                + (log.read_text(errors="replace")[-3000:])
            )
            assert time.monotonic() < deadline, "replay repaired nothing in 120 s"
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    at_kill = await timeseries.fetchval(count, device, version)
    assert 0 < at_kill < 10_000, f"killed after {at_kill} of 10,000: not half-way"

    again = replay(stack, "--stale", "--since", iso(started))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{10_000 - at_kill:,} of {10_000 - at_kill:,} messages repaired" in summary_line(again.stdout)
    rows = await rows_for(stack, device, 10_000)
    assert {r["time"]: (r["value"], r["param_version"]) for r in rows} == {
        base + timedelta(seconds=i): (v * 0.1, version) for i, v in enumerate(values)
    }


async def test_on_timescaledb_replay_repairs_compressed_chunks_and_refreshes_the_hourly_aggregate(
    stack: Stack, workers: Workers, live: Live, device_numbers: int, timeseries: asyncpg.Connection
) -> None:
    if not await timeseries.fetchval("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"):
        pytest.skip(
            "TimescaleDB is not installed for the stack's PostgreSQL (F2_STACK_PG_BIN): its compressed chunks "
            "and hourly aggregate are what this checks (docs/timescaledb.md)"
        )
    device = await sensor_device(stack, workers, device_numbers, (None, 0, "int16"))
    started = datetime.now(UTC) - timedelta(seconds=2)
    base = datetime(2026, 2, 1, tzinfo=UTC)  # a day of its own: its chunk holds this test's rows only
    values = registers(300, seed=4)
    await publish_fast(
        stack, [sensor_message(device, base + timedelta(seconds=36 * i), [v]) for i, v in enumerate(values)]
    )
    assert len(await rows_for(stack, device, 300)) == 300
    window = f"'{base.isoformat()}'::timestamptz, '{(base + timedelta(hours=3)).isoformat()}'::timestamptz"
    await timeseries.execute(f"CALL refresh_continuous_aggregate('iot_measurements_hourly', {window})")
    chunks = await timeseries.fetch(
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('iot_measurements',"
        " newer_than => $1::timestamptz, older_than => $2::timestamptz) c",
        base, base + timedelta(days=1),
    )  # fmt: skip
    assert len(chunks) == 1
    compressed = "SELECT is_compressed FROM timescaledb_information.chunks WHERE chunk_name = $1"
    assert await timeseries.fetchval(compressed, chunks[0][0].rsplit(".", 1)[-1].strip('"'))
    hourly = "SELECT bucket, avg_value FROM iot_measurements_hourly WHERE device_id = $1 ORDER BY bucket"

    def averages(scale: float) -> list[tuple[datetime, object]]:
        by_hour: dict[datetime, list[float]] = {}
        for i, v in enumerate(values):
            at = base + timedelta(seconds=36 * i)
            by_hour.setdefault(at.replace(minute=0, second=0), []).append(v * scale)
        return [(h, pytest.approx(sum(vs) / len(vs), rel=1e-9)) for h, vs in sorted(by_hour.items())]

    assert [tuple(r) for r in await timeseries.fetch(hourly, device)] == averages(1.0)

    await wait_consumed(stack, DECODE_GROUP, "raw_iot_data")  # replay stops at the decode group's commits
    await params_execute(stack, "UPDATE device_parameters SET scale_factor = 0.1 WHERE device_id = $1", device)
    await wait_parameters(stack, workers.pipeline, device)
    version = (await parameter_versions(stack, [device]))[device]
    run = replay(stack, "--stale", "--device", device, "--since", iso(started))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "300 of 300 messages repaired" in summary_line(run.stdout), run.stdout
    assert "hourly aggregate ranges refreshed: 1" in run.stdout, run.stdout
    rows = await rows_for(stack, device, 300)
    assert {r["time"]: (r["value"], r["param_version"]) for r in rows} == {
        base + timedelta(seconds=36 * i): (v * 0.1, version) for i, v in enumerate(values)
    }
    assert [tuple(r) for r in await timeseries.fetch(hourly, device)] == averages(0.1)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("redrive", "--reason", "no_such_reason"), "is no dead-letter reason; the reasons are bad_topic"),
        (("replay", "--since", "2h", "--until", "3h"), "the window is empty"),
        (("replay", "--since", "2099-01-01"), "is in the future"),
        (("replay", "--since", "36500d", "--until", "36000d"), "lies outside what the topic holds: raw_iot_data holds"),
        (("replay", "--since", "yesterday"), "is not a time"),
        (("replay", "--device", "00:11:22:33:44:55"), "device f2-001122334455 is neither registered"),
        (("redrive", "--device", "not-a-mac"), "not-a-mac"),
        (("tail", "raw_iot_data", "--offset", "5"), "--offset needs --partition"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2_and_writes_nothing(
    stack: Stack, workers: Workers, args: tuple[str, ...], says: str
) -> None:
    metrics = stack.settings.metrics_textfile_dir
    before = {p.name: p.stat().st_mtime_ns for p in metrics.glob("*.prom")} if metrics.exists() else {}
    result = stack.faust(*args)
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("f2stream: ") and says in lines[0], result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in metrics.glob("*.prom")} if metrics.exists() else {}
    assert after == before


def test_replay_window_shows_what_raw_iot_data_holds_and_keeps(stack: Stack, workers: Workers) -> None:
    shown = stack.faust("replay", "--window")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert re.search(r"^replay: raw_iot_data holds [\d,]+ records from \S+ to \S+$", shown.stdout, re.M), shown.stdout
    retention = stack.settings.raw_retention_hours
    assert f"keeps records {retention:g} hours (retention.ms)" in shown.stdout, shown.stdout


async def test_the_live_traffic_lost_nothing_while_repairs_ran(stack: Stack, live: Live) -> None:
    live.stop()
    assert live.process.returncode == 0, "the simulator failed: see log/repair-live.log"
    expected = read_manifest(live.manifest)
    assert len(expected) > 200, f"{len(expected)} live messages: too few to say anything"
    verdict = await verify_database(stack.settings, expected, timeout_s=60)
    assert verdict.ok, str(verdict)
