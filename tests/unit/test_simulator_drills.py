"""f2stream.simulator drills: each drill's script, its schedule, and the traffic around it (no MQTT)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from f2stream import simulator
from f2stream.codec.message import decode_message
from f2stream.codec.model import Parameter, ParameterIndex
from f2stream.settings import Settings
from f2stream.simulator import (
    DEMO_PARAMETERS,
    DRILL_DEFAULT_S,
    Drill,
    Silence,
    SimMessage,
    Traffic,
    device_ids,
    drill_starts,
    drill_steps,
    messages,
    run_simulation,
)

START = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
DEVICES = device_ids(2)
A, B = DEVICES
CLOSED = {"door_1": "closed", "door_2": "closed", "tamper": False}


def script(drill: Drill) -> list[tuple[float, str, dict[str, object]]]:
    return [(step.at_s, step.path.rsplit("/", 1)[1], dict(step.fields)) for step in drill.script()]


def test_forced_door_opens_30_s_after_its_closed_message_and_withholds_every_grant() -> None:
    drill = Drill("forced-door", A, 10.0)
    assert script(drill) == [
        (0.0, "door-sensors", CLOSED),
        (30.0, "door-sensors", {**CLOSED, "door_2": "open"}),
        (40.0, "door-sensors", CLOSED),
    ]
    assert drill.length_s == 40.0
    assert drill.withheld == {"door-sensors", "reader-1", "exit-buttons", "strike-1"}


def test_held_door_is_granted_then_silent_while_open() -> None:
    drill = Drill("held-door", A, 40.0)
    steps = script(drill)
    assert [(at, component) for at, component, _ in steps] == [
        (0.0, "door-sensors"),
        (0.0, "reader-1"),
        (2.0, "door-sensors"),
        (42.0, "door-sensors"),
    ]
    assert steps[2][2] == {**CLOSED, "door_1": "open"}
    assert steps[3][2] == CLOSED
    assert drill.withheld == {"door-sensors"}


def test_tamper_and_granted_door() -> None:
    assert script(Drill("tamper", A, 5.0)) == [
        (0.0, "door-sensors", {**CLOSED, "tamper": True}),
        (5.0, "door-sensors", CLOSED),
    ]
    granted = script(Drill("granted-door", A, 5.0))
    assert [(at, component) for at, component, _ in granted] == [
        (0.0, "door-sensors"),
        (0.0, "reader-1"),
        (2.0, "door-sensors"),
        (7.0, "door-sensors"),
    ]
    assert granted[1][2]["card_id"]
    assert granted[2][2] == {**CLOSED, "door_2": "open"}


def test_the_defaults() -> None:
    assert DRILL_DEFAULT_S == {"forced-door": 10.0, "held-door": 40.0, "tamper": 5.0, "granted-door": 5.0}


def test_a_devices_drills_follow_one_another_and_devices_drill_at_once() -> None:
    drills = [Drill("forced-door", A, 10.0), Drill("tamper", B, 5.0), Drill("granted-door", A, 5.0)]
    assert drill_starts(drills) == [2.0, 2.0, 42.0]
    steps = drill_steps(drills)
    assert [(s.at_s, s.device, s.what) for s in steps] == [
        (2.0, A, "doors closed"),
        (2.0, B, "tamper true"),
        (7.0, B, "tamper false"),
        (32.0, A, "door_2 open (forced)"),
        (42.0, A, "door_2 closed"),
        (42.0, A, "doors closed"),  # the next drill, in order
        (42.0, A, "card D0D0D0D0 read"),
        (44.0, A, "door_2 open (granted)"),
        (49.0, A, "door_2 closed"),
    ]


def demo_index() -> ParameterIndex:
    columns = ("mode", "component_type", "component_number", "encoding", "unit", "scale_factor")
    return ParameterIndex(
        Parameter.from_row({"device_id": d, **dict(zip(columns, row, strict=True))})
        for d in DEVICES
        for row in DEMO_PARAMETERS
    )


def run(
    drills: list[Drill], *, seconds: float = 60.0, silences: tuple[Silence, ...] = ()
) -> list[tuple[float, SimMessage]]:
    """What a run publishes, each message with its elapsed seconds: two random messages per 50 ms tick."""
    elapsed = 0.0
    traffic = Traffic(
        DEVICES,
        random.Random(1),
        lambda: START + timedelta(seconds=elapsed),
        silences=silences,
        drills=drills,
    )
    sent: list[tuple[float, SimMessage]] = []
    for tick in range(int(seconds / 0.05) + 1):
        elapsed = tick * 0.05
        sent += [(elapsed, message) for _, message in traffic.due_drills(elapsed)]
        for _ in range(2):
            message = traffic.next_random(elapsed)
            if message is not None:
                sent.append((elapsed, message))
    return sent


def fields(message: SimMessage) -> dict[str, object]:
    body = orjson.loads(message.payload)
    del body["timestamp"]
    return body


def doors(sent: list[tuple[float, SimMessage]], device: str) -> list[tuple[float, dict[str, object]]]:
    return [(at, fields(m)) for at, m in sent if m.device_id == device and m.component == "door-sensors"]


def test_a_forced_door_among_random_traffic() -> None:
    sent = run([Drill("forced-door", A, 10.0)])
    # The drilled device's doors: closed, except the drill's opening, which is the drill's message at +32 s.
    assert [(at, f) for at, f in doors(sent, A) if f != CLOSED] == [(pytest.approx(32.0), {**CLOSED, "door_2": "open"})]
    during = [m for at, m in sent if m.device_id == A and 2.0 <= at <= 42.0]
    assert [fields(m) for m in during if m.component == "door-sensors"] == [
        CLOSED,
        {**CLOSED, "door_2": "open"},
        CLOSED,
    ]
    assert not {m.component for m in during} & {"reader-1", "exit-buttons", "strike-1"}  # no grant at all
    assert {m.component for m in during} == {"door-sensors", "motion-sensor-1", "siren-1", "sensor-3"}
    # Before and after it, the device sends everything; the other device's doors stay random.
    assert {m.component for at, m in sent if m.device_id == A and at > 42.0} >= {"reader-1", "door-sensors"}
    assert any(f != CLOSED for _, f in doors(sent, B))


def test_a_held_door_sends_no_door_message_while_open() -> None:
    sent = run([Drill("held-door", A, 40.0)], seconds=50.0)
    states = doors(sent, A)
    opened = next(at for at, f in states if f["door_1"] == "open")
    closed = next(at for at, f in states if at > opened)
    assert (opened, closed) == (pytest.approx(4.0), pytest.approx(44.0))
    reads = [at for at, m in sent if m.device_id == A and fields(m).get("card_id") == "D0D0D0D0"]
    assert reads == [pytest.approx(2.0)]
    assert all(f == CLOSED for at, f in states if at != opened)


def test_every_message_is_unique_decodes_to_its_points_and_keeps_time_order() -> None:
    sent = run([Drill("forced-door", A, 10.0), Drill("granted-door", A, 5.0), Drill("tamper", B, 5.0)])
    index = demo_index()
    for _, message in sent:
        decoded = decode_message(message.topic, message.payload, "2025-01-31T12:01:00.000000+00:00", index)
        assert len(decoded) == message.points
    keys = Counter((m.device_id, m.component, m.time) for _, m in sent)  # what the manifest and verify count
    assert max(keys.values()) == 1
    for device in DEVICES:
        times = [m.time for _, m in sent if m.device_id == device]
        assert times == sorted(times)


def test_a_silenced_device_sends_no_drill_message() -> None:
    sent = run([Drill("tamper", A, 5.0)], seconds=10.0, silences=(Silence(A, 0.0, 3.0),))
    assert doors(sent, A)[0] == (pytest.approx(7.0), CLOSED)  # the tamper at +2 s fell in the silence
    assert all(at >= 3.0 for at, m in sent if m.device_id == A)


def test_without_drills_the_traffic_is_the_plain_messages() -> None:
    traffic = Traffic(DEVICES, random.Random(3), lambda: START)
    plain = list(itertools.islice(messages(DEVICES, random.Random(3), lambda: START), 50))
    assert [traffic.next_random(0.0) for _ in range(50)] == plain
    assert list(traffic.due_drills(1000.0)) == []


def test_doors_closed_changes_only_the_door_sensors_of_those_devices() -> None:
    plain = list(itertools.islice(messages(DEVICES, random.Random(4), lambda: START), 200))
    calm = list(itertools.islice(messages(DEVICES, random.Random(4), lambda: START, doors_closed={A}), 200))
    for before, after in zip(plain, calm, strict=True):
        if before.device_id == A and before.component == "door-sensors":
            assert fields(after) == CLOSED
            assert after.time == before.time
        else:
            assert after == before
    assert any(fields(m) != CLOSED for m in plain if m.device_id == A and m.component == "door-sensors")


class FakeClient:
    """A broker connection that acks every publish at once and notes it."""

    def __init__(self, sent: list[tuple[str, bytes]]) -> None:
        self.sent = sent

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def messages(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.sent.append((topic, payload))


async def test_run_simulation_publishes_the_drills_and_its_manifest_holds_them_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[str, bytes]] = []
    monkeypatch.setattr(simulator, "device_tls_context", lambda settings, device: None)
    monkeypatch.setattr(simulator.aiomqtt, "Client", lambda *args, **kwargs: FakeClient(published))
    manifest = tmp_path / "manifest.jsonl"
    drills = [Drill("tamper", A, 0.2), Drill("tamper", A, 0.1)]  # +2.0 to +2.2 s, then +2.2 to +2.3 s
    sent = await run_simulation(
        Settings(), DEVICES, rate=100.0, count=0, duration_s=2.6, manifest=manifest, seed=1, drills=drills
    )
    entries = [orjson.loads(line) for line in manifest.read_bytes().splitlines()]
    assert sent == len(published) == len(entries)
    by_key = {(e["device_id"], e["component"], e["time"]): e["points"] for e in entries}
    assert len(by_key) == len(entries)  # no two messages share a key: verify counts each once
    tampered = [
        (topic, body)
        for topic, body in ((t, orjson.loads(p)) for t, p in published)
        if topic.startswith(f"stat/{A}/") and topic.endswith("/door-sensors")
    ]
    assert [b["tamper"] for _, b in tampered].count(True) == 2
    assert all(b["door_1"] == b["door_2"] == "closed" for _, b in tampered)
    flags = [b["tamper"] for _, b in tampered]
    assert flags[flags.index(True) :][:4] == [True, False, True, False]  # nothing random in between
    for topic, payload in published:
        device = topic.split("/")[1]
        component = topic.rsplit("/", 1)[1]
        body = orjson.loads(payload)
        time = datetime.strptime(body["timestamp"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        assert by_key[(device, component, time.isoformat(timespec="microseconds"))] == len(body) - 1
