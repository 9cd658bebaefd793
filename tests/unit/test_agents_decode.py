"""f2stream.agents.decode.decode_batch: the decode stage's batch function, without a broker."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import ConsumerRecord
from codec_cases import ACM, DEVICE, INDEX, RECEIVED, SENSOR_DEVICE, STAMP, TIME, TOPICS, UNKNOWN_DEVICE
from fakes import measurements_of
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.agents.decode import Decoded, decode_batch
from f2stream.codec.message import decode_message
from f2stream.codec.values import encode_modbus_frame
from f2stream.errors import BadMessage
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, DECODED_TOPIC, RAW_TOPIC
from f2stream.records import Measurement, encode_decoded


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


def test_every_row_names_the_raw_record_it_was_decoded_from() -> None:
    body = orjson.dumps({"timestamp": STAMP, "state": "locked", "voltage": 1.0})
    decoded = decode_batch([raw(body, TOPICS[0], offset=17), raw(body, TOPICS[0], offset=18)], INDEX)
    assert [(m.raw_partition, m.raw_offset) for m in measurements(decoded)] == [(3, 17), (3, 17), (3, 18), (3, 18)]


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


fields = st.dictionaries(
    st.sampled_from(["state", "voltage", "current", "card_id", "signal_strength", "button_pressed", "data", "x"]),
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["locked", "ajar", "shut", "pushed", "open", "", "caf\u00e9"]), st.text(max_size=8),
        st.builds(encode_modbus_frame, st.just(1), st.just(3), st.binary(min_size=8, max_size=8)),
    ),
    max_size=5,
)  # fmt: skip


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    topic=st.sampled_from([*TOPICS, f"stat/{SENSOR_DEVICE}/sensor-mode/1/sensor-1"]),
    fields=fields,
    stamp=st.sampled_from([STAMP, "2025-01-31T14:00:00.5+02:00", "2025-01-31 12:00:00"]),
)
def test_a_decoded_record_holds_the_bytes_its_measurements_encode_to(
    topic: str, fields: dict[str, object], stamp: str
) -> None:
    body = orjson.dumps({"timestamp": stamp, **fields})
    decoded = decode_batch([raw(body, topic, offset=9)], INDEX)
    try:
        expected = decode_message(topic, body, RECEIVED, INDEX, (3, 9))
    except BadMessage as exc:
        assert decoded.dead == {exc.reason: 1}
        return
    assert [o.value for o in decoded.outputs] == ([encode_decoded(expected)] if expected else [])
