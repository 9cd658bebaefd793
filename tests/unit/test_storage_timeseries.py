"""The measurement writer's logic: one statement per batch, outages retried, refused rows returned."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from fakes import BAD_DEVICE, FakePool

from f2stream.records import Measurement, Rows
from f2stream.settings import Settings
from f2stream.storage.timeseries import MeasurementWriter, parsed_times

GOOD = Measurement(
    "2025-01-01T00:00:00.000001+00:00", "f2-000000000001", "access-control-mode", 1, "strike-1", "state", 1.0,
    "locked", "state", "stat/f2-000000000001/access-control-mode/1/strike-1", "2025-01-01T00:00:01.000000+00:00", 7,
)  # fmt: skip
BATCH = [GOOD, replace(GOOD, data_point="voltage", value=12.1), replace(GOOD, device_id=BAD_DEVICE)]


def writer_with(pool: FakePool) -> MeasurementWriter:
    writer = MeasurementWriter(Settings())
    writer._pool = pool  # type: ignore[assignment]
    return writer


async def test_one_statement_per_batch_and_a_replay_inserts_nothing() -> None:
    pool = FakePool()
    writer = writer_with(pool)
    assert await writer.write(Rows.of(BATCH[:2])) == (2, [])
    assert await writer.write(Rows.of(BATCH[:2])) == (0, [])
    assert pool.statements == 2
    assert writer.last_error is None and writer.last_commit_at is not None


async def test_an_outage_is_retried_until_the_rows_are_committed() -> None:
    pool = FakePool(outages=2)
    writer = writer_with(pool)
    assert await writer.write(Rows.of(BATCH[:2])) == (2, [])
    assert pool.statements == 3
    assert writer.last_error is None


async def test_a_refused_row_is_returned_and_the_others_land() -> None:
    pool = FakePool()
    writer = writer_with(pool)
    inserted, rejected = await writer.write(Rows.of(BATCH))
    assert inserted == 2
    assert [(r.measurement, r.index) for r in rejected] == [(BATCH[2], 2)]
    assert rejected[0].detail.startswith("22003 NumericValueOutOfRangeError")


async def test_a_missing_table_is_a_permanent_failure_retried_and_reported_with_its_fix() -> None:
    pool = FakePool(missing_table=True)
    writer = writer_with(pool)
    task = asyncio.create_task(writer.write(Rows.of(BATCH[:1])))
    await asyncio.sleep(0.5)
    assert not task.done()  # never gives up: the caller must not commit the batch
    assert writer.last_error is not None and "run `faust -A f2stream migrate`" in writer.last_error
    assert not writer.last_error_transient
    pool.missing_table = False
    assert await asyncio.wait_for(task, 15) == (1, [])
    assert writer.last_error is None


async def test_a_cancelled_write_returns_nothing() -> None:
    writer = writer_with(FakePool(outages=10**6))
    task = asyncio.create_task(writer.write(Rows.of(BATCH[:1])))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.last_commit_at is None


def test_parsed_times_parse_each_distinct_time_once_and_refuse_a_time_without_zone() -> None:
    texts = ["2031-01-01T00:00:00.000001+00:00", "2031-01-01T00:00:00.000001+00:00", "2031-01-01T01:00:00.5+01:00"]
    times = parsed_times(texts)
    assert times is not None and times[0] is times[1]
    assert [t.isoformat() for t in times] == ["2031-01-01T00:00:00.000001+00:00"] * 2 + [
        "2031-01-01T01:00:00.500000+01:00"
    ]
    assert parsed_times(["2031-01-01T00:00:00"]) is None  # the database reads it in its own zone
    assert parsed_times(["not a time"]) is None
