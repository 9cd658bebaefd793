"""Device liveness against the real stack: silence within the timeout, online again on the next message,
no false changes across a kill -9 or a second worker joining, a silence missed while the worker was
down reported once, old (replayed) messages moving nothing, and `simulate --silence` seen as a silence.

Timeouts are set per device in the parameters database (`device_silence_timeouts`), a few seconds,
which also proves they are picked up live; the session's pipeline worker does the tracking.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from harness import Stack, Worker, Workers, publish, register_device, wait_until
from test_faults import restart

from bench.stack import free_ports
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import RAW_TOPIC, STATUS_TOPIC
from f2stream.records import format_time
from f2stream.storage.db import connect

pytestmark = pytest.mark.integration

TIMEOUT_S = 4.0


def strike(device: str) -> tuple[str, bytes]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    body = {"timestamp": stamp, "state": "locked", "voltage": 12.0, "current": 1.0}
    return f"stat/{device}/access-control-mode/1/strike-1", orjson.dumps(body)


async def set_timeout(stack: Stack, devices: Iterable[str], seconds: float) -> None:
    settings = stack.settings
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await conn.executemany(
            "INSERT INTO device_silence_timeouts (device_id, timeout_s) VALUES ($1, $2) "
            "ON CONFLICT (device_id) DO UPDATE SET timeout_s = EXCLUDED.timeout_s",
            [(d, seconds) for d in devices],
        )
    finally:
        await conn.close()


def status(worker: Worker, device: str) -> dict[str, Any]:
    code, body = worker.get(f"/devices/{device}/status")
    assert code in (200, 404), body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def wait_state(worker: Worker, device: str, state: str, timeout_s: float) -> float:
    """Seconds until the device's status is `state`."""
    started = time.monotonic()
    await wait_until(lambda: status(worker, device).get("state") == state, timeout_s, f"{device} {state}")
    return time.monotonic() - started


async def events(stack: Stack, devices: set[str], since_ms: int) -> list[dict[str, Any]]:
    """`device_status` events of `devices` produced since `since_ms`, in order per device."""
    consumer = AIOKafkaConsumer(**kafka_options(stack.settings), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(STATUS_TOPIC, p) for p in range(stack.settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        open_ = {tp for tp, end in ends.items() if end > 0}
        while open_:
            for records in (await consumer.getmany(*open_, timeout_ms=500)).values():
                for r in records:
                    if r.timestamp >= since_ms and r.key and r.key.decode() in devices:
                        found.append(orjson.loads(r.value))
            open_ = {tp for tp in open_ if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return found


@asynccontextmanager
async def sending(stack: Stack, devices: list[str], every_s: float = 0.5) -> AsyncIterator[None]:
    """Keep `devices` sending until the block ends."""

    async def loop() -> None:
        while True:
            await publish(stack, [strike(d) for d in devices])
            await asyncio.sleep(every_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_silent_within_its_timeout_online_within_5s_and_in_the_database(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    pipeline = workers.pipeline
    device = await register_device(stack, pipeline, device_numbers)
    await set_timeout(stack, [device], TIMEOUT_S)
    since = now_ms()
    await publish(stack, [strike(device)])
    last_sent = time.monotonic()
    await wait_state(pipeline, device, "online", 10)
    await wait_state(pipeline, device, "silent", TIMEOUT_S + 30)
    silent_after = time.monotonic() - last_sent
    assert TIMEOUT_S - 0.5 <= silent_after <= TIMEOUT_S + 30, silent_after
    body = status(pipeline, device)
    assert body["last_seen"] is not None and body["newest_device_time"] is not None

    await publish(stack, [strike(device)])
    assert await wait_state(pipeline, device, "online", 5) <= 5

    async def in_database() -> bool:
        settings = stack.settings
        conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
        try:
            current = await conn.fetchval("SELECT state FROM device_status WHERE device_id = $1", device)
            history = await conn.fetchval("SELECT count(*) FROM device_status_changes WHERE device_id = $1 "
                                          "AND to_state = 'silent'", device)  # fmt: skip
        finally:
            await conn.close()
        return current == "online" and history >= 1

    await wait_until(in_database, 30, "the current state and the history in device_status")
    code, body_text = pipeline.get("/devices?state=online&limit=1000")
    assert code == 200 and device in body_text
    transitions = [(e["from"], e["to"]) for e in await events(stack, {device}, since)]
    assert ("online", "silent") in transitions and transitions[-1] == ("silent", "online")
    assert all(
        set(e) >= {"device", "from", "to", "at", "last_seen", "reason"} for e in await events(stack, {device}, since)
    )


async def test_an_old_message_does_not_bring_a_silent_device_online_nor_move_device_time_back(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    pipeline = workers.pipeline
    device = await register_device(stack, pipeline, device_numbers)
    await set_timeout(stack, [device], TIMEOUT_S)
    await publish(stack, [strike(device)])
    await wait_state(pipeline, device, "silent", TIMEOUT_S + 30)
    newest = status(pipeline, device)["newest_device_time"]
    old = datetime.now(UTC) - timedelta(hours=1)
    topic, _ = strike(device)
    payload = orjson.dumps({"timestamp": old.strftime("%Y-%m-%d %H:%M:%S.%f"), "state": "open"})
    producer = AIOKafkaProducer(**kafka_options(stack.settings))
    await producer.start()
    try:
        headers = [("mqtt_topic", topic.encode()), ("received_at", format_time(old).encode())]
        await producer.send_and_wait(RAW_TOPIC, payload, key=device.encode(), headers=headers)
    finally:
        await producer.stop()
    await asyncio.sleep(3)
    body = status(pipeline, device)
    assert body["state"] == "silent"
    assert body["newest_device_time"] == newest


async def test_kill_9_and_a_second_worker_change_no_state_and_a_missed_silence_is_reported_once(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    pipeline = workers.pipeline
    talking = [await register_device(stack, pipeline, device_numbers + i) for i in range(4)]
    quiet = await register_device(stack, pipeline, device_numbers + 10)
    leaving = await register_device(stack, pipeline, device_numbers + 11)
    await set_timeout(stack, [*talking, quiet, leaving], TIMEOUT_S)
    await publish(stack, [strike(quiet)])
    await wait_state(pipeline, quiet, "silent", TIMEOUT_S + 30)
    async with sending(stack, [*talking, leaving]):
        for d in (*talking, leaving):
            await wait_state(pipeline, d, "online", 10)
        since = now_ms()
        await asyncio.sleep(3)  # a checkpoint (F2_LIVENESS_CHECKPOINT_S) need not have been written
        restart(pipeline)  # kill -9, started again
        await asyncio.sleep(TIMEOUT_S + 2)
        (port,) = free_ports(1)
        second = Worker(stack, "f2stream", port, "pipeline-liveness-2",
                        F2_DATA_DIR=str(stack.var_dir / "data" / "faust-liveness-2"))  # fmt: skip
        second.start()
        try:
            second.wait_healthy(timeout_s=120)
            await asyncio.sleep(TIMEOUT_S + 2)
        finally:
            second.stop()
        await asyncio.sleep(TIMEOUT_S + 2)  # the partitions moved back
    changes = await events(stack, {*talking, quiet}, since)
    assert changes == [], f"false changes across kill -9 and a rebalance: {changes}"

    # A silence that happened while the worker was down: reported once, when it is back.
    async with sending(stack, [leaving]):
        await asyncio.sleep(1)
    pipeline.stop(9)
    await asyncio.sleep(TIMEOUT_S + 3)
    since = now_ms()
    pipeline.start()
    pipeline.wait_healthy(timeout_s=120)
    await wait_state(pipeline, leaving, "silent", 30)
    await asyncio.sleep(TIMEOUT_S)
    missed = [(e["from"], e["to"]) for e in await events(stack, {leaving}, since)]
    assert missed == [("online", "silent")], missed


async def test_simulate_silence_makes_one_device_silent_then_online_and_leaves_the_other_alone(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    pipeline = workers.pipeline
    quiet, talking = [await register_device(stack, pipeline, device_numbers + i) for i in range(2)]
    await set_timeout(stack, [quiet, talking], TIMEOUT_S)
    bad = stack.faust("simulate", "--devices", "2", "--first-device", str(device_numbers), "--silence", "9:1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "expected DEVICE:FROM:SECONDS" in bad.stderr

    since = now_ms()
    run = asyncio.create_task(asyncio.to_thread(
        stack.faust, "simulate", "--devices", "2", "--first-device", str(device_numbers), "--rate", "8",
        "--duration-s", "26", "--silence", f"{device_numbers}:3:12",
    ))  # fmt: skip
    try:
        await wait_state(pipeline, quiet, "online", 15)
        await wait_state(pipeline, talking, "online", 15)
        await wait_state(pipeline, quiet, "silent", 3 + TIMEOUT_S + 15)
        await wait_state(pipeline, quiet, "online", 20)
    finally:
        done = await run
    assert done.returncode == 0, done.stderr[-2000:]
    transitions = [(e["from"], e["to"]) for e in await events(stack, {quiet}, since)]
    assert transitions[-2:] == [("online", "silent"), ("silent", "online")], transitions
    # The other device only came back from a silence it may have fallen into before the run.
    assert [e["to"] for e in await events(stack, {talking}, since)] in ([], ["online"])
