"""PostgreSQL connections: DSN from the settings, password from its secret; which failures pass."""

from __future__ import annotations

import ssl
from typing import Final
from urllib.parse import urlsplit

import asyncpg
from asyncpg.exceptions._base import DataError as ClientDataError  # not re-exported: the server's DataError shadows it

from f2stream.settings import Secret, Settings

__all__ = [
    "DB_ERRORS",
    "RECORD_FAULTS",
    "TimeseriesPool",
    "connect",
    "create_pool",
    "describe_dsn",
    "failure",
    "is_transient",
]

#: What a database call can raise: the server's errors, the client's, the network's.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

#: What the server says about a row's content, never about the server: a value
#: that does not fit (class 22), a constraint (class 23), a limit such as an
#: index row too large (class 54). Written row by row, the rows it names are
#: refused alone; every other permanent failure is the deployment's to fix.
#: asyncpg's own DataError (a value its encoder cannot send, e.g. text for a
#: smallint) says the same before the server sees the row; it is also an
#: InterfaceError, which would otherwise count as a lost connection.
RECORD_FAULTS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    ClientDataError,
)

#: How long one statement may take before the connection counts as lost (a
#: half-open connection would otherwise hang its caller past every timeout).
COMMAND_TIMEOUT_S = 15.0

# SQLSTATE classes that pass by themselves: connection exception, insufficient
# resources, operator intervention (shutdown, restart), transaction rollback.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "40"})

# What to do about the permanent failures an operator meets.
_HINTS = {
    "42P01": "a table is missing: run `faust -A f2stream migrate`",
    "42501": "the role lacks a privilege: run `faust -A f2stream migrate` as the owner, or GRANT it",
    "28P01": "the password was refused: check the *_PASSWORD or *_PASSWORD_FILE setting",
    "28000": "the role may not log in: check the DSN's user, its sslmode (a server may take TLS only) and pg_hba.conf",
    "3D000": "the database does not exist: check the DSN, or create it",
}


async def connect(dsn: str, password: Secret | None, *, timeout_s: float = 10.0) -> asyncpg.Connection:
    """Open one connection."""
    return await asyncpg.connect(dsn, password=_reveal(password), timeout=timeout_s, command_timeout=COMMAND_TIMEOUT_S)


async def create_pool(
    dsn: str,
    password: Secret | None,
    *,
    size: int = 2,
    setup_sql: str | None = None,
) -> asyncpg.Pool:
    """Open a small pool; connections are checked out per batch, never per message.

    `setup_sql` runs once on each new connection (e.g. a session's temp table).
    """

    async def init(conn: asyncpg.Connection) -> None:
        if setup_sql is not None:
            await conn.execute(setup_sql)

    pool = await asyncpg.create_pool(
        dsn,
        password=_reveal(password),
        min_size=1,
        max_size=size,
        timeout=10.0,
        command_timeout=COMMAND_TIMEOUT_S,
        init=init,
    )
    assert pool is not None
    return pool


def is_transient(exc: BaseException) -> bool:
    """True for a failure that passes by itself (retry quietly); False for one that needs a fix.

    Decided by class, never by message text: network errors, timeouts and a
    closed connection, and the SQLSTATE classes 08, 53, 57 and 40. A server
    certificate that is not trusted is no outage (an SSLError is an OSError).
    """
    if isinstance(exc, ClientDataError | ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in _TRANSIENT_CLASSES
    return False


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH (verify-full, a name not on it).
_NAME_MISMATCH: Final = frozenset({62, 64})


def failure(exc: BaseException) -> str:
    """One line about a database failure: its class and, for a permanent one, what to do."""
    hint = "" if is_transient(exc) else _HINTS.get(str(getattr(exc, "sqlstate", "") or ""), "")
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = (
            "the server's certificate does not name the DSN's host: use a host name it holds, or issue the "
            "server one that names this host"
            if getattr(exc, "verify_code", None) in _NAME_MISMATCH  # set by OpenSSL's handshake
            else "the server's certificate is not trusted: check the DSN's sslrootcert (the CA that issued it)"
        )
    text = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    return f"{text}; {hint}" if hint else text


def describe_dsn(dsn: str) -> str:
    """`host:port/database` for messages (with `sslmode=...` when the DSN has one): never the user's password."""
    parts = urlsplit(dsn)
    mode = next((p for p in parts.query.split("&") if p.startswith("sslmode=")), "")
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}" + (f" ({mode})" if mode else "")


def _reveal(password: Secret | None) -> str | None:
    return None if password is None else password.reveal()


class TimeseriesPool:
    """A pool of one connection to the time-series database, made on first use (the pipeline's writers)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await create_pool(self.settings.timeseries_dsn, self.settings.timeseries_password, size=1)
        return self._pool
