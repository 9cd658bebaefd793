"""Reading a time window of a Kafka topic without a consumer group, and the live pipeline's frontier.

A repair reads with its own consumer that joins no group: it takes no
partition from the pipeline's workers and commits no offset of theirs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from f2stream.kafka_client import diagnose, kafka_options, refusal, unreachable
from f2stream.kafka_topics import DECODE_GROUP, DECODED_TOPIC, RAW_TOPIC, SINK_GROUP
from f2stream.repair.window import Held, RepairError, Window
from f2stream.settings import Settings

__all__ = ["Reader", "SourceError", "Span", "live_frontier", "topic_retention_ms"]

_BATCH = 2000


class SourceError(RepairError):
    """Kafka cannot be read, or the pipeline has not written what it decoded."""


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets [start, stop) of one partition that a repair reads."""

    partition: int
    start: int
    stop: int

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class Reader:
    """One topic, every partition assigned by hand: what it holds, and its records over spans."""

    def __init__(self, settings: Settings, topic: str, *, client_id: str, batch: int = _BATCH) -> None:
        self.topic = topic
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self.consumer = AIOKafkaConsumer(
            **kafka_options(settings),
            group_id=None,
            enable_auto_commit=False,
            client_id=client_id,
            max_poll_records=batch,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect and assign every partition of the topic.

        Raises:
            SourceError: Kafka does not answer, or the topic does not exist.
        """
        try:
            await self.consumer.start()
            cluster = await self.consumer._client.fetch_all_metadata()  # noqa: SLF001  # the public call drops it
        except KafkaConnectionError as exc:
            raise SourceError(await diagnose(self.settings) or unreachable(self.settings)) from exc
        except KafkaError as exc:
            raise SourceError(refusal(self.settings, exc) or f"reading {self.topic} failed: {exc}") from exc
        if self.topic in cluster.unauthorized_topics:
            denied = TopicAuthorizationFailedError(self.topic)
            raise SourceError(refusal(self.settings, denied) or f"{self.topic}: not authorized")
        numbers = sorted(cluster.partitions_for_topic(self.topic) or ())
        if not numbers:
            raise SourceError(f"topic {self.topic} does not exist on {self.bootstrap}: has the pipeline ever run?")
        self.partitions = [TopicPartition(self.topic, n) for n in numbers]
        self.consumer.assign(self.partitions)

    async def stop(self) -> None:
        """Disconnect; safe to call twice."""
        await self.consumer.stop()

    async def held(self) -> Held:
        """The Kafka timestamps of the oldest and newest record the topic still holds."""
        first = await self.consumer.beginning_offsets(self.partitions)
        ends = await self.consumer.end_offsets(self.partitions)
        records = sum(ends[tp] - first[tp] for tp in self.partitions)
        stamps: list[int] = []  # of each partition's first and last record
        for tp in self.partitions:
            if ends[tp] <= first[tp]:
                continue
            for offset in (first[tp], ends[tp] - 1):
                record = await self._record_at(tp, offset)
                if record is not None:
                    stamps.append(record.timestamp)
        # Producers set the timestamps, so a partition's first record may be stamped after its last (see spans).
        return Held(
            self.topic,
            _moment(min(stamps)) if stamps else None,
            _moment(max(stamps)) if stamps else None,
            records,
            trimmed=any(first[tp] > 0 for tp in self.partitions),
        )

    async def spans(self, window: Window) -> list[Span]:
        """Per partition, the offsets whose records may lie in the window (timestamps filter the rest).

        A span starts at the first record stamped at or after the window's
        start, which is exact. It ends at the partition's end, not where
        Kafka's time index puts the window's end: producers set the
        timestamps, and one record stamped in the future would make that
        lookup answer with its offset, ending the span before records of
        the window that follow it.
        """
        ends = await self.consumer.end_offsets(self.partitions)
        since = await self.consumer.offsets_for_times({tp: window.since_ms for tp in self.partitions})
        spans = []
        for tp in self.partitions:
            start = since[tp].offset if since[tp] is not None else ends[tp]
            spans.append(Span(tp.partition, start, ends[tp]))
        return spans

    async def read(self, spans: list[Span]) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """The records of `spans`, in batches, each partition in offset order."""
        todo = {TopicPartition(self.topic, s.partition): s.stop for s in spans if len(s)}
        for s in spans:
            if len(s):
                self.consumer.seek(TopicPartition(self.topic, s.partition), s.start)
        self.consumer.pause(*[tp for tp in self.partitions if tp not in todo])
        while todo:
            batch: list[ConsumerRecord[bytes, bytes]] = []
            for tp, records in (await self.consumer.getmany(*todo, timeout_ms=1000)).items():
                stop = todo.get(tp)
                if stop is None:
                    continue
                batch.extend(r for r in records if r.offset < stop)
                if await self.consumer.position(tp) >= stop:
                    del todo[tp]
                    self.consumer.pause(tp)
            if batch:
                yield batch

    async def _record_at(self, tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes] | None:
        self.consumer.seek(tp, offset)
        others = [p for p in self.partitions if p != tp]
        self.consumer.pause(*others)
        self.consumer.resume(tp)
        try:
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                records = (await self.consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, [])
                if records:
                    return records[0]
            return None
        finally:
            self.consumer.resume(*others)


async def live_frontier(settings: Settings, *, wait_s: float = 60.0) -> dict[int, int]:
    """Per raw_iot_data partition, the offset below which the live pipeline has written every row.

    The decode group's committed offsets say which raw records are decoded;
    the sink group must then have committed everything decoded up to then
    (waited for up to `wait_s`). A repair stays below this frontier, so it
    never works on a message the live path is still decoding or writing.

    Raises:
        SourceError: Kafka does not answer, or the sink did not catch up within `wait_s`.
    """
    admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="f2stream-repair-admin")
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, client_id="f2stream-repair-ends")
    try:
        await admin.start()
        await consumer.start()
        decoded = await admin.list_consumer_group_offsets(DECODE_GROUP)
        frontier = {tp.partition: meta.offset for tp, meta in decoded.items() if tp.topic == RAW_TOPIC}
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001  # the public call drops it
        numbers = cluster.partitions_for_topic(DECODED_TOPIC) or set()
        ends = await consumer.end_offsets([TopicPartition(DECODED_TOPIC, n) for n in numbers])
        deadline = time.monotonic() + wait_s
        while True:
            sunk = await admin.list_consumer_group_offsets(SINK_GROUP)
            behind = sum(max(0, end - (sunk[tp].offset if tp in sunk else 0)) for tp, end in ends.items())
            if not behind:
                return frontier
            if time.monotonic() > deadline:
                raise SourceError(
                    f"the pipeline's sink is {behind:,} decoded records behind after {wait_s:.0f}s, so rows of "
                    "the window may still be on their way: is the pipeline worker running? (make health)"
                )
            await asyncio.sleep(0.5)
    except KafkaConnectionError as exc:
        raise SourceError(await diagnose(settings) or unreachable(settings)) from exc
    except KafkaError as exc:
        raise SourceError(refusal(settings, exc) or f"reading the pipeline's consumer groups failed: {exc}") from exc
    finally:
        await consumer.stop()
        await admin.close()


async def topic_retention_ms(settings: Settings, topic: str) -> int | None:
    """The topic's `retention.ms` as the cluster reports it (-1: kept for ever), None if it cannot say."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="f2stream-repair-admin")
    try:
        await admin.start()
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
        )
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        value = entries.get("retention.ms")
        return int(value) if value is not None and str(value).lstrip("-").isdigit() else None
    except (KafkaError, IndexError, ValueError):
        return None
    finally:
        await admin.close()


def _moment(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
