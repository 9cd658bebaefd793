"""The decode path never raises anything but BadMessage (property tests), and the decode stage's batch function."""

from __future__ import annotations

import json
from datetime import datetime

import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import event, given, settings
from hypothesis import strategies as st

from f2stream.agents.decode import Decoded, decode_batch
from f2stream.codecs import encode_modbus_frame
from f2stream.decoder import decode_message
from f2stream.errors import REASONS, BadMessage
from f2stream.kafka import DEAD_LETTER_TOPIC, DECODED_TOPIC, RAW_TOPIC
from f2stream.parameters import Parameter, ParameterIndex
from f2stream.records import Measurement, measurements_of

DEVICE = "f2-e4fd45f654be"
SENSOR_DEVICE = "f2-02f200000001"
UNKNOWN_DEVICE = "f2-0000000000ff"
STAMP = "2025-01-31 12:00:00.123456"
TIME = "2025-01-31T12:00:00.123456+00:00"
RECEIVED = "2025-01-31T12:00:01.000000+00:00"
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)


def param(device: str, mode: str, component_type: str, number: str | None, encoding: str, **extra: object) -> Parameter:
    return Parameter.from_row(
        {
            "device_id": device,
            "mode": mode,
            "component_type": component_type,
            "component_number": number,
            "encoding": encoding,
            "unit": extra.pop("unit", "u"),
            "scale_factor": extra.pop("scale_factor", 1.0),
            **extra,
        }
    )


ACM = "access-control-mode"
#: Every encoding and codec column, on two devices.
PARAMETERS = (
    param(DEVICE, ACM, "strike", None, "boolean", unit="state"),
    param(DEVICE, ACM, "strike", None, "number", unit="V", field="voltage", data_point="voltage", decimals=2),
    param(DEVICE, ACM, "strike", "2", "number", unit="A", field="current", data_point="current", scale_factor=1e300),
    param(DEVICE, ACM, "door-sensors", None, "boolean_map", unit="state", true_words=["ajar"], false_words=["shut"]),
    param(DEVICE, ACM, "reader", "1", "raw_string", unit="text"),
    param(DEVICE, ACM, "reader", "1", "number", unit="dBm", field="signal_strength", data_point="signal_strength"),
    param(DEVICE, ACM, "exit-buttons", None, "boolean", unit="pressed", true_words=["pushed"]),
    param(DEVICE, "alarm-mode", "siren", "1", "boolean", false_words=["silent"]),
    param(DEVICE, "alarm-mode", "motion-sensor", "1", "boolean", unit="presence"),
    param(DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", unit="celsius", scale_factor=0.1),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="t", data_type="float32"),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="u", byte_offset=4,
          data_type="uint16", byte_order="little", decimals=1, scale_factor=0.1),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", None, "hex_to_float", data_point="i", byte_offset=2,
          data_type="int32", word_order="little"),
    param(SENSOR_DEVICE, "sensor-mode", "sensor", "1", "hex_to_float", data_point="big", data_type="float32",
          scale_factor=1e300),
)  # fmt: skip
INDEX = ParameterIndex(PARAMETERS, {DEVICE: 3, SENSOR_DEVICE: 4})

TOPICS = [
    f"stat/{DEVICE}/{ACM}/1/strike-1",
    f"stat/{DEVICE}/{ACM}/1/strike-2",
    f"stat/{DEVICE}/{ACM}/1/door-sensors",
    f"tele/{DEVICE}/{ACM}/2/reader-1",
    f"stat/{DEVICE}/{ACM}/1/exit-buttons",
    f"stat/{DEVICE}/alarm-mode/3/siren-1",
    f"stat/{DEVICE}/alarm-mode/3/motion-sensor-1",
    f"cmnd/{DEVICE}/sensor-mode/4/sensor-3",
    f"cmnd/{SENSOR_DEVICE}/sensor-mode/1/sensor-1",
    f"cmnd/{SENSOR_DEVICE}/sensor-mode/2/sensor-7",
]
other_topics = st.builds(
    lambda kind, device, mode, connector, component: f"{kind}/{device}/{mode}/{connector}/{component}",
    st.sampled_from(["cmnd", "stat", "tele"]),
    st.sampled_from([DEVICE, SENSOR_DEVICE, UNKNOWN_DEVICE]),
    st.sampled_from([ACM, "alarm-mode", "sensor-mode"]),
    st.integers(1, 4),
    st.sampled_from(["strike-1", "strike-2", "door-sensors", "reader-1", "exit-buttons", "siren-1", "sensor-3"]),
)
topics = st.one_of(st.sampled_from(TOPICS), st.sampled_from(TOPICS), other_topics)

huge_numbers = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([10**30, 10**308, 10**309, -(10**400)]),
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e300, -0.0, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
nan_like = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "0x10", "١٢", "12,5", " 12 "])
words = st.sampled_from(["locked", "ajar", "shut", "pushed", "silent", "ENGAGED", "open", "", " ", "\x00", "\u200b"])
texts = st.one_of(st.text(max_size=20), st.text(min_size=1000, max_size=1100), st.just("x" * 1025))
frames = st.builds(
    encode_modbus_frame,
    st.integers(0, 255),
    st.sampled_from([3, 4]),
    st.integers(0, 4).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
)
scalars = st.one_of(st.none(), st.booleans(), huge_numbers, nan_like, words, texts, frames)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from(["state", "voltage", "current", "card_id", "signal_strength", "button_pressed", "data"]),
    st.sampled_from(["motion_detected", "door_1", "timestamp", "", "\x00", "ключ", "温度", "🔥", "k" * 65]),
    st.text(max_size=70),
)
timestamps = st.one_of(
    st.just(STAMP),
    st.just(STAMP),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "", "yesterday"]),
    scalars,
)


def dump(body: dict[str, object]) -> bytes:
    """JSON as a device might send it: integers of any size, non-ASCII text unescaped."""
    return json.dumps(body, ensure_ascii=False).encode()


def check(topic: str, body: bytes) -> list[Measurement] | None:
    """Decode; return the measurements, or None for a BadMessage with a known reason. Anything else fails."""
    try:
        measurements = decode_message(topic, body, RECEIVED, INDEX)
    except BadMessage as exc:
        assert exc.reason in REASONS
        assert exc.reason not in ("sink_rejected", "decoder_error")
        assert exc.topic == topic
        event(exc.reason)
        return None
    event("decoded")
    assert all(isinstance(m, Measurement) for m in measurements)
    codec = INDEX.codec(measurements[0].device_id) if measurements else None
    for m in measurements:
        assert m.source_topic == topic
        assert m.received_at == RECEIVED
        assert codec is not None
        assert m.param_version == codec.version
        assert m.value is not None or m.text_value is not None
        assert m.data_point
        orjson.dumps(m.asdict())
    return measurements


@PROPERTY
@given(topic=st.text(), body=st.binary())
def test_arbitrary_topic_text_and_bytes(topic: str, body: bytes) -> None:
    check(topic, body)


@PROPERTY
@given(topic=topics, body=st.binary())
def test_registered_topics_and_arbitrary_bytes(topic: str, body: bytes) -> None:
    check(topic, body)


@PROPERTY
@given(
    topic=topics,
    stamp=timestamps,
    fields=st.dictionaries(keys, values, max_size=8),
)
def test_registered_topics_and_arbitrary_json_objects(topic: str, stamp: object, fields: dict[str, object]) -> None:
    check(topic, dump({"timestamp": stamp, **fields}))


main_fields = st.fixed_dictionaries(
    {},
    optional={
        "state": st.one_of(words, st.booleans(), st.integers(-1, 2), scalars),
        "voltage": scalars,
        "current": scalars,
        "card_id": scalars,
        "signal_strength": scalars,
        "button_pressed": st.one_of(words, scalars),
        "motion_detected": st.one_of(st.booleans(), scalars),
        "door_1": words,
        "data": st.one_of(frames, frames, scalars),
    },
)


@PROPERTY
@given(topic=topics, main=main_fields, fields=st.dictionaries(keys, values, max_size=4))
def test_registered_topics_and_json_objects_with_a_good_timestamp(
    topic: str, main: dict[str, object], fields: dict[str, object]
) -> None:
    check(topic, dump({**fields, **main, "timestamp": STAMP}))


@PROPERTY
@given(topic=st.sampled_from(TOPICS), body=st.sampled_from([b"", b"null", b"[]", b"1e999", b"NaN", b'"x"', b"{"]))
def test_registered_topics_and_json_that_is_not_an_object(topic: str, body: bytes) -> None:
    assert check(topic, body) is None


@pytest.mark.parametrize(
    ("topic", "fields"),
    [
        pytest.param(TOPICS[1], {"state": "locked", "voltage": 1, "current": 1e10}, id="number"),
        pytest.param(TOPICS[8], {"data": encode_modbus_frame(1, 3, bytes.fromhex("7F7FFFFF00000000"))}, id="float32"),
    ],
)
def test_a_scaled_value_is_always_finite(topic: str, fields: dict[str, object]) -> None:
    with pytest.raises(BadMessage) as caught:
        decode_message(topic, orjson.dumps({"timestamp": STAMP, **fields}), RECEIVED, INDEX)
    assert caught.value.reason == "bad_value"


# --- the decode stage's batch function, without a broker ------------------------------------------------------


def raw(body: bytes, topic: str | None, *, key: bytes = b"k", offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    headers = [] if topic is None else [("mqtt_topic", topic.encode()), ("received_at", RECEIVED.encode())]
    return ConsumerRecord(
        topic=RAW_TOPIC, partition=3, offset=offset, timestamp=1_700_000_000_000, timestamp_type=0, key=key,
        value=body, checksum=None, serialized_key_size=len(key), serialized_value_size=len(body), headers=headers,
    )  # fmt: skip


def dead_letters(decoded: Decoded) -> list[tuple[bytes, dict[str, bytes]]]:
    return [(o.value, dict(o.headers)) for o in decoded.outputs if o.topic == DEAD_LETTER_TOPIC]


def measurements(decoded: Decoded) -> list[Measurement]:
    return [m for o in decoded.outputs if o.topic == DECODED_TOPIC for m in measurements_of(o.value)]


def test_a_message_becomes_one_decoded_record_with_all_its_points() -> None:
    topic = TOPICS[0]
    body = orjson.dumps({"timestamp": STAMP, "state": "locked", "voltage": 12.3456, "extra": "x"})
    decoded = decode_batch([raw(body, topic, key=DEVICE.encode())], INDEX)
    assert [(o.topic, o.key) for o in decoded.outputs] == [(DECODED_TOPIC, DEVICE.encode())]
    assert [(m.data_point, m.value, m.text_value, m.unit, m.param_version) for m in measurements(decoded)] == [
        ("state", 1.0, "locked", "state", 3),
        ("voltage", 12.35, None, "V", 3),
        ("extra", None, "x", None, 3),
    ]
    assert {(m.time, m.received_at, m.source_topic) for m in measurements(decoded)} == {(TIME, RECEIVED, topic)}
    assert (decoded.messages, decoded.measurements, decoded.dead) == (1, 3, {})


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        pytest.param("stat/nothing", b"{}", "bad_topic", id="bad-topic"),
        pytest.param(TOPICS[0], b"\xff\xfe", "bad_json", id="bad-json"),
        pytest.param(TOPICS[0], b"[1]", "bad_payload", id="bad-payload"),
        pytest.param(TOPICS[0], orjson.dumps({"timestamp": STAMP, "state": "ajar"}), "bad_value", id="bad-value"),
        pytest.param(
            TOPICS[7], orjson.dumps({"timestamp": STAMP, "data": "01 03 02 00 EB F8 0C"}), "bad_crc", id="crc"
        ),
        pytest.param(f"stat/{UNKNOWN_DEVICE}/{ACM}/1/strike-1", b"{}", "unknown_device", id="unknown-device"),
    ],
)
def test_bad_input_is_dead_lettered_with_the_reason_and_its_source(topic: str, body: bytes, reason: str) -> None:
    decoded = decode_batch([raw(body, topic, offset=41)], INDEX)
    ((value, headers),) = dead_letters(decoded)
    assert value == body
    assert headers["reason"] == reason.encode()
    assert headers["stage"] == b"decode"
    assert headers["mqtt_topic"] == topic.encode()
    assert headers["received_at"] == RECEIVED.encode()
    assert headers["source"] == f"{RAW_TOPIC}/3/41".encode()
    assert decoded.outputs[0].key == b"k"
    assert decoded.dead == {reason: 1}


def test_a_decoder_bug_is_dead_lettered_and_the_rest_of_the_batch_decodes() -> None:
    class Broken:
        def codec(self, device_id: str) -> None:
            if device_id == DEVICE:
                raise RuntimeError("boom")

    good = orjson.dumps({"timestamp": STAMP, "state": 0, "voltage": 1})
    decoded = decode_batch([raw(b"{}", TOPICS[0]), raw(good, f"stat/{UNKNOWN_DEVICE}/{ACM}/1/strike-1")], Broken())
    assert [h["reason"] for _, h in dead_letters(decoded)] == [b"decoder_error", b"unknown_device"]
    assert dead_letters(decoded)[0][1]["detail"] == b"RuntimeError: boom"


def test_a_batch_keeps_its_order_and_a_bad_message_loses_nothing_else() -> None:
    good = orjson.dumps({"timestamp": STAMP, "state": 0, "voltage": 1})
    batch = [raw(good, TOPICS[0], offset=0), raw(b"not json", TOPICS[0], offset=1), raw(good, TOPICS[0], offset=2)]
    decoded = decode_batch(batch, INDEX)
    assert [o.topic for o in decoded.outputs] == [DECODED_TOPIC, DEAD_LETTER_TOPIC, DECODED_TOPIC]
    assert (decoded.messages, decoded.measurements, decoded.dead) == (2, 4, {"bad_json": 1})


def test_a_message_without_headers_is_dead_lettered_as_bad_topic() -> None:
    ((_, headers),) = dead_letters(decode_batch([raw(b'{"state": 1}', None)], INDEX))
    assert headers["reason"] == b"bad_topic"
    assert headers["mqtt_topic"] == b""


def test_a_payload_too_big_for_a_dead_letter_keeps_its_head_and_its_size() -> None:
    body = b"x" * 999_000
    ((value, headers),) = dead_letters(decode_batch([raw(body, TOPICS[0], offset=5)], INDEX))
    assert headers["reason"] == b"bad_json"
    assert headers["payload_bytes"] == b"999000"
    assert len(value) == 64 * 1024 and body.startswith(value)
    assert headers["source"] == f"{RAW_TOPIC}/3/5".encode()


def test_a_decoded_record_over_the_limit_is_dead_lettered_as_too_large() -> None:
    many = {f"f{i}": "y" * 1000 for i in range(1100)}  # about 1.1 MB of text values
    body = orjson.dumps({"timestamp": STAMP, "state": "locked", "voltage": 12, **many})
    decoded = decode_batch([raw(body, TOPICS[0])], INDEX)
    ((value, headers),) = dead_letters(decoded)
    assert headers["reason"] == b"too_large"
    assert value[:100] == body[:100]
    assert decoded.dead == {"too_large": 1}
    assert all(o.size <= 1_000_000 for o in decoded.outputs)
