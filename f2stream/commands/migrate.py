"""`faust -A f2stream migrate`: apply the migrations to both databases (:mod:`f2stream.storage.migrate`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from f2stream.commands.base import connect_database, one_line_errors
from f2stream.settings import Settings
from f2stream.storage.db import describe_dsn
from f2stream.storage.migrate import DATABASES, apply_migrations, load_migrations

__all__ = ["register", "run_migrations"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `migrate` command."""

    @app.command()
    @one_line_errors
    async def migrate(self: Any) -> None:
        """Apply the SQL migrations to the parameters and time-series databases."""
        await run_migrations(settings, print)


async def run_migrations(settings: Settings, report: Callable[[str], None]) -> None:
    """Apply every pending migration to both databases, reporting each step as `<database>: ...`.

    Raises:
        CommandError: a database cannot be reached.
        MigrationError: a file changed after it was applied, or a statement failed.
    """
    for database in DATABASES:
        dsn = settings.params_dsn if database == "params" else settings.timeseries_dsn
        conn = await connect_database(settings, database)
        try:
            count = await apply_migrations(conn, load_migrations(database), _prefixed(report, database))
        finally:
            await conn.close()
        report(f"{database}: {count} migration(s) applied, {describe_dsn(dsn)} is up to date")


def _prefixed(report: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: report(f"{prefix}: {line}")
