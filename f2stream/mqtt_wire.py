"""MQTT 3.1.1 packets, sans I/O: what the ingest's session writes and reads.

Only what a QoS 1 subscriber needs: CONNECT, SUBSCRIBE, UNSUBSCRIBE,
PUBACK, PINGREQ and DISCONNECT out; CONNACK, SUBACK, UNSUBACK, PINGRESP and
PUBLISH (QoS 0 and 1) in. A topic that is not UTF-8 is kept as
surrogates (`surrogateescape`), so that its bytes survive. :class:`PacketReader` turns the bytes of a stream,
cut anywhere, into packets, many per call: one pass over what one socket
read brought, where a general client (paho) makes several reads and a
callback per message. Anything else the broker sends is a
:class:`ProtocolError`: the session ends, and the broker re-delivers what
was not acknowledged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, NamedTuple

__all__ = [
    "CONNACK",
    "CONNACK_REFUSALS",
    "DISCONNECT",
    "MAX_REMAINING_LENGTH",
    "PINGREQ",
    "PINGRESP",
    "PUBLISH",
    "SUBACK",
    "UNSUBACK",
    "Control",
    "PacketReader",
    "ProtocolError",
    "Publish",
    "encode_connect",
    "encode_puback",
    "encode_pubacks",
    "encode_publish",
    "encode_remaining_length",
    "encode_subscribe",
    "encode_unsubscribe",
]

CONNACK: Final = 2
PUBLISH: Final = 3
SUBACK: Final = 9
UNSUBACK: Final = 11
PINGRESP: Final = 13

PINGREQ: Final = b"\xc0\x00"
DISCONNECT: Final = b"\xe0\x00"
#: The largest remaining length four bytes can say (MQTT 3.1.1, 2.2.3).
MAX_REMAINING_LENGTH: Final = 268_435_455
#: What a CONNACK's return code means when it is not 0.
CONNACK_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_PUBACK = struct.Struct("!BBH").pack
_PACKET_ID = struct.Struct("!H")


class ProtocolError(Exception):
    """The broker sent what an MQTT 3.1.1 QoS 1 subscriber cannot take."""


class Publish(NamedTuple):
    """A PUBLISH as received: acknowledge `packet_id` (QoS 1) once its message is safe."""

    topic: str
    payload: bytes
    packet_id: int  # 0 for QoS 0
    qos: int
    dup: bool
    retain: bool


class Control(NamedTuple):
    """Any other packet received: its type, and its variable header and payload as sent."""

    kind: int
    body: bytes


def encode_remaining_length(length: int) -> bytes:
    """The fixed header's variable-length integer (1 to 4 bytes)."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"a remaining length is 0 to {MAX_REMAINING_LENGTH}, not {length}")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, not {len(data)}")
    return _PACKET_ID.pack(len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def encode_connect(
    client_id: str, *, clean_session: bool, keepalive: int, username: str | None = None, password: str | None = None
) -> bytes:
    """CONNECT for MQTT 3.1.1, without a will."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive is 0 to 65535 seconds, not {keepalive}")
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 sends a password only with a user name")
    flags = (0x02 if clean_session else 0) | (0x80 if username is not None else 0) | (0x40 if password else 0)
    body = _string("MQTT") + bytes((4, flags)) + _PACKET_ID.pack(keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
    if password:
        body += _string(password)
    return _packet(0x10, body)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to `(filter, qos)` pairs."""
    body = _PACKET_ID.pack(packet_id) + b"".join(_string(f) + bytes((qos,)) for f, qos in filters)
    return _packet(0x82, body)


def encode_unsubscribe(packet_id: int, filters: Sequence[str]) -> bytes:
    """UNSUBSCRIBE from `filters`."""
    return _packet(0xA2, _PACKET_ID.pack(packet_id) + b"".join(_string(f) for f in filters))


def encode_puback(packet_id: int) -> bytes:
    """PUBACK of one QoS 1 message."""
    return _PUBACK(0x40, 2, packet_id)


def encode_pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs of `packet_ids`, in that order, as one write."""
    return b"".join([_PUBACK(0x40, 2, packet_id) for packet_id in packet_ids])


def encode_publish(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 1, dup: bool = False,
                   retain: bool = False) -> bytes:  # fmt: skip
    """PUBLISH (what a broker sends a subscriber; used by tests and tools)."""
    if qos not in (0, 1):
        raise ValueError(f"QoS 0 or 1, not {qos}")
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return _packet(first, _string(topic) + (_PACKET_ID.pack(packet_id) if qos else b"") + payload)


class PacketReader:
    """Bytes of a stream in, whole packets out, in order; a packet cut across reads waits for its end."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes read and not yet part of a whole packet."""
        return len(self._buffer)

    def feed(self, data: bytes | memoryview) -> list[Publish | Control]:
        """Take the next bytes of the stream; return the packets they complete.

        Raises:
            ProtocolError: the stream holds what no well-behaved broker sends a
                QoS 1 subscriber (the session must end).
        """
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        packets: list[Publish | Control] = []
        append = packets.append
        start = 0
        while size - start >= 2:
            first, index = buffer[start], start + 1
            length = buffer[index]
            index += 1
            if length >= 0x80:  # more length bytes (a packet over 127 bytes)
                length, index = _long_length(buffer, index, length)
                if index < 0:
                    break  # the length itself is cut
            end = index + length
            if end > size:
                break
            if first >> 4 == PUBLISH:
                append(_publish(first, buffer, index, end))
            else:
                append(Control(first >> 4, bytes(buffer[index:end])))
            start = end
        if start:
            del buffer[:start]
        return packets


def _long_length(buffer: bytearray, index: int, length: int) -> tuple[int, int]:
    """The rest of a remaining length whose first byte was `length`: (length, index after it), index -1 if cut."""
    length &= 0x7F
    shift = 7
    while index < len(buffer):
        byte = buffer[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, index
        shift += 7
        if shift > 21:
            raise ProtocolError("a remaining length of more than four bytes")
    return length, -1


def _publish(first: int, buffer: bytearray, start: int, end: int) -> Publish:
    qos = (first >> 1) & 0x03
    if qos > 1:
        raise ProtocolError(f"a PUBLISH at QoS {qos}: the session subscribes at QoS 1")
    if end - start < 2:
        raise ProtocolError("a PUBLISH without a topic")
    topic_end = start + 2 + ((buffer[start] << 8) | buffer[start + 1])
    payload_start = topic_end + 2 if qos else topic_end
    if payload_start > end:
        raise ProtocolError("a PUBLISH whose topic or packet id runs past its end")
    # A topic that is not UTF-8 (which Mosquitto refuses from publishers) keeps
    # its bytes as surrogates: it flows on, and decode dead-letters it.
    topic = buffer[start + 2 : topic_end].decode("utf-8", "surrogateescape")
    packet_id = (buffer[topic_end] << 8) | buffer[topic_end + 1] if qos else 0
    if qos and not packet_id:
        raise ProtocolError("a QoS 1 PUBLISH with packet id 0")
    return Publish(topic, bytes(buffer[payload_start:end]), packet_id, qos, bool(first & 0x08), bool(first & 0x01))
