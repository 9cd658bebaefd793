"""f2stream.migrate: the migration files shipped with the package."""

from __future__ import annotations

import hashlib
import re

import pytest

from f2stream.migrate import DATABASES, Migration, load_migrations


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
    assert not any(m.requires_timescaledb for m in migrations)


def test_timeseries_migrations() -> None:
    migrations = load_migrations("timeseries")
    assert [(m.version, m.name, m.requires_timescaledb, m.transactional) for m in migrations] == [
        (1, "iot_measurements", False, True),
        (2, "timescaledb_hypertable", True, True),
        (3, "hourly_aggregate", True, False),
        (4, "param_version", False, True),
    ]
    # Whatever needs the extension sits in the files that say so.
    plain = code_only(migrations[0].sql).lower()
    for word in ("timescaledb", "hypertable", "time_bucket", "_policy"):
        assert word not in plain
    assert all("timescaledb" in code_only(m.sql) for m in migrations[1:3])


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
