"""Checking the database against a simulator manifest (`faust -A f2stream verify`).

Every message the broker acknowledged to the simulator must be in
`iot_measurements` with exactly the number of rows it yields: none missing,
none twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

from f2stream.records import format_time

__all__ = ["Verdict", "compare", "poll_database", "read_manifest"]

_Key = tuple[str, str, str]  # device, component, time

_COUNT_ROWS = """
SELECT device_id, component, time, count(*) AS rows
FROM iot_measurements
WHERE device_id = ANY($1::text[])
GROUP BY device_id, component, time
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the database holds compared with what was sent."""

    messages: int
    complete: int
    missing: int
    wrong_count: int
    rows_expected: int
    rows_found: int

    @property
    def ok(self) -> bool:
        """Every message landed with its exact number of rows."""
        return self.complete == self.messages

    def __str__(self) -> str:
        return (
            f"{self.messages} messages sent, {self.complete} complete, {self.missing} missing, "
            f"{self.wrong_count} with a wrong row count; rows expected {self.rows_expected}, found {self.rows_found}"
        )


def read_manifest(path: Path) -> Counter[_Key]:
    """Expected rows per (device, component, time) from a simulator manifest."""
    expected: Counter[_Key] = Counter()
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                entry = orjson.loads(line)
                expected[(entry["device_id"], entry["component"], entry["time"])] += entry["points"]
    return expected


def compare(expected: Counter[_Key], found: Counter[_Key]) -> Verdict:
    """Compare expected and found row counts per message."""
    complete = sum(1 for key, rows in expected.items() if found.get(key) == rows)
    missing = sum(1 for key in expected if key not in found)
    return Verdict(
        messages=len(expected),
        complete=complete,
        missing=missing,
        wrong_count=len(expected) - complete - missing,
        rows_expected=sum(expected.values()),
        rows_found=sum(found.get(key, 0) for key in expected),
    )


async def poll_database(conn: asyncpg.Connection, expected: Counter[_Key], timeout_s: float) -> Verdict:
    """Poll the time-series database until every expected row is there or the time is up."""
    devices = sorted({device for device, _, _ in expected})
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await conn.fetch(_COUNT_ROWS, devices)
        found: Counter[_Key] = Counter(
            {(r["device_id"], r["component"], format_time(r["time"])): r["rows"] for r in rows}
        )
        verdict = compare(expected, found)
        if verdict.ok or time.monotonic() > deadline:
            return verdict
        await asyncio.sleep(0.5)
