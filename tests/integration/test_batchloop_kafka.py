"""The batch loop on the real Kafka: no offset committed before its batch is handled (failures, rebalances, stops)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import Stack, wait_until

from f2stream.agents.batchloop import Batch, BatchLoop
from f2stream.kafka_client import kafka_options

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
async def topic(stack: Stack) -> AsyncIterator[str]:
    name = f"batchloop-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka_options(stack.settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    yield name


async def produce(stack: Stack, topic: str, count: int, *, start: int = 0, pause_every: int = 0) -> None:
    producer = AIOKafkaProducer(**kafka_options(stack.settings), acks="all")
    await producer.start()
    try:
        for i in range(start, start + count):
            await producer.send(topic, str(i).encode(), key=str(i % 16).encode())
            if pause_every and i % pause_every == 0:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()


class Recorder:
    """A handler that remembers every value it handled, optionally slow or failing."""

    def __init__(self, *, delay_s: float = 0.0, fail_first: int = 0) -> None:
        self.seen: list[int] = []
        self.delay_s = delay_s
        self.failures_left = fail_first
        self.calls = 0

    async def __call__(self, batch: Batch) -> None:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("the produce failed")
        self.seen.extend(int(r.value or b"-1") for records in batch.values() for r in records)


def loop_for(stack: Stack, topic: str, group: str, handler: Recorder, **options: object) -> BatchLoop:
    return BatchLoop(
        name=f"test-{group[-4:]}", topic=topic, group_id=group, handler=handler,
        kafka=kafka_options(stack.settings), max_records=50, fetch_timeout_ms=100, **options,  # type: ignore[arg-type]
    )  # fmt: skip


async def produce_until(stack: Stack, topic: str, done: asyncio.Event) -> int:
    """Produce 0, 1, 2, ... in small flushed groups until `done`; return how many."""
    producer = AIOKafkaProducer(**kafka_options(stack.settings), acks="all")
    await producer.start()
    count = 0
    try:
        while not done.is_set():
            for i in range(count, count + 20):
                await producer.send(topic, str(i).encode(), key=str(i % 16).encode())
            await producer.flush()
            count += 20
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return count


async def committed_total(loop: BatchLoop, topic: str) -> int:
    offsets = [await loop.consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
    return sum(o or 0 for o in offsets)


async def test_a_failed_batch_is_read_again_and_nothing_is_skipped(stack: Stack, topic: str) -> None:
    await produce(stack, topic, 400)
    handler = Recorder(fail_first=3)
    loop = loop_for(stack, topic, f"g-{uuid.uuid4().hex[:6]}", handler)
    await loop.start()
    try:
        await wait_until(lambda: len(set(handler.seen)) >= 400, 60, "400 records handled")
        assert set(handler.seen) == set(range(400))
        await wait_until(lambda: not loop.pending, 30, "every handled offset committed")
        assert await committed_total(loop, topic) == 400
    finally:
        await loop.stop()


async def test_members_joining_and_leaving_under_load_lose_nothing(stack: Stack, topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = Recorder(delay_s=0.02)
    steady = loop_for(stack, topic, group, first)
    await steady.start()
    done = asyncio.Event()
    producing = asyncio.create_task(produce_until(stack, topic, done))
    seen: list[int] = []
    try:
        for n in range(5):  # a member joins, gets partitions, works with a batch in flight, leaves
            other = Recorder(delay_s=0.05)
            joiner = loop_for(stack, topic, group, other)
            await joiner.start()
            try:
                await wait_until(lambda j=joiner: j.assignment(), 60, f"joiner {n} holds partitions")
                await wait_until(lambda o=other: o.seen, 60, f"joiner {n} handled records")
            finally:
                await joiner.stop()
            seen.extend(other.seen)
        done.set()
        produced = await producing
        everything = set(range(produced))
        await wait_until(lambda: everything <= set(first.seen) | set(seen), 90, "every record handled",
                         seen=lambda: len(everything - set(first.seen) - set(seen)))  # fmt: skip
        await wait_until(lambda: not steady.pending, 30, "the steady member committed all it handled")
        assert await committed_total(steady, topic) == produced
    finally:
        done.set()
        producing.cancel()
        await steady.stop()


async def test_a_batch_cut_off_by_stopping_is_not_committed(stack: Stack, topic: str) -> None:
    await produce(stack, topic, 100)
    group = f"g-{uuid.uuid4().hex[:6]}"
    stuck = Recorder(delay_s=3600)  # the database never answers
    loop = loop_for(stack, topic, group, stuck, stop_timeout_s=1.0)
    await loop.start()
    await wait_until(lambda: stuck.calls > 0, 60, "the stuck batch in flight")
    await loop.stop()
    again = Recorder()
    second = loop_for(stack, topic, group, again)
    await second.start()
    try:
        await wait_until(lambda: len(set(again.seen)) >= 100, 60, "the next member handled all 100")
        assert set(again.seen) == set(range(100))
    finally:
        await second.stop()
