"""Stand-ins for the database pool and the producer, for unit tests of the sink's logic (no server behaviour)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from f2stream.agents.producer import Output
from f2stream.records import Measurement, Rows

BAD_DEVICE = "f2-0000000000bd"


class FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    async def execute(self, sql: str, *columns: list[Any]) -> str:
        self.pool.statements += 1
        if self.pool.outages:
            self.pool.outages -= 1
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        if self.pool.missing_table:
            raise asyncpg.UndefinedTableError('relation "iot_measurements" does not exist')
        if BAD_DEVICE in columns[1]:
            raise asyncpg.NumericValueOutOfRangeError("value out of range")
        new = [key for key in zip(*columns, strict=True) if key not in self.pool.rows]
        self.pool.rows.update(new)
        return f"INSERT 0 {len(new)}"


class FakePool:
    """A pool whose one table takes rows once; it can be down for a few statements, or lack its table."""

    def __init__(self, *, outages: int = 0, missing_table: bool = False) -> None:
        self.outages = outages
        self.missing_table = missing_table
        self.statements = 0
        self.rows: set[tuple[Any, ...]] = set()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self)

    async def close(self) -> None:
        return None


class FakeProducer:
    """Collects what would be produced; fails the next `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[Output] = []
        self.failures = failures

    async def send_all(self, outputs: Iterable[Output]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Kafka did not acknowledge")
        self.sent.extend(outputs)


def measurements_of(value: bytes | None) -> list[Measurement]:
    """The measurements of one `decoded_iot_data` value, read back as the sink reads it."""
    rows = Rows()
    rows.add_decoded(value)
    return [rows.row(i) for i in range(len(rows))]
