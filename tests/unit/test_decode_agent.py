"""The decode path never raises anything but BadMessage (property tests), and the decode agent without a broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from f2stream.codecs import encode_modbus_frame
from f2stream.decode import decode_message
from f2stream.errors import REASONS, BadMessage
from f2stream.parameters import Parameter, ParameterIndex
from f2stream.records import Measurement

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


# --- the agent, without a broker ---------------------------------------------------------------------------------


class Sent:
    """What the agent sent to decoded_iot_data and iot_dead_letter."""

    def __init__(self, decoded: AsyncMock, dead: AsyncMock) -> None:
        self.decoded = decoded
        self.dead = dead

    def measurements(self) -> list[Measurement]:
        return [c.kwargs["value"] for c in self.decoded.await_args_list]

    def dead_letters(self) -> list[tuple[bytes, dict[str, bytes]]]:
        return [(c.kwargs["value"], dict(c.kwargs["headers"])) for c in self.dead.await_args_list]


@pytest.fixture
async def agent(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Sent]]:
    from f2stream import pipeline

    pipeline.app.loop = asyncio.get_running_loop()
    pipeline.app.finalize()
    decoded, dead = AsyncMock(), AsyncMock()
    monkeypatch.setattr(pipeline.topics.decoded, "send", decoded)
    monkeypatch.setattr(pipeline.topics.dead, "send", dead)

    async def ready(timeout_s: float = 30.0) -> None:
        return None

    monkeypatch.setattr(pipeline.params, "wait_ready", ready)
    monkeypatch.setattr(pipeline.params, "codec", INDEX.codec)
    async with pipeline.decode_agent.test_context() as wrapper:
        yield wrapper, Sent(decoded, dead)


def headers(topic: str) -> dict[str, bytes]:
    return {"mqtt_topic": topic.encode(), "received_at": RECEIVED.encode()}


async def test_the_agent_decodes_a_message(agent: tuple[Any, Sent]) -> None:
    wrapper, sent = agent
    topic = TOPICS[0]
    body = orjson.dumps({"timestamp": STAMP, "state": "locked", "voltage": 12.3456, "extra": "x"})
    await wrapper.put(body, key=DEVICE.encode(), headers=headers(topic))
    assert [(m.data_point, m.value, m.text_value, m.unit, m.param_version) for m in sent.measurements()] == [
        ("state", 1.0, "locked", "state", 3),
        ("voltage", 12.35, None, "V", 3),
        ("extra", None, "x", None, 3),
    ]
    assert {(m.time, m.received_at, m.source_topic) for m in sent.measurements()} == {(TIME, RECEIVED, topic)}
    assert [c.kwargs["key"] for c in sent.decoded.await_args_list] == [DEVICE.encode()] * 3
    sent.dead.assert_not_awaited()


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
async def test_the_agent_dead_letters_with_the_reason(
    agent: tuple[Any, Sent], topic: str, body: bytes, reason: str
) -> None:
    wrapper, sent = agent
    await wrapper.put(body, key=b"k", headers=headers(topic))
    sent.decoded.assert_not_awaited()
    ((value, dead_headers),) = sent.dead_letters()
    assert value == body
    assert dead_headers["reason"] == reason.encode()
    assert dead_headers["stage"] == b"decode"
    assert dead_headers["mqtt_topic"] == topic.encode()
    assert dead_headers["received_at"] == RECEIVED.encode()
    assert sent.dead.await_args.kwargs["key"] == b"k"


async def test_a_decoder_bug_is_dead_lettered_and_the_agent_goes_on(
    agent: tuple[Any, Sent], monkeypatch: pytest.MonkeyPatch
) -> None:
    from f2stream import pipeline

    wrapper, sent = agent

    def broken(device_id: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline.params, "codec", broken)
    await wrapper.put(b"{}", key=b"k", headers=headers(TOPICS[0]))
    ((value, dead_headers),) = sent.dead_letters()
    assert (value, dead_headers["reason"], dead_headers["detail"]) == (b"{}", b"decoder_error", b"RuntimeError: boom")
    monkeypatch.setattr(pipeline.params, "codec", INDEX.codec)
    await wrapper.put(
        orjson.dumps({"timestamp": STAMP, "state": 0, "voltage": 1}), key=b"k", headers=headers(TOPICS[0])
    )
    assert [(m.data_point, m.value) for m in sent.measurements()] == [("state", 0.0), ("voltage", 1.0)]
    assert len(sent.dead_letters()) == 1


async def test_a_message_without_headers_is_dead_lettered_as_bad_topic(agent: tuple[Any, Sent]) -> None:
    wrapper, sent = agent
    await wrapper.put(b'{"state": 1}', key=b"k")
    ((_, dead_headers),) = sent.dead_letters()
    assert dead_headers["reason"] == b"bad_topic"
    assert dead_headers["mqtt_topic"] == b""
