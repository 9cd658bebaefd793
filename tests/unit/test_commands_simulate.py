"""f2stream.commands.simulate: `--silence DEVICE:FROM:SECONDS` parsed, every mistake one clear error."""

from __future__ import annotations

import pytest

from f2stream.commands.base import CommandError
from f2stream.commands.simulate import parse_silence
from f2stream.simulator import Silence, device_ids

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
