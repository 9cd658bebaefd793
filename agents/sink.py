"""The sink agent: decoded_iot_data to `iot_measurements`, in batches.

A batch is acknowledged only when :meth:`MeasurementWriter.write` returns,
which it does only once the rows are committed, so Kafka offsets are
committed only after the data is safe. Concurrency stays 1 (faust-streaming#606).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from f2stream.deadletter import dead_letter_headers
from f2stream.metrics import Metrics
from f2stream.records import Measurement
from f2stream.timeseries import MeasurementWriter

__all__ = ["register"]


def register(
    app: faust.App,
    decoded: faust.TopicT,
    dead: faust.TopicT,
    writer: MeasurementWriter,
    metrics: Metrics,
    *,
    batch_size: int,
    batch_window_s: float,
) -> Any:
    """Attach the sink agent to `app`; return it."""

    @app.agent(decoded, name="f2stream.sink", concurrency=1)
    async def sink(stream: faust.StreamT[Measurement]) -> None:
        async for batch in stream.take(batch_size, within=batch_window_s):
            started = time.perf_counter()
            inserted, rejected = await writer.write(batch)
            metrics.sink_batch_seconds.observe(time.perf_counter() - started)
            metrics.observe_committed(batch, time.time())
            metrics.sink_batch_size.observe(len(batch))
            metrics.rows_written.inc(inserted)
            metrics.rows_duplicate.inc(len(batch) - inserted - len(rejected))
            for item in rejected:
                metrics.dead_letters.labels(reason="sink_rejected").inc()
                await dead.send(
                    key=item.measurement.device_id.encode(),
                    value=orjson.dumps(item.measurement.asdict()),
                    headers=dead_letter_headers(
                        reason="sink_rejected",
                        detail=item.detail,
                        stage="sink",
                        mqtt_topic=item.measurement.source_topic,
                        received_at=item.measurement.received_at,
                        source="decoded_iot_data",
                    ),
                )

    return sink
