"""f2stream.codec.message: one raw MQTT message to measurements (golden tests, bad input, properties)."""

from __future__ import annotations

import itertools
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from f2stream.codec.message import MAIN_FIELDS, decode_message
from f2stream.codec.model import ParameterIndex
from f2stream.codec.values import encode_modbus_frame
from f2stream.errors import BadMessage
from f2stream.mqtt_topics import COMPONENT_TYPES, parse_topic
from f2stream.records import Measurement
from f2stream.simulator import device_ids, messages

DEVICE = "f2-e4fd45f654be"
STAMP = "2025-01-31 12:00:00.123456"
TIME = "2025-01-31T12:00:00.123456+00:00"
RECEIVED = "2025-01-31T12:00:01.000000+00:00"
SEED_FRAME = "01 03 0C 32 30 32 30 36 32 38 30 31 30 31 5B 18 28 01"
# The index fixture is only read, so sharing it between generated inputs is safe.
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

STRIKE = f"stat/{DEVICE}/access-control-mode/1/strike-1"
DOORS = f"stat/{DEVICE}/access-control-mode/1/door-sensors"
READER = f"tele/{DEVICE}/access-control-mode/2/reader-1"
BUTTONS = f"stat/{DEVICE}/access-control-mode/1/exit-buttons"
MOTION = f"stat/{DEVICE}/alarm-mode/3/motion-sensor-1"
SIREN = f"stat/{DEVICE}/alarm-mode/3/siren-1"
SENSOR = f"cmnd/{DEVICE}/sensor-mode/4/sensor-3"
VALID_TOPICS = [STRIKE, DOORS, READER, BUTTONS, MOTION, SIREN, SENSOR]


def payload(**fields: object) -> bytes:
    return orjson.dumps({"timestamp": STAMP, **fields})


def points(measurements: list[Measurement]) -> list[tuple[str, float | None, str | None, str | None]]:
    return [(m.data_point, m.value, m.text_value, m.unit) for m in measurements]


def decode(index: ParameterIndex, topic: str, body: bytes) -> list[Measurement]:
    return decode_message(topic, body, RECEIVED, index)


def failure(index: ParameterIndex, topic: str, body: bytes) -> BadMessage:
    with pytest.raises(BadMessage) as caught:
        decode(index, topic, body)
    assert caught.value.topic == topic
    return caught.value


def documented_main_fields() -> dict[str, str | None]:
    """Each component type's main field as the table "Main fields" of docs/encodings.md gives it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "encodings.md").read_text()
    table = text.split("### Main fields", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([a-z-]+)` \| (?:`(\w+)`|none\b[^|]*) \|$", table, re.MULTILINE)
    return {component_type: field or None for component_type, field in rows}


def test_main_fields_are_the_documented_ones() -> None:
    documented = documented_main_fields()
    assert set(documented) == COMPONENT_TYPES
    assert documented == MAIN_FIELDS


def test_every_main_field_is_one_the_device_sends() -> None:
    # The simulator's payloads are the devices' (ARCHITECTURE.md's sample messages), one per component type.
    clock = itertools.repeat(datetime(2025, 1, 31, tzinfo=UTC)).__next__
    sent = {
        parse_topic(m.topic).component_type: set(orjson.loads(m.payload)) - {"timestamp"}
        for m in itertools.islice(messages(device_ids(1), random.Random(7), clock), len(COMPONENT_TYPES))
    }
    assert set(sent) == COMPONENT_TYPES
    for component_type, field in MAIN_FIELDS.items():
        assert field is None or field in sent[component_type], (component_type, field, sent[component_type])


@pytest.mark.parametrize(
    ("topic", "body", "connector", "component", "expected"),
    [
        pytest.param(
            STRIKE,
            payload(state="locked", voltage=12.1, current=1.5),
            1,
            "strike-1",
            [("state", 1.0, "locked", "state"), ("voltage", 12.1, None, None), ("current", 1.5, None, None)],
            id="strike",
        ),
        pytest.param(
            DOORS,
            payload(door_1="open", door_2="closed", tamper=False),
            1,
            "door-sensors",
            [("door_1", 1.0, "open", "state"), ("door_2", 0.0, "closed", "state"), ("tamper", 0.0, None, "state")],
            id="door-sensors",
        ),
        pytest.param(
            READER,
            payload(card_id="A1B2C3D4", read_type="nfc", signal_strength=85),
            2,
            "reader-1",
            [
                ("card_id", None, "A1B2C3D4", "text"),
                ("read_type", None, "nfc", None),
                ("signal_strength", 85.0, None, None),
            ],
            id="reader",
        ),
        pytest.param(
            BUTTONS,
            payload(button_pressed=True, button_id=2),
            1,
            "exit-buttons",
            [("button_pressed", 1.0, None, "pressed"), ("button_id", 2.0, None, None)],
            id="exit-buttons",
        ),
        pytest.param(
            MOTION,
            payload(motion_detected=True, sensitivity=7, zone="zone_1"),
            3,
            "motion-sensor-1",
            [
                ("motion_detected", 1.0, None, "presence"),
                ("sensitivity", 7.0, None, None),
                ("zone", None, "zone_1", None),
            ],
            id="motion-sensor",
        ),
        pytest.param(
            SIREN,
            payload(state="active", volume=95, pattern="pulsing"),
            3,
            "siren-1",
            [("state", 1.0, "active", "state"), ("volume", 95.0, None, None), ("pattern", None, "pulsing", None)],
            id="siren",
        ),
        pytest.param(
            SENSOR,
            payload(data=encode_modbus_frame(1, 3, bytes.fromhex("00EB"))),
            4,
            "sensor-3",
            [("data", 23.5, None, "celsius")],
            id="sensor",
        ),
        pytest.param(
            SENSOR,
            payload(data=encode_modbus_frame(1, 4, bytes.fromhex("FF38 0001"))),
            4,
            "sensor-3",
            [("data", -20.0, None, "celsius")],
            id="sensor-negative",
        ),
    ],
)
def test_seed_examples(
    full_index: ParameterIndex,
    topic: str,
    body: bytes,
    connector: int,
    component: str,
    expected: list[tuple[object, ...]],
) -> None:
    measurements = decode(full_index, topic, body)
    assert points(measurements) == expected
    for m in measurements:
        assert isinstance(m, Measurement)
        assert (m.time, m.device_id, m.connector, m.component, m.source_topic, m.received_at) == (
            TIME,
            DEVICE,
            connector,
            component,
            topic,
            RECEIVED,
        )
    assert {m.mode for m in measurements} == {topic.split("/")[2]}


def test_false_states(full_index: ParameterIndex) -> None:
    assert points(decode(full_index, STRIKE, payload(state="unlocked"))) == [("state", 0.0, "unlocked", "state")]
    assert points(decode(full_index, SIREN, payload(state=False))) == [("state", 0.0, None, "state")]
    assert points(decode(full_index, BUTTONS, payload(button_pressed=0))) == [("button_pressed", 0.0, None, "pressed")]


def test_zoned_timestamp_is_converted_to_utc(full_index: ParameterIndex) -> None:
    body = orjson.dumps({"timestamp": "2025-01-31T13:00:00.123456+01:00", "state": "locked"})
    assert [m.time for m in decode(full_index, STRIKE, body)] == [TIME]


def test_timestamp_without_fraction(full_index: ParameterIndex) -> None:
    body = orjson.dumps({"timestamp": "2025-01-31 12:00:00", "state": "locked"})
    assert [m.time for m in decode(full_index, STRIKE, body)] == ["2025-01-31T12:00:00.000000+00:00"]


def test_nulls_and_nested_values_are_ignored(full_index: ParameterIndex) -> None:
    body = payload(state="locked", extra=None, nested={"a": 1}, listed=[1, 2], flag=True, note="ok")
    assert points(decode(full_index, STRIKE, body)) == [
        ("state", 1.0, "locked", "state"),
        ("flag", 1.0, None, None),
        ("note", None, "ok", None),
    ]


def test_numeric_card_id_is_kept_as_text(full_index: ParameterIndex) -> None:
    assert points(decode(full_index, READER, payload(card_id=1234))) == [("card_id", None, "1234", "text")]


def test_boolean_map_passes_non_boolean_fields_through(full_index: ParameterIndex) -> None:
    body = payload(door_1="open", battery=87, label="north", door_3=None)
    assert points(decode(full_index, DOORS, body)) == [
        ("door_1", 1.0, "open", "state"),
        ("battery", 87.0, None, None),
        ("label", None, "north", None),
    ]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        pytest.param(
            f"stat/{DEVICE}/access-control-mode/1/lamp-1", payload(state="locked"), "bad_topic", id="bad-topic"
        ),
        pytest.param(STRIKE, b"not json", "bad_json", id="not-json"),
        pytest.param(STRIKE, b"", "bad_json", id="empty"),
        pytest.param(STRIKE, b'[{"timestamp": "2025-01-31 12:00:00", "state": "locked"}]', "bad_payload", id="array"),
        pytest.param(STRIKE, orjson.dumps({"state": "locked"}), "bad_timestamp", id="missing-timestamp"),
        pytest.param(
            STRIKE, orjson.dumps({"timestamp": "31/01/2025", "state": "locked"}), "bad_timestamp", id="bad-timestamp"
        ),
        pytest.param(
            STRIKE, orjson.dumps({"timestamp": 1738324800, "state": "locked"}), "bad_timestamp", id="numeric-timestamp"
        ),
        pytest.param(
            "stat/f2-000000000001/access-control-mode/1/strike-1",
            payload(state="locked"),
            "unknown_device",
            id="unknown-device",
        ),
        pytest.param(
            f"stat/{DEVICE}/access-control-mode/1/strike-2", payload(state="locked"), "no_parameter", id="no-parameter"
        ),
        pytest.param(STRIKE, payload(voltage=12.1), "bad_payload", id="missing-main-field"),
        pytest.param(STRIKE, payload(state="ajar"), "bad_value", id="bad-boolean-word"),
        pytest.param(STRIKE, payload(state=None), "bad_value", id="null-boolean"),
        pytest.param(DOORS, payload(battery=87, label="north"), "bad_value", id="boolean-map-without-booleans"),
        pytest.param(SENSOR, payload(data=SEED_FRAME), "bad_frame", id="seed-frame"),
        pytest.param(SENSOR, payload(data="01 03 02 00 EB F8 0A"), "bad_crc", id="bad-crc"),
        pytest.param(SENSOR, payload(data=encode_modbus_frame(1, 3, b"")), "bad_frame", id="no-register"),
        pytest.param(SENSOR, payload(data=235), "bad_frame", id="frame-not-text"),
        pytest.param(READER, payload(card_id="A1B2\u0000C3D4"), "bad_value", id="nul-in-main-text"),
        pytest.param(
            MOTION, payload(motion_detected=True, zone="zone\u0000_1"), "bad_value", id="nul-in-passthrough-text"
        ),
        pytest.param(READER, payload(card_id="x" * 1025), "bad_value", id="text-too-long"),
        pytest.param(READER, payload(card_id={"id": 1}), "bad_value", id="nested-main-text"),
        pytest.param(
            STRIKE,
            b'{"timestamp": "2025-01-31 12:00:00", "state": "locked", "voltage": 1e400}',
            "bad_json",
            id="infinite-number",
        ),
    ],
)
def test_bad_input_raises_bad_message_with_reason_and_topic(
    full_index: ParameterIndex, topic: str, body: bytes, reason: str
) -> None:
    assert failure(full_index, topic, body).reason == reason


def test_the_seed_sensor_example_is_dead_lettered_as_bad_frame(seed_index: ParameterIndex) -> None:
    error = failure(seed_index, SENSOR, payload(data=SEED_FRAME))
    assert (error.reason, error.detail) == (
        "bad_frame",
        "byte count says 12 data bytes, so 17 bytes in all, but the frame has 18",
    )


def test_missing_main_field_names_it(full_index: ParameterIndex) -> None:
    error = failure(full_index, READER, payload(read_type="nfc"))
    assert (error.reason, error.detail) == ("bad_payload", "field 'card_id' is missing for reader (raw_string)")


def test_the_parameter_is_looked_up_before_the_payload_is_read(full_index: ParameterIndex) -> None:
    assert failure(full_index, "stat/f2-000000000001/alarm-mode/3/siren-1", b"not json").reason == "unknown_device"


def test_timestamp_overflow_is_dead_lettered(full_index: ParameterIndex) -> None:
    body = orjson.dumps({"timestamp": "0001-01-01T00:00:00+01:00", "state": "locked"})
    assert failure(full_index, STRIKE, body).reason == "bad_timestamp"


@pytest.mark.parametrize("field", ["volt\u0000age", "v" * 1025])
def test_bad_field_names_are_refused(full_index: ParameterIndex, field: str) -> None:
    body = orjson.dumps({"timestamp": STAMP, "state": "locked", field: 12.1})
    assert failure(full_index, STRIKE, body).reason == "bad_value"


def test_padded_boolean_word_respects_the_text_limit(full_index: ParameterIndex) -> None:
    value = "locked" + " " * 2000
    try:
        measurements = decode(full_index, STRIKE, payload(state=value))
    except BadMessage as exc:
        assert exc.reason == "bad_value"
    else:
        assert all(m.text_value is None or len(m.text_value) <= 1024 for m in measurements)


# --- properties ------------------------------------------------------------------------------


def _check(index: ParameterIndex, topic: str, body: bytes) -> None:
    try:
        measurements = decode(index, topic, body)
    except BadMessage as exc:
        event(exc.reason)
        assert exc.topic == topic
        assert exc.reason in {
            "bad_topic",
            "bad_json",
            "bad_payload",
            "bad_timestamp",
            "unknown_device",
            "no_parameter",
            "bad_value",
            "bad_frame",
            "bad_crc",
        }
    else:
        event("decoded")
        assert isinstance(measurements, list)
        assert all(isinstance(m, Measurement) and m.source_topic == topic for m in measurements)


@PROPERTY
@given(topic=st.text(), body=st.binary())
def test_arbitrary_topics_and_bytes(full_index: ParameterIndex, topic: str, body: bytes) -> None:
    _check(full_index, topic, body)


@PROPERTY
@given(topic=st.sampled_from(VALID_TOPICS), body=st.binary())
def test_valid_topics_and_arbitrary_bytes(full_index: ParameterIndex, topic: str, body: bytes) -> None:
    _check(full_index, topic, body)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
main_values = st.one_of(
    st.sampled_from(["locked", "unlocked", "open", "closed", "active", "ajar", "", "A1B2C3D4"]),
    st.booleans(),
    st.integers(-2, 2),
    st.builds(
        encode_modbus_frame,
        st.integers(0, 255),
        st.sampled_from([3, 4]),
        st.integers(0, 3).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
    ),
    json_values,
)
timestamps = st.one_of(
    st.just(STAMP),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()).map(
        datetime.isoformat
    ),
    json_values,
)
other_topics = st.builds(
    lambda kind, device, mode, connector, component: f"{kind}/{device}/{mode}/{connector}/{component}",
    st.sampled_from(["cmnd", "stat", "tele"]),
    st.sampled_from([DEVICE, "f2-000000000001"]),
    st.sampled_from(["access-control-mode", "alarm-mode", "sensor-mode"]),
    st.integers(1, 4),
    st.sampled_from(
        ["strike-1", "strike-2", "door-sensors", "reader-1", "exit-buttons", "siren-1", "motion-sensor-1", "sensor-3"]
    ),
)
# Mostly topics the index knows, so that the decoding paths are reached, not only the lookup.
well_formed_topics = st.one_of(st.sampled_from(VALID_TOPICS), st.sampled_from(VALID_TOPICS), other_topics)


@PROPERTY
@given(
    topic=well_formed_topics,
    stamp=timestamps,
    main=st.dictionaries(
        st.sampled_from(["state", "card_id", "button_pressed", "motion_detected", "data", "door_1"]),
        main_values,
        min_size=1,
    ),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_well_formed_topics_and_arbitrary_json_objects(
    full_index: ParameterIndex, topic: str, stamp: object, main: dict[str, object], extra: dict[str, object]
) -> None:
    body = orjson.dumps({**extra, **main, "timestamp": stamp})
    _check(full_index, topic, body)


@PROPERTY
@given(
    stamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    state=st.sampled_from(["locked", "unlocked"]),
    voltage=st.floats(-1e6, 1e6),
)
def test_valid_strike_messages_decode_exactly(
    full_index: ParameterIndex, stamp: datetime, state: str, voltage: float
) -> None:
    body = orjson.dumps({"timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f"), "state": state, "voltage": voltage})
    measurements = decode(full_index, STRIKE, body)
    assert points(measurements) == [
        ("state", 1.0 if state == "locked" else 0.0, state, "state"),
        ("voltage", voltage, None, None),
    ]
    assert {m.time for m in measurements} == {stamp.replace(tzinfo=UTC).isoformat(timespec="microseconds")}
