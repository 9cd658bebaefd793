"""The alarm table: each held device's alarm state, in the worker that owns its raw_iot_data partition.

Durable form, as the liveness table's (:mod:`f2stream.tables.liveness`):
the compacted topic `alarm_state`, partitioned like raw_iot_data, holds one
record per device and, per partition, a checkpoint record: "every device
record before me covers the raw records below offset X, and every
transition made since is in `alarm_events` at or after offset E". A worker
assigned a raw partition restores it in three reads:

1. `alarm_state` whole: the devices' states and the last checkpoint (X, E);
2. `alarm_events` from E to its end: the transitions already produced, by
   `(alarm_id, transition)`: the tracker produces none of them again;
3. raw_iot_data from X to the decode group's committed offset, decoded and
   evaluated again (a record at or below a device's applied offset is
   skipped), so that the state is the previous owner's when it committed.

Alarm ids are deterministic (the raw record that began the condition), so
evaluating the same records again names the same alarms and transitions:
after a kill -9 between a produce and a commit, the records read again make
transitions already in `alarm_events`, and step 2 recognises them. That is
how each transition is produced exactly once without Kafka transactions.

Why not a Faust table: the decode stage owns its consumer group (see
docs/reliability.md), so Faust's table assignment would not follow decode's
partitions; this table follows decode's own rebalance callbacks instead.

:class:`AlarmConfig` is the rules and the operators' acknowledgements from
the parameters database, reloaded live (LISTEN `f2stream_alarms`, and a poll
of `alarm_config_version`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from f2stream.alarm_rules import Rule, rule_from_mapping
from f2stream.alarms import AlarmEvent, AlarmState, RuleSet, decode_device, decode_event
from f2stream.codec.message import CodecSource, decode_points
from f2stream.deadletter import header_map
from f2stream.errors import BadMessage
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import ALARM_EVENTS_TOPIC, ALARM_STATE_TOPIC, RAW_TOPIC
from f2stream.settings import Settings
from f2stream.tables.config import DatabaseConfig

__all__ = ["CHANNEL", "CHECKPOINT_KEY", "Ack", "AlarmConfig", "AlarmTable", "Restored", "decode_checkpoint",
           "encode_checkpoint"]  # fmt: skip

logger = logging.getLogger(__name__)

CHANNEL: Final = "f2stream_alarms"
#: Key of a changelog partition's checkpoint record (no device id starts with a NUL).
CHECKPOINT_KEY: Final = b"\x00checkpoint"
_VERSION = "SELECT version FROM alarm_config_version"
_RULES = "SELECT scope, target, name, definition FROM alarm_rules ORDER BY scope, target, name"
_TEMPLATES = "SELECT device_id, template FROM device_templates"
# Acknowledgements older than this are not read at start: their alarms are long cleared or acknowledged.
_ACKS = """
SELECT seq, alarm_id, acked_by, extract(epoch FROM acked_at) AS at FROM alarm_acks
WHERE seq > $1 AND acked_at > now() - interval '30 days' ORDER BY seq
"""
_FETCH_MS = 500


@dataclass(frozen=True, slots=True)
class Ack:
    """An operator's acknowledgement of an alarm, as recorded in the parameters database."""

    alarm_id: str
    by: str
    at: float


def encode_checkpoint(raw: int, events: int) -> bytes:
    """A changelog partition's checkpoint: raw records below `raw` covered, transitions since at `events` on."""
    return orjson.dumps({"raw": raw, "events": events})


def decode_checkpoint(value: bytes) -> tuple[int, int] | None:
    """(raw offset, alarm_events offset) of a checkpoint record, None when unreadable."""
    try:
        v = orjson.loads(value)
        raw, events = v["raw"], v["events"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return (raw, events) if isinstance(raw, int) and isinstance(events, int) else None


class AlarmConfig(DatabaseConfig):
    """The rules of every device and the operators' acknowledgements, reloaded when the database says so."""

    channel = CHANNEL
    version_query = _VERSION
    what = "Alarm rules"

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.rules_loaded = 0
        #: Acknowledgements not yet applied by the tracker (it takes them).
        self.acks: list[Ack] = []
        #: Every acknowledgement read, for alarms restored later.
        self.acked: dict[str, Ack] = {}
        self._rows: list[Any] | None = None
        self._fleet: dict[str, Rule] = {}
        self._by_template: dict[str, dict[str, Rule]] = {}
        self._by_device: dict[str, dict[str, Rule]] = {}
        self._template_of: dict[str, str] = {}
        self._sets: dict[str, RuleSet] = {}
        self._shared: dict[str | None, RuleSet] = {}
        self._ack_seq = 0

    def ruleset_of(self, device: str) -> RuleSet:
        """The device's rules: the fleet's, overridden by name by its template's, then by its own."""
        rules = self._sets.get(device)
        if rules is None:
            rules = self._sets[device] = self._resolve(device)
        return rules

    def _resolve(self, device: str) -> RuleSet:
        template = self._template_of.get(device)
        own = self._by_device.get(device)
        if own is None:
            shared = self._shared.get(template)
            if shared is None:
                shared = self._shared[template] = RuleSet({**self._fleet, **self._by_template.get(template or "", {})}
                                                          .values())  # fmt: skip
            return shared
        return RuleSet({**self._fleet, **self._by_template.get(template or "", {}), **own}.values())

    async def load(self, conn: asyncpg.Connection, version: int) -> None:
        """The rules (compiled again only when their rows changed) and the acknowledgements since the last."""
        rows = [tuple(r) for r in await conn.fetch(_RULES)] + [("", *r) for r in await conn.fetch(_TEMPLATES)]
        if rows != self._rows:
            self._apply(rows)
        for seq, alarm_id, by, at in await conn.fetch(_ACKS, self._ack_seq):
            ack = Ack(alarm_id, by, float(at))
            self.acks.append(ack)
            self.acked[alarm_id] = ack
            self._ack_seq = max(self._ack_seq, seq)

    def _apply(self, rows: list[Any]) -> None:
        """Compile the rules rows and the template memberships; a row that no longer parses is skipped, loudly."""
        fleet: dict[str, Rule] = {}
        by_template: dict[str, dict[str, Rule]] = {}
        by_device: dict[str, dict[str, Rule]] = {}
        template_of: dict[str, str] = {}
        for row in rows:
            if row[0] == "":
                template_of[row[1]] = row[2]
                continue
            scope, target, name, definition = row
            try:
                rule = rule_from_mapping(orjson.loads(definition) if isinstance(definition, str) else definition)
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                logger.error("Alarm rule %s %s %r skipped: %s", scope, target, name, exc)
                continue
            into = (
                fleet
                if scope == "fleet"
                else (by_template if scope == "template" else by_device).setdefault(target, {})
            )
            into[rule.name] = rule
        self._fleet, self._by_template, self._by_device, self._template_of = fleet, by_template, by_device, template_of
        self._sets, self._shared, self._rows = {}, {}, rows
        self.rules_loaded = len(fleet) + sum(map(len, by_template.values())) + sum(map(len, by_device.values()))
        logger.info("Alarm rules loaded: %d (%d fleet, %d templates, %d devices with their own)",
                    self.rules_loaded, len(fleet), len(by_template), len(by_device))  # fmt: skip
        self.changed.set()


@dataclass(slots=True)
class Restored:
    """What a restore read, and the transitions its replay made (the tracker drops those already produced)."""

    devices: int = 0
    produced: int = 0
    replayed: int = 0
    seconds: float = 0.0
    events: list[AlarmEvent] = field(default_factory=list)
    #: Per partition: the transitions already in alarm_events, and where alarm_events ended.
    emitted: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    events_end: dict[int, int] = field(default_factory=dict)
    #: Per partition, where the read of alarm_events began (the checkpoint's offset, else its end).
    events_start: dict[int, int] = field(default_factory=dict)


class AlarmTable:
    """Every owned device's alarm state (an :class:`~f2stream.alarms.AlarmState`), restored from its changelog."""

    def __init__(self, settings: Settings, config: AlarmConfig, params: CodecSource) -> None:
        self.settings = settings
        self.params = params
        self.state = AlarmState(config.ruleset_of)
        self._consumer: AIOKafkaConsumer | None = None

    async def consumer(self) -> AIOKafkaConsumer:
        """The table's own consumer (no group): restores, and the end of alarm_events at a checkpoint."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**kafka_options(self.settings), group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="earliest", client_id="f2stream-alarms-restore")  # fmt: skip
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        """Stop the table's consumer."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def events_end(self, partitions: list[int]) -> dict[int, int]:
        """Where alarm_events ends now, per partition."""
        consumer = await self.consumer()
        ends = await consumer.end_offsets([TopicPartition(ALARM_EVENTS_TOPIC, p) for p in partitions])
        return {tp.partition: end for tp, end in ends.items()}

    async def restore(self, partitions: list[int], committed: Mapping[int, int | None]) -> Restored:
        """Replace the state of `partitions` with the changelog's; read what was produced; replay raw records.

        Raises:
            KafkaError: Kafka could not be read; the caller retries (nothing of these partitions is held).
        """
        started = time.monotonic()
        result = Restored()
        for p in partitions:
            self.state.drop_partition(p)
        if not partitions:
            return result
        consumer = await self.consumer()
        checkpoints: dict[int, tuple[int, int]] = {}

        def state_record(record: ConsumerRecord[bytes, bytes]) -> None:
            if record.key == CHECKPOINT_KEY:
                mark = decode_checkpoint(record.value or b"")
                if mark is not None:
                    checkpoints[record.partition] = mark
            elif record.key and record.value:
                device = decode_device(record.key, record.value)
                if device is not None and device.partition == record.partition:
                    self.state.load(device)
                    result.devices += 1

        await _read(consumer, {TopicPartition(ALARM_STATE_TOPIC, p): 0 for p in partitions}, state_record)
        result.events_end = await self.events_end(partitions)
        result.emitted = {p: set() for p in partitions}

        def produced(record: ConsumerRecord[bytes, bytes]) -> None:
            event = decode_event(record.value or b"")
            if event is not None:
                result.emitted[record.partition].add(event.key)
                result.produced += 1

        result.events_start = {p: checkpoints[p][1] if p in checkpoints else result.events_end[p] for p in partitions}
        starts = {TopicPartition(ALARM_EVENTS_TOPIC, p): result.events_start[p] for p in partitions}
        await _read(consumer, starts, produced, result.events_end)
        raw = {TopicPartition(RAW_TOPIC, p): checkpoints[p][0] for p in partitions if p in checkpoints}
        ends = {p: end for p in partitions if (end := committed.get(p)) is not None}
        await _read(consumer, raw, lambda record: self._replay(record, result), ends)
        result.events = self.state.take_events()
        result.seconds = time.monotonic() - started
        return result

    def _replay(self, record: ConsumerRecord[bytes, bytes], result: Restored) -> None:
        headers = header_map(record.headers)
        try:
            message = decode_points(headers.get("mqtt_topic", ""), record.value or b"", self.params)
        except BadMessage:
            return  # it was dead-lettered: no alarm reads it
        except Exception:  # a decoder bug dead-letters too (decode_record): same here
            logger.exception("Alarm replay: decoding %s/%d failed", record.partition, record.offset)
            return
        if message.points:
            self.state.observe(message, record.partition, record.offset, headers.get("received_at"))
        result.replayed += 1


async def _read(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    each: Callable[[ConsumerRecord[bytes, bytes]], None],
    ends: Mapping[int, int] | None = None,
) -> None:
    """Hand every record of `starts` from its offset to `ends` (default: the partition's end now) to `each`."""
    if not starts:
        return
    tps = list(starts)
    if ends is None:
        stop = await consumer.end_offsets(tps)
    else:
        stop = {tp: ends[tp.partition] for tp in tps if tp.partition in ends}
    open_ = {tp: end for tp, end in stop.items() if end > starts[tp]}
    if not open_:
        return
    consumer.assign(list(open_))
    for tp in open_:
        consumer.seek(tp, starts[tp])
    while open_:
        for tp, records in (await consumer.getmany(*open_, timeout_ms=_FETCH_MS)).items():
            end = open_.get(tp)
            for record in records:
                if end is None or record.offset >= end:
                    break
                each(record)
        for tp in list(open_):
            if await consumer.position(tp) >= open_[tp]:
                del open_[tp]
