"""Alarms in the time-series database: `alarm_transitions` (history) and `alarms` (one row per alarm).

The alarm loop writes the `alarm_events` topic here; the web views and the
`alarms list` command read it back. The history is what the topic said, each
transition once (the first delivery of it wins); an alarm's row is made again
from its history at each write, so that it is the same whatever order or
repetition its events came in: the state is the furthest transition known
(cleared, else acknowledged, else raised), never moved back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import asyncpg

from f2stream.alarms import AlarmEvent
from f2stream.records import format_time
from f2stream.storage.db import TimeseriesPool

__all__ = ["LIST_STATES", "AlarmWriter", "ListState", "alarm_answer", "list_alarms", "transition_columns"]

#: What `list_alarms` filters on: `active` is raised or acknowledged.
ListState = Literal["active", "raised", "acknowledged", "cleared", "all"]
LIST_STATES: Final[tuple[ListState, ...]] = get_args(ListState)
_STATES: Final[Mapping[str, list[str] | None]] = {
    "active": ["raised", "acknowledged"],
    "raised": ["raised"],
    "acknowledged": ["acknowledged"],
    "cleared": ["cleared"],
    "all": None,
}

_HISTORY = """
INSERT INTO alarm_transitions (alarm_id, transition, at, raised_at, device_id, rule, kind, severity, data_point,
                               value, text_value, raw_partition, raw_offset, reason, acknowledged_by)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::float8[], $11::text[], $12::int[], $13::bigint[],
                     $14::text[], $15::text[])
ON CONFLICT (alarm_id, transition) DO NOTHING
"""
# Each touched alarm's row from its (at most three) transitions, read by primary key; a row that
# would not change is left alone, so that a re-delivery does not even move updated_at.
_CURRENT = """
INSERT INTO alarms AS cur (alarm_id, device_id, rule, kind, severity, state, data_point, raised_at,
                           acknowledged_at, acknowledged_by, cleared_at, value, text_value,
                           raised_raw_partition, raised_raw_offset, cleared_raw_partition, cleared_raw_offset, reason)
SELECT t.id,
       COALESCE(r.device_id, a.device_id, c.device_id), COALESCE(r.rule, a.rule, c.rule),
       COALESCE(r.kind, a.kind, c.kind), COALESCE(r.severity, a.severity, c.severity),
       CASE WHEN c.alarm_id IS NOT NULL THEN 'cleared' WHEN a.alarm_id IS NOT NULL THEN 'acknowledged'
            ELSE 'raised' END,
       COALESCE(r.data_point, a.data_point, c.data_point), COALESCE(r.raised_at, a.raised_at, c.raised_at),
       a.at, a.acknowledged_by, c.at, r.value, r.text_value,
       -- an acknowledgement names the raising record too
       CASE WHEN r.alarm_id IS NOT NULL THEN r.raw_partition ELSE a.raw_partition END,
       CASE WHEN r.alarm_id IS NOT NULL THEN r.raw_offset ELSE a.raw_offset END,
       c.raw_partition, c.raw_offset, COALESCE(c.reason, a.reason, r.reason)
FROM (SELECT DISTINCT unnest($1::text[]) AS id) t
LEFT JOIN alarm_transitions r ON r.alarm_id = t.id AND r.transition = 'raised'
LEFT JOIN alarm_transitions a ON a.alarm_id = t.id AND a.transition = 'acknowledged'
LEFT JOIN alarm_transitions c ON c.alarm_id = t.id AND c.transition = 'cleared'
ORDER BY t.id
ON CONFLICT (alarm_id) DO UPDATE SET
    device_id = EXCLUDED.device_id, rule = EXCLUDED.rule, kind = EXCLUDED.kind, severity = EXCLUDED.severity,
    state = EXCLUDED.state, data_point = EXCLUDED.data_point, raised_at = EXCLUDED.raised_at,
    acknowledged_at = EXCLUDED.acknowledged_at, acknowledged_by = EXCLUDED.acknowledged_by,
    cleared_at = EXCLUDED.cleared_at, value = EXCLUDED.value, text_value = EXCLUDED.text_value,
    raised_raw_partition = EXCLUDED.raised_raw_partition, raised_raw_offset = EXCLUDED.raised_raw_offset,
    cleared_raw_partition = EXCLUDED.cleared_raw_partition, cleared_raw_offset = EXCLUDED.cleared_raw_offset,
    reason = EXCLUDED.reason, updated_at = now()
WHERE (cur.device_id, cur.rule, cur.kind, cur.severity, cur.state, cur.data_point, cur.raised_at,
       cur.acknowledged_at, cur.acknowledged_by, cur.cleared_at, cur.value, cur.text_value,
       cur.raised_raw_partition, cur.raised_raw_offset, cur.cleared_raw_partition, cur.cleared_raw_offset,
       cur.reason)
      IS DISTINCT FROM
      (EXCLUDED.device_id, EXCLUDED.rule, EXCLUDED.kind, EXCLUDED.severity, EXCLUDED.state, EXCLUDED.data_point,
       EXCLUDED.raised_at, EXCLUDED.acknowledged_at, EXCLUDED.acknowledged_by, EXCLUDED.cleared_at,
       EXCLUDED.value, EXCLUDED.text_value, EXCLUDED.raised_raw_partition, EXCLUDED.raised_raw_offset,
       EXCLUDED.cleared_raw_partition, EXCLUDED.cleared_raw_offset, EXCLUDED.reason)
"""
_COLUMNS = """alarm_id, device_id, rule, kind, severity, state, data_point, raised_at, acknowledged_at,
    acknowledged_by, cleared_at, value, text_value, raised_raw_partition, raised_raw_offset,
    cleared_raw_partition, cleared_raw_offset, reason, updated_at"""
_PAGE = f"""
SELECT {_COLUMNS} FROM alarms
WHERE ($1::text[] IS NULL OR state = ANY($1)) AND ($2::text IS NULL OR device_id = $2) AND alarm_id > $3
ORDER BY alarm_id LIMIT $4
"""
_TIMES: Final = ("raised_at", "acknowledged_at", "cleared_at", "updated_at")


def _moment(seconds: float) -> datetime:
    # As `f2stream.alarms.iso` writes it on the topic: the database holds what alarm_events said.
    return datetime.fromtimestamp(seconds, UTC)


def transition_columns(events: Sequence[AlarmEvent]) -> list[list[Any]]:
    """The events as the columns of `alarm_transitions`, in `_HISTORY`'s order."""
    columns: list[list[Any]] = [[] for _ in range(15)]
    for e in events:
        row = (e.alarm_id, e.transition, _moment(e.at), _moment(e.raised_at), e.device_id, e.rule, e.kind,
               e.severity, e.data_point, e.value, e.text_value, e.raw_partition, e.raw_offset, e.reason,
               e.acknowledged_by)  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def alarm_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """An `alarms` row as the views and the command show it: times as ISO 8601 text (UTC), or None."""
    answer = dict(row)
    for name in _TIMES:
        if answer.get(name) is not None:
            answer[name] = format_time(answer[name])
    return answer


async def list_alarms(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    *,
    state: str = "active",
    device: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Alarms by alarm id: in `state` (active: raised or acknowledged; or all), of `device` (a canonical id)
    or of every device, after the alarm id `after` (the last of the previous page), at most `limit`.

    Raises:
        ValueError: `state` is not one of :data:`LIST_STATES`, or `limit` is below 1.
    """
    if state not in _STATES:
        raise ValueError(f"state must be one of {', '.join(LIST_STATES)}, not {state!r}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    rows = await conn_or_pool.fetch(_PAGE, _STATES[state], device, after or "", limit)
    return [alarm_answer(r) for r in rows]


class AlarmWriter(TimeseriesPool):
    """Writes alarm transitions and the alarms' rows.

    Failures are the database's own (`f2stream.storage.db.is_transient` tells
    a passing one from one that needs a fix): the caller retries the batch,
    which lands once however often it is written.
    """

    async def write(self, events: Sequence[AlarmEvent]) -> None:
        """In one transaction: each new transition into the history, each touched alarm's row made from it."""
        if not events:
            return
        columns = transition_columns(events)
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_HISTORY, *columns)
            await conn.execute(_CURRENT, columns[0])
