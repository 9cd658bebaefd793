"""One pipeline stage alone, on what the topics already hold: the real stage and batch loop, nothing else.

    python -m bench.stages decode [--max-records N] [--timeout-s S]
    python -m bench.stages sink   [--max-records N] [--timeout-s S]

`decode` runs :class:`~f2stream.agents.decode.DecodeStage` in a
:class:`~f2stream.agents.batchloop.BatchLoop` of a fresh consumer group over
`raw_iot_data` (with the parameter table read from `device_parameters`,
producing to `decoded_iot_data` with acks=all, as the worker does); `sink`
runs :class:`~f2stream.agents.sink.SinkStage` over `decoded_iot_data` into
`iot_measurements`. Each consumes from the beginning until it has committed
`--max-records` records or reached the end offsets it saw at start, and
prints one JSON line: records, rows, seconds from the first fetched batch
to the last commit, and this process's CPU seconds. Run it while no
pipeline worker consumes those topics (`make bench` stops it first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from f2stream.agents.batchloop import Batch, BatchLoop, Handler
from f2stream.agents.decode import DecodeStage
from f2stream.agents.sink import SinkStage
from f2stream.agents.stages import _DECODE_BATCH, Producer
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DECODED_TOPIC, RAW_TOPIC
from f2stream.metrics import Metrics
from f2stream.settings import Settings
from f2stream.storage.timeseries import MeasurementWriter
from f2stream.tables.parameters import ParameterTable


class Counting:
    """Wraps a stage: counts records and times the first batch's start."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.records = 0
        self.first_at: float | None = None

    async def __call__(self, batch: Batch) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        await self.handler(batch)
        self.records += sum(len(r) for r in batch.values())


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """Where `topic` ends now, per partition."""
    await consumer._client.force_metadata_update()  # noqa: SLF001  # aiokafka reads metadata lazily
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return ends


async def run(stage: str, max_records: int, timeout_s: float) -> dict[str, Any]:
    settings = Settings.from_env()
    kafka = kafka_options(settings)
    metrics = Metrics()
    producer = Producer(kafka, f"bench-{stage}")
    await producer.start()
    services: list[Any] = [producer]
    writer: MeasurementWriter | None = None
    if stage == "decode":
        params = ParameterTable(settings)  # reads the topic; no sync from PostgreSQL
        await params.start()
        services.append(params)
        await params.wait_ready()
        topic, handler, batch = RAW_TOPIC, Counting(DecodeStage(producer, params, metrics)), _DECODE_BATCH
    else:
        writer = MeasurementWriter(settings)
        topic, handler, batch = DECODED_TOPIC, Counting(SinkStage(producer, writer, metrics)), settings.sink_batch_size
    offsets = AIOKafkaConsumer(**kafka, group_id=None)
    await offsets.start()
    services.append(offsets)
    ends = await end_offsets(offsets, topic)
    available = sum(ends.values())
    target = min(max_records, available) if max_records else available
    loop = BatchLoop(
        name=f"bench-{stage}",
        topic=topic,
        group_id=f"bench-{stage}-{uuid.uuid4().hex[:8]}",
        handler=handler,
        kafka=kafka,
        max_records=batch,
        fetch_timeout_ms=settings.sink_batch_window_ms if stage == "sink" else 200,
    )
    cpu0 = time.process_time()
    await loop.start()
    deadline = time.monotonic() + timeout_s
    while handler.records < target and time.monotonic() < deadline:  # noqa: ASYNC110  # polled: cheap, exact enough
        await asyncio.sleep(0.05)
    done_at = time.monotonic()
    cpu = time.process_time() - cpu0
    await loop.stop()
    for service in reversed(services):
        await service.stop()
    if writer is not None:
        await writer.close()
    seconds = done_at - (handler.first_at or done_at)
    rows = metrics.rows_written._value.get() if stage == "sink" else metrics.measurements._value.get()  # noqa: SLF001
    return {
        "stage": stage,
        "records": handler.records,
        "rows": int(rows),
        "seconds": round(seconds, 3),
        "records_per_s": round(handler.records / seconds, 1) if seconds else None,
        "rows_per_s": round(rows / seconds, 1) if seconds else None,
        "cpu_s": round(cpu, 3),
        "pid": os.getpid(),
        "available": available,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("decode", "sink"))
    parser.add_argument("--max-records", type=int, default=0, help="stop after this many (0: all there is)")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(orjson.dumps(asyncio.run(run(args.stage, args.max_records, args.timeout_s))).decode(), flush=True)


if __name__ == "__main__":
    main()
