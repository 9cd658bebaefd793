"""f2stream.agents.ingest: what happens to a message too large for a Kafka record (the pure parts)."""

from __future__ import annotations

import hashlib

from f2stream.agents.ingest import TOO_LARGE_KEEP_BYTES, message_identity, too_large_dead_letter
from f2stream.deadletter import header_map
from f2stream.errors import REASONS

TOPIC = "stat/f2-e4fd45f654be/access-control-mode/1/strike-1"


def sha256_identity(topic: bytes, payload: bytes) -> str:
    """The identity as docs/reliability.md defines it: SHA-256 over the topic's bytes, a NUL, the payload."""
    return "mqtt:sha256:" + hashlib.sha256(topic + b"\0" + payload).hexdigest()


def test_identity_is_stable_and_tells_messages_apart() -> None:
    payload = b'{"timestamp": "2024-01-01 00:00:00.000001"}'
    same = message_identity(TOPIC, payload)
    assert same == message_identity(TOPIC, bytes(payload))
    assert same == sha256_identity(TOPIC.encode(), payload)
    assert same != message_identity(TOPIC, payload + b" ")
    assert same != message_identity(TOPIC + "x", payload)
    # The separator keeps topic and payload from sliding into each other.
    assert message_identity("a", b"b/c") != message_identity("a/b", b"c")


def test_identity_of_a_topic_that_is_not_utf8() -> None:
    # The undecodable byte is hashed as it came (surrogateescape), not replaced.
    assert message_identity("stat/\udcff", b"x") == sha256_identity(b"stat/\xff", b"x")


def test_dead_letter_keeps_the_start_and_the_full_size() -> None:
    payload = b"{" + b"x" * (1_100_000)
    value, headers = too_large_dead_letter(TOPIC, payload, "2024-01-01 00:00:00.000000+00:00")
    assert TOO_LARGE_KEEP_BYTES == 64 * 1024
    assert value == b"{" + b"x" * (64 * 1024 - 1)
    got = header_map(headers)
    assert got["reason"] == "too_large" and "too_large" in REASONS
    assert got["stage"] == "ingest"
    assert got["payload_bytes"] == str(len(payload))
    assert got["mqtt_topic"] == TOPIC
    assert got["received_at"] == "2024-01-01 00:00:00.000000+00:00"
    assert got["source"] == sha256_identity(TOPIC.encode(), payload)
    assert got["detail"] == (
        "1100001 bytes, more than the 1000000 a Kafka record may hold; the value keeps the first 65536"
    )
    assert sum(len(k) + len(v) for k, v in headers) < 2048


def test_dead_letter_has_the_header_set_of_other_dead_letters() -> None:
    _, headers = too_large_dead_letter(TOPIC, b"x" * 10, "t")
    names = [k for k, _ in headers]
    assert names[:4] == ["reason", "detail", "stage", "source"]
    assert {"mqtt_topic", "received_at", "payload_bytes"} <= set(names)
