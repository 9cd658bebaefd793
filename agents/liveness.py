"""The liveness tracker: device liveness kept by the decode stage, silence found by a timer.

Per message the decode stage hands over what it saw (:data:`~f2stream.liveness.Seen`);
the tracker updates the owning device's entry in memory and returns the
records the batch must produce with its decoded records: `device_status`
events and the changelog records of the devices that changed state. They
are acknowledged by Kafka before the batch's offsets are committed, so a
committed offset never runs ahead of a state change. A timer (every
`F2_LIVENESS_TICK_S`) pops the silence deadlines that came due, applies
registry changes, and every `F2_LIVENESS_CHECKPOINT_S` writes the changelog
records of the devices that received something since, with a checkpoint
per partition (see :mod:`f2stream.tables.liveness`).

Ownership follows the decode group: a worker tracks the devices of the
raw_iot_data partitions its decode loop holds. On assignment it restores
them (changelog, then raw records from the checkpoint to the committed
offset) before its loop fetches anything; on revocation it writes their
records and a checkpoint, then forgets them. A partition whose decode
silence deadlines wait until the decode loop has applied its partition up
to the high water it last fetched, later than the deadline: after a
restart, a device's messages in the backlog are read before it can be
declared silent.

The `device_status` topic is written to PostgreSQL by the status loop
(:class:`StatusSink`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from mode import Service
from prometheus_client import Counter, Gauge

from f2stream.agents.batchloop import Batch
from f2stream.agents.producer import Output, Producer
from f2stream.backoff import Backoff
from f2stream.kafka_topics import LIVENESS_TOPIC, STATUS_TOPIC
from f2stream.liveness import (
    CHECKPOINT_KEY,
    STATES,
    DeviceLiveness,
    Seen,
    StatusChange,
    encode_change,
    encode_checkpoint,
    encode_device,
    parse_time,
)
from f2stream.metrics import Metrics
from f2stream.settings import Settings
from f2stream.storage.status import StatusWriter
from f2stream.tables.liveness import LivenessConfig, LivenessTable, Restored, partition_of

__all__ = ["LivenessTracker", "StatusSink"]

logger = logging.getLogger(__name__)

#: Margin between a receipt and its record being visible in a fetch's high water.
_RECEIPT_TO_FETCH_S = 1.0


class LivenessTracker(Service):
    """Device liveness for the partitions this worker's decode loop owns.

    Args:
        has_parameters: True for a device with parameters; with the registry
            this says which device ids are tracked (never arbitrary ids from
            bad input, which would grow memory without bound).
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        metrics: Metrics,
        has_parameters: Callable[[str], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.producer = producer
        self.has_parameters = has_parameters
        self.config = LivenessConfig(settings)
        self.add_dependency(self.config)
        self.table = LivenessTable(settings, self.config)
        self.live = self.table.state
        self.lock = asyncio.Lock()
        self.outbox: list[Output] = []
        self.held: set[int] = set()
        self.processed_to: dict[int, int] = {}
        self._checkpointed: dict[int, int] = {}
        self._last_checkpoint = 0.0
        #: The high water of a raw partition as the decode consumer last fetched it (set by the stages).
        self.highwater_of: Callable[[int], int | None] = lambda partition: None
        self._caught_up_at: dict[int, float] = {}
        #: raw_iot_data's partition count (set by the stages from the decode consumer's metadata).
        self.partition_count: Callable[[], int] = lambda: settings.topic_partitions
        self.last_restore: Restored | None = None
        self.last_error: str | None = None
        registry = metrics.registry
        self.by_state = Gauge("f2_devices_by_state", "Devices this worker tracks, by liveness state", ["state"],
                              registry=registry)  # fmt: skip
        for state in STATES:
            self.by_state.labels(state=state).set_function(partial(self.live.counts.__getitem__, state))
        self.changes = Counter("f2_device_state_changes_total", "Liveness state changes, by new state", ["to"],
                               registry=registry)  # fmt: skip
        for state in STATES:
            self.changes.labels(to=state)
        self.overdue = Gauge(
            "f2_devices_silent_overdue",
            "Devices silent for longer than their timeout (a silence is noticed within a tick of its deadline)",
            registry=registry,
        )
        self.overdue.set_function(lambda: self.live.counts["silent"])

    def eligible(self, device: str) -> bool:
        """Whether messages of `device` are tracked: registered, or with parameters."""
        return device in self.config.snapshot.registry or self.has_parameters(device)

    # ------------------------------------------------------------------ the decode stage's batches

    @asynccontextmanager
    async def batch(self, seen: Iterable[Seen]) -> AsyncIterator[list[Output]]:
        """Apply a decoded batch; yield what to produce with it. If the block raises, it is kept for the next send."""
        async with self.lock:
            now = time.time()
            changes: list[StatusChange] = []
            ends: dict[int, int] = {}
            state, held, devices = self.live, self.held, self.live.devices
            for key, partition, offset, received_at, device_time, dead in seen:
                ends[partition] = offset + 1
                if key is None or received_at is None or partition not in held:
                    continue
                device = key.decode("utf-8", "replace")
                if device not in devices and not self.eligible(device):
                    continue
                receipt = parse_time(received_at)
                if receipt is None:
                    continue
                change = state.observe(device, partition, offset, receipt, parse_time(device_time), dead, now)
                if change is not None:
                    changes.append(change)
            outputs = self._take_outbox() + self._emit(changes)
            try:
                yield outputs
            except BaseException:
                self.outbox[:0] = outputs
                raise
            for partition, end in ends.items():
                if end > self.processed_to.get(partition, -1):
                    self.processed_to[partition] = end

    def _take_outbox(self) -> list[Output]:
        outputs, self.outbox = self.outbox, []
        return outputs

    def _emit(self, changes: list[StatusChange]) -> list[Output]:
        """A change's event and its device's changelog record (the record first: a restore then knows it)."""
        outputs: list[Output] = []
        for change in changes:
            d = self.live.get(change.device)
            key = change.device.encode()
            if d is not None:
                outputs.append(Output(LIVENESS_TOPIC, key, encode_device(d), d.partition))
                outputs.append(Output(STATUS_TOPIC, key, encode_change(change), d.partition))
            self.changes.labels(to=change.to_state).inc()
            if change.to_state == "silent":
                logger.info("%s is silent (%s; last seen %s)", change.device, change.reason, change.last_seen)
        return outputs

    def _checkpoint(self, partitions: Iterable[int]) -> list[Output]:
        """Changelog records of the devices changed since the last checkpoint, then one checkpoint per partition."""
        partitions = list(partitions)
        outputs: list[Output] = []
        for devices in self.live.take_dirty(partitions).values():
            outputs.extend(_record(d) for d in devices)
        for partition in partitions:
            end = self.processed_to.get(partition)
            if end is not None and end != self._checkpointed.get(partition):
                outputs.append(Output(LIVENESS_TOPIC, CHECKPOINT_KEY, encode_checkpoint(end), partition))
                self._checkpointed[partition] = end
        return outputs

    # ------------------------------------------------------------------ the timer

    @Service.task
    async def _ticker(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.liveness_tick_s)
            try:
                await self.tick()
                self.last_error = None
            except KafkaError as exc:  # what was not sent waits in the outbox for the next tick or batch
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning("Liveness: producing changes failed (%s); retrying", self.last_error)
            except Exception as exc:  # a bug must not end the timer (and with it the worker)
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.exception("Liveness tick failed")

    def _read_until(self, partition: int) -> float:
        return self._caught_up_at.get(partition, 0.0) if partition in self.held else 0.0

    def _note_caught_up(self, now: float) -> None:
        """A partition whose applied records reach its high water was read up to about now."""
        for p in self.held:
            high = self.highwater_of(p)
            if high is not None and self.processed_to.get(p, -1) >= high:
                self._caught_up_at[p] = now - _RECEIPT_TO_FETCH_S

    async def tick(self, now: float | None = None) -> list[StatusChange]:
        """Expire due deadlines, apply registry changes, checkpoint when due; return the changes."""
        async with self.lock:
            now = time.time() if now is None else now
            self._note_caught_up(now)
            changes: list[StatusChange] = self.live.expire(now, self._read_until)
            if self.config.changed.is_set():
                self.config.changed.clear()
                changes += self._reconcile(self.held, now)
            outputs = self._take_outbox() + self._emit(changes)
            if now - self._last_checkpoint >= self.settings.liveness_checkpoint_s or self._unmarked():
                outputs += self._checkpoint(self.held)
                self._last_checkpoint = now
            if outputs:
                try:
                    await self.producer.send_all(outputs)
                except BaseException:
                    self.outbox[:0] = outputs
                    raise
            return changes

    def _unmarked(self) -> bool:
        return any(p in self.processed_to and p not in self._checkpointed for p in self.held)

    def _reconcile(self, partitions: Iterable[int], now: float) -> list[StatusChange]:
        """Registry to state for `partitions`: new devices `never_seen`, revocations, reinstatements."""
        wanted = set(partitions)
        if not wanted:
            return []
        count = self.partition_count()
        changes = []
        for device in self.config.snapshot.device_timeouts:  # a shorter timeout applies at once
            self.live.rearm(device)
        for device, revoked in self.config.snapshot.registry.items():
            partition = partition_of(device, count)
            if partition in wanted:
                change = self.live.register(device, partition, revoked, now)
                if change is not None:
                    changes.append(change)
        return changes

    # ------------------------------------------------------------------ the decode group's rebalances

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Before the partitions go: write their changed devices and a checkpoint, then forget them."""
        partitions = [tp.partition for tp in revoked if tp.partition in self.held]
        async with self.lock:
            outputs = self._take_outbox() + self._checkpoint(partitions)
            if outputs:
                try:
                    await asyncio.wait_for(self.producer.send_all(outputs), 10.0)
                except (KafkaError, TimeoutError) as exc:  # the next owner replays from the older checkpoint
                    logger.warning("Liveness: checkpoint on revocation failed (%s); the next owner reads more", exc)
                    self.outbox[:0] = [o for o in outputs if o.topic == STATUS_TOPIC]
            for p in partitions:
                self.held.discard(p)
                self._caught_up_at.pop(p, None)
                self.processed_to.pop(p, None)
                self._checkpointed.pop(p, None)
                self.live.drop_partition(p)

    async def on_assigned(self, assigned: Iterable[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        """Restore the assigned partitions' devices before the decode loop fetches from them.

        Kafka errors are retried: the decode loop waits (it could not fetch either).
        """
        partitions = sorted(tp.partition for tp in assigned)
        offsets = {tp.partition: committed.get(tp) for tp in assigned}
        async with self.lock:
            await self.config.wait_loaded()
            for p in self.held - set(partitions):
                self.live.drop_partition(p)
            self.held.clear()
            backoff = Backoff(1.0, 10.0)
            while True:  # the loop must not fetch these partitions before their devices are back
                try:
                    restored = await self.table.restore(partitions, offsets, self.eligible)
                    break
                except KafkaError as exc:
                    logger.warning("Liveness: restoring partitions %s failed (%s); retrying", partitions, exc)
                    await asyncio.sleep(backoff.next())
            self.held = set(partitions)
            self.processed_to = {p: o for p, o in offsets.items() if o is not None}
            self._checkpointed = {}
            self._caught_up_at = {}
            self.last_restore = restored
            changes = restored.changes + self._reconcile(partitions, time.time())
            self.outbox += self._emit(changes)
        logger.info("Liveness: %d partitions restored, %d devices, %d raw records replayed, in %.2fs",
                    len(partitions), restored.devices, restored.replayed, restored.seconds)  # fmt: skip


def _record(d: DeviceLiveness) -> Output:
    return Output(LIVENESS_TOPIC, d.device.encode(), encode_device(d), d.partition)


class StatusSink:
    """The status loop's handler: `device_status` events into PostgreSQL (history rows, current state)."""

    def __init__(self, writer: StatusWriter) -> None:
        self.writer = writer

    async def __call__(self, batch: Batch) -> None:
        """Write the batch's events; unreadable ones are skipped and logged (they carry no state)."""
        events = []
        for records in batch.values():
            for record in records:
                try:
                    events.append(orjson.loads(record.value or b""))
                except orjson.JSONDecodeError:
                    logger.warning("Unreadable device_status record %s/%d skipped", record.partition, record.offset)
        await self.writer.write(events)
