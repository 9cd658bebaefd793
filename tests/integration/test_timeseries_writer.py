"""The measurement writer on the real PostgreSQL: large batches through COPY, replays absorbed, bad rows returned."""

from __future__ import annotations

from dataclasses import replace

import pytest
from harness import Stack

from f2stream.records import Measurement, Rows
from f2stream.storage.timeseries import MeasurementWriter

pytestmark = pytest.mark.integration


def batch(count: int, device: str) -> list[Measurement]:
    return [
        Measurement(
            f"2031-01-01T00:00:{i // 1_000_000:02d}.{i % 1_000_000:06d}+00:00",
            device,
            "access-control-mode",
            1,
            "strike-1",
            "voltage",
            float(i),
            None,
            "V",
            f"stat/{device}/access-control-mode/1/strike-1",
            "2031-01-01T00:00:00.000000+00:00",
            1,
        )
        for i in range(count)
    ]


async def test_a_large_batch_lands_once_and_a_bad_row_is_returned(stack: Stack) -> None:
    writer = MeasurementWriter(stack.settings)
    try:
        rows = batch(5000, "f2-0000000c0b01")
        assert await writer.write(Rows.of(rows)) == (5000, [])
        assert await writer.write(Rows.of(rows)) == (0, [])  # a replay inserts nothing
        mixed = batch(3000, "f2-0000000c0b02")
        mixed[1234] = replace(mixed[1234], connector=70_000)  # does not fit smallint
        inserted, rejected = await writer.write(Rows.of(mixed))
        assert inserted == 2999
        assert [(r.index, r.measurement.connector) for r in rejected] == [(1234, 70_000)]
    finally:
        await writer.close()


async def test_a_batch_partly_written_before_lands_its_new_rows_once_with_exact_times(stack: Stack) -> None:
    # The COPY straight into the table meets the rows written before, rolls
    # back, and the batch goes through staging with ON CONFLICT instead.
    writer = MeasurementWriter(stack.settings)
    device = "f2-0000000c0b03"
    try:
        rows = batch(4000, device)
        assert await writer.write(Rows.of(rows[:1500])) == (1500, [])
        assert await writer.write(Rows.of(rows)) == (2500, [])
        pool = await writer._get_pool()
        stored = await pool.fetch(
            "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS t, value, "
            "received_at = '2031-01-01T00:00:00+00:00'::timestamptz AS received "
            "FROM iot_measurements WHERE device_id = $1 ORDER BY time",
            device,
        )
        assert [(r["t"] + "+00:00", r["value"]) for r in stored] == [(m.time, m.value) for m in rows]
        assert all(r["received"] for r in stored)
    finally:
        await writer.close()
