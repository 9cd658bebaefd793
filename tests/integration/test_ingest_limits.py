"""The ingest worker and `tail` at the limits, on the real Kafka and Mosquitto.

An MQTT message above Kafka's size limit (the producer's max_request_size,
1 MB) is dead-lettered and acknowledged; the messages after it land, and the
worker's session never drops. `tail` renders the dead letter and ends quietly
when its reader goes away.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import Stack, Workers, metric, publish

from f2stream.agents.ingest import TOO_LARGE_KEEP_BYTES, message_identity
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, RAW_TOPIC

pytestmark = pytest.mark.integration

STAMP = "2025-03-01 10:00:00.{:06d}"


async def records_about(stack: Stack, topic: str, needle: str, expected: int, timeout_s: float = 60) -> list[object]:
    """Records of `topic` whose `mqtt_topic` header contains `needle`, read from the beginning."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_options(stack.settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    found: list[object] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                # errors="replace": the fuzz test leaves records with undecodable headers in the topic
                topics = [dict(r.headers).get("mqtt_topic", b"").decode(errors="replace") for r in records]
                found += [r for r, topic in zip(records, topics, strict=True) if needle in topic]
    finally:
        await consumer.stop()
    return found


def _stage(record: object) -> str:
    return dict(record.headers).get("stage", b"").decode()  # type: ignore[attr-defined]


async def test_an_oversized_message_is_dead_lettered_and_the_rest_lands(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = f"f2-02f2{device_numbers:08x}"
    big_topic = f"stat/{device}/access-control-mode/1/door-sensors"
    # 1.2 MB of valid JSON: above the producer's 1,000,000-byte limit, far below Mosquitto's (none set).
    big = orjson.dumps({"timestamp": STAMP.format(0), "door_1": "open", "padding": "x" * 1_200_000})
    good = [
        (
            f"stat/{device}/access-control-mode/1/strike-1",
            orjson.dumps({"timestamp": STAMP.format(n), "state": "locked"}),
        )
        for n in range(1, 6)
    ]
    reconnects_before = metric(workers.ingest, "f2_mqtt_reconnects_total")

    await publish(stack, [(big_topic, big), *good])

    landed = await records_about(stack, RAW_TOPIC, device, len(good))
    assert sorted(r.value for r in landed) == sorted(p for _, p in good)  # type: ignore[attr-defined]
    # The good messages' device has no parameters: decode dead-letters them too
    # (unknown_device). Only the ingest stage's letters are about the big one.
    dead = [r for r in await records_about(stack, DEAD_LETTER_TOPIC, big_topic, 1) if _stage(r) == "ingest"]
    assert len(dead) == 1
    letter = dead[0]
    headers = {k: v.decode() for k, v in letter.headers}  # type: ignore[attr-defined]
    assert headers["reason"] == "too_large" and headers["stage"] == "ingest"
    assert headers["payload_bytes"] == str(len(big))
    assert headers["source"] == message_identity(big_topic, big)
    assert headers["mqtt_topic"] == big_topic
    assert letter.value == big[:TOO_LARGE_KEEP_BYTES]  # type: ignore[attr-defined]

    # The session stayed up: acknowledged in order, nothing re-delivered, no reconnect.
    assert workers.ingest.process is not None and workers.ingest.process.poll() is None
    workers.ingest.wait_healthy(timeout_s=10)
    assert metric(workers.ingest, "f2_mqtt_reconnects_total") == reconnects_before
    await asyncio.sleep(2)
    again = await records_about(stack, DEAD_LETTER_TOPIC, big_topic, 2, timeout_s=3)
    assert len([r for r in again if _stage(r) == "ingest"]) == 1


async def test_tail_renders_every_record_and_a_closed_pipe_ends_quietly(stack: Stack) -> None:
    # Dead letters nobody reads: 400 KB of them, more than a pipe holds, so
    # `tail` is still writing when `head` goes away. One is nested 640 deep,
    # the record that once ended `tail` with "Recursion limit reached".
    deep = b'{"a":' * 640 + b"1" + b"}" * 640
    producer = AIOKafkaProducer(**kafka_options(stack.settings), max_request_size=2_000_000)
    await producer.start()
    try:
        first = await producer.send_and_wait(DEAD_LETTER_TOPIC, deep, key=b"tail-test", partition=0)
        for n in range(200):
            await producer.send(
                DEAD_LETTER_TOPIC, b"x" * 2000, key=b"tail-test", partition=0, headers=[("n", b"%d" % n)]
            )
        await producer.flush()
    finally:
        await producer.stop()

    def tail(pipe: str, idle_s: int) -> tuple[subprocess.CompletedProcess[str], float]:
        command = (
            f"{sys.executable} -m faust -A f2stream tail {DEAD_LETTER_TOPIC} --from-beginning --idle-timeout-s {idle_s}"
        )
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command} | {pipe}"],
            env=stack.run_env(),
            cwd=stack.var_dir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        return result, time.monotonic() - started

    result, took_s = tail("head -n 1", idle_s=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert took_s < 25, "tail went on after its reader left"
    assert orjson.loads(result.stdout.splitlines()[0])["topic"] == DEAD_LETTER_TOPIC

    result, _ = tail(f'grep -c \'"partition":0,"offset":{first.offset},.*"value":{{"a"\'', idle_s=3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_tail_failure_is_one_line_and_non_zero_in_a_pipe(stack: Stack) -> None:
    tail = f"{sys.executable} -m faust -A f2stream tail no_such_topic --idle-timeout-s 2"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {tail} | wc -l"],
        env={**stack.run_env(), "PYTHONWARNINGS": "ignore"},
        cwd=stack.var_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("f2stream:")]
    assert len(errors) == 1 and "no_such_topic" in errors[0], result.stderr
    assert os.linesep.join(result.stderr.splitlines()).count("Traceback") == 0
