"""The rows of messages in `iot_measurements`: read them, apply a repair's changes, refresh the aggregate.

Every change is guarded by `param_version`, so that a repair and the live
path never undo each other: the live path only inserts (`ON CONFLICT DO
NOTHING`), and a repair overwrites or removes a row only if it was decoded
with an older parameter version than the repair's (or before versions were
kept). A batch is one transaction: a repair killed half-way leaves whole
batches, and running it again finishes the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg

from f2stream.records import Measurement
from f2stream.repair.plan import MessageKey, MessagePlan, Stored
from f2stream.storage.migrate import execute_retrying_locks

__all__ = ["AGGREGATE", "apply_plans", "fetch_stored", "hour_ranges", "refresh_aggregate", "relax_commits"]

logger = logging.getLogger(__name__)

#: The TimescaleDB continuous aggregate over iot_measurements (migrations/timeseries/003, 005).
AGGREGATE = "iot_measurements_hourly"
# A message's key is the primary key without its data point, which sits
# before the time in the key: looked up through the primary key, each message
# would scan its component's whole history. The time index finds a message's
# rows at once (device times have microseconds); IS NOT DISTINCT FROM keeps
# the planner off the primary key (the columns are NOT NULL: same result).
# The device stays an equality: TimescaleDB prunes compressed segments by it.
_FETCH = """
SELECT k.d, k.mo, k.c, k.co, k.t,
       m.data_point, m.value, m.text_value, m.unit, m.param_version
FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[]) AS k(d, mo, c, co, t)
JOIN iot_measurements m
  ON m.time = k.t::timestamptz
 AND m.device_id = k.d
 AND (m.mode, m.connector, m.component) IS NOT DISTINCT FROM (k.mo, k.c, k.co)
"""
_UPSERT = """
INSERT INTO iot_measurements
    (time, device_id, mode, connector, component, data_point,
     value, text_value, unit, source_topic, received_at, param_version, raw_partition, raw_offset)
SELECT t::timestamptz, d, mo, c, co, dp, v, tv, u, st, r::timestamptz, pv, rp, ro
FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[],
            $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::int4[], $14::int8[])
     AS u(t, d, mo, c, co, dp, v, tv, u, st, r, pv, rp, ro)
ON CONFLICT (device_id, mode, connector, component, data_point, time) DO UPDATE
SET value = EXCLUDED.value, text_value = EXCLUDED.text_value, unit = EXCLUDED.unit,
    param_version = EXCLUDED.param_version, raw_partition = EXCLUDED.raw_partition,
    raw_offset = EXCLUDED.raw_offset, written_at = now()
WHERE iot_measurements.param_version IS NULL OR iot_measurements.param_version <= EXCLUDED.param_version
"""
# Rows that exist: a plain UPDATE over their keys costs less than an upsert's speculative insert.
_UPDATE = """
UPDATE iot_measurements m
SET value = w.v, text_value = w.tv, unit = w.un, param_version = w.pv,
    raw_partition = w.rp, raw_offset = w.ro, written_at = now()
FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[], $6::text[],
            $7::float8[], $8::text[], $9::text[], $10::int8[], $11::int4[], $12::int8[])
     AS w(d, mo, c, co, dp, t, v, tv, un, pv, rp, ro)
WHERE m.time = w.t::timestamptz AND m.device_id = w.d AND m.mode = w.mo AND m.connector = w.c
  AND m.component = w.co AND m.data_point = w.dp AND (m.param_version IS NULL OR m.param_version <= w.pv)
"""
_DELETE = """
DELETE FROM iot_measurements m
USING unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[], $6::text[], $7::int8[])
      AS k(d, mo, c, co, dp, t, pv)
WHERE m.time = k.t::timestamptz AND m.device_id = k.d AND m.mode = k.mo AND m.connector = k.c
  AND m.component = k.co AND m.data_point = k.dp AND (m.param_version IS NULL OR m.param_version < k.pv)
"""
# Whether the aggregate is there, and whether this role may refresh it: TimescaleDB lets only its
# owner (or a member of the owner role) refresh a continuous aggregate, as PostgreSQL a materialized view.
_AGGREGATE = """
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') AND to_regclass($1) IS NOT NULL AS present,
       current_user AS role,
       coalesce((SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass($1)), false) AS owned
"""
_REFRESH_TIMEOUT_S = 3600.0


async def fetch_stored(conn: asyncpg.Connection, keys: Sequence[MessageKey]) -> dict[MessageKey, list[Stored]]:
    """The stored rows of each message (a message without rows is absent)."""
    if not keys:
        return {}
    found: dict[MessageKey, list[Stored]] = {}
    columns = list(zip(*keys, strict=True))
    for r in await conn.fetch(_FETCH, *columns):
        key = (r[0], r[1], r[2], r[3], r[4])  # the key as given: no time to format per row
        found.setdefault(key, []).append(Stored(r[5], r[6], r[7], r[8], r[9]))
    return found


async def apply_plans(conn: asyncpg.Connection, plans: Iterable[MessagePlan]) -> None:
    """Write the changes of `plans` in one transaction (a removal deletes a row only if older than its plan).

    New rows are upserted (the live path may have written one since they
    were read), rows that exist are updated, rows to remove deleted; each
    guarded by the version, as the module says.
    """
    adds: list[Measurement] = []
    updates: list[Measurement] = []
    removals: list[tuple[str, str, int, str, str, str, int | None]] = []
    for plan in plans:
        adds.extend(plan.add)
        updates.extend(m for _, m in plan.change)
        updates.extend(m for _, m in plan.restamp)
        d, mo, c, co, t = plan.key
        removals.extend((d, mo, c, co, row.data_point, t, plan.version) for row in plan.remove)
    if not adds and not updates and not removals:
        return
    async with conn.transaction():
        if adds:
            await conn.execute(_UPSERT, *_columns(adds))
        if updates:
            await conn.execute(_UPDATE, *_update_columns(updates))
        if removals:
            await conn.execute(_DELETE, *zip(*removals, strict=True))


async def relax_commits(conn: asyncpg.Connection) -> None:
    """Commit without waiting for the WAL flush on this session: a repair is idempotent.

    A crash of the database may forget the last few batches it acknowledged;
    running the repair again redoes them. The live path keeps durable commits.
    """
    await conn.execute("SET synchronous_commit = off")


def _update_columns(rows: Sequence[Measurement]) -> list[list[object]]:
    names = ("device_id", "mode", "connector", "component", "data_point", "time",
             "value", "text_value", "unit", "param_version", "raw_partition", "raw_offset")  # fmt: skip
    return [[getattr(m, name) for m in rows] for name in names]


def _columns(rows: Sequence[Measurement]) -> list[list[object]]:
    return [[getattr(m, name) for m in rows] for name in Measurement.__slots__]


def hour_ranges(times: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """The hours that hold `times`, merged into [start, end) ranges of whole hours, in order."""
    hours = sorted({t.replace(minute=0, second=0, microsecond=0) for t in times})
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + timedelta(hours=1))
        else:
            ranges.append((hour, hour + timedelta(hours=1)))
    return ranges


async def refresh_aggregate(conn: asyncpg.Connection, ranges: Sequence[tuple[datetime, datetime]]) -> int:
    """Refresh the hourly aggregate over `ranges` where TimescaleDB keeps one; return how many ranges.

    Runs outside a transaction (TimescaleDB refuses one). A policy job that
    holds the aggregate's lock makes the refresh fail at once: it is tried
    again after growing delays, as `migrate` does. A role that does not own
    the aggregate (f2_repairer, docs/operations.md "Database roles") leaves
    it to the aggregate's policy, which re-materializes the last 7 days every
    30 minutes (the replay window's default), and says so.
    """
    if not ranges:
        return 0
    aggregate = await conn.fetchrow(_AGGREGATE, AGGREGATE)
    if not aggregate["present"]:
        return 0
    if not aggregate["owned"]:
        logger.warning(
            "The hourly aggregate was not refreshed over %d hour ranges: role %s does not own %s, and TimescaleDB "
            "refreshes it for its owner only; its policy re-materializes the last 7 days within 30 minutes; for older "
            "hours run as the owner: CALL refresh_continuous_aggregate('%s', '%s', '%s')",
            len(ranges), aggregate["role"], AGGREGATE, AGGREGATE, ranges[0][0].isoformat(), ranges[-1][1].isoformat(),
        )  # fmt: skip
        return 0
    for start, end in ranges:
        # Literals: the procedure's window arguments are of type "any", which a bound parameter cannot fill.
        statement = (
            f"CALL refresh_continuous_aggregate('{AGGREGATE}', "
            f"'{start.isoformat()}'::timestamptz, '{end.isoformat()}'::timestamptz)"
        )
        await execute_retrying_locks(conn, statement, timeout_s=_REFRESH_TIMEOUT_S)
    return len(ranges)
