"""The migration runner: versioned SQL files applied once, in order, per database."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

from f2stream.errors import F2StreamError

__all__ = ["DATABASES", "Migration", "MigrationError", "apply_migrations", "load_migrations"]

Database = Literal["params", "timeseries"]
DATABASES: tuple[Database, ...] = ("params", "timeseries")

_NAME_RE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
_DIRECTIVE_RE = re.compile(r"^--\s*f2stream:\s*(.+?)\s*$", re.MULTILINE)
_STATEMENT_END_RE = re.compile(r";[ \t]*(?:\n|$)")
# One lock id for every f2stream migration run, so two runners never race.
_LOCK_ID = 0x0F25_7EA4

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


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration], report: Callable[[str], None]) -> int:
    """Apply what is not applied yet; return how many were applied.

    Safe to run twice and from two places at once (an advisory lock orders runs).
    Migrations that need TimescaleDB are skipped, and reported, where the
    extension is not available; they apply on a later run once it is.

    Raises:
        MigrationError: a file changed after it was applied, or a statement failed.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(_BOOKKEEPING)
        applied = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM f2stream_migrations")
        }
        timescaledb = await conn.fetchval("SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'timescaledb'")
        report(
            "TimescaleDB available: hypertable, compression, retention and hourly aggregate"
            if timescaledb
            else "TimescaleDB not available: plain PostgreSQL tables"
        )
        count = 0
        for migration in migrations:
            label = f"{migration.version:03d}_{migration.name}"
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{label} was changed after it was applied; add a new migration instead of editing it"
                    )
                continue
            if migration.requires_timescaledb and not timescaledb:
                report(f"{label}: skipped (needs the timescaledb extension)")
                continue
            await _apply(conn, migration, label)
            report(f"{label}: applied")
            count += 1
        return count
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _apply(conn: asyncpg.Connection, migration: Migration, label: str) -> None:
    record = "INSERT INTO f2stream_migrations (version, name, checksum) VALUES ($1, $2, $3)"
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(record, migration.version, migration.name, migration.checksum)
        else:
            for statement in migration.statements():
                await conn.execute(statement)
            await conn.execute(record, migration.version, migration.name, migration.checksum)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{label} failed: {exc.__class__.__name__}: {exc}") from exc


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())
