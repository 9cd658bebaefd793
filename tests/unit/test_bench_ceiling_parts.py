"""The C-tool ceiling's pure parts: the payload lines, how they are dealt to the publishers, the options file."""

from __future__ import annotations

import io

import orjson
import pytest

from bench.ceiling import option_file, payload_lines, split_lines
from bench.loadgen import bodies, body_of, device_stamp
from f2stream.settings import Secret

FIRST_US = 1_780_000_000_123_456


def test_payload_lines_are_the_load_generators_payloads_one_a_line() -> None:
    devices = 3
    lines = list(payload_lines(50, devices=devices, first_us=FIRST_US, seed=7))
    table = bodies(7)
    assert len(lines) == 50
    for n, line in enumerate(lines):
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1] and b"\t" not in line  # one line each; no tab to split the relay's output on
        fields = orjson.loads(line)
        assert fields.pop("timestamp") == device_stamp(FIRST_US + n).decode()
        _, body = body_of(n, devices, table)
        assert fields == orjson.loads(b"{" + body.rest)


def test_payload_lines_follow_the_generators_component_mix() -> None:
    # every device in turn, then the next component type: with 2 devices, messages 0-1 share a body's kind, 2-3 the next
    kinds = [orjson.loads(line).keys() - {"timestamp"} for line in payload_lines(4, devices=2, first_us=FIRST_US)]
    assert kinds[0] == kinds[1]
    assert kinds[2] == kinds[3]
    assert kinds[0] != kinds[2]


def test_device_stamp_spells_the_time_as_devices_do() -> None:
    assert device_stamp(FIRST_US) == b"2026-05-28 20:26:40.123456"


def test_split_lines_deals_the_lines_in_turn() -> None:
    outputs = [io.BytesIO() for _ in range(3)]
    counts = split_lines(iter([b"%d\n" % n for n in range(10)]), outputs)
    assert counts == [4, 3, 3]
    assert outputs[0].getvalue() == b"0\n3\n6\n9\n"
    assert outputs[1].getvalue() == b"1\n4\n7\n"
    assert outputs[2].getvalue() == b"2\n5\n8\n"


def test_option_file_holds_one_option_a_line() -> None:
    text = option_file("127.0.0.1", 1883, "f2-simulator", Secret("s3cret with space"))
    assert text.splitlines() == ["-h 127.0.0.1", "-p 1883", "-u f2-simulator", "-P s3cret with space"]


@pytest.mark.parametrize("field", ["host", "username", "password"])
def test_option_file_refuses_a_line_break_and_does_not_echo_the_password(field: str) -> None:
    values = {"host": "127.0.0.1", "username": "f2-simulator", "password": "hunter2"}
    values[field] += "\n-d"
    with pytest.raises(ValueError, match="line break") as caught:
        option_file(values["host"], 1883, values["username"], Secret(values["password"]))
    assert "hunter2" not in str(caught.value)
