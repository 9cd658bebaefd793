"""The decode stage: batches of raw_iot_data to decoded_iot_data, bad input to iot_dead_letter.

:func:`decode_batch` is pure: records and parameters in, the records to
produce out. :class:`DecodeStage` produces them all, awaits every
acknowledgement once, and only then returns to the batch loop, which
commits the batch's offsets. A produce that fails raises, so nothing of the
batch is committed and it is read again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Protocol

from aiokafka import ConsumerRecord

from f2stream.agents.batchloop import Batch
from f2stream.agents.producer import MAX_RECORD_BYTES, Output, Producer, send_handler_error
from f2stream.codec.message import CodecSource, DecodedMessage, decode_points
from f2stream.deadletter import dead_letter_headers, header_map, source_of
from f2stream.errors import BadMessage
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, DECODED_TOPIC
from f2stream.liveness import Seen
from f2stream.metrics import Metrics
from f2stream.records import encode_points, format_time

__all__ = ["DecodeStage", "Decoded", "Output", "decode_batch", "decode_record", "receipt_time"]

logger = logging.getLogger(__name__)

# A too_large dead letter keeps this much of its payload.
_TRUNCATE_AT = 64 * 1024
# Room for a dead letter's headers (the detail is capped at 1 KiB).
_HEADROOM = 4 * 1024


@dataclass(slots=True)
class Decoded:
    """What one batch became: the records to produce, and what to count."""

    outputs: list[Output] = field(default_factory=list)
    messages: int = 0
    measurements: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    #: Per record, what liveness needs (f2stream.liveness.Seen).
    seen: list[Seen] = field(default_factory=list)


#: Told of each message decoded with values, as it is decoded: it, its raw partition and offset, its receipt.
Observer = Callable[[DecodedMessage, int, int, str], None]


def decode_record(
    record: ConsumerRecord[bytes, bytes], params: CodecSource, into: Decoded, observe: Observer | None = None
) -> None:
    """Decode one raw record into `into`: a decoded record, nothing (no values), or a dead letter.

    `observe` (the alarm rules) sees each message with values at once, so
    that no message object outlives its record's decoding.

    A decoded record that would exceed :data:`MAX_RECORD_BYTES` becomes a
    `too_large` dead letter instead; a dead letter that could not hold its
    payload keeps the payload's head, and its full size in `payload_bytes`.
    """
    headers = header_map(record.headers)
    topic = headers.get("mqtt_topic", "")
    received_at = headers.get("received_at")
    payload = record.value if isinstance(record.value, bytes) else b""
    try:
        received_at = received_at or receipt_time(record.timestamp)
        message = decode_points(topic, payload, params)
    except BadMessage as exc:
        reason, detail = exc.reason, exc.detail
    except Exception as exc:  # a decoder bug must not lose the message: dead-letter it
        logger.exception("Decoder failed on %s", topic)
        reason, detail = "decoder_error", f"{exc.__class__.__name__}: {exc}"
    else:
        into.messages += 1
        points = message.points
        into.seen.append((record.key, record.partition, record.offset, received_at,
                          message.time if points else None, False))  # fmt: skip
        if not points:
            return
        into.measurements += len(points)
        if observe is not None:
            observe(message, record.partition, record.offset, received_at)
        info = message.info
        value = encode_points(
            message.time, info.device_id, info.mode, info.connector, info.component, info.topic, received_at,
            message.param_version, record.partition, record.offset, points,
        )  # fmt: skip
        output = Output(DECODED_TOPIC, info.device_id.encode(), value, record.partition)
        if output.size <= MAX_RECORD_BYTES:
            into.outputs.append(output)
            return
        reason = "too_large"
        detail = f"its decoded record has {output.size} bytes, more than the {MAX_RECORD_BYTES} a record may hold"
    into.seen.append((record.key, record.partition, record.offset, received_at, None, True))
    size = len(payload)
    value = payload
    if size + _HEADROOM > MAX_RECORD_BYTES:  # the letter could not hold it: keep its head and say so
        value = payload[:_TRUNCATE_AT]
        detail = f"{detail}; the value keeps the first {_TRUNCATE_AT} of {size} bytes"
    into.dead[reason] += 1
    letter = dead_letter_headers(
        reason=reason,
        detail=detail,
        stage="decode",
        mqtt_topic=topic,
        received_at=received_at,
        source=source_of(record),
        payload_bytes=size if value is not payload else None,
    )
    into.outputs.append(Output(DEAD_LETTER_TOPIC, record.key, value, record.partition, letter))


def receipt_time(timestamp_ms: int) -> str:
    """A record's Kafka timestamp as a receipt time, for records produced without a `received_at` header.

    Raises:
        BadMessage: `bad_timestamp`: the timestamp is not a time a receipt can have had.
    """
    try:
        return format_time(datetime.fromtimestamp(timestamp_ms / 1000, UTC))
    except (ValueError, OverflowError, OSError) as exc:
        raise BadMessage(
            "bad_timestamp", f"no received_at header, and its Kafka timestamp {timestamp_ms} is no time"
        ) from exc


def decode_batch(
    records: Iterable[ConsumerRecord[bytes, bytes]], params: CodecSource, observe: Observer | None = None
) -> Decoded:
    """Decode raw records, in order, into the records to produce (`observe`: see :func:`decode_record`)."""
    decoded = Decoded()
    for record in records:
        decode_record(record, params, decoded, observe)
    return decoded


class LivenessHook(Protocol):
    """What the decode stage needs of the liveness tracker (f2stream.agents.liveness)."""

    def batch(self, seen: list[Seen]) -> AbstractAsyncContextManager[list[Output]]:
        """Apply what a batch saw; yield the records to produce with it."""


class AlarmBatch(Protocol):
    """One batch's alarm evaluation (f2stream.agents.alarms.Evaluation)."""

    def observe(self, message: DecodedMessage, partition: int, offset: int, received_at: str) -> None:
        """Evaluate one decoded message."""

    def outputs(self) -> list[Output]:
        """The transitions to produce with the batch."""


class AlarmHook(Protocol):
    """What the decode stage needs of the alarm tracker (f2stream.agents.alarms)."""

    def batch(self, ends: dict[int, int]) -> AbstractAsyncContextManager[AlarmBatch]:
        """A batch's evaluation, held until its records are produced (`ends`: per partition, past its last)."""


class DecodeStage:
    """The batch handler of the decode loop: decode, produce everything, await every acknowledgement."""

    def __init__(
        self,
        producer: Producer,
        params: CodecSource,
        metrics: Metrics,
        liveness: LivenessHook | None = None,
        alarms: AlarmHook | None = None,
    ) -> None:
        self.producer = producer
        self.params = params
        self.metrics = metrics
        self.liveness = liveness
        self.alarms = alarms

    async def __call__(self, batch: Batch) -> None:
        """Handle one batch; return only when Kafka acknowledged all it became.

        Raises:
            KafkaError: a record was not acknowledged: the batch must be read again.
        """
        records = chain.from_iterable(batch.values())
        if self.alarms is None:
            decoded = decode_batch(records, self.params)
            await self._send(decoded, [])
        else:  # the rules see each message as it is decoded
            ends = {tp.partition: records[-1].offset + 1 for tp, records in batch.items() if records}
            async with self.alarms.batch(ends) as evaluation:
                decoded = decode_batch(records, self.params, evaluation.observe)
                await self._send(decoded, evaluation.outputs())
        self.metrics.decoded_messages.inc(decoded.messages)
        self.metrics.measurements.inc(decoded.measurements)
        for reason, count in decoded.dead.items():
            self.metrics.dead_letters.labels(reason=reason).inc(count)

    async def _send(self, decoded: Decoded, transitions: list[Output]) -> None:
        """Produce the batch with its liveness changes and alarm transitions, acknowledged before it is committed.

        Raises:
            KafkaError: nothing of the batch is committed.
        """
        liveness = self.liveness.batch(decoded.seen) if self.liveness is not None else nullcontext([])
        async with liveness as changes:
            await self.producer.send_all(decoded.outputs + changes + transitions)

    async def quarantine(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Dead-letter a record that makes this stage fail alone (`handler_error`, with the exception)."""
        await send_handler_error(self.producer, record, exc, "decode")
        self.metrics.dead_letters.labels(reason="handler_error").inc()
