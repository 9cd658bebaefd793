"""The decode agent: raw_iot_data to decoded_iot_data, bad input to iot_dead_letter."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import faust
from f2stream.tables.params import ParameterTable

from f2stream.deadletter import dead_letter_headers, header_map
from f2stream.decode import decode_message, format_time
from f2stream.errors import BadMessage
from f2stream.metrics import Metrics

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(
    app: faust.App,
    raw: faust.TopicT,
    decoded: faust.TopicT,
    dead: faust.TopicT,
    params: ParameterTable,
    metrics: Metrics,
) -> Any:
    """Attach the decode agent to `app`; return it."""

    @app.agent(raw, name="f2stream.decode")
    async def decode(stream: faust.StreamT[bytes]) -> None:
        await params.wait_ready()
        async for event in stream.events():
            message = event.message
            headers = header_map(message.headers)
            topic = headers.get("mqtt_topic", "")
            received_at = headers.get("received_at") or format_time(datetime.fromtimestamp(message.timestamp, UTC))
            payload = message.value if isinstance(message.value, bytes) else b""
            try:
                measurements = decode_message(topic, payload, received_at, params)
            except BadMessage as exc:
                reason, detail = exc.reason, exc.detail
            except Exception as exc:  # a decoder bug must not lose the message: dead-letter it
                logger.exception("Decoder failed on %s", topic)
                reason, detail = "decoder_error", f"{exc.__class__.__name__}: {exc}"
            else:
                for measurement in measurements:
                    await decoded.send(key=measurement.device_id.encode(), value=measurement)
                metrics.decoded_messages.inc()
                metrics.measurements.inc(len(measurements))
                continue
            metrics.dead_letters.labels(reason=reason).inc()
            await dead.send(
                key=message.key,
                value=payload,
                headers=dead_letter_headers(
                    reason=reason,
                    detail=detail,
                    stage="decode",
                    mqtt_topic=topic,
                    received_at=received_at,
                    source=f"{message.topic}/{message.partition}/{message.offset}",
                ),
            )

    return decode
