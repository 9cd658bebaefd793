"""Writes measurements to `iot_measurements`: batched, idempotent, retried until durable."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from f2stream.backoff import Backoff
from f2stream.records import Measurement, Rows
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, RECORD_FAULTS, create_pool, describe_dsn, failure, is_transient

__all__ = ["MeasurementWriter", "Rejected", "parsed_times"]

logger = logging.getLogger(__name__)

# The database parses the ISO times. ON CONFLICT absorbs re-delivered
# messages (and duplicates inside one batch).
_INSERT_SELECT = """
INSERT INTO iot_measurements
    (time, device_id, mode, connector, component, data_point,
     value, text_value, unit, source_topic, received_at, param_version, raw_partition, raw_offset)
SELECT t::timestamptz, d, m, c, co, dp, v, tv, u, st, r::timestamptz, pv, rp, ro
FROM {source}
ON CONFLICT DO NOTHING
"""
# A small batch: one statement over its columns as arrays.
_INSERT = _INSERT_SELECT.format(
    source="""unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[], $6::text[],
            $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::int4[], $14::int8[])
     AS u(t, d, m, c, co, dp, v, tv, u, st, r, pv, rp, ro)"""
)
# A large batch is COPYed straight into the table: the common case, a batch
# no row of which was written before. A batch that holds a row already there
# (a re-delivery) breaks the primary key and is rolled back whole; it then
# goes through COPY into the session's staging table and one INSERT … SELECT
# … ON CONFLICT DO NOTHING. Small batches take the unnest statement.
_COPY_FROM_ROWS = 1000
_COLUMNS = Measurement.__slots__  # the table's columns, in the order Rows holds them
_TIME_COLUMNS = (_COLUMNS.index("time"), _COLUMNS.index("received_at"))  # ISO strings in Rows, timestamptz in the table
# Made once per pooled connection; emptied at each commit.
_STAGING = """
CREATE TEMP TABLE f2_staging (
    t text, d text, m text, c smallint, co text, dp text, v float8, tv text, u text, st text, r text, pv int8,
    rp int4, ro int8
) ON COMMIT DELETE ROWS
"""
_FROM_STAGING = _INSERT_SELECT.format(source="f2_staging")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A measurement the database refused for its content (never for an outage)."""

    measurement: Measurement
    detail: str
    index: int  # its row in the batch


class MeasurementWriter:
    """Inserts batches of measurements; see :meth:`write`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self.last_error: str | None = None  # the failure of the write being retried, if any
        self.last_error_transient = True
        self.last_commit_at: float | None = None  # time.time() of the last committed batch

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def write(self, batch: Rows) -> tuple[int, list[Rejected]]:
        """Write a batch and return (rows inserted, measurements rejected).

        Retries outages with capped, jittered backoff until the batch is
        committed: the caller commits the batch's offsets only after this
        returns (cancelling it, e.g. on a shutdown, leaves them uncommitted).
        A batch the database refuses for its content (:data:`RECORD_FAULTS`:
        SQLSTATE class 22, 23 or 54) is written row by row and the rows it
        refuses are returned.
        """
        backoff = Backoff()
        while True:
            try:
                try:
                    inserted, rejected = await self._insert(batch), list[Rejected]()
                except RECORD_FAULTS:
                    inserted, rejected = await self._insert_one_by_one(batch)
                self.last_error, self.last_commit_at = None, time.time()
                return inserted, rejected
            except DB_ERRORS as exc:
                # Retried also when permanent: giving up would lose the rows. A
                # permanent failure is logged as an error with its fix, and
                # /health reports it as failing until someone applies it.
                self.last_error, self.last_error_transient = failure(exc), is_transient(exc)
                log = logger.warning if self.last_error_transient else logger.error
                delay = backoff.next()
                log("Writing %d rows to %s failed (%s); retrying in %.1fs",
                    len(batch), describe_dsn(self.settings.timeseries_dsn), self.last_error, delay)  # fmt: skip
                await asyncio.sleep(delay)

    async def _insert(self, batch: Rows) -> int:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            if len(batch) < _COPY_FROM_ROWS:
                status = await conn.execute(_INSERT, *batch.columns)
            else:
                status = await _copy_insert(conn, batch)
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_one_by_one(self, batch: Rows) -> tuple[int, list[Rejected]]:
        inserted, rejected = 0, list[Rejected]()
        for index in range(len(batch)):
            measurement = batch.row(index)
            try:
                inserted += await self._insert(Rows.of([measurement]))
            except RECORD_FAULTS as exc:
                rejected.append(
                    Rejected(
                        measurement,
                        f"{getattr(exc, 'sqlstate', None) or 'client'} {exc.__class__.__name__}: {exc}",
                        index,
                    )
                )
        return inserted, rejected

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await create_pool(
                self.settings.timeseries_dsn, self.settings.timeseries_password, setup_sql=_STAGING
            )
        return self._pool


def parsed_times(column: list[str]) -> list[datetime] | None:
    """ISO 8601 times (as :func:`f2stream.records.format_time` writes them) as datetimes, each distinct one parsed once.

    None when one is not a time with a zone: the database then reads the text, as it does for the staging path.
    """
    seen: dict[str, datetime] = {}
    out = []
    for text in column:
        moment = seen.get(text)
        if moment is None:
            try:
                moment = datetime.fromisoformat(text)
            except (TypeError, ValueError):
                return None
            if moment.tzinfo is None:
                return None
            seen[text] = moment
        out.append(moment)
    return out


async def _copy_insert(conn: asyncpg.Connection, batch: Rows) -> str:
    """COPY the batch into the table; if a row of it is there already, through staging with ON CONFLICT.

    Raises:
        asyncpg.DataError: a value does not fit its column (asyncpg's COPY
            encoder raises plain TypeError/ValueError/OverflowError for it).
    """
    columns = list(batch.columns)
    for index in _TIME_COLUMNS:
        times = parsed_times(columns[index])
        if times is None:
            break
        columns[index] = times
    else:
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "iot_measurements", records=zip(*columns, strict=True), columns=_COLUMNS
                )
            return f"INSERT 0 {len(batch)}"
        except asyncpg.UniqueViolationError:
            pass  # a re-delivery: absorbed below
        except (TypeError, ValueError, OverflowError) as exc:
            raise asyncpg.DataError(f"a row does not fit its column: {exc}") from exc
    return await _staged_insert(conn, batch)


async def _staged_insert(conn: asyncpg.Connection, batch: Rows) -> str:
    """COPY the batch into the staging table and insert it from there with ON CONFLICT DO NOTHING, in one transaction.

    Raises:
        asyncpg.DataError: as :func:`_copy_insert`.
    """
    async with conn.transaction():
        try:
            await conn.copy_records_to_table("f2_staging", records=zip(*batch.columns, strict=True))
        except (TypeError, ValueError, OverflowError) as exc:
            raise asyncpg.DataError(f"a row does not fit its column: {exc}") from exc
        status: str = await conn.execute(_FROM_STAGING)
    return status
