"""`redrive`: send dead letters back through decode once their cause is fixed, and land their rows.

A letter is decoded again with the parameters in force now. One that
decodes lands its rows as replay would (added if missing; rows already
there from an earlier redrive are left alone), one that still fails is
reported with its current reason: nothing is written back to the
dead-letter topic, so a letter is never multiplied, and a second redrive
lands nothing twice. Several letters of one message (it was re-delivered)
count once. Letters of the sink stage hold decoded rows, not the message,
and letters cut to their head hold too little to decode: both are counted
as not redrivable.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

import asyncpg
from aiokafka import ConsumerRecord

from f2stream.codec.message import CodecSource, decode_message
from f2stream.deadletter import header_map
from f2stream.errors import BadMessage
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, RAW_TOPIC
from f2stream.mqtt_topics import parse_topic
from f2stream.records import Measurement, format_time
from f2stream.repair.plan import MessageKey, key_of, plan_message
from f2stream.repair.replay import connect_timeseries
from f2stream.repair.report import Progress, TextfileMetrics
from f2stream.repair.rows import apply_plans, fetch_stored, hour_ranges, refresh_aggregate
from f2stream.repair.source import Reader
from f2stream.repair.window import Window, check_window
from f2stream.settings import Settings

__all__ = ["Letter", "RedriveResult", "RedriveSelection", "read_letter", "redrive"]

#: Stages whose letters hold the MQTT message as it arrived.
_REDRIVABLE_STAGES = frozenset({"decode", "ingest"})
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class RedriveSelection:
    """Which dead letters to redrive."""

    reasons: frozenset[str] = frozenset()  # empty: every reason
    devices: frozenset[str] = frozenset()  # canonical device ids; empty: every device
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter, read: why it died, where from, and the message it holds."""

    reason: str
    stage: str
    source: str
    device: str | None
    mqtt_topic: str
    received_at: str
    payload: bytes
    cut: bool  # the value holds only the message's head

    @property
    def raw(self) -> tuple[int, int] | None:
        """(partition, offset) of the raw_iot_data record it was made from, if it was made from one."""
        topic, _, rest = self.source.partition("/")
        partition, _, offset = rest.partition("/")
        if topic == RAW_TOPIC and partition.isdigit() and offset.isdigit():
            return int(partition), int(offset)
        return None


@dataclass(slots=True)
class RedriveResult:
    """What a redrive read and what became of each letter, by its reason."""

    window: Window
    read: int = 0  # letters in the window
    selected: int = 0  # of which the selection's
    duplicates: int = 0  # further letters of a message already counted
    landed: Counter[str] = field(default_factory=Counter)  # decoded now; rows written (or, dry run: would be)
    present: Counter[str] = field(default_factory=Counter)  # decoded now; its rows were already there
    empty: Counter[str] = field(default_factory=Counter)  # decoded now into no values
    failing: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, current reason)
    not_redrivable: Counter[str] = field(default_factory=Counter)
    rows_added: int = 0
    examples: list[str] = field(default_factory=list)
    refreshed: int = 0
    seconds: float = 0.0


def read_letter(record: ConsumerRecord[bytes, bytes]) -> Letter:
    """A dead-letter record as a :class:`Letter`."""
    headers = header_map(record.headers)
    topic = headers.get("mqtt_topic", "")
    device = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else None
    with contextlib.suppress(BadMessage):  # else the key, which ingest took from the topic
        device = parse_topic(topic).device_id
    received_at = headers.get("received_at") or format_time(datetime.fromtimestamp(record.timestamp / 1000, UTC))
    return Letter(
        reason=headers.get("reason", ""),
        stage=headers.get("stage", ""),
        source=headers.get("source", ""),
        device=device,
        mqtt_topic=topic,
        received_at=received_at,
        payload=record.value if isinstance(record.value, bytes) else b"",
        cut="payload_bytes" in headers,
    )


async def redrive(
    settings: Settings,
    selection: RedriveSelection,
    *,
    dry_run: bool,
    params: CodecSource,
    progress_out: TextIO = sys.stderr,
    now: datetime | None = None,
) -> RedriveResult:
    """Redrive the selected dead letters (see the module).

    Raises:
        WindowError: the window is empty, in the future, or outside what iot_dead_letter holds.
        SourceError: Kafka cannot be read.
        RepairError: the time-series database cannot be reached.
    """
    now = now or datetime.now(UTC)
    reader = Reader(settings, DEAD_LETTER_TOPIC, client_id="f2stream-redrive")
    await reader.start()
    try:
        result = RedriveResult(check_window(selection.since, selection.until, now, await reader.held()))
        spans = await reader.spans(result.window)
        progress = Progress("redrive", sum(map(len, spans)), out=progress_out)
        metrics = TextfileMetrics(settings.metrics_textfile_dir, "redrive")
        conn = await connect_timeseries(settings)
        seen: set[str] = set()
        touched: set[datetime] = set()
        try:
            async for batch in reader.read(spans):
                await _redrive_batch(conn, batch, params, selection, result, seen, touched, dry_run, metrics)
                progress.advance(len(batch))
            if not dry_run:
                result.refreshed = await refresh_aggregate(conn, hour_ranges(touched))
        finally:
            await conn.close()
            if not dry_run:
                metrics.write()
        progress.finish()
        result.seconds = progress.elapsed
        return result
    finally:
        await reader.stop()


async def _redrive_batch(
    conn: asyncpg.Connection,
    batch: Sequence[ConsumerRecord[bytes, bytes]],
    params: CodecSource,
    selection: RedriveSelection,
    result: RedriveResult,
    seen: set[str],
    touched: set[datetime],
    dry_run: bool,
    metrics: TextfileMetrics,
) -> None:
    since, until = result.window.since_ms, result.window.until_ms
    decoded: dict[MessageKey, tuple[str, list[Measurement]]] = {}
    for record in batch:
        if not since <= record.timestamp < until:
            continue
        result.read += 1
        letter = read_letter(record)
        if (selection.reasons and letter.reason not in selection.reasons) or (
            selection.devices and letter.device not in selection.devices
        ):
            continue
        result.selected += 1
        if letter.stage not in _REDRIVABLE_STAGES or letter.cut:
            result.not_redrivable[letter.reason] += 1
            continue
        if letter.source in seen:
            result.duplicates += 1
            continue
        seen.add(letter.source)
        try:
            measurements = decode_message(letter.mqtt_topic, letter.payload, letter.received_at, params, letter.raw)
        except BadMessage as exc:
            result.failing[(letter.reason, exc.reason)] += 1
            metrics.add("f2_redrive_letters", 1, reason=letter.reason, outcome="failing")
            if len(result.examples) < _EXAMPLES:
                result.examples.append(f"{letter.source} ({letter.reason}): now {exc.reason}: {exc.detail}")
            continue
        if not measurements:
            result.empty[letter.reason] += 1
            continue
        decoded.setdefault(key_of(measurements[0]), (letter.reason, measurements))
    stored = await fetch_stored(conn, list(decoded))
    plans = []
    for key, (reason, measurements) in decoded.items():
        plan = plan_message(key, measurements, stored.get(key, []), measurements[0].param_version)
        plan.remove.clear()  # a redrive adds what is missing; what else the message has is replay's to judge
        if plan.add or plan.change or plan.restamp:
            plans.append(plan)
            result.landed[reason] += 1
            result.rows_added += len(plan.add)
            touched.add(datetime.fromisoformat(key[4]))
            metrics.add("f2_redrive_letters", 1, reason=reason, outcome="landed")
        else:
            result.present[reason] += 1
            metrics.add("f2_redrive_letters", 1, reason=reason, outcome="present")
    if plans and not dry_run:
        await apply_plans(conn, plans)
