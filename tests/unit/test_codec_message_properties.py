"""f2stream.codec.message: whatever the topic and bytes, decoding gives measurements or a BadMessage with a reason."""

from __future__ import annotations

import json
from datetime import datetime

import orjson
import pytest
from codec_cases import ACM, DEVICE, INDEX, RECEIVED, SENSOR_DEVICE, STAMP, TOPICS, UNKNOWN_DEVICE
from hypothesis import event, given, settings
from hypothesis import strategies as st

from f2stream.codec.message import decode_message
from f2stream.codec.values import encode_modbus_frame
from f2stream.errors import REASONS, BadMessage
from f2stream.records import Measurement

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)

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
