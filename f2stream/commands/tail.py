"""`faust -A f2stream tail TOPIC`: follow a Kafka topic, one JSON record per line."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Iterable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from faust.cli import argument, option

from f2stream.commands.base import CommandError, one_line_errors
from f2stream.errors import F2StreamError
from f2stream.kafka_client import diagnose, kafka_options, refusal, unreachable
from f2stream.kafka_topics import PIPELINE_TOPICS
from f2stream.settings import Settings

__all__ = ["register", "render_record", "tail_topic"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `tail` command."""

    @app.command(
        argument("topic"),
        option("--from-beginning", is_flag=True, default=False, help="Start at the oldest record, not the newest."),
        option("--max-messages", type=int, default=0, help="Stop after this many records (0: never)."),
        option("--idle-timeout-s", type=float, default=0.0, help="Stop after this long without records (0: never)."),
        option(
            "--partition", type=int, default=None, help="Only this partition (with --offset: a row's raw_partition)."
        ),
        option("--offset", type=int, default=None, help="Start at this offset of --partition (a row's raw_offset)."),
    )
    @one_line_errors
    async def tail(
        self: Any,
        topic: str,
        from_beginning: bool,
        max_messages: int,
        idle_timeout_s: float,
        partition: int | None,
        offset: int | None,
    ) -> None:
        """Follow a Kafka topic, one JSON record per line."""
        if offset is not None and partition is None:
            raise CommandError("--offset needs --partition: the offset of which partition? (a row's raw_partition)")
        try:
            await tail_topic(
                settings, topic, from_beginning=from_beginning, max_messages=max_messages,
                idle_timeout_s=idle_timeout_s, partition=partition, offset=offset,
            )  # fmt: skip
        except BrokenPipeError:
            # The reader is gone (`| head`): end quietly, also at interpreter exit,
            # whose flush of stdout would otherwise fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except F2StreamError:
            raise
        except Exception as exc:
            # One line, not a traceback that a pipe (`| wc -l`) would hide among output.
            raise CommandError(f"tail {topic} stopped: {exc.__class__.__name__}: {exc}") from exc


async def tail_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    max_messages: int,
    idle_timeout_s: float,
    partition: int | None = None,
    offset: int | None = None,
) -> None:
    """Print the records of a topic as JSON lines until stopped (of one partition, from one offset, if given)."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        raise CommandError(await diagnose(settings) or unreachable(settings)) from exc
    try:
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001  # the public call drops it
        if topic in cluster.unauthorized_topics:
            raise CommandError(refusal(settings, TopicAuthorizationFailedError(topic)) or f"{topic}: not authorized")
        known = cluster.topics()
        if topic not in known:
            hint = ", ".join(sorted(t for t in known if not t.startswith("__"))) or ", ".join(PIPELINE_TOPICS)
            raise CommandError(f"topic {topic!r} does not exist{_or_hidden(settings)}; known topics: {hint}")
        assigned = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if partition is not None:
            if TopicPartition(topic, partition) not in assigned:
                raise CommandError(f"topic {topic!r} has no partition {partition}; it has 0 to {len(assigned) - 1}")
            assigned = [TopicPartition(topic, partition)]
        consumer.assign(assigned)
        if offset is not None:
            await _seek_to(consumer, assigned[0], offset)
        elif from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        await _print_records(consumer, max_messages, idle_timeout_s)
    except KafkaError as exc:
        line = refusal(settings, exc)
        if line is None:
            raise CommandError(f"Kafka stopped answering ({exc.__class__.__name__}: {exc})") from exc
        raise CommandError(line) from exc
    finally:
        await consumer.stop()


def _or_hidden(settings: Settings) -> str:
    """Kafka lists only the topics a principal may describe: say so when there is a principal."""
    if settings.kafka_sasl:
        return f" or {settings.kafka_username} may not see it (Kafka's ACLs)"
    return " or this client's principal may not see it (Kafka's ACLs)" if settings.kafka_cert_file else ""


async def _seek_to(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    """Start at `offset`, or say in one line which offsets the partition holds."""
    first = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    if not first <= offset < end:
        raise CommandError(
            f"partition {tp.partition} of {tp.topic} holds offsets {first} to {end - 1}, not {offset}"
            + (" (older records are past the topic's retention)" if offset < first else "")
        )
    consumer.seek(tp, offset)


async def _print_records(consumer: AIOKafkaConsumer, max_messages: int, idle_timeout_s: float) -> None:
    printed = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        try:
            batches = await consumer.getmany(timeout_ms=200)
        except KafkaError as exc:
            if isinstance(exc, TopicAuthorizationFailedError | GroupAuthorizationFailedError):
                raise  # refused, not stopped: said as such by tail_topic
            raise CommandError(
                f"Kafka stopped answering after {printed} record(s) ({exc.__class__.__name__}: {exc})"
            ) from exc
        for records in batches.values():
            for record in records:
                sys.stdout.write(render_record(record) + "\n")
                printed += 1
                if max_messages and printed >= max_messages:
                    sys.stdout.flush()
                    return
        sys.stdout.flush()
        if batches:
            last = loop.time()
        elif idle_timeout_s and loop.time() - last > idle_timeout_s:
            return


def render_record(record: Any) -> str:
    """One Kafka record as a JSON line; never raises, whatever the record holds.

    A value that is JSON is copied into the line as it arrived: numbers keep
    every digit and nesting its depth (re-encoding would round big integers
    and fail beyond orjson's 254 levels). Any other value is `value_text`
    (UTF-8) or `value_base64`, with `value_note` saying why it is not inline.
    A key or header that is not UTF-8 is given in base64 under `key_base64`
    or `headers_base64`.
    """
    where: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    try:
        line = {**where, "timestamp_ms": record.timestamp, **_key_and_headers(record.key, record.headers or ())}
        return _with_value(line, record.value)
    except Exception as exc:  # noqa: BLE001  # a record must never end the tail; say what went wrong instead
        value = record.value
        where["render_error"] = f"{exc.__class__.__name__}: {exc}"[:1024]
        where["value_base64"] = base64.b64encode(value).decode() if isinstance(value, bytes) else None
        return orjson.dumps(where).decode()


def _key_and_headers(key: bytes | None, headers: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    text = _utf8(key)
    if key is None or text is not None:
        out["key"] = text
    else:
        out["key_base64"] = base64.b64encode(key).decode()
    readable: dict[str, str] = {}
    raw: dict[str, str] = {}
    for name, value in headers:
        header_text = _utf8(value)
        if header_text is not None:
            readable[name] = header_text
        else:
            raw[name] = base64.b64encode(value).decode()
    out["headers"] = readable
    if raw:
        out["headers_base64"] = raw
    return out


def _utf8(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _with_value(line: dict[str, Any], value: bytes | None) -> str:
    if value is None:
        line["value"] = None
        return orjson.dumps(line).decode()
    try:
        orjson.loads(value)  # validates: strict RFC 8259, UTF-8, at most 1024 levels
    except orjson.JSONDecodeError as exc:
        line["value_note"] = f"not shown as JSON: {exc}"[:300]
    else:
        # Valid JSON has line breaks only as whitespace between tokens.
        inline = value.strip().replace(b"\r", b" ").replace(b"\n", b" ")
        return (orjson.dumps(line)[:-1] + b',"value":' + inline + b"}").decode()
    text = _utf8(value)
    if text is not None:
        line["value_text"] = text
    else:
        line["value_base64"] = base64.b64encode(value).decode()
        line["value_note"] += "; not UTF-8 either"
    return orjson.dumps(line).decode()
