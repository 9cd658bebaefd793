"""The migration runner: versioned SQL files applied once, in order, per database."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

from f2stream.errors import F2StreamError

__all__ = [
    "DATABASES",
    "Migration",
    "MigrationError",
    "TimescaleDB",
    "apply_migrations",
    "detect_timescaledb",
    "execute_retrying_locks",
    "load_migrations",
    "pending_migrations",
    "refuse_without_preload",
]

Database = Literal["params", "timeseries"]
DATABASES: tuple[Database, ...] = ("params", "timeseries")

# A role without superuser rights cannot read shared_preload_libraries, but the
# library defines its timescaledb.* settings only once it is loaded, and
# pg_settings hides the placeholders that an unloaded prefix leaves behind.
_DETECT = """
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,
       EXISTS (SELECT FROM pg_settings WHERE name LIKE 'timescaledb.%') AS loaded,
       EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') AS created
"""

_NAME_RE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
_DIRECTIVE_RE = re.compile(r"^--\s*f2stream:\s*(.+?)\s*$", re.MULTILINE)
_STATEMENT_END_RE = re.compile(r";[ \t]*(?:\n|$)")
# One lock id for every f2stream migration run, so two runners never race.
_LOCK_ID = 0x0F25_7EA4
# TimescaleDB's scheduler may be refreshing the aggregate (a policy job starts as
# soon as it is added); refresh_continuous_aggregate then fails at once instead
# of waiting. Statements of no-transaction files can run again: wait and retry.
LOCK_RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0)

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS f2stream_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(F2StreamError):
    """A migration file is malformed, changed after being applied, or failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file and the directives in its header."""

    version: int
    name: str
    sql: str
    requires_timescaledb: bool
    transactional: bool

    @property
    def label(self) -> str:
        """The file name without `.sql`, as reports and errors name it."""
        return f"{self.version:03d}_{self.name}"

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice a file edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file split into statements, for files run outside a transaction."""
        return [part.strip() for part in _STATEMENT_END_RE.split(self.sql) if _has_code(part)]


def load_migrations(database: Database) -> list[Migration]:
    """Read the migration files shipped with the package for one database.

    Raises:
        MigrationError: a file name or directive is not understood.
    """
    folder = resources.files("f2stream.migrations").joinpath(database)
    migrations = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME_RE.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"{database}/{entry.name}: name must be NNN_lowercase_name.sql")
        sql = entry.read_text(encoding="utf-8")
        directives = set(_DIRECTIVE_RE.findall(sql))
        unknown = directives - {"requires timescaledb", "no-transaction"}
        if unknown:
            raise MigrationError(f"{database}/{entry.name}: unknown directive {sorted(unknown)[0]!r}")
        migrations.append(
            Migration(
                version=int(match[1]),
                name=match[2],
                sql=sql,
                requires_timescaledb="requires timescaledb" in directives,
                transactional="no-transaction" not in directives,
            )
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{database}: two migration files share a version number")
    return migrations


@dataclass(frozen=True, slots=True)
class TimescaleDB:
    """What the server says about TimescaleDB, as any role can ask it."""

    installed: bool
    """The extension's files are there (`pg_available_extensions`)."""
    loaded: bool
    """The library is loaded: preloaded, since it refuses to work otherwise."""
    created: bool
    """`CREATE EXTENSION` ran in this database."""

    @property
    def ready(self) -> bool:
        """The TimescaleDB migrations can run."""
        return self.installed and self.loaded

    def describe(self) -> str:
        """The line `migrate` prints about the database's tables."""
        if self.ready:
            return "TimescaleDB available: hypertable, compression, retention and hourly aggregate"
        return "TimescaleDB not available: plain PostgreSQL tables"


async def detect_timescaledb(conn: asyncpg.Connection) -> TimescaleDB:
    """Ask the server whether TimescaleDB is installed, preloaded and used by this database."""
    row = await conn.fetchrow(_DETECT)
    return TimescaleDB(installed=bool(row["installed"]), loaded=bool(row["loaded"]), created=bool(row["created"]))


def pending_migrations(migrations: Sequence[Migration], applied: Mapping[int, str]) -> list[Migration]:
    """The migrations not applied yet, in order.

    Args:
        migrations: every migration of the database, in order.
        applied: checksum of each applied version.

    Raises:
        MigrationError: an applied file was changed since.
    """
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"{migration.label} was changed after it was applied; add a new migration instead of editing it"
            )
    return [m for m in migrations if m.version not in applied]


def refuse_without_preload(pending: Sequence[Migration], timescaledb: TimescaleDB) -> None:
    """Stop before anything is applied when TimescaleDB is needed but its library is not loaded.

    Without the preloaded library, creating the extension, or any DDL in a
    database that has it, ends the connection with a FATAL error. Skipping
    the files instead would leave a plain table on a server whose owner
    installed TimescaleDB to get a hypertable.

    Raises:
        MigrationError: one line that says what to change.
    """
    if timescaledb.loaded:
        return
    needing = [m.label for m in pending if m.requires_timescaledb]
    if timescaledb.created:
        blocked = "this database, which already uses it, cannot be migrated (nor written to safely)"
    elif timescaledb.installed and needing:
        blocked = f"{', '.join(needing)} cannot run"
    else:
        return
    raise MigrationError(
        f"TimescaleDB is installed on this server but not preloaded, so {blocked}: "
        "set shared_preload_libraries = 'timescaledb' in its postgresql.conf and restart it "
        "(the local stack does this itself: make down && make up), then run migrate again; "
        "nothing was applied to this database"
    )


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration], report: Callable[[str], None]) -> int:
    """Apply what is not applied yet; return how many were applied.

    Safe to run twice and from two places at once (an advisory lock orders runs).
    Migrations that need TimescaleDB are skipped, and reported, where the
    extension is not installed; they apply on a later run once it is. Every
    check runs before the first write, so a refusal leaves the database as it was.

    Raises:
        MigrationError: a file changed after it was applied, TimescaleDB is
            installed but not preloaded, or a statement failed.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        applied = await _applied(conn)
        pending = pending_migrations(migrations, applied)
        timescaledb = await detect_timescaledb(conn)
        refuse_without_preload(pending, timescaledb)
        if any(m.requires_timescaledb for m in migrations):
            report(timescaledb.describe())
        await conn.execute(_BOOKKEEPING)
        count = 0
        for migration in pending:
            if migration.requires_timescaledb and not timescaledb.ready:
                report(f"{migration.label}: skipped (needs the timescaledb extension)")
                continue
            await _apply(conn, migration)
            report(f"{migration.label}: applied")
            count += 1
        return count
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    # Read without creating the bookkeeping table, so a refusal writes nothing.
    if await conn.fetchval("SELECT to_regclass('f2stream_migrations') IS NULL"):
        return {}
    return {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM f2stream_migrations")}


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    record = "INSERT INTO f2stream_migrations (version, name, checksum) VALUES ($1, $2, $3)"
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(record, migration.version, migration.name, migration.checksum)
        else:
            for statement in migration.statements():
                await execute_retrying_locks(conn, statement)
            await conn.execute(record, migration.version, migration.name, migration.checksum)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{migration.label} failed: {exc.__class__.__name__}: {exc}") from exc


async def execute_retrying_locks(
    conn: asyncpg.Connection,
    statement: str,
    delays_s: Sequence[float] = LOCK_RETRY_DELAYS_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    timeout_s: float | None = None,
) -> None:
    """Run one statement outside a transaction, again after each delay while a lock is taken.

    `timeout_s` replaces the connection's command timeout for this statement.

    Raises:
        asyncpg.LockNotAvailableError: the lock was still taken after the last delay.
    """
    options = {} if timeout_s is None else {"timeout": timeout_s}
    for delay in delays_s:
        try:
            await conn.execute(statement, **options)
            return
        except asyncpg.LockNotAvailableError:
            await sleep(delay)
    await conn.execute(statement, **options)


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())
