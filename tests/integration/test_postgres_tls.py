"""PostgreSQL over TLS on the secure stack (issue 25): the server verified, a client without TLS refused.

The secure stack's clusters take TCP connections over TLS only (`hostssl`,
`hostnossl ... reject`), with a certificate from the project's CA, and
stack.env's DSNs say `sslmode=verify-full&sslrootcert=<the CA>`. The
workers of test_kafka_security.py already run on these DSNs end to end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from harness import Stack

from f2stream.pki import init_pki
from f2stream.storage.db import connect


def with_query(dsn: str, query: str) -> str:
    """`dsn` with its query replaced."""
    return urlunsplit(urlsplit(dsn)._replace(query=query))


def line_of(result: subprocess.CompletedProcess[str]) -> str:
    ours = [line for line in result.stderr.splitlines() if line.startswith("f2stream: ")]
    assert len(ours) == 1, result.stderr[-3000:]
    return ours[0]


@pytest.mark.parametrize("database", ["params", "timeseries"])
async def test_both_databases_are_reached_over_tls_with_the_server_verified(secure_stack: Stack, database: str) -> None:
    settings = secure_stack.settings
    dsn, password = (
        (settings.params_dsn, settings.params_password)
        if database == "params"
        else (settings.timeseries_dsn, settings.timeseries_password)
    )
    assert "sslmode=verify-full" in dsn
    conn = await connect(dsn, password)
    try:
        row = await conn.fetchrow("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    assert row is not None and row["ssl"] is True
    assert row["version"] in ("TLSv1.2", "TLSv1.3")


def test_a_client_without_tls_is_refused(secure_stack: Stack) -> None:
    dsn = with_query(secure_stack.env["F2_PARAMS_DSN"], "sslmode=disable")
    result = secure_stack.faust("devices", F2_PARAMS_DSN=dsn)
    assert result.returncode == 2
    line = line_of(result)
    assert "cannot connect to the parameters database" in line
    assert "no encryption" in line  # pg_hba.conf: hostnossl ... reject
    assert "its sslmode" in line


def test_a_database_certificate_from_another_ca_is_refused(secure_stack: Stack, tmp_path: Path) -> None:
    init_pki(tmp_path / "other")
    query = f"sslmode=verify-full&sslrootcert={tmp_path / 'other' / 'ca.crt'}"
    result = secure_stack.faust("devices", F2_PARAMS_DSN=with_query(secure_stack.env["F2_PARAMS_DSN"], query))
    assert result.returncode == 2
    line = line_of(result)
    assert "SSLCertVerificationError" in line
    assert "the server's certificate is not trusted: check the DSN's sslrootcert" in line


def test_a_missing_root_certificate_is_a_bad_setting(secure_stack: Stack) -> None:
    query = "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"
    result = secure_stack.faust("devices", F2_TIMESERIES_DSN=with_query(secure_stack.env["F2_TIMESERIES_DSN"], query))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "f2stream: bad setting F2_TIMESERIES_DSN sslrootcert: cannot read /nonexistent/ca.crt: "
        "No such file or directory"
    ]


def test_a_host_the_database_certificate_does_not_name_is_refused(secure_stack: Stack) -> None:
    """verify-full checks the name: `127.1` reaches 127.0.0.1, but the certificate names 127.0.0.1 and localhost."""
    dsn = urlsplit(secure_stack.env["F2_PARAMS_DSN"])
    other_host = urlunsplit(dsn._replace(netloc=f"{dsn.username}@127.1:{dsn.port}"))
    result = secure_stack.faust("devices", F2_PARAMS_DSN=other_host)
    assert result.returncode == 2
    line = line_of(result)
    assert "SSLCertVerificationError" in line
    assert "certificate is not valid for '127.1'" in line
    assert "the server's certificate does not name the DSN's host" in line
