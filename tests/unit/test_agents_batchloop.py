"""The batch loop: what may be committed, where a failed batch restarts, every branch over a fake consumer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaTimeoutError
from fakes import FakeConsumer
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.agents import batchloop
from f2stream.agents.batchloop import Batch, BatchLoop, PendingCommits, first_offsets, next_offsets
from f2stream.backoff import Backoff
from f2stream.kafka_client import kafka_options
from f2stream.settings import Settings

#: Where the loops would connect; their consumers are fakes.
KAFKA = kafka_options(Settings(kafka_broker="kafka://fake:1"))

A, B = TopicPartition("raw_iot_data", 0), TopicPartition("raw_iot_data", 1)


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0, key=b"k",
        value=b"v", checksum=None, serialized_key_size=1, serialized_value_size=1, headers=[],
    )  # fmt: skip


def test_commit_one_past_the_last_record_of_each_partition() -> None:
    batch = {A: [record(A, 7), record(A, 8), record(A, 12)], B: [record(B, 0)], TopicPartition("x", 0): []}
    assert next_offsets(batch) == {A: 13, B: 1}


def test_a_failed_batch_restarts_at_its_first_record() -> None:
    assert first_offsets({A: [record(A, 7), record(A, 8)], B: [record(B, 3)]}) == {A: 7, B: 3}


def test_pending_offsets_only_move_forward() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    pending.add({A: 5})
    assert pending.of([A, B]) == {A: 10, B: 3}
    assert pending.of([B]) == {B: 3}


def test_a_commit_forgets_only_what_it_committed() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    committing = pending.of([A, B])
    pending.add({A: 20})  # a later batch finished while the commit was on its way
    pending.committed(committing)
    assert pending.of([A, B]) == {A: 20}
    assert pending


def test_revoked_partitions_are_dropped() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    pending.drop([A])
    assert pending.of([A, B]) == {B: 3}
    pending.drop([B])
    assert not pending


def test_bad_arguments_are_refused_at_once() -> None:
    async def handler(batch: object) -> None:
        return None

    with pytest.raises(ValueError, match="max_records must be >= 1"):
        BatchLoop(
            name="x",
            topic="t",
            group_id="g",
            handler=handler,
            kafka=KAFKA,
            max_records=0,
        )


# ------------------------------------------------------------- the loop itself, over a fake consumer


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's backoffs in milliseconds: the branches, not the pace, are under test."""
    monkeypatch.setattr(batchloop, "Backoff", lambda *_, **__: Backoff(0.001, 0.002))


class Handler:
    """Records each record it handled; fails as told: `poison` values always, `outages` times once each."""

    def __init__(self, poison: frozenset[bytes] = frozenset(), outages: list[BaseException] | None = None) -> None:
        self.poison = poison
        self.outages = outages or []
        self.handled: list[tuple[int, int]] = []  # (partition, offset) of every record of a batch that succeeded
        self.calls = 0
        self.block: asyncio.Event | None = None

    async def __call__(self, batch: Batch) -> None:
        self.calls += 1
        if self.block is not None:
            await self.block.wait()
        records = [r for rs in batch.values() for r in rs]
        if self.outages:
            raise self.outages.pop(0)
        bad = [r for r in records if r.value in self.poison]
        if bad:
            raise ValueError(f"cannot handle record {bad[0].offset}")
        self.handled.extend((r.partition, r.offset) for r in records)


class Quarantine:
    def __init__(self) -> None:
        self.records: list[tuple[int, int, str]] = []

    async def __call__(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        self.records.append((record.partition, record.offset, exc.__class__.__name__))


def logs(*sizes: int, poison: dict[int, set[int]] | None = None) -> dict[TopicPartition, list[bytes]]:
    """Partition logs of `sizes` records; offsets in `poison[partition]` hold b"poison"."""
    bad = poison or {}
    return {
        TopicPartition("raw_iot_data", p): [b"poison" if o in bad.get(p, ()) else b"v%d" % o for o in range(size)]
        for p, size in enumerate(sizes)
    }


class Run:
    """A BatchLoop over fake consumers (a fresh one per (re)start), and the consumers it made."""

    def __init__(self, data: dict[TopicPartition, list[bytes]], handler: Handler, **options: Any) -> None:
        self.data = data
        self.consumers: list[FakeConsumer] = []
        self.prepare: list[Callable[[FakeConsumer], None]] = []
        self.loop = BatchLoop(
            name="test", topic="raw_iot_data", group_id="g", handler=handler, kafka=KAFKA, max_records=4,
            fetch_timeout_ms=10, consumer_factory=self._consumer, **options,
        )  # fmt: skip

    def _consumer(self, **options: Any) -> FakeConsumer:
        consumer = FakeConsumer(self.data, **options)
        if self.consumers:  # a restart: the group kept what was committed
            consumer.committed_offsets = dict(self.consumers[-1].committed_offsets)
        if self.prepare:
            self.prepare.pop(0)(consumer)
        self.consumers.append(consumer)
        return consumer

    def committed(self) -> dict[int, int]:
        return {tp.partition: o for tp, o in self.consumers[-1].committed_offsets.items()} if self.consumers else {}

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout_s}s (last error: {self.loop.last_error})")
            await asyncio.sleep(0.005)


def ends(data: dict[TopicPartition, list[bytes]]) -> dict[int, int]:
    return {tp.partition: len(values) for tp, values in data.items()}


async def test_every_record_is_handled_once_in_order_and_committed() -> None:
    data, handler = logs(10, 7), Handler()
    run = Run(data, handler)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the ends")
    finally:
        await run.loop.stop()
    for partition, size in ends(data).items():
        assert [o for p, o in handler.handled if p == partition] == list(range(size))
    assert run.consumers[-1].stopped


async def test_an_outage_reads_the_batch_again_and_dead_letters_nothing() -> None:
    data, quarantine = logs(6), Quarantine()
    handler = Handler(outages=[KafkaConnectionError(), asyncpg.ConnectionDoesNotExistError("gone")])
    run = Run(data, handler, quarantine=quarantine)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
    finally:
        await run.loop.stop()
    tp = TopicPartition("raw_iot_data", 0)
    assert run.consumers[0].seeks[:2] == [(tp, 0), (tp, 0)]  # back to the batch's first record, each time
    assert sorted(set(handler.handled)) == [(0, o) for o in range(6)]
    assert quarantine.records == []


async def test_a_record_that_fails_alone_is_dead_lettered_and_the_rest_flows() -> None:
    data, quarantine = logs(9, 5, poison={0: {2}, 1: {3, 4}}), Quarantine()
    handler = Handler(poison=frozenset({b"poison"}))
    run = Run(data, handler, quarantine=quarantine)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing past the poison")
    finally:
        await run.loop.stop()
    assert sorted(quarantine.records) == [(0, 2, "ValueError"), (1, 3, "ValueError"), (1, 4, "ValueError")]
    assert run.loop.quarantined == 3
    for partition, good in ((0, [0, 1, 3, 4, 5, 6, 7, 8]), (1, [0, 1, 2])):
        assert [o for p, o in dict.fromkeys(handler.handled) if p == partition] == good  # in order


async def test_without_a_quarantine_every_failure_is_retried() -> None:
    data, handler = logs(3, poison={0: {1}}), Handler(poison=frozenset({b"poison"}))
    run = Run(data, handler)
    await run.loop.start()
    try:
        await run.until(lambda: handler.calls >= 5, "five tries")
        assert run.committed() == {}
        assert "ValueError" in (run.loop.last_error or "")
    finally:
        await run.loop.stop()


async def test_an_outage_while_isolating_reads_the_whole_batch_again() -> None:
    data, quarantine = logs(8, poison={0: {5}}), Quarantine()
    handler = Handler(poison=frozenset({b"poison"}))
    calls = 0
    original = handler.__call__

    async def flaky(batch: Batch) -> None:
        nonlocal calls
        calls += 1
        # Batches of 4: [0-3], then [4-7] fails twice and is halved: [4, 5], then
        # [4] alone (call 5) meets an outage, which must not dead-letter it.
        if calls == 5:
            raise KafkaTimeoutError()
        await original(batch)

    run = Run(data, handler, quarantine=quarantine)
    run.loop.handler = flaky
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing past the poison")
    finally:
        await run.loop.stop()
    assert quarantine.records == [(0, 5, "ValueError")]
    assert {o for _, o in handler.handled} == {0, 1, 2, 3, 4, 6, 7}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot even say what went wrong")


async def test_the_batch_is_sought_back_before_anything_else_can_raise() -> None:
    data, handler = logs(8), Handler(outages=[Unprintable()])
    run = Run(data, handler)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
    finally:
        await run.loop.stop()
    first = run.consumers[0]
    assert first.seeks[0] == (TopicPartition("raw_iot_data", 0), 0)
    assert all(c[TopicPartition("raw_iot_data", 0)] <= 4 for c in first.commits)  # never past the failed batch
    assert sorted(set(handler.handled)) == [(0, o) for o in range(8)]


async def test_a_loop_that_dies_is_restarted_with_a_fresh_consumer_at_the_committed_offsets() -> None:
    data, handler = logs(12), Handler()
    run = Run(data, handler)
    run.prepare.append(lambda c: c.fail_fetch.extend([AssertionError("aiokafka lost its coordinator")]))
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
        assert run.loop.running
    finally:
        await run.loop.stop()
    assert (run.loop.restarts, len(run.consumers), run.consumers[0].stopped) == (1, 2, True)
    assert sorted(set(handler.handled)) == [(0, o) for o in range(12)]


async def test_a_failed_commit_stays_pending_and_is_retried() -> None:
    data, handler = logs(4), Handler()
    run = Run(data, handler)
    run.prepare.append(lambda c: c.fail_commit.extend([KafkaConnectionError()]))
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
    finally:
        await run.loop.stop()
    assert run.consumers[0].commits[0] == {TopicPartition("raw_iot_data", 0): 4}
    assert handler.handled == [(0, o) for o in range(4)]


async def test_a_failed_commit_no_longer_stands_once_the_retry_commits() -> None:
    # The only batch went through before the commit failed: no batch after it may be what clears /health.
    data, handler = logs(4), Handler()
    run = Run(data, handler)
    run.prepare.append(lambda c: c.fail_commit.extend([KafkaConnectionError(), KafkaConnectionError()]))
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
        await run.until(lambda: run.loop.last_error is None, "the commit failure to be cleared")
    finally:
        await run.loop.stop()
    assert (run.consumers[0].fail_commit, run.consumers[0].commits, run.loop.restarts) == (
        [],
        [{TopicPartition("raw_iot_data", 0): 4}],
        0,
    )


async def test_a_failed_fetch_after_the_last_record_no_longer_stands_once_a_fetch_works() -> None:
    data, handler = logs(4), Handler()
    run = Run(data, handler)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "committing the end")
        run.consumers[0].fail_fetch.extend([KafkaConnectionError(), KafkaConnectionError()])
        await run.until(lambda: not run.consumers[0].fail_fetch, "both failed fetches")
        await run.until(lambda: run.loop.last_error is None, "the fetch failure to be cleared")
    finally:
        await run.loop.stop()
    assert (handler.handled, run.loop.restarts) == ([(0, o) for o in range(4)], 0)


async def test_a_handling_failure_is_not_cleared_by_a_fetch_that_works() -> None:
    handler = Handler(outages=[KafkaConnectionError() for _ in range(50)])
    run = Run(logs(4), handler)
    await run.loop.start()
    try:
        await run.until(lambda: handler.calls >= 10, "ten attempts")
        assert "handling 4 records failed" in (run.loop.last_error or "")
    finally:
        await run.loop.stop()


async def test_a_commit_refused_after_a_rebalance_forgets_the_partitions_gone() -> None:
    loop = Run(logs(4, 4), Handler()).loop
    consumer = FakeConsumer(logs(4, 4))
    consumer.assigned = {TopicPartition("raw_iot_data", 1)}
    consumer.fail_commit.append(CommitFailedError("the group rebalanced"))
    loop._consumer = consumer  # type: ignore[assignment]
    a, b = TopicPartition("raw_iot_data", 0), TopicPartition("raw_iot_data", 1)
    loop.pending.add({a: 4, b: 4})
    await loop._commit([a, b])
    assert loop.pending.of([a, b]) == {b: 4}


async def test_a_batch_that_ends_after_its_partition_was_revoked_adds_nothing_for_it() -> None:
    data, handler = logs(4, 4), Handler()
    handler.block = asyncio.Event()
    run = Run(data, handler, revoke_wait_s=0.05)
    await run.loop.start()
    try:
        await run.until(lambda: handler.calls == 1, "the first batch in flight")
        a, b = TopicPartition("raw_iot_data", 0), TopicPartition("raw_iot_data", 1)
        await run.consumers[0].assign({b})  # the revoke times out: the batch still runs
        handler.block.set()
        await run.until(lambda: run.committed().get(1) == 4, "committing partition 1")
        assert a not in run.loop.pending.partitions()
        assert all(a not in c for c in run.consumers[0].commits)
    finally:
        await run.loop.stop()


class SlowHooks:
    """Rebalance hooks whose restore of an assignment waits for `release` (the first one is quick)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.assignments = 0
        self.restored = 0

    async def on_assigned(self, assigned: list[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        self.assignments += 1
        if self.assignments > 1:
            await self.release.wait()
        self.restored += 1

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        pass


async def test_no_batch_runs_before_the_hooks_have_restored_the_assignment() -> None:
    """aiokafka makes an assignment fetchable before it calls the listener: a batch fetched meanwhile waits."""
    data, handler, hooks = logs(4, 4), Handler(), SlowHooks()
    run = Run(data, handler, hooks=hooks)
    await run.loop.start()
    try:
        await run.until(lambda: run.committed() == ends(data), "the first records committed")
        consumer = run.consumers[0]
        rebalance = asyncio.create_task(consumer.assign(set(data)))  # the restore of this one waits
        await run.until(lambda: hooks.assignments == 2, "the second assignment's hooks called")
        for values in data.values():
            values.extend([b"new"] * 3)  # fetchable at once
        handled = len(handler.handled)
        await asyncio.sleep(0.1)
        assert len(handler.handled) == handled, "a batch ran while the hooks were restoring its partitions"
        hooks.release.set()
        await rebalance
        await run.until(lambda: run.committed() == ends(data), "the new records committed after the restore")
        assert hooks.restored == 2
    finally:
        await run.loop.stop()


async def test_an_assignment_drops_pending_offsets_of_partitions_not_owned() -> None:
    run = Run(logs(4, 4), Handler())
    consumer = FakeConsumer(logs(4, 4))
    consumer.listener = None
    run.loop._consumer = consumer  # type: ignore[assignment]
    a, b = TopicPartition("raw_iot_data", 0), TopicPartition("raw_iot_data", 1)
    run.loop.pending.add({a: 3, b: 2})
    await run.loop.on_assigned([b])
    assert (run.loop.pending.of([a, b]), run.loop.owned) == ({b: 2}, {b})


@settings(derandomize=True, database=None, max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    poison=st.sets(st.integers(0, 11), max_size=3),
    outages=st.lists(st.sampled_from(["kafka", "db", "os"]), max_size=4),
)
def test_commits_never_pass_a_record_that_was_neither_handled_nor_dead_lettered(
    sizes: list[int], poison: set[int], outages: list[str]
) -> None:
    errors = {"kafka": KafkaConnectionError, "db": asyncpg.CannotConnectNowError, "os": ConnectionResetError}
    data = logs(*sizes, poison={p: poison for p in range(len(sizes))})
    handler = Handler(poison=frozenset({b"poison"}), outages=[errors[o]() for o in outages])
    quarantine = Quarantine()

    async def scenario() -> None:
        run = Run(data, handler, quarantine=quarantine)
        await run.loop.start()
        try:
            await run.until(lambda: run.committed() == ends(data), "committing the ends")
        finally:
            await run.loop.stop()
        safe = set(handler.handled) | {(p, o) for p, o, _ in quarantine.records}
        for commit in (c for consumer in run.consumers for c in consumer.commits):
            for tp, offset in commit.items():
                assert all((tp.partition, o) in safe for o in range(offset)), f"commit {offset} of {tp} skips one"
        expected_poison = {(p, o) for p, size in enumerate(sizes) for o in poison if o < size}
        assert {(p, o) for p, o, _ in quarantine.records} == expected_poison

    asyncio.run(scenario())
