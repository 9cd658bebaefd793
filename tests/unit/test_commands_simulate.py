"""f2stream.commands.simulate: `--silence DEVICE:FROM:SECONDS` and `--drill KIND:DEVICE_INDEX[:SECONDS]` parsed,
every mistake one clear error."""

from __future__ import annotations

import pytest

from f2stream.commands.base import CommandError
from f2stream.commands.simulate import describe_drills, drills_end, parse_drill, parse_silence
from f2stream.simulator import Drill, Silence, device_ids

FIRST = 3
IDS = device_ids(4, FIRST)  # devices 3 to 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3:10:30", Silence("f2-02f200000003", 10.0, 30.0)),
        ("6:0:1.5", Silence("f2-02f200000006", 0.0, 1.5)),
        ("02:f2:00:00:00:04:5:20", Silence("f2-02f200000004", 5.0, 20.0)),
        ("02-F2-00-00-00-05:5:20", Silence("f2-02f200000005", 5.0, 20.0)),
        ("f2-02f200000005:5:20", Silence("f2-02f200000005", 5.0, 20.0)),
        ("02f2.0000.0006:2.5:4", Silence("f2-02f200000006", 2.5, 4.0)),
        ("02f200000003:1:1", Silence("f2-02f200000003", 1.0, 1.0)),  # 12 digits: a MAC, not a number
    ],
)
def test_a_device_by_number_or_any_mac_spelling(text: str, expected: Silence) -> None:
    assert parse_silence(text, IDS, FIRST) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3:10", "expected DEVICE:FROM:SECONDS"),
        (":10:30", "expected DEVICE:FROM:SECONDS"),
        ("3:ten:30", "FROM and SECONDS are numbers"),
        ("3:10:", "FROM and SECONDS are numbers"),
        ("3:-1:30", "FROM at least 0, SECONDS more than 0"),
        ("3:10:0", "FROM at least 0, SECONDS more than 0"),
        ("3:nan:5", "FROM at least 0, SECONDS more than 0"),
        ("3:1:inf", "FROM at least 0, SECONDS more than 0"),
        ("2:10:30", "device 2 is not simulated (this run simulates 3 to 6)"),
        ("7:10:30", "device 7 is not simulated (this run simulates 3 to 6)"),
        ("e4:fd:45:f6:54:be:10:30", "f2-e4fd45f654be is not one of the 4 simulated devices"),
        ("e4:fd:45:zz:54:be:10:30", "is not a MAC address"),
    ],
)
def test_a_bad_value_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_silence(text, IDS, FIRST)
    message = str(raised.value)
    assert says in message
    assert "\n" not in message


def test_a_silence_covers_its_device_from_its_start_for_its_length() -> None:
    silence = Silence("f2-02f200000003", 10.0, 5.0)
    assert not silence.covers("f2-02f200000003", 9.99)
    assert silence.covers("f2-02f200000003", 10.0)
    assert silence.covers("f2-02f200000003", 14.99)
    assert not silence.covers("f2-02f200000003", 15.0)
    assert not silence.covers("f2-02f200000004", 12.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("forced-door:0", Drill("forced-door", "f2-02f200000003", 10.0)),
        ("held-door:1", Drill("held-door", "f2-02f200000004", 40.0)),
        ("tamper:3", Drill("tamper", "f2-02f200000006", 5.0)),
        ("granted-door:2", Drill("granted-door", "f2-02f200000005", 5.0)),
        ("held-door:0:90", Drill("held-door", "f2-02f200000003", 90.0)),
        ("Tamper: 2 :0.5", Drill("tamper", "f2-02f200000005", 0.5)),
    ],
)
def test_a_drill_by_kind_and_device_index(text: str, expected: Drill) -> None:
    assert parse_drill(text, IDS) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("forced-door", "expected KIND:DEVICE_INDEX[:SECONDS], e.g. forced-door:0 or held-door:1:40"),
        ("forced-door:0:10:5", "expected KIND:DEVICE_INDEX[:SECONDS]"),
        ("forced:0", "KIND one of forced-door, held-door, tamper, granted-door (not 'forced')"),
        (":0", "KIND one of forced-door, held-door, tamper, granted-door"),
        ("tamper:-1", "(DEVICE_INDEX is 0 to 3)"),
        ("tamper:", "(DEVICE_INDEX is 0 to 3)"),
        ("tamper:f2-02f200000003", "(DEVICE_INDEX is 0 to 3)"),
        ("tamper:4", "device index 4 is not simulated (this run simulates 4 devices, DEVICE_INDEX 0 to 3)"),
        ("tamper:0:long", "SECONDS is a number of seconds"),
        ("tamper:0:", "SECONDS is a number of seconds"),
        ("tamper:0:0", "SECONDS more than 0"),
        ("tamper:0:nan", "SECONDS more than 0"),
        ("tamper:0:inf", "SECONDS more than 0"),
    ],
)
def test_a_bad_drill_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_drill(text, IDS)
    message = str(raised.value)
    assert says in message
    assert message.startswith(f"--drill {text!r}: ")
    assert "\n" not in message


def test_the_drills_are_described_one_line_each() -> None:
    drills = [parse_drill(text, IDS) for text in ("forced-door:0", "tamper:1", "granted-door:0")]
    assert describe_drills(drills) == [
        "drill forced-door on f2-02f200000003: from +2 s to +42 s "
        "(+2 s doors closed, +32 s door_2 open (forced), +42 s door_2 closed)",
        "drill tamper on f2-02f200000004: from +2 s to +7 s (+2 s tamper true, +7 s tamper false)",
        "drill granted-door on f2-02f200000003: from +42 s to +49 s "
        "(+42 s doors closed, +42 s card D0D0D0D0 read, +44 s door_2 open (granted), +49 s door_2 closed)",
    ]
    assert drills_end(drills) == 49.0
    assert drills_end([]) == 0.0
