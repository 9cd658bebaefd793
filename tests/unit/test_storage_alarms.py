"""f2stream.storage.alarms, pure parts: the history's columns, a row as it is shown, the listing's checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from f2stream.alarms import AlarmEvent, iso
from f2stream.storage.alarms import LIST_STATES, alarm_answer, list_alarms, transition_columns

RAISED_AT = 1_900_000_000.123456


def event(transition: str = "raised", **changes: Any) -> AlarmEvent:
    fields: dict[str, Any] = {
        "alarm_id": "f2-e4fd45f654be:door-1-forced:3:1200",
        "transition": transition,
        "device_id": "f2-e4fd45f654be",
        "rule": "door-1-forced",
        "kind": "door_forced_open",
        "severity": "critical",
        "at": RAISED_AT,
        "raised_at": RAISED_AT,
        "data_point": "door_1",
        "value": 1.0,
        "text_value": None,
        "raw_partition": 3,
        "raw_offset": 1200,
        "reason": "door opened with no grant within 10 s",
    }
    return AlarmEvent(**(fields | changes))


def test_transitions_become_columns_in_the_statements_order() -> None:
    ack = event("acknowledged", at=RAISED_AT + 60, acknowledged_by="ops-1", reason="acknowledged")
    columns = transition_columns([event(), ack])
    assert len(columns) == 15 and all(len(c) == 2 for c in columns)
    alarm_id, transition, at, raised_at, *_, raw_offset, reason, by = columns
    assert at[1] > raised_at[1] == raised_at[0]
    assert transition == ["raised", "acknowledged"]
    assert by == [None, "ops-1"] and reason[1] == "acknowledged" and raw_offset == [1200, 1200]
    assert len(set(alarm_id)) == 1


def test_times_are_the_microseconds_the_topic_carries() -> None:
    (at,), (raised_at,) = transition_columns([event(at=RAISED_AT + 0.5)])[2:4]
    assert at.tzinfo is not None and raised_at.tzinfo is not None
    assert at.isoformat(timespec="microseconds") == iso(RAISED_AT + 0.5)
    assert raised_at.isoformat(timespec="microseconds") == iso(RAISED_AT) == "2030-03-17T17:46:40.123456+00:00"


def test_a_row_is_shown_with_iso_times_and_none_for_what_has_not_happened() -> None:
    moment = datetime(2030, 3, 17, 17, 46, 40, 123456, tzinfo=UTC)
    row = {"alarm_id": "x", "state": "raised", "raised_at": moment, "acknowledged_at": None, "cleared_at": None,
           "updated_at": moment, "value": 1.0}  # fmt: skip
    assert alarm_answer(row) == {
        **row,
        "raised_at": "2030-03-17T17:46:40.123456+00:00",
        "updated_at": "2030-03-17T17:46:40.123456+00:00",
    }


class Recorded:
    """A connection that records the listing's query arguments."""

    def __init__(self) -> None:
        self.args: tuple[Any, ...] = ()

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        self.args = args
        return []


@pytest.mark.parametrize(
    ("state", "states"),
    [("active", ["raised", "acknowledged"]), ("cleared", ["cleared"]), ("all", None)],
)
async def test_the_listing_asks_for_the_states_the_filter_names(state: str, states: list[str] | None) -> None:
    conn = Recorded()
    assert await list_alarms(conn, state=state, device="f2-e4fd45f654be", limit=5) == []  # type: ignore[arg-type]
    assert conn.args == (states, "f2-e4fd45f654be", "", 5)


async def test_the_listing_refuses_an_unknown_state_and_a_limit_below_one() -> None:
    assert LIST_STATES == ("active", "raised", "acknowledged", "cleared", "all")
    with pytest.raises(ValueError, match="state must be one of active, raised"):
        await list_alarms(Recorded(), state="open")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await list_alarms(Recorded(), limit=0)  # type: ignore[arg-type]
