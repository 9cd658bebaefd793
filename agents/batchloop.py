"""At-least-once batches from Kafka: fetch, hand off, await, and only then commit.

This is the one place that decides which offsets of the pipeline's input
topics may be committed. The rule is short: an offset is committed only
after its batch's handler returned, and a handler returns only once
everything made from the batch is safe (acknowledged by Kafka, or
committed by the database). A handler that raises commits nothing: the
batch is fetched again from its first offset. Nothing else moves an offset:
no gap between fetched offsets is ever counted as done, and a partition
that changes hands starts again at its committed offset (aiokafka never
returns records of a previous assignment).

What fails is sorted by one rule (:func:`f2stream.outage.is_outage`). An
outage (Kafka, the database, the network) has the whole batch fetched again
after a backoff, without limit, and never dead-letters anything. Any other
failure may come from one record that would fail the same way on every try:
the batch is tried once more, then split in halves until the failing record
is alone; that record goes to the stage's `quarantine` (a `handler_error`
dead letter) and the rest of the batch flows.

The loop cannot skip: a failed batch seeks its partitions back before
anything else runs, and the loop's task is supervised: if it dies, its
consumer is closed (its uncommitted offsets with it) and a fresh one joins
the group, after a backoff, at the committed offsets.

Why not Faust's stream acks: faust-streaming 0.15 counts a jump between
fetched offsets as acked and drops events queued during table recovery
untracked, so a rebalance can commit past records nobody processed
(docs/reliability.md, docs/upstream/).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service

from f2stream.backoff import Backoff
from f2stream.kafka_client import KafkaOptions
from f2stream.outage import is_outage

__all__ = [
    "Batch",
    "BatchLoop",
    "Handler",
    "PartitionHooks",
    "PendingCommits",
    "Quarantine",
    "first_offsets",
    "next_offsets",
    "split_batch",
]

logger = logging.getLogger(__name__)

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
Handler = Callable[[Batch], Awaitable[None]]
Quarantine = Callable[[ConsumerRecord[bytes, bytes], Exception], Awaitable[None]]


def next_offsets(batch: Batch) -> dict[TopicPartition, int]:
    """What to commit once every record of `batch` is safe: one past each partition's last record."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


def first_offsets(batch: Batch) -> dict[TopicPartition, int]:
    """Where to fetch `batch` again from when its handler failed."""
    return {tp: records[0].offset for tp, records in batch.items() if records}


class PartitionHooks(Protocol):
    """Told when a loop's partitions move (see :class:`BatchLoop`'s `hooks`)."""

    async def on_assigned(self, assigned: list[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        """Partitions assigned; nothing fetched from them yet."""

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Partitions revoked; no batch of theirs in flight any more."""


class PendingCommits:
    """Offsets whose records are safe and whose commit has not succeeded yet.

    Commits are cumulative, so per partition only the highest offset is kept;
    an offset never moves back.
    """

    __slots__ = ("_offsets",)

    def __init__(self) -> None:
        self._offsets: dict[TopicPartition, int] = {}

    def add(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember `offsets` as safe to commit."""
        for tp, offset in offsets.items():
            if offset > self._offsets.get(tp, -1):
                self._offsets[tp] = offset

    def of(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The pending offsets of `partitions`."""
        return {tp: self._offsets[tp] for tp in partitions if tp in self._offsets}

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """`offsets` are committed: forget them unless a higher one arrived meanwhile."""
        for tp, offset in offsets.items():
            if self._offsets.get(tp) == offset:
                del self._offsets[tp]

    def partitions(self) -> list[TopicPartition]:
        """The partitions with a pending offset."""
        return list(self._offsets)

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget `partitions`: they went to another consumer, which starts at the committed offset."""
        for tp in partitions:
            self._offsets.pop(tp, None)

    def __bool__(self) -> bool:
        return bool(self._offsets)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.on_assigned(assigned)


def split_batch(records: Sequence[ConsumerRecord[bytes, bytes]]) -> Batch:
    """Records (in fetch order) as a batch: by partition, each partition's records in their order."""
    batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return batch


class BatchLoop(Service):
    """One consumer group member: fetches batches of `topic`, hands each to `handler`, commits after it.

    Args:
        name: the loop's name in logs and task names (`decode`, `sink`).
        topic: the input topic.
        group_id: the consumer group; every worker running this loop joins it.
        handler: awaited with each batch; returns once all that was made of it
            is safe, raises to have the batch fetched again (after a backoff).
        quarantine: awaited with a record that fails alone, not for an outage,
            and its exception; returns once the record's dead letter is safe.
            Without it every failure is retried as an outage.
        kafka: where and how to connect (:func:`f2stream.kafka_client.kafka_options`).
        max_records: most records per batch.
        fetch_timeout_ms: how long a fetch waits for records.
        ready: awaited before the loop joins the group (e.g. parameters loaded).
        revoke_wait_s: how long a rebalance waits for the batch in flight
            before it gives the partitions up (that batch is then processed
            again by the new owner: duplicates, absorbed downstream, never a loss).
        stop_timeout_s: how long stopping waits for the batch in flight.
        consumer_options: more AIOKafkaConsumer options.
        consumer_factory: makes the consumer from its options (tests pass a fake).
        hooks: told of partitions assigned (with their committed offsets,
            before anything is fetched from them) and revoked (after the
            batch in flight), e.g. state kept per partition.
    """

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        group_id: str,
        handler: Handler,
        kafka: KafkaOptions,
        max_records: int,
        quarantine: Quarantine | None = None,
        fetch_timeout_ms: int = 200,
        ready: Callable[[], Awaitable[None]] | None = None,
        revoke_wait_s: float = 20.0,
        stop_timeout_s: float = 30.0,
        consumer_options: Mapping[str, Any] | None = None,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
        hooks: PartitionHooks | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_records < 1 or fetch_timeout_ms < 0:
            raise ValueError(f"max_records must be >= 1 and fetch_timeout_ms >= 0 ({max_records}, {fetch_timeout_ms})")
        self.name = name
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.quarantine = quarantine
        self.max_records = max_records
        self.fetch_timeout_ms = fetch_timeout_ms
        self.ready = ready
        self.revoke_wait_s = revoke_wait_s
        self.stop_timeout_s = stop_timeout_s
        self.consumer_options: dict[str, Any] = {
            **kafka,
            "group_id": group_id,
            "client_id": f"f2stream-{name}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **(consumer_options or {}),
        }
        self.consumer_factory = consumer_factory
        self.hooks = hooks
        self._consumer: AIOKafkaConsumer | None = None  # made on start: aiokafka needs the running loop
        self.pending = PendingCommits()
        #: The last committed offset of each assigned partition (for lag).
        self.committed: dict[TopicPartition, int] = {}
        #: The partitions this member owns: set on assignment, emptied of revoked ones at once.
        self.owned: set[TopicPartition] = set()
        #: What failed last and why, until it works again (`/health`'s loops entry).
        self.last_error: str | None = None
        self._failing: str | None = None  # the step that failed: fetching, committing, ...
        #: Records dead-lettered because they failed alone, and loop restarts, since start.
        self.quarantined = 0
        self.restarts = 0
        self._in_flight = asyncio.Lock()
        #: Clear from a rebalance's revocation until the hooks have taken its assignment: aiokafka makes
        #: an assignment fetchable before it calls the listener, and no batch may run before the hooks.
        self._hooks_done = asyncio.Event()
        self._hooks_done.set()
        self._task: asyncio.Task[None] | None = None
        self._joined = False

    async def on_start(self) -> None:
        """Start the loop's supervised task: it joins the group once `ready` returned."""
        self._task = asyncio.create_task(self._supervise(), name=f"f2stream-{self.name}-loop")

    async def on_stop(self) -> None:
        """Let the batch in flight finish (within `stop_timeout_s`), commit, leave the group."""
        task, self._task = self._task, None
        if task is not None and not self._joined:  # still waiting to be ready or to join: nothing in flight
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_timeout_s)
            except TimeoutError:
                logger.warning("%s: the batch in flight did not finish within %.0fs; it will be re-read", self.name,
                               self.stop_timeout_s)  # fmt: skip
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._consumer is not None:
            if self._joined:
                await self._commit(self.assignment())
            await self._close_consumer()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The group member's consumer (once started)."""
        if self._consumer is None:
            raise RuntimeError(f"{self.label} is not started")
        return self._consumer

    @property
    def running(self) -> bool:
        """True while the loop's task is alive (it may be waiting for Kafka)."""
        return self._task is not None and not self._task.done()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now (none before it joined)."""
        return set() if self._consumer is None else set(self._consumer.assignment())

    async def _supervise(self) -> None:
        backoff, ready = Backoff(1.0, 30.0), self.ready is None
        while not self.should_stop:
            try:
                if not ready and self.ready is not None:
                    await self.ready()
                    ready = True
                await self._run()
                return
            except Exception as exc:  # whatever ended the loop: a fresh consumer starts over
                self.restarts += 1
                self.last_error, self._failing = f"the loop stopped: {exc.__class__.__name__}: {exc}", "running"
                logger.exception("%s: the loop stopped; a fresh consumer rejoins at the committed offsets", self.name)
                await self._close_consumer()
                await asyncio.sleep(backoff.next())

    async def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._joined = False
        self.pending = PendingCommits()  # never committed by another consumer: re-read, absorbed downstream
        if self.hooks is not None and self.owned:
            await self.hooks.on_revoked(list(self.owned))
        self.owned.clear()
        self.committed.clear()
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:  # a broken consumer may fail to stop; it is dropped either way
                logger.warning("%s: stopping the consumer failed", self.name, exc_info=True)

    async def _run(self) -> None:
        self._consumer = self.consumer_factory(**self.consumer_options)
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        backoff = Backoff()
        while not self._joined:
            try:
                await self.consumer.start()
                self._joined = True
                self._recovered("joining", "running")
            except KafkaError as exc:  # Kafka not up yet: keep trying, the worker serves /health meanwhile
                self._failed("joining", exc)
                await asyncio.sleep(backoff.next())
        logger.info("%s: consuming %s as group %s", self.name, self.topic, self.group_id)
        backoff.reset()
        while not self.should_stop:
            try:
                batch = await self.consumer.getmany(timeout_ms=self.fetch_timeout_ms, max_records=self.max_records)
            except KafkaError as exc:  # fetching failed: Kafka down or moving; aiokafka reconnects
                self._failed("fetching", exc)
                await asyncio.sleep(backoff.next())
                continue
            self._recovered("fetching")
            if batch and not self._hooks_done.is_set():  # fetched while the hooks restore: wait for them
                await self._hooks_done.wait()
                batch = {tp: records for tp, records in batch.items() if tp in self.owned}
            if batch and not await self._handle(batch):
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            if self.pending:
                await self._commit(self.assignment())

    async def _handle(self, batch: Batch) -> bool:
        """Process a batch; True once it is safe (its offsets pending), False to have it fetched again."""
        async with self._in_flight:
            try:
                await self._process(batch)
            except BaseException as exc:
                # Back to the batch's start before anything else can raise: the
                # next fetch must never begin past a record that is not safe.
                self._rewind(first_offsets(batch))
                if not isinstance(exc, Exception):
                    raise
                self._failed("handling", exc, f"handling {sum(map(len, batch.values()))} records")
                return False
            # A partition revoked meanwhile has a new owner, who reads it again
            # from the committed offset: nothing to commit for it here.
            self.pending.add({tp: offset for tp, offset in next_offsets(batch).items() if tp in self.owned})
            self.last_error = self._failing = None  # a batch went through: nothing stands in the way
            return True

    async def _process(self, batch: Batch) -> None:
        """Hand `batch` to the handler; a failure that is not an outage, twice, isolates the record behind it.

        Raises:
            Exception: an outage (or any failure without `quarantine`): the batch is read again.
        """
        for attempt in (1, 2):
            try:
                await self.handler(batch)
                return
            except Exception as exc:
                if self.quarantine is None or is_outage(exc):
                    raise
                logger.warning("%s: a batch of %d records failed (%s: %s), try %d of 2", self.name,
                               sum(map(len, batch.values())), exc.__class__.__name__, exc, attempt)  # fmt: skip
        await self._isolate(list(chain.from_iterable(batch.values())))

    async def _isolate(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Halve `records` until each failing one is alone, in order; dead-letter those, the rest is handled."""
        middle = len(records) // 2
        for part in (records[:middle], records[middle:]):
            if not part:
                continue
            try:
                await self.handler(split_batch(part))
            except Exception as exc:
                if is_outage(exc):
                    raise
                if len(part) > 1:
                    await self._isolate(part)
                else:
                    await self._quarantine(part[0], exc)

    async def _quarantine(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        assert self.quarantine is not None
        logger.error("%s: record %s/%d/%d fails alone (%s: %s); dead-lettered as handler_error", self.name,
                     record.topic, record.partition, record.offset, exc.__class__.__name__, exc)  # fmt: skip
        await self.quarantine(record, exc)
        self.quarantined += 1

    def _rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Seek back; never raises (a partition gone meanwhile restarts at its committed offset anyway)."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp, offset in offsets.items():
            try:
                consumer.seek(tp, offset)
            except Exception:  # not assigned any more, or the consumer is closing
                logger.debug("%s: no seek of %s to %d", self.name, tp, offset, exc_info=True)

    async def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        offsets = self.pending.of(partitions)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: these partitions have another owner, who
            # starts at the last committed offset and processes them again.
            logger.info("%s: commit refused after a rebalance (%s); the new owner re-reads", self.name, exc)
            lost = set(offsets) - self.assignment()
            self.pending.drop(lost)
        except KafkaError as exc:  # Kafka unavailable: kept pending, retried after the next batch
            self._failed("committing", exc)
        else:
            self.pending.committed(offsets)
            self.committed.update(offsets)
            self._recovered("committing")

    def _failed(self, step: str, exc: BaseException, what: str = "") -> None:
        self.last_error, self._failing = f"{what or step} failed: {exc.__class__.__name__}: {exc}", step
        logger.warning("%s: %s", self.name, self.last_error)

    def _recovered(self, *steps: str) -> None:
        """One of `steps` worked again: the failure it left no longer stands (another step's does)."""
        if self._failing in steps:
            self.last_error = self._failing = None

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before partitions go: let the batch in flight finish, commit what is safe, forget them."""
        if self.hooks is not None:
            self._hooks_done.clear()  # set again once the hooks have taken the next assignment
        try:
            await asyncio.wait_for(self._in_flight.acquire(), self.revoke_wait_s)
        except TimeoutError:
            logger.warning("%s: batch in flight still running after %.0fs; giving up %d partitions uncommitted",
                           self.name, self.revoke_wait_s, len(revoked))  # fmt: skip
        else:
            try:
                await self._commit(revoked)
            finally:
                self._in_flight.release()
        self.owned.difference_update(revoked)  # a batch that ends later adds nothing for them
        self.pending.drop(revoked)
        for tp in revoked:
            self.committed.pop(tp, None)
        if self.hooks is not None:
            await self.hooks.on_revoked(revoked)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """New partitions start at their committed offsets; pending offsets of any other partition are dropped.

        An assignment that completes while the consumer is being closed (the
        revoke hook awaits) is moot: the closing consumer leaves the group.
        """
        consumer = self._consumer
        if consumer is None:
            self._hooks_done.set()
            return
        self.owned = set(assigned)
        self.pending.drop([tp for tp in self.pending.partitions() if tp not in self.owned])
        for tp in assigned:
            try:
                offset = await consumer.committed(tp)
            except KafkaError:
                continue
            if offset is not None:
                self.committed[tp] = offset
        if self.hooks is not None:
            try:
                await self.hooks.on_assigned(assigned, self.committed)
            finally:
                self._hooks_done.set()

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the end of each assigned partition: high water minus committed offset."""
        lag: dict[tuple[str, int], int] = {}
        for tp in self.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            lag[(tp.topic, tp.partition)] = max(0, high - self.committed.get(tp, 0))
        return lag

    @property
    def label(self) -> str:
        """Name of the service in Faust's logs."""
        return f"BatchLoop({self.name})"
