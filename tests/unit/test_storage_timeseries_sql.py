"""The migration files held to TimescaleDB's rules, without a TimescaleDB server.

CI runs plain PostgreSQL, where the TimescaleDB files are skipped. These
checks read the SQL instead: what needs the extension is marked, what refuses
a transaction block runs outside one, objects come after what they build on,
compression covers the primary key, and the aggregate's policy window fits
between compression and retention. The files themselves were run on
TimescaleDB 2.28.3 (docs/timescaledb.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from test_storage_migrate import code_only, columns_of

from f2stream.storage.migrate import DATABASES, Migration, load_migrations

# The hourly aggregate (003) exists only with TimescaleDB: a statement naming it needs it too.
TIMESCALEDB_ONLY = re.compile(
    r"timescaledb|hypertable|time_bucket|_policy\s*\(|continuous_aggregate|_chunks?\s*\(|\biot_measurements_hourly\b",
    re.IGNORECASE,
)
# TimescaleDB refuses these inside a transaction block.
NO_TRANSACTION_ONLY = re.compile(
    r"WITH\s*\(\s*timescaledb\.continuous|CALL\s+refresh_continuous_aggregate", re.IGNORECASE
)
# What can run a second time unchanged: a no-transaction file stopped half-way runs again from its top.
RERUNNABLE = re.compile(
    r"IF NOT EXISTS|if_not_exists\s*=>\s*TRUE|if_exists\s*=>\s*TRUE|^ALTER MATERIALIZED VIEW \w+ SET \(|"
    r"^CALL refresh_continuous_aggregate\(",
    re.IGNORECASE,
)
INTERVAL = re.compile(r"INTERVAL '(\d+) (minutes?|hours?|days?)'")


def all_migrations() -> Iterator[tuple[str, Migration]]:
    """Every migration file of both databases."""
    for database in DATABASES:
        for migration in load_migrations(database):
            yield f"{database}/{migration.label}", migration


def statements(migration: Migration) -> list[str]:
    """The file's statements, without comment lines."""
    return [code_only(statement) for statement in migration.statements()]


def interval(text: str) -> timedelta:
    """The one `INTERVAL '<n> <unit>'` in a piece of SQL."""
    found = INTERVAL.findall(text)
    assert len(found) == 1, f"expected one interval in {text!r}"
    count, unit = found[0]
    return timedelta(**{unit.rstrip("s") + "s": int(count)})


def argument(statement: str, name: str) -> str:
    """The text of a named argument (`name => ...`) up to the next comma or closing parenthesis."""
    found = re.search(rf"{name}\s*=>\s*([^,)]+)", statement)
    assert found is not None, f"{name} missing in {statement!r}"
    return found[1]


def timeseries_statements() -> list[tuple[str, str]]:
    """(file, statement) for every time-series statement, in the order migrate runs them."""
    return [(m.label, s) for m in load_migrations("timeseries") for s in statements(m)]


def find(pattern: str) -> list[str]:
    """The time-series statements that match a pattern."""
    return [s for _, s in timeseries_statements() if re.search(pattern, s, re.IGNORECASE)]


@pytest.mark.parametrize(("where", "migration"), list(all_migrations()))
def test_what_needs_timescaledb_sits_in_files_marked_for_it(where: str, migration: Migration) -> None:
    found = [s for s in statements(migration) if TIMESCALEDB_ONLY.search(s)]
    if migration.requires_timescaledb:
        assert found, f"{where} is marked 'requires timescaledb' but uses nothing of it"
    else:
        assert not found, f"{where} needs TimescaleDB: mark it '-- f2stream: requires timescaledb'"


@pytest.mark.parametrize(("where", "migration"), list(all_migrations()))
def test_what_refuses_a_transaction_block_sits_in_no_transaction_files(where: str, migration: Migration) -> None:
    if migration.transactional:
        assert not any(NO_TRANSACTION_ONLY.search(s) for s in statements(migration)), (
            f"{where} cannot run in a transaction block: mark it '-- f2stream: no-transaction'"
        )


@pytest.mark.parametrize(("where", "migration"), [(w, m) for w, m in all_migrations() if not m.transactional])
def test_no_transaction_files_can_run_again_from_the_top(where: str, migration: Migration) -> None:
    for statement in statements(migration):
        assert RERUNNABLE.search(statement), f"{where}: cannot run twice: {statement.splitlines()[0]}"


def test_each_timescaledb_object_comes_after_what_it_builds_on() -> None:
    tables: set[str] = set()
    hypertables: set[str] = set()
    compressed: set[str] = set()
    aggregates: set[str] = set()
    extension = False
    rules: list[tuple[str, str, set[str] | None, set[str] | None]] = [
        # pattern naming the object, what it needs (a set the name must be in), where it goes
        (r"^CREATE TABLE IF NOT EXISTS (\w+)", "table", None, tables),
        (r"create_hypertable\('(\w+)'", "a table", tables, hypertables),
        (r"^ALTER TABLE (\w+) SET \(\s*timescaledb\.compress", "a hypertable", hypertables, compressed),
        (r"add_compression_policy\('(\w+)'", "compression settings", compressed, None),
        (r"add_retention_policy\('(\w+)'", "a hypertable", hypertables, None),
        (r"timescaledb\.continuous\) AS .*? FROM (\w+)", "a hypertable", hypertables, None),
        (r"^ALTER MATERIALIZED VIEW (\w+)", "a continuous aggregate", aggregates, None),
        (r"_continuous_aggregate(?:_policy)?\('(\w+)'", "a continuous aggregate", aggregates, None),
        (r"^GRANT [A-Z, ]+ ON (iot_measurements_hourly) TO", "a continuous aggregate", aggregates, None),
    ]
    for label, statement in timeseries_statements():
        if statement.startswith("CREATE EXTENSION IF NOT EXISTS timescaledb"):
            extension = True
            continue
        matched = False
        for pattern, needs, present, adds in rules:
            found = re.search(pattern, statement, re.IGNORECASE | re.DOTALL)
            if found is None:
                continue
            matched = True
            name = found[1]
            if TIMESCALEDB_ONLY.search(statement):
                assert extension, f"{label}: uses TimescaleDB before CREATE EXTENSION"
            if present is not None:
                assert name in present, f"{label}: {name} must be {needs} by then"
            if adds is not None:
                adds.add(name)
        view = re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+WITH \(timescaledb\.continuous\)", statement)
        if view is not None:
            aggregates.add(view[1])
        elif not matched:
            assert not TIMESCALEDB_ONLY.search(statement), f"{label}: teach this test the statement {statement!r}"
    assert hypertables == {"iot_measurements"}
    assert compressed == {"iot_measurements"}
    assert aggregates == {"iot_measurements_hourly"}


def test_the_primary_key_holds_time_and_compression_covers_it() -> None:
    # TimescaleDB requires both of a hypertable with a unique index.
    sql = load_migrations("timeseries")[0].sql
    primary = re.search(r"PRIMARY KEY \(([^)]*)\)", sql)
    assert primary is not None
    key = {c.strip() for c in primary[1].split(",")}
    (hypertable,) = find(r"create_hypertable\(")
    time_column = re.findall(r"create_hypertable\('iot_measurements', '(\w+)'", hypertable)
    assert time_column == ["time"] and "time" in key and "time" in columns_of(sql, "iot_measurements")
    (settings,) = find(r"timescaledb\.compress,")
    segment = {c.strip() for c in re.findall(r"compress_segmentby = '([^']*)'", settings)[0].split(",")}
    order = {c.split()[0] for c in re.findall(r"compress_orderby = '([^']*)'", settings)[0].split(",")}
    assert segment | order == key


def test_the_aggregate_policy_covers_late_rows_back_to_compression_and_never_past_retention() -> None:
    (bucket_sql,) = find(r"time_bucket\(")
    bucket = interval(bucket_sql.split("time_bucket(")[1].split(",")[0])
    (compression,) = find(r"add_compression_policy\(")
    (retention,) = find(r"add_retention_policy\(")
    policy = find(r"add_continuous_aggregate_policy\(")[-1]  # the one in force
    start, end = interval(argument(policy, "start_offset")), interval(argument(policy, "end_offset"))
    assert bucket == timedelta(hours=1)
    assert start == interval(compression) < interval(retention)
    assert start - end >= 2 * bucket  # TimescaleDB wants a window of two buckets at least
    assert end == bucket  # the hour still filling is left to real-time aggregation


def test_the_aggregate_is_real_time_and_filled_once_over_the_history() -> None:
    labels = [label for label, s in timeseries_statements() if "materialized_only" in s]
    assert find(r"materialized_only") == [
        "ALTER MATERIALIZED VIEW iot_measurements_hourly SET (timescaledb.materialized_only = false)"
    ]
    (refresh,) = find(r"^CALL refresh_continuous_aggregate")
    # From the very first row, up to where the policy starts.
    assert refresh == "CALL refresh_continuous_aggregate('iot_measurements_hourly', NULL, now() - INTERVAL '1 hour')"
    policy = find(r"add_continuous_aggregate_policy\(")[-1]
    assert interval(refresh) == interval(argument(policy, "end_offset"))
    # In the same file: the refresh is part of making the aggregate real-time, never applied without it.
    assert labels == [label for label, s in timeseries_statements() if s == refresh]
    # Before the policy is added: its first job starts at once and would hold the aggregate's lock.
    order = [s for _, s in timeseries_statements()]
    assert order.index(refresh) < order.index(policy)
