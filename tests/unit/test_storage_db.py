"""Transient or permanent: decided once, by class and SQLSTATE, never by message text."""

from __future__ import annotations

import ssl

import asyncpg
import pytest

from f2stream.storage.db import describe_dsn, failure, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.ConnectionDoesNotExistError("gone"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("too many"),
        asyncpg.SerializationError("could not serialize"),
        asyncpg.DeadlockDetectedError("deadlock"),
    ],
    ids=lambda e: e.__class__.__name__,
)
def test_outages_and_lost_races_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.InsufficientPrivilegeError("permission denied"),
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidCatalogNameError("no such database"),
        asyncpg.DataError("bad value"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ValueError("not a database error"),
    ],
    ids=lambda e: e.__class__.__name__,
)
def test_what_needs_a_fix_is_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_permanent_failure_says_what_to_do() -> None:
    assert failure(asyncpg.UndefinedTableError("relation x does not exist")) == (
        "UndefinedTableError: relation x does not exist; a table is missing: run `faust -A f2stream migrate`"
    )
    assert "GRANT" in failure(asyncpg.InsufficientPrivilegeError("permission denied"))
    assert failure(TimeoutError()) == "TimeoutError"


def test_a_dsn_is_described_without_its_user() -> None:
    assert describe_dsn("postgresql://f2@db.example:5433/f2_timeseries") == "db.example:5433/f2_timeseries"


def test_a_server_certificate_not_trusted_says_where_to_look() -> None:
    line = failure(ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer certificate"))
    assert line.endswith("the server's certificate is not trusted: check the DSN's sslrootcert (the CA that issued it)")


def test_a_certificate_that_does_not_name_the_host_says_so() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch")
    exc.verify_code = 62  # X509_V_ERR_HOSTNAME_MISMATCH, as the handshake sets it
    assert failure(exc).endswith(
        "the server's certificate does not name the DSN's host: use a host name it holds, or issue the server one "
        "that names this host"
    )


def test_a_dsn_is_described_with_its_sslmode_and_nothing_else_of_its_query() -> None:
    dsn = "postgresql://f2@db.example:5432/f2_params?sslmode=verify-full&sslrootcert=/srv/ca.crt"
    assert describe_dsn(dsn) == "db.example:5432/f2_params (sslmode=verify-full)"
