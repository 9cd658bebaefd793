"""Stand-ins for the database pool and the producer, for unit tests of the sink's logic (no server behaviour)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

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


class FakeConsumer:
    """Just enough of AIOKafkaConsumer for the batch loop, over in-memory partition logs.

    `logs` maps each partition to its records' values; the group is this one
    member, which is assigned every partition on `start()`. Faults are set
    by the test: `fail_start`, `fail_fetch`, `fail_commit` (exceptions raised
    once each, in order), `assign()`/`revoke()` drive the rebalance listener.
    """

    def __init__(self, logs: dict[TopicPartition, list[bytes]], **options: Any) -> None:
        self.logs = logs
        self.options = options
        self.position: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.listener: Any = None
        self.fail_start: list[BaseException] = []
        self.fail_fetch: list[BaseException] = []
        self.fail_commit: list[BaseException] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.stopped = False

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def start(self) -> None:
        if self.fail_start:
            raise self.fail_start.pop(0)
        await self.assign(set(self.logs))

    async def assign(self, partitions: set[TopicPartition]) -> None:
        """A rebalance that gives this member `partitions` (the others are revoked first)."""
        if self.assigned:
            await self.listener.on_partitions_revoked(sorted(self.assigned - partitions or self.assigned))
        self.assigned = set(partitions)
        for tp in partitions:
            self.position[tp] = self.committed_offsets.get(tp, 0)
        await self.listener.on_partitions_assigned(sorted(partitions))

    async def stop(self) -> None:
        self.stopped = True

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        if self.fail_fetch:
            raise self.fail_fetch.pop(0)
        await asyncio.sleep(0)
        batch: dict[TopicPartition, list[Any]] = {}
        room = max_records or 1_000_000
        for tp in sorted(self.assigned):
            values = self.logs[tp][self.position[tp] :][:room]
            if values:
                start = self.position[tp]
                batch[tp] = [consumer_record(tp, start + i, value) for i, value in enumerate(values)]
                self.position[tp] += len(values)
                room -= len(values)
        if not batch:
            await asyncio.sleep(timeout_ms / 1000 / 10)
        return batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"{tp} is not assigned")
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commit:
            raise self.fail_commit.pop(0)
        self.commits.append(dict(offsets))
        self.committed_offsets.update(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])


def consumer_record(tp: TopicPartition, offset: int, value: bytes, key: bytes = b"k") -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka returns it."""
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0, key=key, value=value,
        checksum=None, serialized_key_size=len(key), serialized_value_size=len(value), headers=(),
    )  # fmt: skip
