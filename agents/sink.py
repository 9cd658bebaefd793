"""The sink stage: batches of decoded_iot_data to `iot_measurements`.

A batch is done only when :meth:`MeasurementWriter.write` returned (the rows
are committed) and the dead letters of rows the database refused are
acknowledged by Kafka; only then does the batch loop commit its offsets.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import chain

import orjson
from aiokafka import ConsumerRecord

from f2stream.agents.batchloop import Batch
from f2stream.agents.producer import MAX_RECORD_BYTES, Output, Producer, send_handler_error
from f2stream.deadletter import dead_letter_headers, source_of
from f2stream.errors import BadMessage
from f2stream.kafka_topics import DEAD_LETTER_TOPIC
from f2stream.metrics import Metrics
from f2stream.records import Measurement, Rows
from f2stream.storage.timeseries import MeasurementWriter

__all__ = ["SinkStage"]

# A dead letter of a record that is not a decoded record keeps at most this much of it.
_KEEP = MAX_RECORD_BYTES // 2


class SinkStage:
    """The batch handler of the sink loop: one idempotent write per batch, then its dead letters."""

    def __init__(self, producer: Producer, writer: MeasurementWriter, metrics: Metrics) -> None:
        self.producer = producer
        self.writer = writer
        self.metrics = metrics

    async def __call__(self, batch: Batch) -> None:
        """Write one batch; return only once its rows are committed and its dead letters acknowledged."""
        rows = Rows()
        dead: list[Output] = []
        unreadable: Counter[str] = Counter()  # records that are not decoded records, by reason
        sources: list[str] = []  # per row: the decoded record it came from, for its dead letter
        for record in chain.from_iterable(batch.values()):
            source = source_of(record)
            try:
                sources.extend([source] * rows.add_decoded(record.value))
            except BadMessage as exc:  # not ours: never blocks the topic, kept as it came (its head)
                unreadable[exc.reason] += 1
                headers = _headers(exc.reason, exc.detail, None, source)
                dead.append(
                    Output(DEAD_LETTER_TOPIC, record.key, (record.value or b"")[:_KEEP], record.partition, headers)
                )
        started = time.perf_counter()
        inserted, rejected = await self.writer.write(rows) if rows else (0, [])
        self.metrics.sink_batch_seconds.observe(time.perf_counter() - started)
        self.metrics.observe_committed(rows, time.time())
        self.metrics.sink_batch_size.observe(len(rows))
        self.metrics.rows_written.inc(inserted)
        self.metrics.rows_duplicate.inc(len(rows) - inserted - len(rejected))
        for item in rejected:
            m = item.measurement
            headers = _headers("sink_rejected", item.detail, m, sources[item.index])
            dead.append(Output(DEAD_LETTER_TOPIC, m.device_id.encode(), orjson.dumps(m.asdict()), 0, headers))
        if not dead:
            return
        await self.producer.send_all(dead)
        self.metrics.dead_letters.labels(reason="sink_rejected").inc(len(rejected))
        for reason, count in unreadable.items():
            self.metrics.dead_letters.labels(reason=reason).inc(count)

    async def quarantine(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Dead-letter a record that makes this stage fail alone (`handler_error`, with the exception)."""
        await send_handler_error(self.producer, record, exc, "sink")
        self.metrics.dead_letters.labels(reason="handler_error").inc()


def _headers(reason: str, detail: str, measurement: Measurement | None, source: str) -> list[tuple[str, bytes]]:
    return dead_letter_headers(
        reason=reason,
        detail=detail,
        stage="sink",
        mqtt_topic=None if measurement is None else measurement.source_topic,
        received_at=None if measurement is None else measurement.received_at,
        source=source,
    )
