"""The codec model: several data points per component, Modbus data points, per-parameter words, templates.

Golden tests: each payload with its exact decoded values and the parameter version that decoded it.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from f2stream.codec.message import decode_message
from f2stream.codec.model import DeviceCodec, Parameter, ParameterIndex, effective_parameters
from f2stream.codec.values import DEFAULT_FALSE_WORDS, DEFAULT_TRUE_WORDS, encode_modbus_frame, parse_modbus_frame
from f2stream.errors import BadMessage
from f2stream.records import Measurement

DEVICE = "f2-e4fd45f654be"
OTHER = "f2-02f200000001"
STAMP = "2025-01-31 12:00:00.123456"
TIME = "2025-01-31T12:00:00.123456+00:00"
RECEIVED = "2025-01-31T12:00:01.000000+00:00"
VERSION = 42

STRIKE = f"stat/{DEVICE}/access-control-mode/1/strike-1"
DOORS = f"stat/{DEVICE}/access-control-mode/1/door-sensors"
READER = f"tele/{DEVICE}/access-control-mode/2/reader-1"
SENSOR = f"cmnd/{DEVICE}/sensor-mode/4/sensor-3"

Point = tuple[str, float | None, str | None, str | None]


def param(component_type: str, number: str | None, encoding: str, unit: str | None, **extra: object) -> Parameter:
    mode = {"sensor": "sensor-mode", "motion-sensor": "alarm-mode", "siren": "alarm-mode"}.get(
        component_type, "access-control-mode"
    )
    return Parameter.from_row(
        {
            "device_id": DEVICE,
            "mode": mode,
            "component_type": component_type,
            "component_number": number,
            "encoding": encoding,
            "unit": unit,
            "scale_factor": extra.pop("scale_factor", 1.0),
            **extra,
        }
    )


def index(*parameters: Parameter, version: int | None = VERSION) -> ParameterIndex:
    return ParameterIndex(parameters, {DEVICE: version} if version is not None else None)


def payload(**fields: object) -> bytes:
    return orjson.dumps({"timestamp": STAMP, **fields})


def points(measurements: list[Measurement]) -> list[Point]:
    return [(m.data_point, m.value, m.text_value, m.unit) for m in measurements]


def decode(params: ParameterIndex, topic: str, body: bytes) -> list[Measurement]:
    measurements = decode_message(topic, body, RECEIVED, params)
    codec = params.codec(DEVICE)
    assert codec is not None
    assert {m.param_version for m in measurements} == {codec.version}
    assert {m.time for m in measurements} == {TIME}
    assert {m.source_topic for m in measurements} == {topic}
    return measurements


def failure(params: ParameterIndex, topic: str, body: bytes) -> BadMessage:
    with pytest.raises(BadMessage) as caught:
        decode_message(topic, body, RECEIVED, params)
    assert caught.value.topic == topic
    return caught.value


# --- several data points per component -------------------------------------------------------------------------

STRIKE_STATE = param("strike", "1", "boolean", "state")
STRIKE_VOLTAGE = param("strike", "1", "number", "V", field="voltage", data_point="voltage", decimals=2)
STRIKE_CURRENT = param("strike", "1", "number", "A", field="current", data_point="current")
STRIKE_PARAMS = index(STRIKE_STATE, STRIKE_VOLTAGE, STRIKE_CURRENT)

READER_CARD = param("reader", "1", "raw_string", "text")
READER_SIGNAL = param("reader", "1", "number", "dBm", field="signal_strength", data_point="signal_strength")
READER_PARAMS = index(READER_CARD, READER_SIGNAL)


def test_strike_state_voltage_and_current() -> None:
    measurements = decode(STRIKE_PARAMS, STRIKE, payload(state="locked", voltage=12.3456, current=1.5))
    assert points(measurements) == [
        ("state", 1.0, "locked", "state"),
        ("voltage", 12.35, None, "V"),
        ("current", 1.5, None, "A"),
    ]
    first = measurements[0]
    assert (first.device_id, first.mode, first.connector, first.component, first.received_at) == (
        DEVICE,
        "access-control-mode",
        1,
        "strike-1",
        RECEIVED,
    )


def test_strike_unlocked_with_integer_readings() -> None:
    assert points(decode(STRIKE_PARAMS, STRIKE, payload(state="unlocked", voltage=12, current=0))) == [
        ("state", 0.0, "unlocked", "state"),
        ("voltage", 12.0, None, "V"),
        ("current", 0.0, None, "A"),
    ]


def test_data_point_renames_the_field() -> None:
    params = index(STRIKE_STATE, param("strike", "1", "number", "V", field="u_in", data_point="voltage"))
    assert points(decode(params, STRIKE, payload(state=True, u_in=11.9))) == [
        ("state", 1.0, None, "state"),
        ("voltage", 11.9, None, "V"),
    ]


def test_reader_card_id_and_signal_strength() -> None:
    measurements = decode(READER_PARAMS, READER, payload(card_id="A1B2C3D4", read_type="nfc", signal_strength=-67))
    assert points(measurements) == [
        ("card_id", None, "A1B2C3D4", "text"),
        ("signal_strength", -67.0, None, "dBm"),
        ("read_type", None, "nfc", None),
    ]
    assert {m.connector for m in measurements} == {2}


def test_raw_string_keeps_an_empty_string() -> None:
    assert points(decode(READER_PARAMS, READER, payload(card_id="", signal_strength=0))) == [
        ("card_id", None, "", "text"),
        ("signal_strength", 0.0, None, "dBm"),
    ]


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        pytest.param(payload(voltage=12.0, current=1.5), "state", id="main-field"),
        pytest.param(payload(state="locked", current=1.5), "voltage", id="voltage"),
        pytest.param(payload(state="locked", voltage=12.0), "current", id="current"),
    ],
)
def test_a_missing_data_point_field_is_bad_payload(body: bytes, missing: str) -> None:
    error = failure(STRIKE_PARAMS, STRIKE, body)
    assert error.reason == "bad_payload"
    assert repr(missing) in error.detail


def test_reader_without_signal_strength_is_bad_payload() -> None:
    error = failure(READER_PARAMS, READER, payload(card_id="A1B2C3D4"))
    assert error.reason == "bad_payload"
    assert "'signal_strength'" in error.detail


def test_extra_fields_are_passed_through_exactly() -> None:
    body = payload(
        state="locked", voltage=12.0, current=1.5, temperature=-3.25, door="ajar", ok=False, n=None, nested={"a": 1}
    )
    assert points(decode(STRIKE_PARAMS, STRIKE, body)) == [
        ("state", 1.0, "locked", "state"),
        ("voltage", 12.0, None, "V"),
        ("current", 1.5, None, "A"),
        ("temperature", -3.25, None, None),
        ("door", None, "ajar", None),
        ("ok", 0.0, None, None),
    ]


@pytest.mark.parametrize("value", ["12.1", True, [12.1], {"v": 12.1}, None])
def test_number_refuses_what_is_not_a_number(value: object) -> None:
    error = failure(STRIKE_PARAMS, STRIKE, payload(state="locked", voltage=value, current=1.5))
    assert error.reason == "bad_value"
    assert "voltage" in error.detail


def test_number_scale_and_decimals() -> None:
    params = index(
        STRIKE_STATE,
        param("strike", "1", "number", "V", field="voltage", data_point="voltage", scale_factor=0.001, decimals=2),
        param("strike", "1", "number", "mA", field="current", data_point="current", scale_factor=1000),
    )
    assert points(decode(params, STRIKE, payload(state="locked", voltage=65535, current=1.5))) == [
        ("state", 1.0, "locked", "state"),
        ("voltage", 65.53, None, "V"),  # round(65.535, 2): the binary double is just below 65.535
        ("current", 1500.0, None, "mA"),
    ]


def test_decimals_zero_rounds_to_a_whole_number() -> None:
    params = index(STRIKE_STATE, param("strike", "1", "number", "V", field="voltage", data_point="voltage", decimals=0))
    assert points(decode(params, STRIKE, payload(state="locked", voltage=12.6))) == [
        ("state", 1.0, "locked", "state"),
        ("voltage", 13.0, None, "V"),
    ]


def test_number_scaled_to_infinity_is_bad_value() -> None:
    params = index(
        STRIKE_STATE, param("strike", "1", "number", "V", field="voltage", data_point="voltage", scale_factor=10)
    )
    error = failure(params, STRIKE, payload(state="locked", voltage=1e308))
    assert error.reason == "bad_value"


def test_the_number_row_for_all_numbers_applies_to_every_strike() -> None:
    params = index(
        param("strike", None, "boolean", "state"),
        param("strike", None, "number", "V", field="voltage", data_point="voltage"),
        param("strike", "2", "number", "mV", field="voltage", data_point="voltage", scale_factor=1000),
    )
    assert points(decode(params, STRIKE, payload(state="open", voltage=12.5))) == [
        ("state", 1.0, "open", "state"),
        ("voltage", 12.5, None, "V"),
    ]
    strike_2 = STRIKE.replace("strike-1", "strike-2")
    assert points(decode(params, strike_2, payload(state="open", voltage=12.5))) == [
        ("state", 1.0, "open", "state"),
        ("voltage", 12500.0, None, "mV"),
    ]


# --- param_version ---------------------------------------------------------------------------------------------


def test_param_version_is_the_codec_version() -> None:
    codec = STRIKE_PARAMS.codec(DEVICE)
    assert codec is not None
    assert codec.version == VERSION
    measurements = decode(STRIKE_PARAMS, STRIKE, payload(state="locked", voltage=1, current=2))
    assert [m.param_version for m in measurements] == [VERSION, VERSION, VERSION]


def test_param_version_is_none_without_a_version() -> None:
    params = index(STRIKE_STATE, version=None)
    assert [m.param_version for m in decode(params, STRIKE, payload(state="locked"))] == [None]


def test_a_device_codec_decodes_with_its_own_version() -> None:
    class Source:
        def codec(self, device_id: str) -> DeviceCodec | None:
            return DeviceCodec(device_id, 7, [STRIKE_STATE]) if device_id == DEVICE else None

    measurements = decode_message(STRIKE, payload(state="closed"), RECEIVED, Source())
    assert [(m.data_point, m.value, m.param_version) for m in measurements] == [("state", 0.0, 7)]


# --- RS-485 Modbus frames ---------------------------------------------------------------------------------------

# The data bytes of one read response (byte count 0x1E = 30), value by value:
#   offset  bytes          type     byte  word    value
#    0      FF 38          int16    big   -       -200
#    2      FF FF          uint16   big   -       65535
#    4      FF FE 79 60    int32    big   big     -100000   (0xFFFE7960)
#    8      DE AD BE EF    uint32   big   big     3735928559
#   12      41 AC 00 00    float32  big   big     21.5      (0x41AC0000)
#   16      38 FF          int16    little -      -200      (bytes swapped: 0xFF38)
#   18      79 60 FF FE    int32    big   little  -100000   (low word 7960 first)
#   22      00 00 AC 41    float32  little little 21.5      (all four bytes reversed)
#   26      AC 41 00 00    float32  little big    21.5      (each word's bytes swapped)
DATA = bytes.fromhex("FF38 FFFF FFFE7960 DEADBEEF 41AC0000 38FF 7960FFFE 0000AC41 AC410000".replace(" ", ""))
FRAME = encode_modbus_frame(0x01, 0x03, DATA)

LAYOUT: tuple[tuple[str, int, str, str | None, str | None, float], ...] = (
    ("i16", 0, "int16", None, None, -200.0),
    ("u16", 2, "uint16", None, None, 65535.0),
    ("i32", 4, "int32", None, None, -100000.0),
    ("u32", 8, "uint32", "big", "big", 3735928559.0),
    ("f32", 12, "float32", None, None, 21.5),
    ("i16_le", 16, "int16", "little", None, -200.0),
    ("i32_wle", 18, "int32", "big", "little", -100000.0),
    ("f32_le", 22, "float32", "little", "little", 21.5),
    ("f32_ble", 26, "float32", "little", "big", 21.5),
)


def sensor_param(data_point: str, offset: int | None, data_type: str | None, **extra: object) -> Parameter:
    return param(
        "sensor", "3", "hex_to_float", extra.pop("unit", "raw"), data_point=data_point, byte_offset=offset,
        data_type=data_type, **extra,
    )  # fmt: skip


def test_frame_layout() -> None:
    assert len(DATA) == 30
    assert FRAME.startswith("01 03 1E FF 38 FF FF FF FE 79 60 DE AD BE EF 41 AC 00 00 38 FF")
    assert parse_modbus_frame(FRAME).data == DATA


def test_every_data_type_byte_and_word_order() -> None:
    params = index(
        *(sensor_param(name, offset, kind, byte_order=bo, word_order=wo) for name, offset, kind, bo, wo, _ in LAYOUT)
    )
    assert points(decode(params, SENSOR, payload(data=FRAME))) == [
        (name, value, None, "raw") for name, _, _, _, _, value in LAYOUT
    ]


@pytest.mark.parametrize(
    ("data", "data_type", "byte_order", "word_order", "expected"),
    [
        pytest.param("FF38", "int16", "big", "big", -200.0, id="int16-negative"),
        pytest.param("7FFF", "int16", "big", "big", 32767.0, id="int16-max"),
        pytest.param("8000", "int16", "big", "big", -32768.0, id="int16-min"),
        pytest.param("FFFF", "uint16", "big", "big", 65535.0, id="uint16-max"),
        pytest.param("FF38", "uint16", "big", "big", 65336.0, id="uint16-high-bit"),
        pytest.param("38FF", "uint16", "little", "big", 65336.0, id="uint16-little"),
        pytest.param("80000000", "int32", "big", "big", -2147483648.0, id="int32-min"),
        pytest.param("FFFFFFFF", "int32", "big", "big", -1.0, id="int32-minus-one"),
        pytest.param("00010002", "int32", "big", "little", 131073.0, id="int32-word-little"),  # 0x00020001
        pytest.param("01000200", "int32", "little", "big", 65538.0, id="int32-byte-little"),  # 0x00010002
        pytest.param("FFFFFFFF", "uint32", "big", "big", 4294967295.0, id="uint32-max"),
        pytest.param("00010002", "uint32", "little", "little", 33554688.0, id="uint32-all-little"),  # 0x02000100
        pytest.param("BFA00000", "float32", "big", "big", -1.25, id="float32-negative"),
        pytest.param("00000000", "float32", "big", "big", 0.0, id="float32-zero"),
        pytest.param("00000000", "float32", "little", "little", 0.0, id="float32-zero-little"),
    ],
)
def test_data_types(data: str, data_type: str, byte_order: str, word_order: str, expected: float) -> None:
    params = index(sensor_param("v", 0, data_type, byte_order=byte_order, word_order=word_order))
    body = payload(data=encode_modbus_frame(1, 4, bytes.fromhex(data)))
    assert points(decode(params, SENSOR, body)) == [("v", expected, None, "raw")]


@pytest.mark.parametrize(
    ("data", "byte_order", "word_order", "shown"),
    [
        pytest.param("7FC00000", "big", "big", "nan", id="nan"),
        pytest.param("7F800000", "big", "big", "inf", id="inf"),
        pytest.param("FF800000", "big", "big", "-inf", id="minus-inf"),
        pytest.param("00007FC0", "big", "little", "nan", id="nan-word-little"),
        pytest.param("0000807F", "little", "little", "inf", id="inf-all-little"),
    ],
)
def test_float32_nan_and_infinity_are_bad_value(data: str, byte_order: str, word_order: str, shown: str) -> None:
    params = index(sensor_param("v", 0, "float32", byte_order=byte_order, word_order=word_order))
    error = failure(params, SENSOR, payload(data=encode_modbus_frame(1, 3, bytes.fromhex(data))))
    assert error.reason == "bad_value"
    assert f"float32 at byte 0 is {shown}" in error.detail


def test_defaults_are_the_first_register_as_int16_big_endian() -> None:
    params = index(param("sensor", "3", "hex_to_float", "celsius", scale_factor=0.1))
    assert points(decode(params, SENSOR, payload(data="01 03 02 00 EB F8 0B"))) == [("data", 23.5, None, "celsius")]
    assert points(decode(params, SENSOR, payload(data=encode_modbus_frame(1, 3, bytes.fromhex("FF38"))))) == [
        ("data", -20.0, None, "celsius")
    ]


def test_hex_scale_and_decimals() -> None:
    params = index(
        sensor_param("temperature", 0, "uint16", scale_factor=0.01, decimals=1, unit="celsius"),
        sensor_param("humidity", 2, "uint16", scale_factor=0.1, unit="%"),
        sensor_param("pressure", 4, "float32", scale_factor=0.001, decimals=3, unit="bar"),
    )
    # 0x0929 = 2345 -> 23.45 -> 23.4 (the double of 23.45 is below it); 0x01F4 = 500 -> 50.0; 1013.25 hPa as float32.
    data = bytes.fromhex("0929 01F4 447D5000".replace(" ", ""))
    assert points(decode(params, SENSOR, payload(data=encode_modbus_frame(7, 4, data)))) == [
        ("temperature", 23.4, None, "celsius"),
        ("humidity", 50.0, None, "%"),
        ("pressure", 1.013, None, "bar"),
    ]


@pytest.mark.parametrize(
    ("offset", "data_type"),
    [
        pytest.param(2, "int16", id="int16-past-the-end"),
        pytest.param(1, "int16", id="int16-half"),
        pytest.param(0, "int32", id="int32-in-two-bytes"),
        pytest.param(0, "float32", id="float32-in-two-bytes"),
        pytest.param(100, "uint16", id="far"),
    ],
)
def test_a_frame_too_short_for_the_offset_is_bad_frame(offset: int, data_type: str) -> None:
    params = index(sensor_param("v", offset, data_type))
    error = failure(params, SENSOR, payload(data=encode_modbus_frame(1, 3, bytes.fromhex("00EB"))))
    assert error.reason == "bad_frame"
    assert f"{data_type} at byte {offset} needs" in error.detail
    assert "the frame holds 2" in error.detail


def test_a_negative_offset_is_refused_when_the_row_is_read() -> None:
    with pytest.raises(ValueError, match="byte offset -2 is not a whole number from 0 to 250"):
        sensor_param("v", -2, "int16")


def test_one_short_data_point_dead_letters_the_whole_message() -> None:
    params = index(sensor_param("a", 0, "int16"), sensor_param("b", 2, "int32"))
    error = failure(params, SENSOR, payload(data=encode_modbus_frame(1, 3, bytes.fromhex("00EB0001"))))
    assert error.reason == "bad_frame"


def test_bad_crc() -> None:
    frame = encode_modbus_frame(1, 3, bytes.fromhex("00EB"))
    assert frame == "01 03 02 00 EB F8 0B"
    params = index(sensor_param("v", 0, "int16"), sensor_param("w", 0, "uint16"))
    error = failure(params, SENSOR, payload(data="01 03 02 00 EB F8 0C"))
    assert error.reason == "bad_crc"
    assert error.detail == "CRC is 0x0cf8, computed 0x0bf8"
    assert failure(params, SENSOR, payload(data="01 03 02 00 EC F8 0B")).reason == "bad_crc"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("01 03 02 00", id="too-short"),
        pytest.param("01 06 02 00 EB F8 0B", id="write-function"),
        pytest.param("zz", id="not-hex"),
        pytest.param(12, id="a-number"),
        pytest.param("01 03 04 00 EB F8 0B", id="count-disagrees"),
    ],
)
def test_malformed_frames_are_bad_frame(data: object) -> None:
    params = index(sensor_param("v", 0, "int16"))
    assert failure(params, SENSOR, payload(data=data)).reason == "bad_frame"


def test_extra_fields_beside_a_frame_are_passed_through() -> None:
    params = index(sensor_param("temperature", 0, "int16", scale_factor=0.1, unit="celsius"))
    body = payload(data="01 03 02 00 EB F8 0B", slave="01", rssi=-71)
    assert points(decode(params, SENSOR, body)) == [
        ("temperature", 23.5, None, "celsius"),
        ("slave", None, "01", None),
        ("rssi", -71.0, None, None),
    ]


# --- boolean words ----------------------------------------------------------------------------------------------

ENGAGED = param("strike", "1", "boolean", "state", true_words=["engaged"], false_words=["free"])


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param("engaged", (1.0, "engaged"), id="true-word"),
        pytest.param("  ENGAGED ", (1.0, "  ENGAGED "), id="any-case-and-padding"),
        pytest.param("free", (0.0, "free"), id="false-word"),
        pytest.param("Free", (0.0, "Free"), id="false-word-any-case"),
        pytest.param(True, (1.0, None), id="json-true"),
        pytest.param(False, (0.0, None), id="json-false"),
        pytest.param(1, (1.0, None), id="one"),
        pytest.param(0, (0.0, None), id="zero"),
    ],
)
def test_per_parameter_words(state: object, expected: tuple[float, str | None]) -> None:
    value, text = expected
    assert points(decode(index(ENGAGED), STRIKE, payload(state=state))) == [("state", value, text, "state")]


@pytest.mark.parametrize("state", ["locked", "unlocked", "true", "false", "on", "1", "0", ""])
def test_per_parameter_words_replace_the_defaults(state: str) -> None:
    error = failure(index(ENGAGED), STRIKE, payload(state=state))
    assert error.reason == "bad_value"
    assert "true words: engaged" in error.detail


def test_words_are_stored_lowercase_and_stripped() -> None:
    parameter = param("strike", "1", "boolean", "state", true_words=[" Engaged ", "ON"], false_words=["FREE"])
    assert parameter.true_words == frozenset({"engaged", "on"})
    assert parameter.false_words == frozenset({"free"})
    assert parameter.as_row()["true_words"] == ["engaged", "on"]
    assert Parameter.from_row(parameter.as_row()) == parameter


@pytest.mark.parametrize(
    ("state", "value"),
    [(word, 1.0) for word in sorted(DEFAULT_TRUE_WORDS)] + [(w, 0.0) for w in sorted(DEFAULT_FALSE_WORDS)],
)
def test_the_default_words_apply_when_the_columns_are_null(state: str, value: float) -> None:
    assert STRIKE_STATE.true_words is None
    assert STRIKE_STATE.false_words is None
    assert points(decode(index(STRIKE_STATE), STRIKE, payload(state=state.upper()))) == [
        ("state", value, state.upper(), "state")
    ]


def test_the_default_lists() -> None:
    assert (
        frozenset({"true", "1", "on", "yes", "open", "opened", "locked", "active", "detected", "pressed", "alarm"})
        == DEFAULT_TRUE_WORDS
    )
    assert (
        frozenset({"false", "0", "off", "no", "closed", "unlocked", "inactive", "idle", "clear", "released", "normal"})
        == DEFAULT_FALSE_WORDS
    )


def test_only_true_words_given_keeps_the_default_false_words() -> None:
    params = index(param("strike", "1", "boolean", "state", true_words=["engaged"]))
    assert points(decode(params, STRIKE, payload(state="unlocked"))) == [("state", 0.0, "unlocked", "state")]
    assert failure(params, STRIKE, payload(state="locked")).reason == "bad_value"


def test_boolean_map_with_its_own_words() -> None:
    params = index(param("door-sensors", None, "boolean_map", "state", true_words=["ajar"], false_words=["shut"]))
    body = payload(door_1="AJAR", door_2="shut", door_3="open", tamper=True, battery=3.1)
    assert points(decode(params, DOORS, body)) == [
        ("door_1", 1.0, "AJAR", "state"),
        ("door_2", 0.0, "shut", "state"),
        ("tamper", 1.0, None, "state"),
        ("door_3", None, "open", None),  # not one of this row's words: kept as text
        ("battery", 3.1, None, None),
    ]


def test_boolean_map_without_any_of_its_words_is_bad_value() -> None:
    params = index(param("door-sensors", None, "boolean_map", "state", true_words=["ajar"], false_words=["shut"]))
    assert failure(params, DOORS, payload(door_1="open", door_2="closed")).reason == "bad_value"


# --- templates --------------------------------------------------------------------------------------------------

TEMPLATE_DEVICE = "f2-000000000000"


def template_row(component_type: str, number: str | None, encoding: str, unit: str, **extra: object) -> Parameter:
    return replace(param(component_type, number, encoding, unit, **extra), device_id=TEMPLATE_DEVICE)


def test_effective_parameters_merges_template_and_own_rows() -> None:
    template = [
        template_row("strike", "1", "boolean", "state"),
        template_row("strike", "1", "number", "V", field="voltage", data_point="voltage", scale_factor=0.001),
        template_row("strike", "1", "number", "A", field="current", data_point="current"),
        template_row("reader", "1", "raw_string", "text"),
    ]
    own = [
        param("strike", "1", "number", "V", field="voltage", data_point="voltage", decimals=2),
        param("siren", "1", "boolean", "state"),
    ]
    merged = effective_parameters(DEVICE, own, template)
    assert {p.device_id for p in merged} == {DEVICE}
    assert {p.key: (p.encoding, p.unit, p.scale, p.decimals) for p in merged} == {
        ("access-control-mode", "strike", "1", ""): ("boolean", "state", 1.0, None),
        ("access-control-mode", "strike", "1", "voltage"): ("number", "V", 1.0, 2),
        ("access-control-mode", "strike", "1", "current"): ("number", "A", 1.0, None),
        ("access-control-mode", "reader", "1", ""): ("raw_string", "text", 1.0, None),
        ("alarm-mode", "siren", "1", ""): ("boolean", "state", 1.0, None),
    }
    assert len(merged) == 5
    assert own[0] in merged
    assert own[1] in merged


def test_the_key_separates_numbers_and_data_points() -> None:
    template = [template_row("strike", None, "boolean", "state"), template_row("strike", "1", "boolean", "state")]
    own = [param("strike", "2", "boolean", "lock")]
    merged = effective_parameters(DEVICE, own, template)
    assert sorted((p.component_number or "", p.unit) for p in merged) == [("", "state"), ("1", "state"), ("2", "lock")]


def test_effective_parameters_without_template_or_own_rows() -> None:
    own = [STRIKE_STATE, STRIKE_VOLTAGE]
    assert effective_parameters(DEVICE, own, []) == own
    template = [template_row("strike", "1", "boolean", "state")]
    assert effective_parameters(OTHER, [], template) == [
        Parameter(OTHER, "access-control-mode", "strike", "1", "boolean", "state", 1.0)
    ]
    assert effective_parameters(DEVICE, [], []) == []


def test_a_merged_set_decodes_with_the_override() -> None:
    template = [
        template_row("strike", "1", "boolean", "state"),
        template_row("strike", "1", "number", "V", field="voltage", data_point="voltage", scale_factor=0.001),
    ]
    own = [param("strike", "1", "boolean", "state", true_words=["engaged"], false_words=["free"])]
    params = ParameterIndex(effective_parameters(DEVICE, own, template), {DEVICE: 3})
    measurements = decode(params, STRIKE, payload(state="engaged", voltage=12000))
    assert points(measurements) == [("state", 1.0, "engaged", "state"), ("voltage", 12.0, None, "V")]
    assert {m.param_version for m in measurements} == {3}
