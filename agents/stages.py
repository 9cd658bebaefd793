"""The pipeline's stages as one service: the decode and sink loops and their producer.

Each stage is a :class:`~f2stream.agents.batchloop.BatchLoop` in a consumer group
of its own (`f2stream-decode`, `f2stream-sink`): any number of pipeline
workers share the partitions. Start order: the producer, the loops (the
decode loop joins its group only once the parameter table is read);
stop order is the reverse, so a batch in flight can still produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from mode import Service

from f2stream.agents.alarms import AlarmSink, AlarmTracker
from f2stream.agents.batchloop import BatchLoop, PartitionHooks
from f2stream.agents.decode import DecodeStage
from f2stream.agents.liveness import LivenessTracker, StatusSink
from f2stream.agents.producer import Producer
from f2stream.agents.sink import SinkStage
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import (
    ALARM_EVENTS_TOPIC,
    ALARMS_GROUP,
    DECODE_GROUP,
    DECODED_TOPIC,
    RAW_TOPIC,
    SINK_GROUP,
    STATUS_GROUP,
    STATUS_TOPIC,
)
from f2stream.metrics import Metrics
from f2stream.settings import Settings
from f2stream.storage.alarms import AlarmWriter
from f2stream.storage.status import StatusWriter
from f2stream.storage.timeseries import MeasurementWriter
from f2stream.tables.parameters import ParameterTable

__all__ = ["DECODE_GROUP", "SINK_GROUP", "STATUS_GROUP", "Stages"]

# Raw records are small; a batch this size decodes in a few milliseconds.
_DECODE_BATCH = 2000


class Stages(Service):
    """Decode (raw_iot_data to decoded_iot_data) and sink (decoded_iot_data to the database)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        writer: MeasurementWriter,
        params: ParameterTable,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        kafka = kafka_options(settings)
        self.producer = Producer(kafka, "f2stream-pipeline")
        self.liveness: LivenessTracker | None = None
        if settings.liveness_enabled:
            self.liveness = LivenessTracker(
                settings, self.producer, metrics, has_parameters=lambda device: params.codec(device) is not None
            )
        self.alarms: AlarmTracker | None = None
        if settings.alarms_enabled:
            self.alarms = AlarmTracker(settings, self.producer, metrics, params)
        self.decode = BatchLoop(
            name="decode",
            topic=RAW_TOPIC,
            group_id=DECODE_GROUP,
            handler=(decode := DecodeStage(self.producer, params, metrics, self.liveness, self.alarms)),
            quarantine=decode.quarantine,
            kafka=kafka,
            max_records=_DECODE_BATCH,
            ready=params.wait_ready,
            hooks=PartitionHooksOf(self.liveness, self.alarms),
        )
        self.sink = BatchLoop(
            name="sink",
            topic=DECODED_TOPIC,
            group_id=SINK_GROUP,
            handler=(sink := SinkStage(self.producer, writer, metrics)),
            quarantine=sink.quarantine,
            kafka=kafka,
            max_records=settings.sink_batch_size,
            fetch_timeout_ms=settings.sink_batch_window_ms,
        )
        self.writer = writer
        self.status_writer = StatusWriter(settings)
        self.status = BatchLoop(
            name="status",
            topic=STATUS_TOPIC,
            group_id=STATUS_GROUP,
            handler=StatusSink(self.status_writer),
            kafka=kafka,
            max_records=5000,
        )
        self.alarm_writer = AlarmWriter(settings)
        self.alarm_loop = BatchLoop(
            name="alarms",
            topic=ALARM_EVENTS_TOPIC,
            group_id=ALARMS_GROUP,
            handler=AlarmSink(self.alarm_writer),
            kafka=kafka,
            max_records=5000,
        )
        self.add_dependency(self.producer)  # children stop in reverse: the producer last
        if self.liveness is not None:
            self.liveness.highwater_of = lambda partition: _highwater(self.decode, partition)
            self.liveness.partition_count = lambda: _partitions(self.decode, settings.topic_partitions)
            self.add_dependency(self.liveness)
        if self.alarms is not None:
            self.alarms.highwater_of = lambda partition: _highwater(self.decode, partition)
            self.add_dependency(self.alarms)
        self.add_dependency(self.decode)
        self.add_dependency(self.sink)
        self.add_dependency(self.status)
        self.add_dependency(self.alarm_loop)

    async def on_shutdown(self) -> None:
        """After the loops stopped: close the database pools."""
        await self.writer.close()
        await self.status_writer.close()
        await self.alarm_writer.close()

    @property
    def loops(self) -> tuple[BatchLoop, BatchLoop]:
        """The decode and sink loops."""
        return self.decode, self.sink

    def restarts(self) -> dict[str, int]:
        """How often each loop died and rejoined with a fresh consumer."""
        return {loop.name: loop.restarts for loop in self.loops}

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind per assigned partition of raw_iot_data and decoded_iot_data."""
        return {**self.decode.lag(), **self.sink.lag()}


class PartitionHooksOf:
    """The decode loop's rebalances told to each tracker in turn (liveness, then alarms)."""

    def __init__(self, *trackers: PartitionHooks | None) -> None:
        self.trackers = [t for t in trackers if t is not None]

    async def on_assigned(self, assigned: list[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        """Each tracker restores the assigned partitions before the loop fetches from them."""
        for tracker in self.trackers:
            await tracker.on_assigned(assigned, committed)

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Each tracker writes what it holds of the revoked partitions."""
        for tracker in self.trackers:
            await tracker.on_revoked(revoked)


def _partitions(loop: BatchLoop, default: int) -> int:
    """The input topic's partition count as the loop's consumer knows it."""
    try:
        known = loop.consumer.partitions_for_topic(loop.topic)
    except RuntimeError:  # not started
        return default
    return len(known) if known else default


def _highwater(loop: BatchLoop, partition: int) -> int | None:
    """The high water of a partition of the loop's input topic, as its last fetch saw it."""
    try:
        high: int | None = loop.consumer.highwater(TopicPartition(loop.topic, partition))
    except (RuntimeError, IllegalStateError):  # not started, or not assigned
        return None
    return high
