"""f2stream.repair.plan: after a repair, a message's rows are exactly what the current decode makes of it."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from f2stream.records import Measurement
from f2stream.repair.plan import MessageKey, Stored, is_stale, key_of, plan_message

BASE = Measurement(
    "2026-03-01T00:00:00.000000+00:00", "f2-000000000001", "sensor-mode", 4, "sensor-3",
    "data", 1.0, None, "celsius", "cmnd/f2-000000000001/sensor-mode/4/sensor-3",
    "2026-03-01T00:00:01.000000+00:00", 5, 2, 40,
)  # fmt: skip
KEY: MessageKey = key_of(BASE)
POINTS = ("a", "b", "c", "d")


def new(point: str, value: float | None, version: int = 5) -> Measurement:
    return replace(BASE, data_point=point, value=value, param_version=version)


def stored(point: str, value: float | None, version: int | None = 4) -> Stored:
    return Stored(point, value, None, "celsius", version)


def test_each_kind_of_change() -> None:
    plan = plan_message(
        KEY,
        [new("a", 1.0), new("b", 2.0), new("c", 3.0)],
        [stored("b", 20.0), stored("c", 3.0), stored("x", 9.0)],
        5,
    )
    assert [m.data_point for m in plan.add] == ["a"]
    assert [(s.data_point, m.value) for s, m in plan.change] == [("b", 2.0)]
    assert [(s.data_point, m.param_version) for s, m in plan.restamp] == [("c", 5)]
    assert [s.data_point for s in plan.remove] == ["x"]
    assert (plan.unchanged, plan.newer, plan.touched) == (0, 0, True)


def test_rows_already_right_are_left_alone() -> None:
    plan = plan_message(KEY, [new("a", 1.0)], [stored("a", 1.0, 5)], 5)
    assert not plan.touched and plan.unchanged == 1 and not plan.writes


def test_a_row_decoded_with_a_newer_version_is_never_touched() -> None:
    plan = plan_message(KEY, [new("a", 1.0, 5)], [stored("a", 7.0, 6), stored("z", 1.0, 6)], 5)
    assert not plan.touched and plan.newer == 2


def test_nan_equals_nan_so_a_second_run_changes_nothing() -> None:
    plan = plan_message(KEY, [new("a", float("nan"))], [stored("a", float("nan"), 5)], 5)
    assert not plan.touched


def test_a_data_point_decoded_twice_keeps_its_first_value_as_the_database_did() -> None:
    plan = plan_message(KEY, [new("a", 1.0), new("a", 2.0)], [], 5)
    assert [m.value for m in plan.add] == [1.0]


def test_staleness() -> None:
    assert is_stale([stored("a", 1.0, 4)], 5)
    assert is_stale([stored("a", 1.0, None)], 5)
    assert not is_stale([stored("a", 1.0, 5), stored("b", 1.0, 6)], 5)
    assert not is_stale([stored("a", 1.0, 1)], None)


values = st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.5, -3.0]))
versions = st.one_of(st.none(), st.integers(1, 8))


@given(
    decoded=st.dictionaries(st.sampled_from(POINTS), values),
    rows=st.dictionaries(st.sampled_from(POINTS), st.tuples(values, versions)),
    version=st.integers(1, 8),
)
def test_applying_a_plan_gives_the_current_decode_and_a_second_plan_is_empty(
    decoded: dict[str, float | None], rows: dict[str, tuple[float | None, int | None]], version: int
) -> None:
    before = {p: stored(p, v, pv) for p, (v, pv) in rows.items()}
    plan = plan_message(KEY, [new(p, v, version) for p, v in decoded.items()], before.values(), version)
    # Apply it as the database does: upserts and deletes, each guarded by the version.
    after = dict(before)
    for m in plan.writes:
        old = after.get(m.data_point)
        assert old is None or old.param_version is None or old.param_version <= version
        after[m.data_point] = Stored(m.data_point, m.value, m.text_value, m.unit, m.param_version)
    for s in plan.remove:
        del after[s.data_point]
    newer = {p for p, s in before.items() if s.param_version is not None and s.param_version > version}
    assert {p: after[p] for p in newer} == {p: before[p] for p in newer}, "a newer row was touched"
    current = {p: stored(p, v, version) for p, v in decoded.items() if p not in newer}
    assert {p: s for p, s in after.items() if p not in newer} == current
    again = plan_message(KEY, [new(p, v, version) for p, v in decoded.items()], after.values(), version)
    assert not again.touched
    assert plan.unchanged + plan.newer + len(plan.change) + len(plan.restamp) + len(plan.remove) == len(before)
