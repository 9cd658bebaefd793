"""`replay` and `redrive`: repair history after a parameter fix (:mod:`f2stream.repair`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import faust
from faust.cli import option

from f2stream.codec.model import ParameterIndex
from f2stream.commands.base import CommandError, connect_database, device_id_of, one_line_errors
from f2stream.errors import REASONS
from f2stream.kafka_topics import RAW_TOPIC
from f2stream.repair.redrive import RedriveResult, RedriveSelection, redrive
from f2stream.repair.replay import ReplayResult, Selection, replay
from f2stream.repair.report import CHANGES, by_reason
from f2stream.repair.source import Reader, topic_retention_ms
from f2stream.repair.window import parse_moment
from f2stream.settings import Settings
from f2stream.storage.db import failure
from f2stream.tables.parameters import load_codecs

__all__ = ["register"]

_KNOWN_DEVICES = """
SELECT device_id FROM device_registry WHERE device_id = ANY($1::text[])
UNION SELECT device_id FROM parameter_versions WHERE device_id = ANY($1::text[])
"""


def _window_options() -> list[Any]:
    return [
        option("--since", default=None, help="Start: ISO 8601 (UTC unless it says), or a duration ago (90m, 2h, 7d)."),
        option("--until", default=None, help="End (excluded), as --since; default: now."),
        option("--device", "devices", multiple=True, help="Only this device (repeatable; any MAC spelling)."),
        option("--dry-run", is_flag=True, default=False, help="Write nothing; say what would change."),
    ]


def register(app: faust.App, settings: Settings) -> None:
    """Attach `replay` and `redrive`."""

    @app.command(
        *_window_options(),
        option("--component", "components", multiple=True, help="Only this component, e.g. strike-1 (repeatable)."),
        option("--stale", is_flag=True, default=False,
               help="Only messages with rows decoded with an older parameter version than the device's current."),
        option("--window", "show_window", is_flag=True, default=False,
               help="Only print the window raw_iot_data holds (what replay can repair) and its retention."),
    )  # fmt: skip
    @one_line_errors
    async def replay_command(
        self: Any,
        since: str | None,
        until: str | None,
        devices: Sequence[str],
        dry_run: bool,
        components: Sequence[str],
        stale: bool,
        show_window: bool,
    ) -> None:
        """Re-decode raw_iot_data with the parameters in force now, and repair the rows."""
        if show_window:
            await _print_window(settings)
            return
        now = datetime.now(UTC)
        selection = Selection(
            since=parse_moment(since, now, option="--since") if since else None,
            until=parse_moment(until, now, option="--until") if until else None,
            devices=frozenset(device_id_of(d) for d in devices),
            components=frozenset(components),
            stale=stale,
        )
        with _database_refusals("replay"):
            params = await _current_parameters(settings, selection.devices)
            result = await replay(settings, selection, dry_run=dry_run, params=params, now=now)
        _print_replay(result, dry_run)

    @app.command(
        *_window_options(),
        option("--reason", "reasons", multiple=True,
               help=f"Only letters of this reason (repeatable): {', '.join(REASONS)}."),
    )  # fmt: skip
    @one_line_errors
    async def redrive_command(
        self: Any, since: str | None, until: str | None, devices: Sequence[str], dry_run: bool, reasons: Sequence[str]
    ) -> None:
        """Send dead letters back through decode now that their cause is fixed; land their rows once."""
        unknown = sorted(set(reasons) - set(REASONS))
        if unknown:
            raise CommandError(
                f"--reason {unknown[0]!r} is no dead-letter reason; the reasons are {', '.join(REASONS)}"
            )
        now = datetime.now(UTC)
        selection = RedriveSelection(
            reasons=frozenset(reasons),
            devices=frozenset(device_id_of(d) for d in devices),
            since=parse_moment(since, now, option="--since") if since else None,
            until=parse_moment(until, now, option="--until") if until else None,
        )
        with _database_refusals("redrive"):
            params = await _current_parameters(settings, selection.devices)
            result = await redrive(settings, selection, dry_run=dry_run, params=params, now=now)
        _print_redrive(result, dry_run)


@contextmanager
def _database_refusals(command: str) -> Iterator[None]:
    """A statement the server refused (e.g. a role without the right: 42501) ends the command in one line.

    Raises:
        CommandError: naming the failure and what to do.
    """
    try:
        yield
    except asyncpg.PostgresError as exc:
        raise CommandError(
            f"{command} stopped: {failure(exc)}; {command} logs in as a member of f2_repair and f2_params_reader "
            '(F2_TIMESERIES_USER, F2_PARAMS_USER; docs/operations.md, "Database roles"); the batches written so far '
            "stay, and running it again once fixed finishes the rest"
        ) from exc


async def _current_parameters(settings: Settings, devices: frozenset[str]) -> ParameterIndex:
    """The parameters in force now (of `devices`, if given), after checking that those devices exist.

    Raises:
        CommandError: a device is neither registered nor has parameters.
    """
    conn = await connect_database(settings, "params")
    try:
        if devices:
            known = {r["device_id"] for r in await conn.fetch(_KNOWN_DEVICES, sorted(devices))}
            missing = sorted(devices - known)
            if missing:
                raise CommandError(
                    f"device {missing[0]} is neither registered nor has parameters: "
                    "check the MAC (faust -A f2stream devices)"
                )
        return await load_codecs(conn, sorted(devices) if devices else None)
    finally:
        await conn.close()


async def _print_window(settings: Settings) -> None:
    reader = Reader(settings, RAW_TOPIC, client_id="f2stream-replay")
    await reader.start()
    try:
        held = await reader.held()
    finally:
        await reader.stop()
    retention = await topic_retention_ms(settings, RAW_TOPIC)
    kept = "unknown" if retention is None else "for ever" if retention < 0 else f"{retention / 3_600_000:g} hours"
    print(f"replay: {held}", flush=True)
    print(
        f"replay: {RAW_TOPIC} keeps records {kept} (retention.ms); F2_RAW_RETENTION_HOURS is "
        f"{settings.raw_retention_hours:g} for a topic created from now on",
        flush=True,
    )


def _print_replay(result: ReplayResult, dry_run: bool) -> None:
    tally = result.tally
    rate = result.read / result.seconds if result.seconds else 0.0
    print(f"replay{' (dry run: nothing written)' if dry_run else ''}: window {result.window}", flush=True)
    for line in tally.lines(dry_run=dry_run):
        print(line, flush=True)
    rows = ", ".join(f"{c} {tally.total(c):,}" for c in CHANGES)
    beyond = (
        f"; {result.beyond_frontier:,} newer records are not yet written by the live pipeline and are left to it"
        if result.beyond_frontier
        else ""
    )
    print(
        f"replay: read {result.read:,} raw records in {result.seconds:.1f} s ({rate:,.0f}/s); "
        f"{sum(tally.repaired.values()):,} of {sum(tally.messages.values()):,} messages "
        f"{'would change' if dry_run else 'repaired'}; rows {rows}; "
        f"hourly aggregate ranges refreshed: {result.refreshed}{beyond}",
        flush=True,
    )


def _print_redrive(result: RedriveResult, dry_run: bool) -> None:
    verb = "would land" if dry_run else "landed"
    print(f"redrive{' (dry run: nothing written)' if dry_run else ''}: window {result.window}", flush=True)
    print(
        f"redrive: {result.selected:,} of {result.read:,} letters selected"
        + (f" ({result.duplicates:,} further letters of messages already counted)" if result.duplicates else ""),
        flush=True,
    )
    if result.landed:
        print(
            f"  decode now, {verb}: {by_reason(result.landed.items())} ({result.rows_added:,} rows added)", flush=True
        )
    if result.present:
        print(f"  decode now, rows already there: {by_reason(result.present.items())}", flush=True)
    if result.empty:
        print(f"  decode now into no values: {by_reason(result.empty.items())}", flush=True)
    if result.failing:
        pairs = sorted(result.failing.items())
        print("  still failing: " + ", ".join(f"{was} {n:,} (now {now})" for (was, now), n in pairs), flush=True)
        for example in result.examples:
            print(f"    e.g. {example}", flush=True)
    if result.not_redrivable:
        print(
            f"  not redrivable (letters of the sink stage, or cut to their head: replay the raw window instead): "
            f"{by_reason(result.not_redrivable.items())}",
            flush=True,
        )
    print(f"redrive: done in {result.seconds:.1f} s; hourly aggregate ranges refreshed: {result.refreshed}", flush=True)
