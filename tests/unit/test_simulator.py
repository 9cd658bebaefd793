"""f2stream.simulator: simulated messages parse, decode to their announced points, and keep time order."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from f2stream.codec.message import decode_message
from f2stream.codec.model import Parameter, ParameterIndex
from f2stream.mqtt_topics import canonical_device_id, parse_topic
from f2stream.simulator import DEMO_PARAMETERS, SimMessage, device_ids, messages

START = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
COMPONENTS = {"strike-1", "door-sensors", "reader-1", "exit-buttons", "motion-sensor-1", "siren-1", "sensor-3"}
POINTS = {
    "strike-1": 3,
    "door-sensors": 3,
    "reader-1": 3,
    "exit-buttons": 2,
    "motion-sensor-1": 3,
    "siren-1": 3,
    "sensor-3": 1,
}


def demo_index(devices: list[str]) -> ParameterIndex:
    columns = ("mode", "component_type", "component_number", "encoding", "unit", "scale_factor")
    return ParameterIndex(
        Parameter.from_row({"device_id": d, **dict(zip(columns, row, strict=True))})
        for d in devices
        for row in DEMO_PARAMETERS
    )


def take(devices: list[str], seed: int, clock: Callable[[], datetime], count: int) -> list[SimMessage]:
    return list(itertools.islice(messages(devices, random.Random(seed), clock), count))


def test_device_ids() -> None:
    ids = device_ids(3)
    assert ids == ["f2-02f200000001", "f2-02f200000002", "f2-02f200000003"]
    assert device_ids(2, first=255) == ["f2-02f2000000ff", "f2-02f200000100"]
    assert [canonical_device_id(d) for d in ids] == ids


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_messages_parse_and_decode_to_their_points(seed: int) -> None:
    devices = device_ids(3)
    index = demo_index(devices)
    sent = take(devices, seed, lambda: START, 3 * 7 * 4)
    assert {m.component for m in sent} == COMPONENTS
    for message in sent:
        info = parse_topic(message.topic)
        assert (info.device_id, info.component) == (message.device_id, message.component)
        assert message.points == POINTS[message.component]
        measurements = decode_message(message.topic, message.payload, "2025-01-31T12:00:01.000000+00:00", index)
        assert len(measurements) == message.points
        assert {m.time for m in measurements} == {message.time}
        assert {(m.device_id, m.component) for m in measurements} == {(message.device_id, message.component)}


def test_devices_and_components_take_turns() -> None:
    devices = device_ids(2)
    sent = take(devices, 1, lambda: START, 4)
    assert [(m.device_id, m.component) for m in sent] == [
        (devices[0], "strike-1"),
        (devices[1], "strike-1"),
        (devices[0], "door-sensors"),
        (devices[1], "door-sensors"),
    ]


def test_frozen_clock_still_gives_strictly_increasing_times_per_device() -> None:
    devices = device_ids(3)
    sent = take(devices, 1, lambda: START, 30)
    for device in devices:
        times = [m.time for m in sent if m.device_id == device]
        assert times == [(START + timedelta(microseconds=k)).isoformat(timespec="microseconds") for k in range(10)]


def test_clock_going_backwards_still_gives_increasing_times() -> None:
    ticks = iter([START, START - timedelta(seconds=5), START + timedelta(seconds=1), START])
    sent = take(device_ids(1), 1, lambda: next(ticks), 4)
    assert [m.time for m in sent] == [
        "2025-01-31T12:00:00.000000+00:00",
        "2025-01-31T12:00:00.000001+00:00",
        "2025-01-31T12:00:01.000000+00:00",
        "2025-01-31T12:00:01.000001+00:00",
    ]


def test_same_seed_same_messages() -> None:
    devices = device_ids(2)
    assert take(devices, 5, lambda: START, 20) == take(devices, 5, lambda: START, 20)
    assert take(devices, 5, lambda: START, 20) != take(devices, 6, lambda: START, 20)
