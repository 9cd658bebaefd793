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
