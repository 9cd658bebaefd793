"""f2stream.liveness: the state machine, the silence heap, timeouts and the records."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.liveness import (
    DeviceLiveness,
    LivenessState,
    decode_checkpoint,
    decode_device,
    encode_change,
    encode_checkpoint,
    encode_device,
    parse_time,
    resolve_timeout,
)

T0 = 1_800_000_000.0
TIMEOUT = 60.0


def fresh(timeouts: dict[str, float] | None = None) -> LivenessState:
    return LivenessState(lambda device: (timeouts or {}).get(device, TIMEOUT))


def always(_: int) -> float:
    return float("inf")


def test_registered_device_is_never_seen_then_online_then_silent_after_its_timeout() -> None:
    s = fresh()
    first = s.register("f2-000000000001", 3, False, T0)
    assert first is not None and (first.from_state, first.to_state, first.reason) == (None, "never_seen", "registered")
    change = s.observe("f2-000000000001", 3, 10, T0 + 1, T0, False, T0 + 1)
    assert change is not None and (change.from_state, change.to_state) == ("never_seen", "online")
    assert s.expire(T0 + 60.9, always) == []
    (silent,) = s.expire(T0 + 61.0, always)
    assert (silent.from_state, silent.to_state, silent.reason, silent.last_seen) == (
        "online",
        "silent",
        "timeout",
        T0 + 1,
    )
    assert s.counts == {"online": 0, "silent": 1, "never_seen": 0, "revoked": 0}


def test_messages_push_the_deadline_without_touching_the_heap() -> None:
    s = fresh()
    s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    for i in range(1, 100):
        assert s.observe("f2-000000000001", 0, i, T0 + i, None, False, T0 + i) is None
    assert s.heap_size == 1
    assert s.expire(T0 + 100, always) == []  # due entry re-armed at the newer deadline, nothing changed
    (change,) = s.expire(T0 + 99 + TIMEOUT, always)
    assert change.to_state == "silent"


def test_a_silent_device_is_online_again_with_its_next_message_and_counts_restart() -> None:
    s = fresh()
    s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    s.expire(T0 + 61, always)
    s.observe("f2-000000000001", 0, 1, T0 + 70, None, True, T0 + 70)  # a dead letter is a sign of life too
    d = s.get("f2-000000000001")
    assert d is not None and d.state == "online" and d.dead_letters == 0 and d.messages == 0


def test_redelivered_records_count_once() -> None:
    s = fresh()
    for _ in range(3):
        for offset in (5, 6, 7):
            s.observe("f2-000000000001", 0, offset, T0, None, False, T0)
    d = s.get("f2-000000000001")
    assert d is not None and d.messages == 2  # the first made it online (counts restart), 6 and 7 counted once


def test_an_old_receipt_does_not_bring_a_silent_device_online_nor_move_times_back() -> None:
    s = fresh()
    s.observe("f2-000000000001", 0, 0, T0, T0, False, T0)
    s.expire(T0 + 61, always)
    assert s.observe("f2-000000000001", 0, 1, T0 - 500, T0 - 500, False, T0 + 62) is None
    d = s.get("f2-000000000001")
    assert d is not None and d.state == "silent" and d.last_receipt == T0 and d.newest_device_time == T0


def test_a_partition_not_read_past_the_deadline_defers_expiry() -> None:
    s = fresh()
    s.observe("f2-000000000001", 4, 0, T0, None, False, T0)
    assert s.expire(T0 + 61, lambda p: T0 + 59.9 if p == 4 else float("inf")) == []
    (change,) = s.expire(T0 + 62, lambda p: T0 + 60)
    assert change.to_state == "silent"


def test_a_silence_noticed_late_says_so_once() -> None:
    s = fresh()
    s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    (change,) = s.expire(T0 + 1000, always)
    assert change.reason.startswith("timeout, noticed") and change.at == T0 + 1000
    assert s.expire(T0 + 2000, always) == []


def test_revocation_and_reinstatement() -> None:
    s = fresh()
    s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    revoked = s.register("f2-000000000001", 0, True, T0 + 1)
    assert revoked is not None and revoked.to_state == "revoked"
    assert s.observe("f2-000000000001", 0, 1, T0 + 2, None, False, T0 + 2) is None
    assert s.expire(T0 + 1000, always) == []
    back = s.register("f2-000000000001", 0, False, T0 + 3)
    assert back is not None and (back.to_state, back.reason) == ("silent", "reinstated")


def test_a_shorter_timeout_applies_at_once_after_rearm() -> None:
    timeouts: dict[str, float] = {}
    s = fresh(timeouts)
    s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    timeouts["f2-000000000001"] = 5.0
    s.rearm("f2-000000000001")
    (change,) = s.expire(T0 + 5, always)
    assert change.to_state == "silent"


def test_dropping_a_partition_forgets_its_devices_and_their_deadlines() -> None:
    s = fresh()
    s.observe("f2-000000000001", 1, 0, T0, None, False, T0)
    s.observe("f2-000000000002", 2, 0, T0, None, False, T0)
    assert s.drop_partition(1) == 1
    assert [c.device for c in s.expire(T0 + 100, always)] == ["f2-000000000002"]
    assert s.counts["online"] == 0 and s.counts["silent"] == 1


def test_timeout_resolution_device_then_template_then_default() -> None:
    templates = {"f2-000000000001": "door", "f2-000000000002": "door", "f2-000000000003": "other"}
    shared = {"door": 120.0}
    own = {"f2-000000000001": 30.0}
    assert resolve_timeout("f2-000000000001", 600, own, templates, shared) == 30.0
    assert resolve_timeout("f2-000000000002", 600, own, templates, shared) == 120.0
    assert resolve_timeout("f2-000000000003", 600, own, templates, shared) == 600
    assert resolve_timeout("f2-000000000004", 600, own, templates, shared) == 600


def test_records_round_trip_and_events_carry_the_contract_fields() -> None:
    d = DeviceLiveness("f2-000000000001", 3, "online", T0, T0 + 1, T0 - 5, 7, 2, 99)
    back = decode_device(b"f2-000000000001", encode_device(d))
    assert back == d
    assert decode_device(b"f2-000000000001", b"{bad") is None
    assert decode_checkpoint(encode_checkpoint(1234)) == 1234
    s = fresh()
    change = s.observe("f2-000000000001", 0, 0, T0, None, False, T0)
    assert change is not None
    event = orjson.loads(encode_change(change))
    assert set(event) >= {"device", "from", "to", "at", "last_seen", "reason"}
    assert event["at"] == "2027-01-15T08:00:00.000000+00:00" and parse_time(event["at"]) == T0


def test_parse_time_reads_naive_times_as_utc_and_refuses_garbage() -> None:
    assert parse_time("2027-01-15 08:00:00.000000") == T0
    assert parse_time("nonsense") is None and parse_time(None) is None


events = st.lists(
    st.tuples(
        st.sampled_from(["f2-000000000001", "f2-000000000002", "f2-000000000003"]),
        st.floats(-1000, 1000),  # receipt offset from now
        st.one_of(st.none(), st.floats(-1000, 1000)),  # device time
        st.booleans(),  # a tick after it
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_times_never_move_back_counts_add_up_and_silence_comes_only_after_the_timeout(
    seq: list[tuple[str, float, float | None, bool]],
) -> None:
    s = fresh()
    now = T0
    newest: dict[str, tuple[float | None, float | None]] = {}
    for offset, (device, receipt, device_time, tick) in enumerate(seq):
        now += 3.0
        before = newest.get(device, (None, None))
        s.observe(device, 0, offset, now + receipt, None if device_time is None else now + device_time, False, now)
        d = s.get(device)
        assert d is not None
        for old, new in zip(before, (d.last_receipt, d.newest_device_time), strict=True):
            assert old is None or (new is not None and new >= old)
        newest[device] = (d.last_receipt, d.newest_device_time)
        if tick:
            for change in s.expire(now, always):
                assert change.last_seen is not None and now - change.last_seen >= TIMEOUT
        assert sum(s.counts.values()) == len(s)
        for d in s.devices.values():
            if d.state == "online":
                assert d.last_receipt is not None and d.armed_at is not None
