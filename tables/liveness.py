"""The device-liveness table: each device's liveness in the worker that owns its raw_iot_data partition.

Durable form: the compacted topic `device_liveness`, partitioned like
raw_iot_data (a device's record sits in the partition number of its raw
records), is the table's changelog. It holds one record per device and, per
partition, a checkpoint record: "every device record before me covers the
raw records below offset X". A worker that is assigned a raw partition
restores it by reading its changelog partition whole, then the raw records
from the checkpoint to the decode group's committed offset (receipts only):
after that the state is what the previous owner had when it committed, exactly,
and decoding continues from the committed offset. A re-delivered raw record
is recognised by the device's last applied offset and counted once.

Why not a Faust table: the decode stage owns its consumer group (see
docs/reliability.md), so Faust's table assignment would not follow decode's
partitions; this table follows decode's own rebalance callbacks instead.

:class:`LivenessConfig` is the registry and the silence timeouts from the
parameters database, reloaded live (LISTEN `f2stream_liveness`, and a poll
of `liveness_config_version`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from f2stream.deadletter import header_map
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import LIVENESS_TOPIC, RAW_TOPIC
from f2stream.liveness import (
    CHECKPOINT_KEY,
    LivenessState,
    StatusChange,
    decode_checkpoint,
    decode_device,
    parse_time,
    resolve_timeout,
)
from f2stream.settings import Settings
from f2stream.tables.config import DatabaseConfig

__all__ = ["CHANNEL", "LivenessConfig", "LivenessTable", "partition_of"]

logger = logging.getLogger(__name__)

CHANNEL = "f2stream_liveness"
_VERSION = "SELECT version FROM liveness_config_version"
_REGISTRY = "SELECT device_id, status FROM device_registry"
_DEVICE_TIMEOUTS = "SELECT device_id, timeout_s FROM device_silence_timeouts"
_TEMPLATES = "SELECT device_id, template FROM device_templates"
_TEMPLATE_TIMEOUTS = "SELECT template, timeout_s FROM template_silence_timeouts"
_FETCH_MS = 500


def partition_of(device: str, partitions: int) -> int:
    """The raw_iot_data partition of a device's records (Kafka's default partitioner on its key)."""
    hashed: int = murmur2(device.encode())
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(slots=True)
class ConfigSnapshot:
    """The registry and the timeouts at one version of the parameters database."""

    version: int | None = None
    registry: dict[str, bool] = field(default_factory=dict)  # device -> revoked
    device_timeouts: dict[str, float] = field(default_factory=dict)
    template_of: dict[str, str] = field(default_factory=dict)
    template_timeouts: dict[str, float] = field(default_factory=dict)


class LivenessConfig(DatabaseConfig):
    """The registry and silence timeouts, reloaded when the parameters database says they changed."""

    channel = CHANNEL
    version_query = _VERSION
    what = "Liveness settings"
    coalesce_s = 0.2

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.snapshot = ConfigSnapshot()

    def timeout_of(self, device: str) -> float:
        """The device's silence timeout in seconds."""
        s = self.snapshot
        return resolve_timeout(
            device, self.settings.liveness_timeout_s, s.device_timeouts, s.template_of, s.template_timeouts
        )

    async def load(self, conn: asyncpg.Connection, version: int) -> None:
        """The registry and every timeout at `version`."""
        self.snapshot = ConfigSnapshot(
            version=version,
            registry={r["device_id"]: r["status"] == "revoked" for r in await conn.fetch(_REGISTRY)},
            device_timeouts={r[0]: r[1] for r in await conn.fetch(_DEVICE_TIMEOUTS)},
            template_of={r[0]: r[1] for r in await conn.fetch(_TEMPLATES)},
            template_timeouts={r[0]: r[1] for r in await conn.fetch(_TEMPLATE_TIMEOUTS)},
        )
        self.changed.set()
        # The first load once at INFO; reloads follow every registration, so at DEBUG.
        logger.log(logging.DEBUG if self._loaded.is_set() else logging.INFO,
                   "Liveness settings loaded: %d registered devices, %d device and %d template timeouts",
                   len(self.snapshot.registry), len(self.snapshot.device_timeouts),
                   len(self.snapshot.template_timeouts))  # fmt: skip


@dataclass(slots=True)
class Restored:
    """What a restore read: device records, raw records replayed, and how long it took."""

    devices: int = 0
    replayed: int = 0
    seconds: float = 0.0
    #: Changes the replay made (none unless the timeouts changed meanwhile).
    changes: list[StatusChange] = field(default_factory=list)


class LivenessTable:
    """Every owned device's liveness (a :class:`~f2stream.liveness.LivenessState`), restored from its changelog."""

    def __init__(self, settings: Settings, config: LivenessConfig, *, topic: str = LIVENESS_TOPIC) -> None:
        self.settings = settings
        self.config = config
        self.topic = topic
        self.state = LivenessState(config.timeout_of)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="f2stream-liveness-restore",
        )

    async def restore(
        self,
        partitions: list[int],
        committed: Mapping[int, int | None],
        eligible: Callable[[str], bool],
        now: Callable[[], float] = time.time,
    ) -> Restored:
        """Replace the state of `partitions` with the changelog's, then replay raw records up to `committed`.

        Raises:
            KafkaError: Kafka could not be read; the caller retries (nothing of these partitions is held).
        """
        started = time.monotonic()
        result = Restored()
        for p in partitions:
            self.state.drop_partition(p)
        if not partitions:
            return result
        consumer = self._consumer()
        await consumer.start()
        try:
            checkpoints: dict[int, int] = {}
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            while not await _reached(consumer, ends):
                for tp, records in (await consumer.getmany(*tps, timeout_ms=_FETCH_MS)).items():
                    for record in records:
                        if record.key == CHECKPOINT_KEY:
                            offset = decode_checkpoint(record.value or b"")
                            if offset is not None:
                                checkpoints[tp.partition] = offset
                        elif record.key and record.value:
                            device = decode_device(record.key, record.value)
                            if device is not None and device.partition == tp.partition:
                                self.state.load(device)
                                result.devices += 1
            raw = {
                TopicPartition(RAW_TOPIC, p): (checkpoints[p], end)
                for p in partitions
                if p in checkpoints and (end := committed.get(p)) is not None and end > checkpoints[p]
            }
            if raw:
                consumer.assign(list(raw))
                for tp, (start, _) in raw.items():
                    consumer.seek(tp, start)
                result.replayed = await self._replay(consumer, raw, eligible, now, result.changes)
        finally:
            await consumer.stop()
        result.seconds = time.monotonic() - started
        return result

    async def _replay(
        self,
        consumer: AIOKafkaConsumer,
        ranges: dict[TopicPartition, tuple[int, int]],
        eligible: Callable[[str], bool],
        now: Callable[[], float],
        changes: list[StatusChange],
    ) -> int:
        """Apply the receipts of raw records in `ranges` (changes they make are real: returned by the tracker)."""
        replayed = 0
        open_ = dict(ranges)
        while open_:
            for tp, records in (await consumer.getmany(*open_, timeout_ms=_FETCH_MS)).items():
                _, end = ranges[tp]
                for record in records:
                    if record.offset >= end:
                        break
                    device = record.key.decode("utf-8", "replace") if record.key else ""
                    if not eligible(device):
                        continue
                    headers = header_map(record.headers)
                    received = parse_time(headers.get("received_at")) or record.timestamp / 1000
                    change = self.state.observe(
                        device, tp.partition, record.offset, received, _device_time(record.value), False, now()
                    )
                    if change is not None:
                        changes.append(change)
                    replayed += 1
            for tp in list(open_):
                if await consumer.position(tp) >= ranges[tp][1]:
                    del open_[tp]
        return replayed


async def _reached(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def _device_time(payload: bytes | None) -> float | None:
    try:
        body = orjson.loads(payload or b"")
    except orjson.JSONDecodeError:
        return None
    stamp = body.get("timestamp") if isinstance(body, dict) else None
    return parse_time(stamp) if isinstance(stamp, str) else None
