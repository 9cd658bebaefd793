"""The stages' Kafka producer: a batch's records produced partition by partition, acknowledged at once.

aiokafka's per-record `send` costs a coroutine, a partitioner call and a
future per record; a stage that already holds a whole batch appends its
records to one batch builder per partition instead and awaits one future
per partition. An acknowledgement means every in-sync replica has the
records (`acks=all`); the producer is idempotent, so a batch aiokafka
retries after a lost response (a broker died under it) is written once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2
from mode import Service

from f2stream.deadletter import handler_error_letter
from f2stream.kafka_client import KafkaOptions
from f2stream.kafka_topics import DEAD_LETTER_TOPIC

__all__ = ["MAX_RECORD_BYTES", "Output", "Producer"]

#: Larger records are never produced: Kafka's default `message.max.bytes` is 1 MiB per batch.
MAX_RECORD_BYTES = 1_000_000

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce.

    `partition` is a hint taken modulo the topic's partition count: the
    stages pass their input record's partition, so that a device's records,
    which share an input partition, keep their order. Without one the key
    decides (murmur2, as Kafka's default partitioner).
    """

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None  # None: by the key, as Kafka's default partitioner does
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of key, value and headers."""
        return len(self.value) + len(self.key or b"") + sum(len(name) + len(value) for name, value in self.headers)


class Producer(Service):
    """A child service of the stages, started before their loops and stopped after them."""

    def __init__(self, kafka: KafkaOptions, client_id: str, **kwargs: Any) -> None:
        """`kafka`: where and how to connect (:func:`f2stream.kafka_client.kafka_options`)."""
        super().__init__(**kwargs)
        self.options: dict[str, Any] = {
            **kafka,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,  # needs acks=all
            "linger_ms": 5,
            # aiokafka keeps one batch in flight per partition: big batches keep it busy.
            "max_batch_size": 512 * 1024,
            "max_request_size": 2 * MAX_RECORD_BYTES,
        }
        self._producer: AIOKafkaProducer | None = None  # made on start: aiokafka needs the running loop
        self._partitions: dict[str, int] = {}
        self._renewing = asyncio.Lock()
        #: Times the producer was replaced after a batch failed for good.
        self.renewals = 0

    async def on_start(self) -> None:
        """Connect (aiokafka retries until Kafka answers or its timeout)."""
        self._producer = AIOKafkaProducer(**self.options)
        await self._producer.start()

    async def on_stop(self) -> None:
        """Send what is buffered, then close."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send_all(self, outputs: Iterable[Output]) -> None:
        """Produce `outputs` and return once Kafka acknowledged every one.

        Raises:
            KafkaError: a record was not acknowledged (nothing says which:
                the caller produces the whole batch again).
        """
        await (await self.submit(outputs))

    async def submit(self, outputs: Iterable[Output]) -> asyncio.Future[list[Any]]:
        """Queue `outputs`; the future resolves once Kafka acknowledged every one, or fails.

        Records of one topic and partition keep their order. Callers keep
        each record under :data:`MAX_RECORD_BYTES`. Waits while a
        partition's previous batch is still on its way (backpressure).

        Raises:
            KafkaError: the records could not even be queued.
        """
        producer = self._producer
        if producer is None:
            raise KafkaConnectionError("the producer is not started")
        by_partition: dict[tuple[str, int], list[Output]] = {}
        for output in outputs:
            count = self._partitions.get(output.topic) or await self._count(producer, output.topic)
            hint = output.partition if output.partition is not None else murmur2(output.key or b"") & 0x7FFFFFFF
            by_partition.setdefault((output.topic, hint % count), []).append(output)
        pending: list[asyncio.Future[Any]] = []
        try:
            for (topic, partition), records in by_partition.items():
                batch = producer.create_batch()
                for record in records:
                    if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()  # an empty batch takes any record
                        batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers)
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        except BaseException:
            for future in pending:  # their outcome no longer matters: the caller sends all again
                future.add_done_callback(_consume)
            raise
        return asyncio.ensure_future(self._settle(producer, pending))

    async def _settle(self, producer: AIOKafkaProducer, pending: list[asyncio.Future[Any]]) -> list[Any]:
        try:
            return await asyncio.gather(*pending)
        except KafkaError as exc:
            if not exc.retriable:
                await self._renew(producer, exc)
            raise

    async def _renew(self, failed: AIOKafkaProducer, exc: KafkaError) -> None:
        """Replace a producer whose batch failed for good (e.g. a record the broker refused).

        An idempotent producer numbers its batches per partition; a batch that
        never landed leaves a gap that the broker refuses every later batch for
        (OutOfOrderSequenceNumber), and aiokafka does not start the numbering
        over. A new producer gets a new producer id and starts at zero.
        """
        async with self._renewing:
            if id(self._producer) != id(failed):  # another failure renewed it already
                return
            logger.warning("Producer %s: a batch failed for good (%s: %s); starting a new producer",
                           self.options["client_id"], exc.__class__.__name__, exc)  # fmt: skip
            fresh = AIOKafkaProducer(**self.options)
            await fresh.start()
            self._producer = fresh
            self.renewals += 1
        try:
            await asyncio.wait_for(failed.stop(), 10.0)
        except Exception:  # it failed already; what it still held is sent again by its callers
            logger.debug("Stopping the replaced producer failed", exc_info=True)

    async def _count(self, producer: AIOKafkaProducer, topic: str) -> int:
        partitions = await producer.partitions_for(topic)
        if not partitions:
            raise KafkaError(f"topic {topic} has no partitions")
        self._partitions[topic] = len(partitions)
        return len(partitions)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" warning


async def send_handler_error(
    producer: Producer, record: ConsumerRecord[bytes, bytes], exc: Exception, stage: str
) -> None:
    """Dead-letter a record that made `stage` fail alone (`handler_error`); return once Kafka has the letter."""
    key, value, headers = handler_error_letter(record, exc, stage)
    await producer.send_all([Output(DEAD_LETTER_TOPIC, key, value, record.partition, headers)])
