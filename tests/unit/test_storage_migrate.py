"""f2stream.storage.migrate: the migration files shipped with the package."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from f2stream.storage.migrate import (
    DATABASES,
    Migration,
    MigrationError,
    TimescaleDB,
    apply_migrations,
    detect_timescaledb,
    execute_retrying_locks,
    load_migrations,
    pending_migrations,
    refuse_without_preload,
)


def code_only(statement: str) -> str:
    """The statement without its comment lines."""
    return "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()


def columns_of(sql: str, table: str) -> list[str]:
    """Column names of a CREATE TABLE, in order, from the SQL text."""
    start = re.search(rf"CREATE TABLE IF NOT EXISTS {table}\s*\(", sql)
    assert start is not None
    depth, body = 1, []
    for char in sql[start.end() :]:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            break
        body.append(char)
    parts, depth, current = [], 0, []
    for char in "".join(body):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [code_only(part).split()[0] for part in parts]


def test_databases() -> None:
    assert DATABASES == ("params", "timeseries")


@pytest.mark.parametrize("database", ["params", "timeseries"])
def test_versions_ascend_and_are_unique(database: str) -> None:
    versions = [m.version for m in load_migrations(database)]  # type: ignore[arg-type]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_params_migrations() -> None:
    migrations = load_migrations("params")
    found = {m.version: (m.name, m.requires_timescaledb, m.transactional) for m in migrations}
    assert found[1] == ("device_parameters", False, True)
    assert found[2] == ("parameters_notify", False, True)
    assert found[4] == ("codec_model", False, True)
    assert found[5] == ("liveness", False, True)
    assert found[6] == ("roles", False, True)
    assert not any(m.requires_timescaledb for m in migrations)


def test_timeseries_migrations() -> None:
    migrations = load_migrations("timeseries")
    found = {m.version: (m.name, m.requires_timescaledb, m.transactional) for m in migrations}
    assert found[1] == ("iot_measurements", False, True)
    assert found[2] == ("timescaledb_hypertable", True, True)
    assert found[3] == ("hourly_aggregate", True, False)
    assert found[4] == ("param_version", False, True)
    assert found[5] == ("hourly_aggregate_realtime", True, False)
    assert found[6] == ("provenance", False, True)
    assert found[7] == ("device_status", False, True)
    assert found[8] == ("roles", False, True)
    assert found[9] == ("hourly_aggregate_grants", True, True)


def test_the_hourly_aggregate_splits_into_two_statements() -> None:
    statements = load_migrations("timeseries")[2].statements()
    assert len(statements) == 2
    view, policy = (code_only(s) for s in statements)
    assert view.startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS iot_measurements_hourly\nWITH (timescaledb.continuous) AS"
    )
    assert view.endswith("WITH NO DATA")
    assert policy.startswith("SELECT add_continuous_aggregate_policy('iot_measurements_hourly',")
    assert policy.endswith("if_not_exists => TRUE)")


def test_params_table_starts_with_the_seed_columns_in_order() -> None:
    sql = load_migrations("params")[0].sql
    assert columns_of(sql, "device_parameters")[:7] == [
        "device_id",
        "mode",
        "component_type",
        "component_number",
        "encoding",
        "unit",
        "scale_factor",
    ]


def test_measurements_table_columns() -> None:
    sql = load_migrations("timeseries")[0].sql
    assert columns_of(sql, "iot_measurements") == [
        "time",
        "device_id",
        "mode",
        "connector",
        "component",
        "data_point",
        "value",
        "text_value",
        "unit",
        "source_topic",
        "received_at",
        "written_at",
        "PRIMARY",
    ]
    assert "PRIMARY KEY (device_id, mode, connector, component, data_point, time)" in sql


def test_statements_split_at_line_ends_and_drop_comment_only_parts() -> None:
    migration = Migration(
        version=9,
        name="x",
        sql="-- head;\nSELECT 1;\n-- only a comment\n;\nSELECT 'a;b'; \nSELECT 3",
        requires_timescaledb=False,
        transactional=False,
    )
    assert migration.statements() == ["SELECT 1", "SELECT 'a;b'", "SELECT 3"]


def test_checksum_is_sha256_of_the_text() -> None:
    migration = Migration(version=1, name="x", sql="SELECT 1;\n", requires_timescaledb=False, transactional=True)
    assert migration.checksum == hashlib.sha256(b"SELECT 1;\n").hexdigest()
    assert (
        Migration(version=1, name="x", sql="SELECT 2;\n", requires_timescaledb=False, transactional=True).checksum
        != migration.checksum
    )


def migration(version: int, *, timescaledb: bool = False, transactional: bool = True) -> Migration:
    """A small migration for the runner's tests."""
    return Migration(
        version=version,
        name=f"step_{version}",
        sql=f"SELECT {version};\nSELECT {version * 10};\n",
        requires_timescaledb=timescaledb,
        transactional=transactional,
    )


class FakeConnection:
    """Answers the runner's questions as a server would, and records what it is asked to run."""

    def __init__(
        self, *, installed: bool, loaded: bool, created: bool = False, applied: dict[int, str] | None = None
    ) -> None:
        self.answers = {"installed": installed, "loaded": loaded, "created": created}
        self.applied = applied
        self.executed: list[str] = []
        self.transactions = 0

    async def fetchrow(self, sql: str) -> dict[str, bool]:
        assert "pg_available_extensions" in sql and "pg_settings" in sql and "pg_extension" in sql
        return self.answers

    async def fetchval(self, sql: str) -> bool:
        assert "to_regclass('f2stream_migrations')" in sql
        return self.applied is None

    async def fetch(self, sql: str) -> list[dict[str, Any]]:
        assert self.applied is not None, "read the bookkeeping table before it exists"
        return [{"version": v, "checksum": c} for v, c in self.applied.items()]

    async def execute(self, sql: str, *args: object) -> None:
        self.executed.append(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.transactions += 1
        yield

    def writes(self) -> list[str]:
        """What was run besides the advisory lock and unlock."""
        return [sql for sql in self.executed if "pg_advisory_" not in sql]


PLAIN = TimescaleDB(installed=False, loaded=False, created=False)  # as in CI
NOT_PRELOADED = TimescaleDB(installed=True, loaded=False, created=False)  # files, no shared_preload_libraries
READY = TimescaleDB(installed=True, loaded=True, created=False)  # its timescaledb.* rows show in pg_settings


@pytest.mark.parametrize(
    ("installed", "loaded", "ready"),
    [(False, False, False), (True, False, False), (True, True, True), (False, True, False)],
)
async def test_detection_from_what_any_role_can_see(installed: bool, loaded: bool, ready: bool) -> None:
    conn = FakeConnection(installed=installed, loaded=loaded, created=True)
    found = await detect_timescaledb(conn)  # type: ignore[arg-type]
    assert found == TimescaleDB(installed=installed, loaded=loaded, created=True)
    assert found.ready is ready
    assert found.describe() == (
        "TimescaleDB available: hypertable, compression, retention and hourly aggregate"
        if ready
        else "TimescaleDB not available: plain PostgreSQL tables"
    )


def test_pending_migrations_keep_their_order_and_refuse_edited_files() -> None:
    steps = [migration(1), migration(2, timescaledb=True), migration(3)]
    assert pending_migrations(steps, {2: steps[1].checksum}) == [steps[0], steps[2]]
    assert pending_migrations(steps, {}) == steps
    with pytest.raises(MigrationError, match=r"^001_step_1 was changed after it was applied; add a new migration"):
        pending_migrations(steps, {1: "0" * 64})


@pytest.mark.parametrize("timescaledb", [PLAIN, READY, TimescaleDB(installed=True, loaded=True, created=True)])
def test_no_refusal_where_the_extension_is_absent_or_preloaded(timescaledb: TimescaleDB) -> None:
    refuse_without_preload([migration(1), migration(2, timescaledb=True)], timescaledb)


def test_no_refusal_when_nothing_pending_needs_the_extension_and_the_database_does_not_use_it() -> None:
    refuse_without_preload([migration(4)], NOT_PRELOADED)


def test_installed_but_not_preloaded_is_one_line_that_says_what_to_change() -> None:
    pending = [migration(1), migration(2, timescaledb=True), migration(3, timescaledb=True, transactional=False)]
    with pytest.raises(MigrationError) as caught:
        refuse_without_preload(pending, NOT_PRELOADED)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TimescaleDB is installed on this server but not preloaded, so 002_step_2, 003_step_3")
    assert "shared_preload_libraries = 'timescaledb'" in message
    assert "make down && make up" in message
    assert message.endswith("nothing was applied to this database")


def test_a_database_that_uses_the_extension_is_refused_without_the_library_even_with_nothing_pending() -> None:
    # Seen on TimescaleDB 2.28.3: any DDL there ends the connection (FATAL: must be preloaded).
    with pytest.raises(MigrationError, match="so this database, which already uses it, cannot be migrated"):
        refuse_without_preload([], TimescaleDB(installed=True, loaded=False, created=True))


async def test_a_refusal_writes_nothing_not_even_the_bookkeeping_table() -> None:
    conn = FakeConnection(installed=True, loaded=False)
    lines: list[str] = []
    with pytest.raises(MigrationError, match="not preloaded"):
        await apply_migrations(conn, [migration(1), migration(2, timescaledb=True)], lines.append)  # type: ignore[arg-type]
    assert conn.writes() == []
    assert lines == []
    assert conn.executed[-1] == "SELECT pg_advisory_unlock($1)"


async def test_plain_postgresql_applies_the_plain_files_and_skips_the_others() -> None:
    conn = FakeConnection(installed=False, loaded=False)
    lines: list[str] = []
    steps = [migration(1), migration(2, timescaledb=True), migration(3)]
    assert await apply_migrations(conn, steps, lines.append) == 2  # type: ignore[arg-type]
    assert lines == [
        "TimescaleDB not available: plain PostgreSQL tables",
        "001_step_1: applied",
        "002_step_2: skipped (needs the timescaledb extension)",
        "003_step_3: applied",
    ]
    assert "CREATE TABLE IF NOT EXISTS f2stream_migrations" in conn.writes()[0]


async def test_a_preloaded_server_applies_everything_and_runs_no_transaction_files_statement_by_statement() -> None:
    conn = FakeConnection(installed=True, loaded=True, applied={1: migration(1).checksum})
    lines: list[str] = []
    steps = [migration(1), migration(2, timescaledb=True), migration(3, timescaledb=True, transactional=False)]
    assert await apply_migrations(conn, steps, lines.append) == 2  # type: ignore[arg-type]
    assert lines == [
        "TimescaleDB available: hypertable, compression, retention and hourly aggregate",
        "002_step_2: applied",
        "003_step_3: applied",
    ]
    writes = conn.writes()
    assert writes[1:] == [
        steps[1].sql,
        "INSERT INTO f2stream_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        "SELECT 3",
        "SELECT 30",
        "INSERT INTO f2stream_migrations (version, name, checksum) VALUES ($1, $2, $3)",
    ]
    assert conn.transactions == 1


async def test_a_database_without_timescaledb_files_prints_no_timescaledb_line() -> None:
    conn = FakeConnection(installed=True, loaded=False)
    lines: list[str] = []
    assert await apply_migrations(conn, [migration(1)], lines.append) == 1  # type: ignore[arg-type]
    assert lines == ["001_step_1: applied"]


class BusyConnection:
    """Refuses a statement with LockNotAvailable a given number of times, as a refresh meeting a running job."""

    def __init__(self, busy_times: int) -> None:
        self.busy_times = busy_times
        self.calls = 0

    async def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.busy_times:
            raise asyncpg.LockNotAvailableError("could not refresh continuous aggregate due to a concurrent refresh")


async def test_a_statement_that_meets_a_taken_lock_runs_again_after_each_delay() -> None:
    conn, slept = BusyConnection(busy_times=2), []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    await execute_retrying_locks(conn, "CALL x()", delays_s=(1.0, 2.0, 4.0), sleep=sleep)  # type: ignore[arg-type]
    assert (conn.calls, slept) == (3, [1.0, 2.0])


async def test_a_lock_still_taken_after_the_last_delay_is_an_error() -> None:
    conn, slept = BusyConnection(busy_times=5), []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    with pytest.raises(asyncpg.LockNotAvailableError):
        await execute_retrying_locks(conn, "CALL x()", delays_s=(1.0, 2.0), sleep=sleep)  # type: ignore[arg-type]
    assert (conn.calls, slept) == (3, [1.0, 2.0])
