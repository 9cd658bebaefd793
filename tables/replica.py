"""Every device's parameters in every pipeline worker, read from the compacted `device_parameters` topic.

The decode stage owns its consumer group, so its partitions of raw_iot_data
are not the partitions of the Faust table that the same worker holds: any
worker may meet any device. :class:`ParameterReplica` reads all partitions of
the compacted topic without a group (nothing to commit, no rebalance),
from the beginning at start, then follows it; it holds each device's
compiled codec. The topic is the table's source of truth, written by the
leader's :class:`~f2stream.tables.parameters.ParameterSync` only after
PostgreSQL said so, so decoding goes on from memory while PostgreSQL is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from f2stream.codec.model import DeviceCodec, Parameter

__all__ = ["ParameterReplica", "codec_of"]

logger = logging.getLogger(__name__)

_RETRY_S = 2.0


def codec_of(value: bytes | None) -> tuple[str, DeviceCodec | None] | None:
    """A `device_parameters` record as (device id, codec), codec None for a deletion; None if unreadable."""
    try:
        record = orjson.loads(value or b"null")
        if record is None:
            return None
        device = str(record["device_id"])
        rows = record["parameters"]
        if not rows:
            return device, None
        return device, DeviceCodec(device, record.get("version"), [Parameter.from_row(row) for row in rows])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        logger.warning("Unreadable parameter record skipped: %s: %s", exc.__class__.__name__, exc)
        return None


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


class ParameterReplica(Service):
    """All devices' codecs, kept in step with the `device_parameters` topic."""

    def __init__(self, bootstrap: str, topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.topic = topic
        self._codecs: dict[str, DeviceCodec] = {}
        self._caught_up = asyncio.Event()
        self.updated_at: float | None = None

    def codec(self, device_id: str) -> DeviceCodec | None:
        """The device's codec, or None for a device without parameters."""
        return self._codecs.get(device_id)

    @property
    def size(self) -> int:
        """Devices with parameters."""
        return len(self._codecs)

    async def wait_ready(self, first_sync: Callable[[], Awaitable[bool]], *, settle_s: float = 2.0) -> None:
        """Return once the topic is read to where it was at start, and after a deployment's first sync.

        `first_sync` waits until the parameters were published at least once
        (True), or gives up (False: decode with what the topic holds). On a
        fresh deployment that first publication is still on its way here:
        wait up to `settle_s` for it to arrive.
        """
        await self._caught_up.wait()
        if await first_sync():
            settle = time.monotonic() + settle_s
            while not self._codecs and time.monotonic() < settle:  # noqa: ASYNC110  # no event to wait on
                await asyncio.sleep(0.1)

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            # Without a group, aiokafka assigns every partition of the subscribed topic.
            consumer = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="f2stream-params",
            )
            try:
                await consumer.start()
                await self._read(consumer)
            except KafkaError as exc:
                logger.warning("Reading %s failed (%s: %s); decoding goes on with what is held",
                               self.topic, exc.__class__.__name__, exc)  # fmt: skip
            except Exception:  # a bug here must not silently stop parameter updates: log it, start over
                logger.exception("Reading %s failed; starting over", self.topic)
            finally:
                await consumer.stop()
            await self.sleep(_RETRY_S)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        fresh: dict[str, DeviceCodec] = {}
        while not consumer.assignment():  # the first fetch assigns the partitions
            for records in (await consumer.getmany(timeout_ms=500)).values():
                self._apply(records, fresh)
        assigned = list(consumer.assignment())
        ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
        # A restart of this reader builds a new map, so a deletion missed meanwhile cannot linger.
        while not await _reached(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                self._apply(records, fresh)
        self._codecs = fresh
        self.updated_at = time.time()
        if not self._caught_up.is_set():
            logger.info("Parameters of %d devices read from %s", len(fresh), self.topic)
            self._caught_up.set()
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                self._apply(records, self._codecs)
                self.updated_at = time.time()

    @staticmethod
    def _apply(records: list[ConsumerRecord[bytes, bytes]], into: dict[str, DeviceCodec]) -> None:
        for record in records:
            parsed = codec_of(record.value)
            if parsed is None:
                if record.value is None and record.key:  # a tombstone
                    into.pop(record.key.decode("utf-8", "replace"), None)
                continue
            device, codec = parsed
            if codec is None:
                into.pop(device, None)
            else:
                into[device] = codec
