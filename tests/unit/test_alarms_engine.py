"""The alarm evaluation, pure: each rule kind's transitions, the timers, late and repeated records, acks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f2stream.alarm_rules import Grant, Rule
from f2stream.alarms import (
    OFF,
    AlarmEvent,
    AlarmState,
    RuleSet,
    decode_device,
    decode_event,
    encode_device,
    encode_event,
    iso,
)
from f2stream.mqtt_topics import parse_topic
from f2stream.records import Point

DEVICE = "f2-02f200000001"
T0 = 1_800_000_000.0

DOOR = parse_topic(f"stat/{DEVICE}/access-control-mode/1/door-sensors")
READER = parse_topic(f"tele/{DEVICE}/access-control-mode/1/reader-1")
SENSOR = parse_topic(f"cmnd/{DEVICE}/sensor-mode/4/sensor-3")

HOT = Rule("hot", "threshold", "major", "sensor", "data", above=30.0, clear=28.0, for_s=10.0)
TAMPER = Rule("tamper", "state", "critical", "door-sensors", "tamper", equals=1.0)
HELD = Rule("held", "door_held_open", "minor", "door-sensors", "door_1", for_s=30.0)
FORCED = Rule("forced", "door_forced_open", "critical", "door-sensors", "door_2", window_s=10.0,
              grants=(Grant("reader", "card_id"),))  # fmt: skip


class Feed:
    """An AlarmState with one device's rules, fed records at increasing offsets."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = RuleSet(rules)
        self.state = AlarmState(lambda device: self.rules)
        self.offset = 0

    def send(self, info: object, at: float, *points: Point, offset: int | None = None) -> list[AlarmEvent]:
        if offset is None:
            self.offset += 1
            offset = self.offset
        self.state.observe((info, iso(at) or "", None, list(points)), 0, offset, iso(at))  # type: ignore[arg-type]
        return self.state.take_events()


def temp(value: float) -> Point:
    return ("data", value, None, "celsius")


def doors(door_1: bool = False, door_2: bool = False, tamper: bool = False) -> list[Point]:
    return [("door_1", float(door_1), None, None), ("door_2", float(door_2), None, None),
            ("tamper", float(tamper), None, None)]  # fmt: skip


def kinds(events: list[AlarmEvent]) -> list[str]:
    return [f"{e.rule}:{e.transition}" for e in events]


def test_threshold_needs_its_duration_and_clears_only_past_the_hysteresis() -> None:
    feed = Feed(HOT)
    assert feed.send(SENSOR, T0, temp(31)) == []
    assert feed.send(SENSOR, T0 + 5, temp(29.5)) == []  # back under the limit: the duration starts again
    assert feed.send(SENSOR, T0 + 6, temp(31)) == []
    raised = feed.send(SENSOR, T0 + 16, temp(32))
    assert kinds(raised) == ["hot:raised"]
    assert raised[0].at == T0 + 16 and raised[0].alarm_id == f"{DEVICE}:hot:0:3"
    assert (raised[0].raw_partition, raised[0].raw_offset) == (0, 4)
    for i, value in enumerate((29.9, 30.5, 28.5, 31, 29)):  # wobbling around the limit: no flapping
        assert feed.send(SENSOR, T0 + 20 + i, temp(value)) == []
    cleared = feed.send(SENSOR, T0 + 60, temp(27.9))
    assert kinds(cleared) == ["hot:cleared"] and cleared[0].raw_offset == 10
    assert feed.state.active == {("threshold", "major"): 0}


def test_state_rule_with_no_duration_raises_on_the_message() -> None:
    feed = Feed(TAMPER)
    assert kinds(feed.send(DOOR, T0, *doors(tamper=True))) == ["tamper:raised"]
    assert feed.send(DOOR, T0 + 1, *doors(tamper=True)) == []
    assert kinds(feed.send(DOOR, T0 + 2, *doors())) == ["tamper:cleared"]


def test_held_open_is_raised_by_the_timer_once_the_partition_is_read_past_its_deadline() -> None:
    feed = Feed(HELD)
    feed.send(DOOR, T0, *doors())
    feed.send(DOOR, T0 + 1, *doors(door_1=True))
    assert feed.state.expire(T0 + 30, lambda p: T0 + 100) == []  # not yet 30 s
    assert feed.state.expire(T0 + 31.5, lambda p: T0 + 20) == []  # the backlog may still close it
    events = feed.state.expire(T0 + 33, lambda p: T0 + 40)
    assert kinds(events) == ["held:raised"] and events[0].at == T0 + 31 and events[0].raw_offset == 2
    assert feed.state.expire(T0 + 100, lambda p: T0 + 100) == []
    assert kinds(feed.send(DOOR, T0 + 50, *doors())) == ["held:cleared"]


def test_held_open_closed_in_time_raises_nothing() -> None:
    feed = Feed(HELD)
    feed.send(DOOR, T0, *doors())
    feed.send(DOOR, T0 + 1, *doors(door_1=True))
    feed.send(DOOR, T0 + 20, *doors())
    assert feed.state.expire(T0 + 100, lambda p: T0 + 100) == []


def test_forced_open_without_a_grant_and_not_after_one() -> None:
    feed = Feed(FORCED)
    feed.send(DOOR, T0, *doors())
    events = feed.send(DOOR, T0 + 1, *doors(door_2=True))
    assert kinds(events) == ["forced:raised"] and events[0].reason.startswith("opened with no access grant")
    assert kinds(feed.send(DOOR, T0 + 5, *doors())) == ["forced:cleared"]
    feed.send(READER, T0 + 10, ("card_id", None, "04A1B2C3", None))
    assert feed.send(DOOR, T0 + 12, *doors(door_2=True)) == []  # a card read 2 s before
    feed.send(DOOR, T0 + 15, *doors())
    assert kinds(feed.send(DOOR, T0 + 40, *doors(door_2=True))) == ["forced:raised"]  # the grant is 30 s old


def test_an_open_door_never_seen_closed_is_no_opening() -> None:
    feed = Feed(FORCED)
    assert feed.send(DOOR, T0, *doors(door_2=True)) == []


def test_late_messages_and_redeliveries_change_nothing() -> None:
    feed = Feed(TAMPER)
    feed.send(DOOR, T0 + 10, *doors(tamper=True))
    assert feed.send(DOOR, T0 + 5, *doors()) == []  # older than the component's last: ignored, counted
    assert feed.state.late == 1
    assert feed.send(DOOR, T0 + 20, *doors(), offset=1) == []  # a re-delivery of an applied record
    assert kinds(feed.send(DOOR, T0 + 21, *doors())) == ["tamper:cleared"]


def test_an_idle_rule_holds_no_object_of_its_own_and_a_pending_one_gives_it_back() -> None:
    feed = Feed(HOT, TAMPER, HELD, FORCED)
    feed.send(DOOR, T0, *doors())
    feed.send(SENSOR, T0, temp(20))
    states = feed.state.devices[DEVICE].rules
    assert all(s is OFF for s in states.values()) and len(states) == 4
    feed.send(DOOR, T0 + 1, *doors(door_1=True))
    assert states["held"] is not OFF and states["held"].since == T0 + 1
    feed.send(DOOR, T0 + 2, *doors())
    assert states["held"] is OFF and OFF.since is None and OFF.on is False and OFF.alarm_id is None
    assert feed.state.expire(T0 + 100, lambda p: T0 + 100) == []  # the dropped state's timer is stale
    feed.send(READER, T0 + 3, ("card_id", None, "X", None))
    assert states["forced"] is not OFF and states["forced"].on is False  # a grant is state


def test_acknowledgement_once_and_only_of_an_active_alarm() -> None:
    feed = Feed(TAMPER)
    alarm = feed.send(DOOR, T0, *doors(tamper=True))[0].alarm_id
    ack = feed.state.acknowledge(alarm, "ops", T0 + 3)
    assert ack is not None and ack.transition == "acknowledged" and ack.acknowledged_by == "ops"
    assert feed.state.acknowledge(alarm, "ops", T0 + 4) is None
    assert feed.state.acknowledge(f"{DEVICE}:tamper:0:99", "ops", T0 + 4) is None
    feed.send(DOOR, T0 + 5, *doors())
    assert feed.state.acknowledge(alarm, "ops", T0 + 6) is None


def test_a_removed_rule_clears_its_alarm() -> None:
    feed = Feed(TAMPER, HELD)
    feed.send(DOOR, T0, *doors(tamper=True))
    feed.rules = RuleSet([HELD])
    assert kinds(feed.state.reconcile([0])) == ["tamper:cleared"]
    assert feed.state.active[("state", "critical")] == 0


def test_device_state_survives_its_changelog_record() -> None:
    feed = Feed(HOT, FORCED)
    feed.send(SENSOR, T0, temp(31))
    feed.send(READER, T0 + 1, ("card_id", None, "X", None))
    d = feed.state.devices[DEVICE]
    back = decode_device(DEVICE.encode(), encode_device(d))
    assert back is not None and encode_device(back) == encode_device(d)
    restored = Feed(HOT, FORCED)
    restored.state.load(back)
    events = restored.send(SENSOR, T0 + 10, temp(31), offset=5)
    assert kinds(events) == ["hot:raised"] and events[0].alarm_id == f"{DEVICE}:hot:0:1"
    assert restored.send(SENSOR, T0 + 11, temp(40), offset=5) == []  # at or below the applied offset


@given(value=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
       text=st.one_of(st.none(), st.text(max_size=20)), at=st.floats(0, 4e9))  # fmt: skip
def test_events_survive_their_encoding(value: float | None, text: str | None, at: float) -> None:
    event = AlarmEvent(f"{DEVICE}:r:1:2", "raised", DEVICE, "r", "state", "minor", at, at, "p", value, text, 1, 2,
                       "why")  # fmt: skip
    back = decode_event(encode_event(event))
    assert back is not None
    assert back.at == pytest.approx(at, abs=1e-6) and back.value == value and back.text_value == text
    assert back.key == event.key


def test_unreadable_records_are_none() -> None:
    assert decode_event(b"{") is None and decode_device(b"x", b'{"p": 1}') is None
    assert math.isinf(-math.inf)
