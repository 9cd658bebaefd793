"""Commands of `faust -A f2stream`: migrate, tail, simulate, verify."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from faust.cli import argument, option

from f2stream.db import connect, describe_dsn
from f2stream.errors import F2StreamError
from f2stream.kafka import PIPELINE_TOPICS
from f2stream.migrate import DATABASES, apply_migrations, load_migrations
from f2stream.settings import Settings

__all__ = ["CommandError", "one_line_errors", "register", "render_record"]


class CommandError(F2StreamError):
    """A command cannot do what was asked; the message says how to fix it."""


def register(app: faust.App, settings: Settings) -> None:
    """Attach the commands to the pipeline app."""

    @app.command()
    @one_line_errors
    async def migrate(self: Any) -> None:
        """Apply the SQL migrations to the parameters and time-series databases."""
        await run_migrations(settings, print)

    @app.command(
        argument("topic"),
        option("--from-beginning", is_flag=True, default=False, help="Start at the oldest record, not the newest."),
        option("--max-messages", type=int, default=0, help="Stop after this many records (0: never)."),
        option("--idle-timeout-s", type=float, default=0.0, help="Stop after this long without records (0: never)."),
    )
    @one_line_errors
    async def tail(self: Any, topic: str, from_beginning: bool, max_messages: int, idle_timeout_s: float) -> None:
        """Follow a Kafka topic, one JSON record per line."""
        await tail_topic(
            settings, topic, from_beginning=from_beginning, max_messages=max_messages, idle_timeout_s=idle_timeout_s
        )

    from f2stream import devices, params_cli, simulator, verify  # they register their own commands

    simulator.register(app, settings)
    params_cli.register(app, settings)
    devices.register(app, settings)
    verify.register(app, settings)


def one_line_errors(fun: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Turn a project error into one line on stderr and exit status 2: no traceback."""

    @wraps(fun)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await fun(*args, **kwargs)
        except F2StreamError as exc:
            print(f"f2stream: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return run


async def run_migrations(settings: Settings, report: Callable[[str], None]) -> None:
    """Apply every pending migration to both databases."""
    targets = {
        "params": (settings.params_dsn, settings.params_password, "F2_PARAMS_DSN"),
        "timeseries": (settings.timeseries_dsn, settings.timeseries_password, "F2_TIMESERIES_DSN"),
    }
    for database in DATABASES:
        dsn, password, setting = targets[database]
        try:
            conn = await connect(dsn, password)
        except (TimeoutError, OSError, Exception) as exc:  # asyncpg raises many kinds
            raise CommandError(
                f"cannot connect to the {database} database at {describe_dsn(dsn)} ({exc.__class__.__name__}: {exc}); "
                f"start it (make up) or set {setting}"
            ) from exc
        try:
            count = await apply_migrations(conn, load_migrations(database), _prefixed(report, database))
        finally:
            await conn.close()
        report(f"{database}: {count} migration(s) applied, {describe_dsn(dsn)} is up to date")


def _prefixed(report: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: report(f"{prefix}: {line}")


async def tail_topic(
    settings: Settings, topic: str, *, from_beginning: bool, max_messages: int, idle_timeout_s: float
) -> None:
    """Print the records of a topic as JSON lines until stopped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        raise CommandError(
            f"Kafka at {settings.kafka_bootstrap} does not answer: start it (make up) or set F2_KAFKA_BROKER"
        ) from exc
    try:
        known = await consumer.topics()
        if topic not in known:
            hint = ", ".join(sorted(t for t in known if not t.startswith("__"))) or ", ".join(PIPELINE_TOPICS)
            raise CommandError(f"topic {topic!r} does not exist; known topics: {hint}")
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001  # the public call drops it
        assigned = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        await _print_records(consumer, max_messages, idle_timeout_s)
    finally:
        await consumer.stop()


async def _print_records(consumer: AIOKafkaConsumer, max_messages: int, idle_timeout_s: float) -> None:
    printed = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        batches = await consumer.getmany(timeout_ms=200)
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
    """One Kafka record as a JSON line: JSON values inline, other bytes as text or base64."""
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
        "headers": {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())},
    }
    value: bytes | None = record.value
    if value is None:
        line["value"] = None
    else:
        try:
            line["value"] = orjson.loads(value)
        except orjson.JSONDecodeError:
            try:
                line["value_text"] = value.decode("utf-8")
            except UnicodeDecodeError:
                line["value_base64"] = base64.b64encode(value).decode()
    return orjson.dumps(line).decode()
