"""f2stream.codec.values: JSON payloads, timestamps, boolean words, text and numbers, Modbus RTU frames."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.codec.values import (
    DEFAULT_FALSE_WORDS,
    DEFAULT_TRUE_WORDS,
    ModbusFrame,
    check_number,
    check_text,
    crc16_modbus,
    device_time,
    encode_modbus_frame,
    parse_json_object,
    parse_modbus_frame,
    parse_timestamp,
    to_boolean,
)
from f2stream.errors import BadMessage
from f2stream.records import format_time

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300)
SEED_FRAME = "01 03 0C 32 30 32 30 36 32 38 30 31 30 31 5B 18 28 01"


def _reverse(value: int, bits: int) -> int:
    return int(format(value, f"0{bits}b")[::-1], 2)


def reference_crc(data: bytes) -> int:
    """CRC-16/MODBUS the textbook way: MSB-first with poly 0x8005 on reflected input, reflected output."""
    crc = 0xFFFF
    for byte in data:
        crc ^= _reverse(byte, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return _reverse(crc, 16)


def reason_of(call: object, *args: object) -> str:
    with pytest.raises(BadMessage) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.reason


# --- JSON ------------------------------------------------------------------------------------


def test_parse_json_object_returns_the_object() -> None:
    assert parse_json_object(b'{"timestamp": "2025-01-31 12:00:00", "state": "locked", "n": [1, {"a": null}]}') == {
        "timestamp": "2025-01-31 12:00:00",
        "state": "locked",
        "n": [1, {"a": None}],
    }


@pytest.mark.parametrize("payload", [b"", b"not json", b"{", b'{"a": 1,}', b"\xff\xfe", b'{"a": NaN}', b"1e400"])
def test_parse_json_object_not_json(payload: bytes) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_json_object(payload)
    assert caught.value.reason == "bad_json"
    assert caught.value.detail.startswith("payload is not JSON: ")
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("payload", "kind"), [(b"[1, 2]", "list"), (b'"x"', "str"), (b"3", "int"), (b"null", "NoneType"), (b"true", "bool")]
)
def test_parse_json_object_not_an_object(payload: bytes, kind: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_json_object(payload)
    assert caught.value.reason == "bad_payload"
    assert caught.value.detail == f"payload is a JSON {kind}, expected an object"


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-31 12:00:00.123456", datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2025-01-31 12:00:00", datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)),
        ("2025-01-31T12:00:00.123456", datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2025-01-31T14:00:00.5+02:00", datetime(2025, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2025-01-31T07:30:00-04:30", datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)),
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)),
        ("2025-02-01 00:30:00+01:00", datetime(2025, 1, 31, 23, 30, 0, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    ["", "yesterday", "31/01/2025 12:00:00", "2025-13-01 00:00:00", "2025-01-31 25:00:00", "2025-01-31 12:00:00 UTC"],
)
def test_parse_timestamp_bad_text(value: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_timestamp(value)
    assert caught.value.reason == "bad_timestamp"
    assert caught.value.detail == f"timestamp {value!r} is not YYYY-MM-DD HH:MM:SS.ffffff"


@pytest.mark.parametrize(("value", "kind"), [(None, "null"), (1738324800, "a int"), (1.5, "a float"), ([], "a list")])
def test_parse_timestamp_not_a_string(value: object, kind: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_timestamp(value)
    assert caught.value.reason == "bad_timestamp"
    assert caught.value.detail.startswith(f"timestamp is {kind}, expected a string")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_timestamp_out_of_range_after_zone_conversion_is_bad_timestamp(value: str) -> None:
    assert reason_of(parse_timestamp, value) == "bad_timestamp"


def spellings(moment: datetime) -> list[str]:
    """Ways a device may spell a time: as devices do, ISO 8601 in its forms, and near misses."""
    naive = moment.replace(tzinfo=None)
    return [
        naive.strftime("%Y-%m-%d %H:%M:%S.%f"),
        naive.isoformat(sep=" ", timespec="microseconds"),
        naive.isoformat(timespec="microseconds"),
        naive.isoformat(sep=" "),
        naive.isoformat(sep="x", timespec="microseconds"),
        moment.isoformat(timespec="microseconds"),
        moment.isoformat(sep=" "),
        naive.strftime("%Y-%m-%d %H:%M:%S.%f")[:-1] + "Z",
        naive.strftime("%Y%m%dT%H%M%S.%f") + "0",
        naive.strftime("%Y-%m-%d %H:%M.%f") + "00",
        naive.strftime("%Y-%m-%d %H:%M:%S.%f").replace("0", "\u0660"),
    ]


def long_way(value: object) -> str | tuple[str, str]:
    try:
        return format_time(parse_timestamp(value))
    except BadMessage as exc:
        return exc.reason, exc.detail


def short_way(value: object) -> str | tuple[str, str]:
    try:
        return device_time(value)
    except BadMessage as exc:
        return exc.reason, exc.detail


@PROPERTY
@given(st.datetimes(timezones=st.one_of(st.none(), st.timezones())))
def test_device_time_is_format_time_of_parse_timestamp_for_any_time(moment: datetime) -> None:
    for text in spellings(moment):
        assert short_way(text) == long_way(text), text


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\Z"),
        st.none(),
        st.integers(),
    )
)
def test_device_time_is_format_time_of_parse_timestamp_for_any_value(value: object) -> None:
    assert short_way(value) == long_way(value)


def test_device_time_of_the_devices_spelling() -> None:
    assert device_time("2025-01-31 12:00:00.123456") == "2025-01-31T12:00:00.123456+00:00"
    assert device_time("2025-01-31 12:00:00.000001") == "2025-01-31T12:00:00.000001+00:00"
    assert reason_of(device_time, "2025-01-31 24:00:00.000001") == "bad_timestamp"


# --- booleans --------------------------------------------------------------------------------


def test_default_word_lists() -> None:
    assert {
        "true",
        "1",
        "on",
        "yes",
        "open",
        "opened",
        "locked",
        "active",
        "detected",
        "pressed",
        "alarm",
    } == DEFAULT_TRUE_WORDS
    assert {
        "false",
        "0",
        "off",
        "no",
        "closed",
        "unlocked",
        "inactive",
        "idle",
        "clear",
        "released",
        "normal",
    } == DEFAULT_FALSE_WORDS


@pytest.mark.parametrize("word", sorted(DEFAULT_TRUE_WORDS))
def test_true_words(word: str) -> None:
    assert to_boolean(word) is True
    assert to_boolean(f" {word.upper()} ") is True


@pytest.mark.parametrize("word", sorted(DEFAULT_FALSE_WORDS))
def test_false_words(word: str) -> None:
    assert to_boolean(word) is False
    assert to_boolean(f"\t{word.title()}\n") is False


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (1, True), (0, False)])
def test_booleans_and_zero_one(value: object, expected: bool) -> None:
    assert to_boolean(value) is expected


@pytest.mark.parametrize("value", [2, -1, 1.0, 0.0, "maybe", "", "ajar", "tru e", None, [], {}, [True]])
def test_everything_else_is_bad_value(value: object) -> None:
    with pytest.raises(BadMessage) as caught:
        to_boolean(value)
    assert caught.value.reason == "bad_value"
    assert caught.value.detail.startswith(f"{value!r} is not a boolean word (true words: 1, active, alarm, detected")


def test_custom_word_lists() -> None:
    words = (frozenset({"engaged"}), frozenset({"free"}))
    assert to_boolean("Engaged", *words) is True
    assert to_boolean("free", *words) is False
    assert to_boolean(1, *words) is True
    with pytest.raises(BadMessage):
        to_boolean("locked", *words)


# --- text and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("abc", "abc"), ("", ""), (42, "42"), (1.5, "1.5"), ("x" * 1024, "x" * 1024)]
)
def test_check_text_accepts(value: object, expected: str) -> None:
    assert check_text(value, "card_id") == expected


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("a\x00b", "card_id contains a NUL character"),
        ("x" * 1025, "card_id is 1025 characters long, at most 1024 are kept"),
        (True, "card_id is a bool, expected a string"),
        (None, "card_id is null, expected a string"),
        ({"a": 1}, "card_id is a dict, expected a string"),
        ([1], "card_id is a list, expected a string"),
    ],
)
def test_check_text_refuses(value: object, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        check_text(value, "card_id")
    assert (caught.value.reason, caught.value.detail) == ("bad_value", detail)


@pytest.mark.parametrize(("value", "expected"), [(3, 3.0), (-2.5, -2.5), (0, 0.0), (2**63, 9.223372036854776e18)])
def test_check_number_accepts(value: object, expected: float) -> None:
    result = check_number(value, "voltage")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (math.nan, "voltage is nan, expected a finite number"),
        (math.inf, "voltage is inf, expected a finite number"),
        (-math.inf, "voltage is -inf, expected a finite number"),
        (True, "voltage is a bool, expected a number"),
        ("3", "voltage is a str, expected a number"),
        (None, "voltage is null, expected a number"),
    ],
)
def test_check_number_refuses(value: object, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        check_number(value, "voltage")
    assert (caught.value.reason, caught.value.detail) == ("bad_value", detail)


# --- CRC -------------------------------------------------------------------------------------


def test_crc_standard_check_value() -> None:
    assert reference_crc(b"123456789") == 0x4B37
    assert crc16_modbus(b"123456789") == 0x4B37


def test_crc_of_a_read_response() -> None:
    body = bytes.fromhex("01 03 02 00 EB")
    assert crc16_modbus(body) == reference_crc(body) == 0x0BF8
    assert encode_modbus_frame(1, 3, b"\x00\xeb") == "01 03 02 00 EB F8 0B"


def test_the_example_frame_in_the_error_message_is_valid() -> None:
    with pytest.raises(BadMessage) as caught:
        parse_modbus_frame(None)
    example = re.search(r"'([0-9A-F ]+)'", caught.value.detail)
    assert example is not None
    assert parse_modbus_frame(example[1]) == ModbusFrame(address=1, function=3, data=b"\x00\xeb")


def test_crc_of_nothing_is_the_initial_value() -> None:
    assert crc16_modbus(b"") == 0xFFFF


@PROPERTY
@given(st.binary(max_size=64))
def test_crc_matches_the_reference(data: bytes) -> None:
    assert crc16_modbus(data) == reference_crc(data)


# --- Modbus frames ---------------------------------------------------------------------------


def test_parse_a_valid_frame() -> None:
    frame = parse_modbus_frame("01 03 02 00 EB F8 0B")
    assert frame == ModbusFrame(address=1, function=3, data=b"\x00\xeb")
    assert frame.register(0) == 235


def test_spaces_are_optional_and_case_does_not_matter() -> None:
    assert parse_modbus_frame("01030200ebf80b") == ModbusFrame(1, 3, b"\x00\xeb")


even_data = st.integers(0, 127).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n))


@PROPERTY
@given(st.integers(0, 255), st.sampled_from([3, 4]), even_data)
def test_frames_round_trip(address: int, function: int, data: bytes) -> None:
    text = encode_modbus_frame(address, function, data)
    assert len(bytes.fromhex(text)) == len(data) + 5
    assert parse_modbus_frame(text) == ModbusFrame(address=address, function=function, data=data)
    assert parse_modbus_frame(text.replace(" ", "").lower()) == ModbusFrame(address, function, data)


@PROPERTY
@given(st.integers(0, 255), st.sampled_from([3, 4]), even_data.filter(bool), st.data())
def test_any_flipped_bit_outside_the_header_is_bad_crc(
    address: int, function: int, data: bytes, draw: st.DataObject
) -> None:
    raw = bytearray(bytes.fromhex(encode_modbus_frame(address, function, data)))
    # Address, data and CRC bytes: flipping the function or count byte is a bad_frame instead.
    position = draw.draw(st.sampled_from([0, *range(3, len(raw))]))
    raw[position] ^= 1 << draw.draw(st.integers(0, 7))
    assert reason_of(parse_modbus_frame, raw.hex(" ")) == "bad_crc"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (None, "data is null, expected hex bytes like '01 03 02 00 EB "),
        (235, "data is a int, expected hex bytes like '01 03 02 00 EB "),
        ("01 03 ZZ", "data '01 03 ZZ' is not hex bytes"),
        ("01 03 0", "data '01 03 0' is not hex bytes"),
        ("", "frame is 0 bytes, a read response has at least 5"),
        ("01 03 00 20", "frame is 4 bytes, a read response has at least 5"),
        (encode_modbus_frame(1, 6, b"\x00\x01"), "function 0x06 is not a register read (0x03 or 0x04)"),
        (encode_modbus_frame(1, 0x83, b"\x02\x00"), "function 0x83 is not a register read (0x03 or 0x04)"),
        ("01 03 04 00 EB F8 0B", "byte count says 4 data bytes, so 9 bytes in all, but the frame has 7"),
        ("01 03 01 00 EB F8 0B", "byte count says 1 data bytes, so 6 bytes in all, but the frame has 7"),
        (encode_modbus_frame(1, 3, b"\x00\xeb\x01"), "byte count 3 is odd; registers are 2 bytes each"),
        (SEED_FRAME, "byte count says 12 data bytes, so 17 bytes in all, but the frame has 18"),
    ],
)
def test_bad_frames(text: object, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_modbus_frame(text)
    assert caught.value.reason == "bad_frame"
    # A prefix: the example frame at the end of the non-string details is pinned on its own.
    assert caught.value.detail.startswith(detail)


def test_the_seed_example_frame_is_one_byte_longer_than_its_byte_count() -> None:
    raw = bytes.fromhex(SEED_FRAME)
    assert len(raw) == 18
    assert raw[2] == 0x0C
    assert raw[2] + 5 == 17
    assert reason_of(parse_modbus_frame, SEED_FRAME) == "bad_frame"


def test_flipped_crc_is_bad_crc() -> None:
    with pytest.raises(BadMessage) as caught:
        parse_modbus_frame("01 03 02 00 EB F8 0A")
    assert (caught.value.reason, caught.value.detail) == ("bad_crc", "CRC is 0x0af8, computed 0x0bf8")


def test_crc_bytes_swapped_is_bad_crc() -> None:
    assert reason_of(parse_modbus_frame, "01 03 02 00 EB 0B F8") == "bad_crc"


@pytest.mark.parametrize(
    ("data", "index", "expected"),
    [
        (b"\xff\x38", 0, -200),
        (b"\x00\xeb", 0, 235),
        (b"\x7f\xff", 0, 32767),
        (b"\x80\x00", 0, -32768),
        (b"\xff\xff", 0, -1),
        (b"\x00\x01\xff\x38", 1, -200),
    ],
)
def test_register_is_signed_16_bit_big_endian(data: bytes, index: int, expected: int) -> None:
    assert ModbusFrame(address=1, function=3, data=data).register(index) == expected


def test_negative_register_through_a_frame() -> None:
    assert parse_modbus_frame(encode_modbus_frame(1, 4, bytes.fromhex("FF38"))).register(0) == -200


@pytest.mark.parametrize(
    ("data", "index", "detail"),
    [
        (b"", 0, "frame holds 0 registers, register 0 asked for"),
        (b"\x00\xeb", 1, "frame holds 1 registers, register 1 asked for"),
        (b"\x00\xeb\x01", 1, "frame holds 1 registers, register 1 asked for"),
    ],
)
def test_missing_register_is_bad_frame(data: bytes, index: int, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        ModbusFrame(address=1, function=3, data=data).register(index)
    assert (caught.value.reason, caught.value.detail) == ("bad_frame", detail)
