"""f2stream.storage.privileges: what a role holds beyond the pipeline's needs, and what it lacks."""

from __future__ import annotations

import re

from f2stream.storage.migrate import load_migrations
from f2stream.storage.privileges import PIPELINE_NEEDS, TABLE_PRIVILEGES, RoleRights, excess, lacking

TIMESERIES = PIPELINE_NEEDS["timeseries"]
EVERYTHING = frozenset(TABLE_PRIVILEGES)
GRANT = re.compile(r"^GRANT ([A-Z, ]+) ON ([a-z_, ]+) TO (\w+);", re.MULTILINE)


def granted() -> dict[str, frozenset[str]]:
    """Exactly what the pipeline needs, table by table."""
    return dict(TIMESERIES)


def test_a_role_with_exactly_the_grants_holds_nothing_more_and_lacks_nothing() -> None:
    rights = RoleRights("f2_pipeline", held=granted())
    assert excess(rights, TIMESERIES) == []
    assert lacking(rights, TIMESERIES) == []


def test_a_superuser_is_said_once() -> None:
    rights = RoleRights("postgres", superuser=True, owned=tuple(TIMESERIES), create_in=("public",),
                        held={t: EVERYTHING for t in TIMESERIES})  # fmt: skip
    assert excess(rights, TIMESERIES) == ["is a superuser"]


def test_the_owner_owns_every_table_and_may_create() -> None:
    rights = RoleRights("f2", owned=tuple(TIMESERIES), create_in=("public",),
                        held={t: EVERYTHING for t in TIMESERIES})  # fmt: skip
    assert excess(rights, TIMESERIES) == ["owns every table it uses", "may create in schema public"]


def test_an_owner_of_one_table_is_named_with_it() -> None:
    held = granted() | {"iot_measurements": EVERYTHING}
    rights = RoleRights("f2_pipeline", owned=("iot_measurements",), held=held)
    assert excess(rights, TIMESERIES) == ["owns iot_measurements"]  # its privileges come with it


def test_extra_grants_are_named_by_table_in_a_fixed_order() -> None:
    held = granted() | {
        "iot_measurements": frozenset({"SELECT", "INSERT", "TRUNCATE", "DELETE"}),
        "device_status": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}),
    }
    rights = RoleRights("f2_pipeline", createrole=True, held=held)
    assert excess(rights, TIMESERIES) == [
        "may create roles (CREATEROLE)",
        "holds DELETE, TRUNCATE on iot_measurements",
        "holds DELETE on device_status",
    ]


def test_missing_grants_are_named_and_absent_tables_are_not() -> None:
    held = granted() | {"iot_measurements": frozenset({"SELECT"})}
    del held["device_status"]  # not migrated yet: nothing to say about it
    rights = RoleRights("f2_pipeline", held=held)
    assert lacking(rights, TIMESERIES) == ["INSERT on iot_measurements"]
    assert excess(rights, TIMESERIES) == []


def test_the_needs_are_only_reads_and_appends_where_no_job_changes_rows() -> None:
    assert all(p in TABLE_PRIVILEGES for needs in PIPELINE_NEEDS.values() for ps in needs.values() for p in ps)
    assert TIMESERIES["iot_measurements"] == {"SELECT", "INSERT"}
    assert {t for t, ps in PIPELINE_NEEDS["params"].items() if ps != {"SELECT"}} == {"parameter_sync_state"}
    assert not any({"DELETE", "TRUNCATE"} & ps for needs in PIPELINE_NEEDS.values() for ps in needs.values())


def test_the_timeseries_migrations_grant_the_pipelines_groups_exactly_its_needs() -> None:
    granted: dict[str, set[str]] = {}
    for migration in load_migrations("timeseries"):
        for privileges, tables, role in GRANT.findall(migration.sql):
            if role in ("f2_sink", "f2_status", "f2_reader"):  # the pipeline's groups (docs/operations.md)
                for table in tables.split(","):
                    granted.setdefault(table.strip(), set()).update(p.strip() for p in privileges.split(","))
    assert {t: granted.get(t) for t in TIMESERIES} == TIMESERIES
    assert TIMESERIES["alarms"] == TIMESERIES["device_status"]  # the alarm loop writes as the liveness writer
    assert TIMESERIES["alarm_transitions"] == TIMESERIES["device_status_changes"]
