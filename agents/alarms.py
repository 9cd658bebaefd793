"""The alarm tracker: rules evaluated on the decode stage's batches, durations ended by a timer.

Per batch the decode stage hands each message it decodes (with its raw
partition, offset and receipt) to the batch's :class:`Evaluation` as it
decodes it (no message object outlives its record's decoding: holding a
batch of them costs more in garbage collection than the rules do); the
tracker evaluates the owning device's rules (:mod:`f2stream.alarms`) and
returns the transitions the batch must produce with its decoded records, to
`alarm_events`. They are
acknowledged by Kafka before the batch's offsets are committed, so a
committed offset never runs ahead of a transition: the batch path's commit
rule, the one the pipeline's reliability rests on (docs/reliability.md).

A timer (every `F2_ALARMS_TICK_S`) raises the conditions whose duration
passed with no message against them (a door held open), applies rule
reloads and operators' acknowledgements, and every `F2_ALARMS_CHECKPOINT_S`
writes the changelog records of the devices changed since, with a
checkpoint per partition (see :mod:`f2stream.tables.alarms`, which also says
how a transition already produced is not produced again).

Ownership follows the decode group, as liveness does: a worker holds the
alarm state of the raw_iot_data partitions its decode loop holds, restored
before its loop fetches anything.

The `alarm_events` topic is written to PostgreSQL by the alarm loop
(:class:`AlarmSink`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from mode import Service
from prometheus_client import Counter, Gauge

from f2stream.agents.batchloop import Batch
from f2stream.agents.producer import Output, Producer
from f2stream.alarm_rules import KINDS, SEVERITIES
from f2stream.alarms import TRANSITIONS, AlarmEvent, encode_device, encode_event
from f2stream.alarms import decode_event as read_event
from f2stream.backoff import Backoff
from f2stream.codec.message import CodecSource
from f2stream.kafka_topics import ALARM_EVENTS_TOPIC, ALARM_STATE_TOPIC
from f2stream.metrics import Metrics
from f2stream.settings import Settings
from f2stream.storage.alarms import AlarmWriter
from f2stream.tables.alarms import CHECKPOINT_KEY, AlarmConfig, AlarmTable, Restored, encode_checkpoint

__all__ = ["AlarmSink", "AlarmTracker", "Evaluation"]

logger = logging.getLogger(__name__)

#: Margin between a receipt and its record being visible in a fetch's high water.
_RECEIPT_TO_FETCH_S = 1.0


class AlarmTracker(Service):
    """Alarm rules over the decoded messages of the partitions this worker's decode loop owns."""

    def __init__(self, settings: Settings, producer: Producer, metrics: Metrics, params: CodecSource,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.settings = settings
        self.producer = producer
        self.config = AlarmConfig(settings)
        self.add_dependency(self.config)
        self.table = AlarmTable(settings, self.config, params)
        self.alarm_state = self.table.state
        #: The raw partitions whose state this worker holds (the state's own set: it skips the others).
        self.held: set[int] = set()
        self.alarm_state.held = self.held
        self.lock = asyncio.Lock()
        self.outbox: list[Output] = []
        self.processed_to: dict[int, int] = {}
        #: Per partition, the transitions found already produced at its restore (not produced again).
        self.emitted: dict[int, set[tuple[str, str]]] = {}
        self._events_from: dict[int, int] = {}
        self.duplicates_dropped = 0
        self._checkpointed: dict[int, int] = {}
        self._last_checkpoint = 0.0
        self._caught_up_at: dict[int, float] = {}
        #: The high water of a raw partition as the decode consumer last fetched it (set by the stages).
        self.highwater_of: Callable[[int], int | None] = lambda partition: None
        self.last_restore: Restored | None = None
        self.last_error: str | None = None
        registry = metrics.registry
        self.active = Gauge("f2_alarms_active", "Active alarms (raised or acknowledged) this worker holds",
                            ["kind", "severity"], registry=registry)  # fmt: skip
        for kind in KINDS:
            for severity in SEVERITIES:
                self.active.labels(kind=kind, severity=severity).set_function(partial(self._active, kind, severity))
        self.transitions = Counter("f2_alarm_transitions_total", "Alarm transitions produced, by kind",
                                   ["kind", "transition"], registry=registry)  # fmt: skip
        for kind in KINDS:
            for transition in TRANSITIONS:
                self.transitions.labels(kind=kind, transition=transition)
        self.late = Gauge("f2_alarm_late_messages", "Messages older (device time) than the last of their "
                          "device's component, ignored, since this worker started", registry=registry)  # fmt: skip
        self.late.set_function(lambda: self.alarm_state.late)

    def _active(self, kind: str, severity: str) -> float:
        return self.alarm_state.active.get((kind, severity), 0)

    # ------------------------------------------------------------------ the decode stage's batches

    @asynccontextmanager
    async def batch(self, ends: Mapping[int, int]) -> AsyncIterator[Evaluation]:
        """A decode batch's evaluation: the stage observes each message as it decodes it, then produces
        :meth:`Evaluation.outputs` with the batch. If the block raises, the transitions wait for the next send.

        `ends` is, per raw partition, the offset after the batch's last record (decoded or not).
        """
        async with self.lock:
            fetched_at = time.time()
            highs = {p: high for p in ends if (high := self.highwater_of(p)) is not None}
            evaluation = Evaluation(self)
            try:
                yield evaluation
            except BaseException:
                self.outbox[:0] = evaluation.taken
                raise
            for partition, end in ends.items():
                if end > self.processed_to.get(partition, -1):
                    self.processed_to[partition] = end
                if end >= highs.get(partition, end + 1):  # the batch read its partition up to its fetch
                    read = fetched_at - _RECEIPT_TO_FETCH_S
                    if read > self._caught_up_at.get(partition, 0.0):
                        self._caught_up_at[partition] = read

    def _take_outbox(self) -> list[Output]:
        outputs, self.outbox = self.outbox, []
        return outputs

    def _emit(self, events: list[AlarmEvent]) -> list[Output]:
        """The transitions' records, less those a previous owner already produced."""
        outputs: list[Output] = []
        for event in events:
            emitted = self.emitted.get(event.raw_partition)
            if emitted and event.key in emitted:
                emitted.discard(event.key)
                self.duplicates_dropped += 1
                continue
            outputs.append(Output(ALARM_EVENTS_TOPIC, event.device_id.encode(), encode_event(event),
                                  event.raw_partition))  # fmt: skip
            self.transitions.labels(kind=event.kind, transition=event.transition).inc()
            if event.transition == "raised":
                logger.info("Alarm %s raised (%s, %s): %s", event.alarm_id, event.kind, event.severity, event.reason)
        return outputs

    async def _checkpoint(self, partitions: Iterable[int]) -> list[Output]:
        """Changelog records of the devices changed since the last checkpoint, then one checkpoint per partition."""
        partitions = [p for p in partitions if p in self.processed_to]
        if not partitions:
            return []
        outputs = [
            Output(ALARM_STATE_TOPIC, d.device.encode(), encode_device(d), d.partition)
            for d in self.alarm_state.take_dirty(partitions)
        ]
        ends = await self.table.events_end(partitions)  # every transition so far is below it: all were sent
        for p in partitions:
            raw = self.processed_to[p]
            # While transitions found at the restore wait to be met again, the next owner must find them too.
            events = self._events_from[p] if self.emitted.get(p) and p in self._events_from else ends[p]
            outputs.append(Output(ALARM_STATE_TOPIC, CHECKPOINT_KEY, encode_checkpoint(raw, events), p))
            self._checkpointed[p] = raw
        return outputs

    # ------------------------------------------------------------------ the timer

    @Service.task
    async def _ticker(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.alarms_tick_s)
            try:
                await self.tick()
                self.last_error = None
            except KafkaError as exc:  # what was not sent waits in the outbox for the next tick or batch
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning("Alarms: producing transitions failed (%s); retrying", self.last_error)
            except Exception as exc:  # a bug must not end the timer (and with it the worker)
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.exception("Alarm tick failed")

    def _read_until(self, partition: int) -> float:
        return self._caught_up_at.get(partition, 0.0) if partition in self.held else 0.0

    def _note_caught_up(self, now: float) -> None:
        """An idle partition, read up to the high water it last fetched, is read up to about now.

        (Under steady traffic the decode batches say it instead: each batch that read its partition up to
        the high water of its fetch, read it up to about when it was fetched.)
        """
        for p in self.held:
            high = self.highwater_of(p)
            if high is not None and self.processed_to.get(p, -1) >= high:
                self._caught_up_at[p] = now - _RECEIPT_TO_FETCH_S

    def _acknowledgements(self) -> list[AlarmEvent]:
        acks, self.config.acks = self.config.acks, []
        return [e for a in acks if (e := self.alarm_state.acknowledge(a.alarm_id, a.by, a.at)) is not None]

    async def tick(self, now: float | None = None) -> list[AlarmEvent]:
        """Raise what the timers say, apply rule changes and acknowledgements, checkpoint when due."""
        async with self.lock:
            now = time.time() if now is None else now
            self._note_caught_up(now)
            events = self.alarm_state.expire(now, self._read_until)
            if self.config.changed.is_set():
                self.config.changed.clear()
                events += self.alarm_state.reconcile(self.held)
            if self.config.acks:
                events += self._acknowledgements()
            outputs = self._take_outbox() + self._emit(events)
            if outputs:
                try:
                    await self.producer.send_all(outputs)
                except BaseException:
                    self.outbox[:0] = outputs
                    raise
            if now - self._last_checkpoint >= self.settings.alarms_checkpoint_s or self._unmarked():
                marks = await self._checkpoint(self.held)
                try:
                    await self.producer.send_all(marks)
                except BaseException:  # their devices are due again at the next checkpoint
                    self.alarm_state.mark_dirty(m.key.decode() for m in marks if m.key and m.key != CHECKPOINT_KEY)
                    raise
                self._last_checkpoint = now
            return events

    def _unmarked(self) -> bool:
        return any(p in self.processed_to and p not in self._checkpointed for p in self.held)

    # ------------------------------------------------------------------ the decode group's rebalances

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Before the partitions go: produce what waits, write their changed devices and a checkpoint, forget them."""
        partitions = [tp.partition for tp in revoked if tp.partition in self.held]
        async with self.lock:
            try:
                outputs = self._take_outbox()
                await asyncio.wait_for(self.producer.send_all(outputs), 10.0)
                await asyncio.wait_for(self.producer.send_all(await self._checkpoint(partitions)), 10.0)
            except (KafkaError, TimeoutError) as exc:  # the next owner replays from the older checkpoint
                logger.warning("Alarms: checkpoint on revocation failed (%s); the next owner reads more", exc)
            for p in partitions:
                self.held.discard(p)
                self.emitted.pop(p, None)
                self._events_from.pop(p, None)
                self._caught_up_at.pop(p, None)
                self.processed_to.pop(p, None)
                self._checkpointed.pop(p, None)
                self.alarm_state.drop_partition(p)

    async def on_assigned(self, assigned: Iterable[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        """Restore the assigned partitions' alarm state before the decode loop fetches from them."""
        partitions = sorted(tp.partition for tp in assigned)
        offsets = {tp.partition: committed.get(tp) for tp in assigned}
        async with self.lock:
            await self.config.wait_loaded()
            for p in self.held - set(partitions):
                self.alarm_state.drop_partition(p)
            self.held.clear()
            self.held.update(partitions)  # the restore's replay evaluates their records
            backoff = Backoff(1.0, 10.0)
            while True:  # the loop must not fetch these partitions before their state is back
                try:
                    restored = await self.table.restore(partitions, offsets)
                    break
                except KafkaError as exc:
                    logger.warning("Alarms: restoring partitions %s failed (%s); retrying", partitions, exc)
                    await asyncio.sleep(backoff.next())
            self.emitted = restored.emitted
            self._events_from = restored.events_start
            self.processed_to = {p: o for p, o in offsets.items() if o is not None}
            self._checkpointed = {}
            self._caught_up_at = {}
            self.last_restore = restored
            self.config.changed.set()  # rules may have changed while the state was another worker's
            self.config.acks[:0] = list(self.config.acked.values())  # and acknowledgements may wait
            self.outbox += self._emit(restored.events)
        logger.info("Alarms: %d partitions restored, %d devices, %d transitions found produced, %d raw records "
                    "replayed, in %.2fs", len(partitions), restored.devices, restored.produced, restored.replayed,
                    restored.seconds)  # fmt: skip

    async def on_stop(self) -> None:
        """Close the table's consumer."""
        await self.table.close()


class Evaluation:
    """One decode batch's alarm evaluation, under the tracker's lock: messages in, transitions out."""

    __slots__ = ("observe", "taken", "tracker")

    def __init__(self, tracker: AlarmTracker) -> None:
        self.tracker = tracker
        #: Evaluate one decoded message of the batch (a partition this worker does not hold is skipped).
        self.observe = tracker.alarm_state.observe
        self.taken: list[Output] = []

    def outputs(self) -> list[Output]:
        """What to produce with the batch: transitions waiting from before, then this batch's."""
        tracker = self.tracker
        self.taken = tracker._take_outbox() + tracker._emit(tracker.alarm_state.take_events())  # noqa: SLF001
        return self.taken


class AlarmSink:
    """The alarm loop's handler: `alarm_events` into PostgreSQL (`alarm_transitions` and `alarms`)."""

    def __init__(self, writer: AlarmWriter) -> None:
        self.writer = writer

    async def __call__(self, batch: Batch) -> None:
        """Write the batch's transitions; unreadable records are skipped and logged (no alarm can be made of them)."""
        events = []
        for records in batch.values():
            for record in records:
                event = read_event(record.value or b"")
                if event is None:
                    logger.warning("Unreadable alarm_events record %s/%d skipped", record.partition, record.offset)
                else:
                    events.append(event)
        if events:
            await self.writer.write(events)
