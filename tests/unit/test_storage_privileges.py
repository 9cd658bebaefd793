"""f2stream.storage.privileges: what a role holds beyond the pipeline's needs, and what it lacks."""

from __future__ import annotations

from f2stream.storage.privileges import PIPELINE_NEEDS, TABLE_PRIVILEGES, RoleRights, excess, lacking

TIMESERIES = PIPELINE_NEEDS["timeseries"]
EVERYTHING = frozenset(TABLE_PRIVILEGES)


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
