"""What every command shares: one-line errors, database connections, device ids."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Literal

import asyncpg

from f2stream.errors import ERROR_EXIT, F2StreamError
from f2stream.mqtt_topics import canonical_device_id
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure, is_transient

__all__ = [
    "ERROR_EXIT",
    "CommandError",
    "Database",
    "cannot_connect",
    "connect_database",
    "device_id_of",
    "one_line_errors",
]

#: The two databases a command may need.
Database = Literal["params", "timeseries"]

# How messages name each database, and the settings that point at it.
_NAMES: dict[Database, tuple[str, str]] = {
    "params": ("parameters", "F2_PARAMS"),
    "timeseries": ("time-series", "F2_TIMESERIES"),
}


class CommandError(F2StreamError):
    """A command cannot do what was asked; the message says how to fix it."""


def one_line_errors(fun: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Turn a project error into one line on stderr and exit status 2: no traceback."""

    @wraps(fun)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await fun(*args, **kwargs)
        except F2StreamError as exc:
            # A server message may hold line breaks; the promise is one line.
            text = " ".join(str(exc).splitlines())
            print(f"f2stream: {text}", file=sys.stderr, flush=True)
            raise SystemExit(ERROR_EXIT) from None

    return run


async def connect_database(settings: Settings, database: Database) -> asyncpg.Connection:
    """Open one connection to a database, or explain in one line why not.

    Raises:
        CommandError: naming the database, what failed and what to do.
    """
    dsn, password = (
        (settings.params_dsn, settings.params_password)
        if database == "params"
        else (settings.timeseries_dsn, settings.timeseries_password)
    )
    try:
        return await connect(dsn, password)
    except DB_ERRORS as exc:
        raise cannot_connect(database, dsn, exc) from exc


def cannot_connect(database: Database, dsn: str, exc: BaseException) -> CommandError:
    """The one-line error for a connection that failed: start the server, or fix the settings."""
    name, prefix = _NAMES[database]
    if is_transient(exc):
        todo = f"start it (make up) or set {prefix}_DSN"
    else:
        todo = f"its settings are {prefix}_DSN and {prefix}_PASSWORD(_FILE)"
    return CommandError(f"cannot connect to the {name} database at {describe_dsn(dsn)} ({failure(exc)}); {todo}")


def device_id_of(mac: str) -> str:
    """The canonical device id of a MAC in any usual spelling.

    Raises:
        CommandError: the text is not a MAC address.
    """
    try:
        return canonical_device_id(mac)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
