"""Dead letters: the original bytes plus headers that say why and where from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka import ConsumerRecord

__all__ = ["dead_letter_headers", "header_map", "source_of"]


def dead_letter_headers(
    *,
    reason: str,
    detail: str,
    stage: str,
    mqtt_topic: str | None,
    received_at: str | None,
    source: str,
    payload_bytes: int | None = None,
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter; the value is the message exactly as it arrived.

    `source` identifies the message the dead letter was made from, the same on
    every re-delivery: `topic/partition/offset` of a Kafka record, or
    `mqtt:sha256:<hex>` of an MQTT message that never reached Kafka.
    `payload_bytes`, when given, is the message's full size: the value then
    holds only its start.
    """
    headers = [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")[:1024]),
        ("stage", stage.encode()),
        ("source", source.encode()),
    ]
    if mqtt_topic is not None:
        headers.append(("mqtt_topic", mqtt_topic.encode("utf-8", "replace")))
    if received_at is not None:
        headers.append(("received_at", received_at.encode()))
    if payload_bytes is not None:
        headers.append(("payload_bytes", str(payload_bytes).encode()))
    return headers


def header_map(headers: object) -> dict[str, str]:
    """Kafka headers (a list of pairs or a mapping, values bytes) as text."""
    # aiokafka gives a tuple of pairs: test that first, an ABC isinstance is slow on this path.
    pairs: Iterable[tuple[object, object]] = (
        headers if isinstance(headers, tuple | list) else headers.items() if isinstance(headers, Mapping) else ()
    )
    return {str(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in pairs}


def source_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """`topic/partition/offset`: the identity of a Kafka record in the dead letters made from it."""
    return f"{record.topic}/{record.partition}/{record.offset}"
