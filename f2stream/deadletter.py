"""Dead letters: the original bytes plus headers that say why and where from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka import ConsumerRecord

__all__ = ["dead_letter_headers", "handler_error_letter", "header_map", "source_of"]


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


#: A handler_error letter keeps at most this much of the record's value and key.
HANDLER_ERROR_KEEP_BYTES = 64 * 1024
_KEY_KEEP_BYTES = 1024


def handler_error_letter(
    record: ConsumerRecord[bytes, bytes], exc: BaseException, stage: str
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the dead letter of a record that made its stage fail alone.

    The letter is small whatever the record was (its value's head, in
    `payload_bytes` its full size), so that writing it cannot fail the way
    the record did.
    """
    value = record.value if isinstance(record.value, bytes) else b""
    kept = value[:HANDLER_ERROR_KEEP_BYTES]
    key = record.key if isinstance(record.key, bytes) and len(record.key) <= _KEY_KEEP_BYTES else None
    headers = header_map(record.headers)
    topic, received_at = headers.get("mqtt_topic"), headers.get("received_at")
    letter = dead_letter_headers(
        reason="handler_error",
        detail=f"{exc.__class__.__name__}: {exc}",
        stage=stage,
        mqtt_topic=topic[:1024] if topic else None,
        received_at=received_at[:64] if received_at else None,
        source=source_of(record),
        payload_bytes=len(value) if len(kept) < len(value) else None,
    )
    return key, kept, letter


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
