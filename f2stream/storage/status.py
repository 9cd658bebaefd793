"""Device liveness in the time-series database: `device_status` (current) and `device_status_changes` (history)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from f2stream.storage.db import TimeseriesPool

__all__ = ["StatusWriter", "status_rows"]

_HISTORY = """
INSERT INTO device_status_changes (device_id, at, to_state, from_state, last_seen, reason, messages, dead_letters)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                     $7::bigint[], $8::bigint[])
ON CONFLICT DO NOTHING
"""
# Only a newer change replaces the current row: a re-delivered or reordered event never moves it back.
_CURRENT = """
INSERT INTO device_status (device_id, state, since, last_seen, reason)
SELECT DISTINCT ON (d) d, s, a, l, r
FROM unnest($1::text[], $3::text[], $2::timestamptz[], $4::timestamptz[], $5::text[]) AS u(d, s, a, l, r)
ORDER BY d, a DESC
ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since,
    last_seen = EXCLUDED.last_seen, reason = EXCLUDED.reason, updated_at = now()
WHERE device_status.since <= EXCLUDED.since
"""
_PAGE = """
SELECT device_id, state, since, last_seen, reason FROM device_status
WHERE ($1::text IS NULL OR state = $1) AND device_id > $2
ORDER BY device_id LIMIT $3
"""
_ONE = "SELECT device_id, state, since, last_seen, reason FROM device_status WHERE device_id = $1"


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def status_rows(events: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """`device_status` events as the statements' columns; events without device, state or time are skipped."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    for e in events:
        at = _time(e.get("at"))
        if not isinstance(e.get("device"), str) or not isinstance(e.get("to"), str) or at is None:
            continue
        row = (e["device"], at, e["to"], e.get("from"), _time(e.get("last_seen")), str(e.get("reason", "")),
               int(e.get("messages") or 0), int(e.get("dead_letters") or 0))  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


class StatusWriter(TimeseriesPool):
    """Writes liveness changes; answers the views that list devices by state."""

    async def write(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Insert the changes and move each device's current row to its newest; return the changes written."""
        columns = status_rows(events)
        if not columns[0]:
            return 0
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_HISTORY, *columns)
            device, at, to, _, last_seen, reason = columns[:6]
            await conn.execute(_CURRENT, device, at, to, last_seen, reason)
        return len(columns[0])

    async def page(self, state: str | None, after: str, limit: int) -> list[asyncpg.Record]:
        """Devices (in `state`, or all) by device id, after `after`, at most `limit`."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(_PAGE, state, after, limit)
        return rows

    async def one(self, device: str) -> asyncpg.Record | None:
        """The device's current row, or None."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(_ONE, device)
        return row
