"""f2stream.agents.ingest: the pure helpers of the MQTT ingest worker."""

from __future__ import annotations

import pytest

from f2stream.agents.ingest import device_key, subscriptions


def test_shared_subscriptions() -> None:
    assert subscriptions("f2stream-ingest") == [
        "$share/f2stream-ingest/cmnd/#",
        "$share/f2stream-ingest/stat/#",
        "$share/f2stream-ingest/tele/#",
    ]


def test_unshared_subscriptions() -> None:
    assert subscriptions("") == ["cmnd/#", "stat/#", "tele/#"]


@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("stat/f2-e4fd45f654be/access-control-mode/1/strike-1", b"f2-e4fd45f654be"),
        ("tele/f2-02f200000001/sensor-mode/4/sensor-3", b"f2-02f200000001"),
        ("stat/f2-e4fd45f654be", b"f2-e4fd45f654be"),
        ("a/b", b"b"),
        ("stat//x", b""),
        ("stat", b""),
        ("", b""),
        ("stat/gerät/x", "gerät".encode()),
    ],
)
def test_device_key(topic: str, key: bytes) -> None:
    assert device_key(topic) == key
