"""f2stream.mqtt_wire: MQTT 3.1.1 packets, encoded and read back however the stream is cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f2stream.mqtt_wire import (
    MAX_REMAINING_LENGTH,
    PINGRESP,
    SUBACK,
    Control,
    PacketReader,
    ProtocolError,
    Publish,
    encode_connect,
    encode_puback,
    encode_pubacks,
    encode_publish,
    encode_remaining_length,
    encode_subscribe,
    encode_unsubscribe,
)

TOPIC = "tele/f2-e4fd45f654be/sensor-mode/1/sensor-1"

publishes = st.builds(
    Publish,
    topic=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40),
    payload=st.binary(max_size=400),
    packet_id=st.integers(1, 0xFFFF),
    qos=st.just(1),
    dup=st.booleans(),
    retain=st.booleans(),
)


def encoded(p: Publish) -> bytes:
    return encode_publish(p.topic, p.payload, qos=p.qos, packet_id=p.packet_id, dup=p.dup, retain=p.retain)


@pytest.mark.parametrize(
    ("length", "wire"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
     (MAX_REMAINING_LENGTH, b"\xff\xff\xff\x7f")],
)  # fmt: skip
def test_remaining_length_as_the_standard_gives_it(length: int, wire: bytes) -> None:
    assert encode_remaining_length(length) == wire


def test_a_remaining_length_beyond_four_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="0 to 268435455"):
        encode_remaining_length(MAX_REMAINING_LENGTH + 1)


def test_connect_with_a_persistent_session_and_a_password() -> None:
    packet = encode_connect("f2-ingest", clean_session=False, keepalive=30, username="ingest", password="s3cret")
    assert packet == (b"\x10\x25\x00\x04MQTT\x04\xc0\x00\x1e\x00\x09f2-ingest\x00\x06ingest\x00\x06s3cret")


def test_connect_without_login_and_clean() -> None:
    assert encode_connect("c", clean_session=True, keepalive=0) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"


def test_a_password_needs_a_user_name() -> None:
    with pytest.raises(ValueError, match="only with a user name"):
        encode_connect("c", clean_session=True, keepalive=30, password="x")


def test_subscribe_unsubscribe_and_pubacks() -> None:
    assert encode_subscribe(7, [("tele/#", 1)]) == b"\x82\x0b\x00\x07\x00\x06tele/#\x01"
    assert encode_unsubscribe(8, ["tele/#"]) == b"\xa2\x0a\x00\x08\x00\x06tele/#"
    assert encode_puback(0x1234) == b"\x40\x02\x12\x34"
    assert encode_pubacks([1, 2]) == b"\x40\x02\x00\x01\x40\x02\x00\x02"


@given(st.lists(publishes, max_size=20), st.data())
def test_publishes_come_back_whole_and_in_order_however_the_stream_is_cut(
    sent: list[Publish], data: st.DataObject
) -> None:
    stream = b"".join(encoded(p) for p in sent) + b"\xd0\x00"  # and a PINGRESP
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader, got = PacketReader(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert got == [*sent, Control(PINGRESP, b"")]
    assert reader.buffered == 0


def test_a_large_payload_across_many_reads() -> None:
    stream = encode_publish(TOPIC, b"x" * 3_000_000, packet_id=9)
    reader = PacketReader()
    results = [reader.feed(stream[start : start + 65536]) for start in range(0, len(stream), 65536)]
    assert all(result == [] for result in results[:-1])
    [message] = results[-1]
    assert isinstance(message, Publish) and len(message.payload) == 3_000_000 and message.packet_id == 9


def test_qos_0_has_no_packet_id() -> None:
    assert PacketReader().feed(encode_publish(TOPIC, b"{}", qos=0)) == [Publish(TOPIC, b"{}", 0, 0, False, False)]


def test_a_topic_that_is_not_utf8_keeps_its_bytes() -> None:
    [message] = PacketReader().feed(b"\x32\x06\x00\x02a\xff\x00\x01x")
    assert isinstance(message, Publish) and message.topic.encode("utf-8", "surrogateescape") == b"a\xff"


def test_suback_is_a_control_packet() -> None:
    assert PacketReader().feed(b"\x90\x03\x00\x07\x01") == [Control(SUBACK, b"\x00\x07\x01")]


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x34\x05\x00\x01t\x00\x01", "QoS 2"),
        (b"\x30\x01\x00", "without a topic"),
        (b"\x32\x04\x00\x09ab", "runs past its end"),
        (b"\x32\x05\x00\x01t\x00\x00", "packet id 0"),
        (b"\x30\xff\xff\xff\xff\x01", "more than four bytes"),
    ],
)
def test_what_no_broker_sends_a_qos_1_subscriber_is_a_protocol_error(stream: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        PacketReader().feed(stream)
