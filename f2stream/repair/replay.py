"""`replay`: re-decode a window of raw_iot_data with the parameters in force now, and repair the rows.

Per batch of raw records: decode each with the current parameters, read
the rows its message has, plan the changes (:mod:`.plan`) and apply them
in one transaction (:mod:`.rows`). The window ends at the live pipeline's
durable frontier (:func:`.source.live_frontier`): what lies beyond is the
live path's, decoded with the same current parameters. Running it again
changes nothing that a run before already corrected.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

import asyncpg
from aiokafka import ConsumerRecord

from f2stream.codec.message import CodecSource, decode_message
from f2stream.codec.model import ParameterIndex
from f2stream.deadletter import header_map
from f2stream.errors import BadMessage
from f2stream.kafka_topics import RAW_TOPIC
from f2stream.records import Measurement, format_time
from f2stream.repair.plan import MessageKey, MessagePlan, is_stale, key_of, plan_message
from f2stream.repair.report import Progress, Tally, TextfileMetrics
from f2stream.repair.rows import apply_plans, fetch_stored, hour_ranges, refresh_aggregate, relax_commits
from f2stream.repair.source import Reader, Span, live_frontier
from f2stream.repair.window import RepairError, Window, check_window
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure

__all__ = ["Decoded", "ReplayResult", "Selection", "connect_timeseries", "decode_raw", "replay"]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which messages a repair works on."""

    since: datetime | None = None
    until: datetime | None = None
    devices: frozenset[str] = frozenset()  # canonical device ids; empty: every device
    components: frozenset[str] = frozenset()  # e.g. strike-1; empty: every component
    stale: bool = False  # only messages with rows decoded with an older version than the device's current


@dataclass(slots=True)
class Decoded:
    """A batch of raw records decoded with the current parameters, one entry per message."""

    messages: dict[MessageKey, tuple[list[Measurement], int | None]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ReplayResult:
    """What a replay read and did."""

    window: Window
    spans: list[Span]
    beyond_frontier: int  # records past the live frontier, which the live path has not written yet: left to it
    tally: Tally
    read: int = 0
    batches: int = 0  # batches written
    refreshed: int = 0  # aggregate ranges refreshed
    seconds: float = 0.0


def decode_raw(
    records: Sequence[ConsumerRecord[bytes, bytes]], params: CodecSource, selection: Selection, window: Window
) -> Decoded:
    """Decode the raw records of the selection in the window; a message met twice (re-delivered) counts once."""
    decoded = Decoded()
    wanted = {d.encode() for d in selection.devices}
    since, until = window.since_ms, window.until_ms
    for record in records:
        if not since <= record.timestamp < until or (wanted and record.key not in wanted):
            continue
        headers = header_map(record.headers)
        topic = headers.get("mqtt_topic", "")
        if selection.components and topic.rsplit("/", 1)[-1] not in selection.components:
            continue
        received_at = headers.get("received_at") or format_time(datetime.fromtimestamp(record.timestamp / 1000, UTC))
        payload = record.value if isinstance(record.value, bytes) else b""
        try:
            measurements = decode_message(topic, payload, received_at, params, (record.partition, record.offset))
        except BadMessage as exc:
            decoded.refused[exc.reason] = decoded.refused.get(exc.reason, 0) + 1
            continue
        if measurements:
            decoded.messages.setdefault(key_of(measurements[0]), (measurements, measurements[0].param_version))
    return decoded


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    dry_run: bool,
    params: ParameterIndex,
    frontier_wait_s: float = 60.0,
    progress_out: TextIO = sys.stderr,
    now: datetime | None = None,
) -> ReplayResult:
    """Replay the selection's window (see the module); `params` are the parameters in force now.

    Raises:
        WindowError: the window is empty, in the future, or outside what raw_iot_data holds.
        SourceError: Kafka cannot be read, or the live sink does not catch up.
        RepairError: the time-series database cannot be reached.
    """
    now = now or datetime.now(UTC)
    reader = Reader(settings, RAW_TOPIC, client_id="f2stream-replay")
    await reader.start()
    try:
        window = check_window(selection.since, selection.until, now, await reader.held())
        wanted = await reader.spans(window)
        frontier = await live_frontier(settings, wait_s=frontier_wait_s)
        spans = [Span(s.partition, s.start, min(s.stop, max(s.start, frontier.get(s.partition, 0)))) for s in wanted]
        result = ReplayResult(window, spans, sum(map(len, wanted)) - sum(map(len, spans)), Tally())
        progress = Progress("replay", sum(map(len, spans)), out=progress_out)
        metrics = TextfileMetrics(settings.metrics_textfile_dir, "replay")
        conn = await connect_timeseries(settings)
        writers = [await connect_timeseries(settings) for _ in range(_WRITERS)]
        for writer in writers:
            await relax_commits(writer)
        applying: list[asyncio.Future[None]] = []
        try:
            touched: set[datetime] = set()
            async for batch in reader.read(spans):
                plans = await _plan_batch(conn, batch, params, selection, window, result, touched, metrics, dry_run)
                result.read += len(batch)
                progress.advance(len(batch))
                if len(applying) == len(writers):  # batches are written while the next is read and compared
                    await applying.pop(0)
                if plans and not dry_run:
                    applying.append(asyncio.ensure_future(_apply(writers[result.batches % len(writers)], plans)))
                    result.batches += 1
            for pending in applying:
                await pending
            applying.clear()
            if not dry_run:
                result.refreshed = await refresh_aggregate(conn, hour_ranges(touched))
        finally:
            for pending in applying:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, *DB_ERRORS):
                    await pending
            await conn.close()
            for writer in writers:
                await writer.close()
            if not dry_run:
                metrics.write()
        progress.finish()
        result.seconds = progress.elapsed
        return result
    finally:
        await reader.stop()


# Connections writing batches at once: the database's work on one overlaps the next.
_WRITERS = 2


async def _apply(conn: asyncpg.Connection, plans: list[MessagePlan]) -> None:
    """Apply a batch's plans; again if it deadlocked with the batch beside it (a message met in both)."""
    for attempt in range(3):
        try:
            await apply_plans(conn, plans)
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))


async def _plan_batch(
    conn: asyncpg.Connection,
    batch: list[ConsumerRecord[bytes, bytes]],
    params: CodecSource,
    selection: Selection,
    window: Window,
    result: ReplayResult,
    touched: set[datetime],
    metrics: TextfileMetrics,
    dry_run: bool,
) -> list[MessagePlan]:
    """Decode a batch, read its messages' rows, and plan the changes (counted as planned)."""
    decoded = decode_raw(batch, params, selection, window)
    for reason, count in decoded.refused.items():
        result.tally.refused[reason] += count
    stored = await fetch_stored(conn, list(decoded.messages))
    plans: list[MessagePlan] = []
    untouched = 0
    for key, (measurements, version) in decoded.messages.items():
        rows = stored.get(key, [])
        if selection.stale and not (rows and is_stale(rows, version)):
            continue
        plan = plan_message(key, measurements, rows, version)
        result.tally.count(key[0], plan)
        if plan.touched:
            plans.append(plan)
            touched.add(datetime.fromisoformat(key[4]))
        else:
            untouched += 1
    if not dry_run:
        metrics.add("f2_replay_messages", len(plans), outcome="repaired")
        metrics.add("f2_replay_messages", untouched, outcome="unchanged")
        for change, count in _rows_of(plans).items():
            metrics.add("f2_replay_rows", count, change=change)
    return plans


def _rows_of(plans: list[MessagePlan]) -> dict[str, int]:
    return {
        "added": sum(len(p.add) for p in plans),
        "changed": sum(len(p.change) for p in plans),
        "restamped": sum(len(p.restamp) for p in plans),
        "removed": sum(len(p.remove) for p in plans),
    }


async def connect_timeseries(settings: Settings) -> asyncpg.Connection:
    """One connection to the time-series database, or a one-line error."""
    try:
        return await connect(settings.timeseries_dsn, settings.timeseries_password)
    except DB_ERRORS as exc:
        raise RepairError(
            f"cannot connect to the time-series database at {describe_dsn(settings.timeseries_dsn)} "
            f"({failure(exc)}); start it (make up) or set F2_TIMESERIES_DSN"
        ) from exc
