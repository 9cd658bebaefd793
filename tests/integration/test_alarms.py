"""Alarms against the real stack, beside the simulator's normal traffic: each rule kind's transitions, a rule
changed in the database taking effect within seconds, late messages, and each transition exactly once in
`alarm_events` and in `alarm_transitions` over a kill -9 of the pipeline worker and a rebalance to a second.

Rules are loaded per device (`load_rules`, what `alarms rules load` runs), so that the traffic of other
tests' devices raises nothing here; the session's pipeline worker evaluates them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import Stack, Worker, Workers, publish, register_device, wait_until
from test_faults import restart

from bench.stack import free_ports
from f2stream.alarm_rules import Grant, Rule
from f2stream.alarms import AlarmEvent, decode_event
from f2stream.codec.values import encode_modbus_frame
from f2stream.devices.alarm_rule_store import load_rules
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import ALARM_EVENTS_TOPIC
from f2stream.storage.db import connect

pytestmark = pytest.mark.integration

Message = tuple[str, bytes]


def stamp(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")


def door(device: str, *, door_1: bool = False, door_2: bool = False, tamper: bool = False,
         at: datetime | None = None) -> Message:  # fmt: skip
    body = {"timestamp": stamp(at), "door_1": "open" if door_1 else "closed",
            "door_2": "open" if door_2 else "closed", "tamper": tamper}  # fmt: skip
    return f"stat/{device}/access-control-mode/1/door-sensors", orjson.dumps(body)


def card(device: str) -> Message:
    body = {"timestamp": stamp(None), "card_id": "04A1B2C3", "read_type": "nfc", "signal_strength": 80}
    return f"tele/{device}/access-control-mode/1/reader-1", orjson.dumps(body)


def celsius(device: str, value: float) -> Message:
    frame = encode_modbus_frame(1, 3, round(value * 10).to_bytes(2, "big", signed=True))
    return f"cmnd/{device}/sensor-mode/4/sensor-3", orjson.dumps({"timestamp": stamp(None), "data": frame})


def rules_of(device: str, hot_above: float = 30.0) -> list[Rule]:
    return [
        Rule("forced", "door_forced_open", "critical", "door-sensors", "door_2", scope="device", target=device,
             window_s=5.0, grants=(Grant("reader", "card_id"),)),
        Rule("held", "door_held_open", "minor", "door-sensors", "door_1", scope="device", target=device, for_s=3.0),
        Rule("hot", "threshold", "major", "sensor", "data", scope="device", target=device, above=hot_above,
             clear=hot_above - 2),
        Rule("tamper", "state", "critical", "door-sensors", "tamper", scope="device", target=device, equals=1.0),
    ]  # fmt: skip


async def put_rules(stack: Stack, rules: list[Rule], *, replace: bool = False) -> None:
    settings = stack.settings
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await load_rules(conn, rules, replace=replace)
    finally:
        await conn.close()


async def in_alarms(stack: Stack, alarm_id: str) -> bool:
    settings = stack.settings
    conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM alarms WHERE alarm_id = $1", alarm_id))
    finally:
        await conn.close()


class Transitions:
    """`alarm_events` of some devices, from where the topic ended when the block began."""

    def __init__(self, stack: Stack, devices: set[str]) -> None:
        self.stack = stack
        self.devices = devices
        self.seen: list[tuple[float, AlarmEvent]] = []
        self.consumer = AIOKafkaConsumer(**kafka_options(stack.settings), group_id=None, enable_auto_commit=False)

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(ALARM_EVENTS_TOPIC, p) for p in range(self.stack.settings.topic_partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before anything is published
            await self.consumer.position(tp)

    async def poll(self) -> None:
        for records in (await self.consumer.getmany(timeout_ms=200)).values():
            for record in records:
                event = decode_event(record.value or b"")
                assert event is not None, record.value
                if event.device_id in self.devices:
                    self.seen.append((time.monotonic(), event))

    async def wait(self, what: str, test: Callable[[AlarmEvent], bool], timeout_s: float) -> tuple[float, AlarmEvent]:
        """(monotonic time it was read, the event) of the first transition passing `test`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for found in self.seen:
                if test(found[1]):
                    return found
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s; saw {self.names()}"
            await self.poll()

    async def settle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.poll()

    def names(self) -> list[str]:
        return [f"{e.device_id[-2:]}:{e.rule}:{e.transition}" for _, e in self.seen]

    def of(self, device: str, rule: str) -> list[str]:
        return [e.transition for _, e in self.seen if e.device_id == device and e.rule == rule]


@asynccontextmanager
async def transitions(stack: Stack, devices: set[str]) -> AsyncIterator[Transitions]:
    found = Transitions(stack, devices)
    await found.start()
    try:
        yield found
    finally:
        await found.consumer.stop()


@pytest.fixture
def traffic(stack: Stack, device_numbers: int) -> Iterator[None]:
    """The simulator's normal traffic (its own devices, no rules of theirs) for the whole test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "f2stream", "simulate", "--devices", "4", "--first-device",
         str(device_numbers + 50), "--rate", "200", "--duration-s", "600", "--register-params"],
        env=stack.run_env(), cwd=stack.var_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


async def test_each_rule_kind_on_the_real_stack(stack: Stack, workers: Workers, device_numbers: int,
                                                traffic: None) -> None:  # fmt: skip
    device = await register_device(stack, workers.pipeline, device_numbers)
    await put_rules(stack, rules_of(device))
    await asyncio.sleep(2)  # the reload (LISTEN f2stream_alarms) takes well under a second
    async with transitions(stack, {device}) as seen:
        # Forced open: no grant before the opening.
        await publish(stack, [door(device)])
        await publish(stack, [door(device, door_2=True)])
        sent = time.monotonic()
        read, raised = await seen.wait("forced raised", lambda e: e.rule == "forced", 10)
        assert read - sent <= 2.0, f"forced open raised {read - sent:.2f} s after the door's message"
        assert raised.transition == "raised" and raised.severity == "critical"
        await publish(stack, [door(device)])
        await seen.wait("forced cleared", lambda e: e.rule == "forced" and e.transition == "cleared", 10)
        # Not forced: a card read 2 s before.
        await publish(stack, [card(device)])
        await asyncio.sleep(2)
        await publish(stack, [door(device, door_2=True)])
        await seen.settle(3)
        assert seen.of(device, "forced") == ["raised", "cleared"], seen.names()
        await publish(stack, [door(device)])

        # Held open: raised 3 s after the opening with no further message, cleared when it closes.
        await publish(stack, [door(device, door_1=True)])
        opened = time.monotonic()
        read, _ = await seen.wait("held raised", lambda e: e.rule == "held", 15)
        assert 3.0 <= read - opened <= 3.0 + 3.0, f"held open raised {read - opened:.2f} s after the opening"
        await publish(stack, [door(device)])
        await seen.wait("held cleared", lambda e: e.rule == "held" and e.transition == "cleared", 10)

        # Threshold with hysteresis: no flapping on a value wobbling around the limit.
        await publish(stack, [celsius(device, v) for v in (25.0, 31.0, 29.5, 30.5, 29.0, 28.5, 30.2, 27.5)])
        await seen.wait("hot cleared", lambda e: e.rule == "hot" and e.transition == "cleared", 10)

        # State, acknowledged by an operator, and a late message: an older "no tamper" clears nothing.
        await publish(stack, [door(device, tamper=True)])
        _, tamper = await seen.wait("tamper raised", lambda e: e.rule == "tamper", 10)
        await wait_until(lambda: in_alarms(stack, tamper.alarm_id), 20, "the raised alarm in the alarms table")
        acked = await asyncio.to_thread(stack.faust, "alarms", "ack", tamper.alarm_id, "--by", "night-shift")
        assert acked.returncode == 0, acked.stderr
        _, ack = await seen.wait("tamper acknowledged", lambda e: e.transition == "acknowledged", 10)
        assert (ack.alarm_id, ack.acknowledged_by) == (tamper.alarm_id, "night-shift")
        await publish(stack, [door(device, at=datetime.now(UTC) - timedelta(seconds=30))])
        await seen.settle(2)
        assert seen.of(device, "tamper") == ["raised", "acknowledged"], seen.names()
        late = workers.pipeline.get("/metrics")[1]
        assert any(line.startswith("f2_alarm_late_messages ") and float(line.split()[1]) >= 1
                   for line in late.splitlines()), "the late message is not counted"  # fmt: skip
        await publish(stack, [door(device)])
        await seen.wait("tamper cleared", lambda e: e.rule == "tamper" and e.transition == "cleared", 10)
        await seen.settle(1)

    assert seen.of(device, "tamper") == ["raised", "acknowledged", "cleared"], seen.names()
    assert seen.of(device, "hot") == ["raised", "cleared"], seen.names()
    assert seen.of(device, "held") == ["raised", "cleared"], seen.names()
    code, body = workers.pipeline.get(f"/devices/{device}/alarms?state=all")
    assert code == 200, body

    async def in_table() -> bool:
        settings = stack.settings
        conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
        try:
            rows = await conn.fetch("SELECT rule, state FROM alarms WHERE device_id = $1", device)
        finally:
            await conn.close()
        return sorted(tuple(r) for r in rows) == [("forced", "cleared"), ("held", "cleared"), ("hot", "cleared"),
                                                  ("tamper", "cleared")]  # fmt: skip

    await wait_until(in_table, 20, "every alarm cleared in the alarms table")


async def test_a_rule_changed_in_the_database_applies_within_5s(stack: Stack, workers: Workers,
                                                                device_numbers: int) -> None:  # fmt: skip
    device = await register_device(stack, workers.pipeline, device_numbers)
    await put_rules(stack, rules_of(device, hot_above=50.0))
    await asyncio.sleep(2)
    async with transitions(stack, {device}) as seen:
        await publish(stack, [celsius(device, 40.0)])
        await seen.settle(2)
        assert seen.of(device, "hot") == []
        await put_rules(stack, rules_of(device, hot_above=35.0))
        changed = time.monotonic()
        while not seen.of(device, "hot"):
            assert time.monotonic() - changed < 5.0, "the changed rule did not apply within 5 s"
            await publish(stack, [celsius(device, 40.0)])
            await seen.settle(0.25)


async def test_each_transition_once_over_a_kill_9_and_a_rebalance(stack: Stack, workers: Workers,
                                                                   device_numbers: int) -> None:  # fmt: skip
    pipeline = workers.pipeline
    devices = [await register_device(stack, pipeline, device_numbers + i) for i in range(4)]
    await put_rules(stack, [r for d in devices for r in rules_of(d)])
    await asyncio.sleep(2)
    sent: Counter[str] = Counter()
    stop = asyncio.Event()

    async def toggle() -> None:  # tamper on, off, on...: each message a transition
        flag = True
        while not stop.is_set():
            await publish(stack, [door(d, tamper=flag) for d in devices])
            sent["raised" if flag else "cleared"] += len(devices)
            flag = not flag
            await asyncio.sleep(0.1)

    async with transitions(stack, set(devices)) as seen:
        task = asyncio.create_task(toggle())
        try:
            await asyncio.sleep(4)
            await asyncio.to_thread(restart, pipeline)  # kill -9, started again
            await asyncio.sleep(3)
            (port,) = free_ports(1)
            second = Worker(stack, "f2stream", port, "pipeline-alarms-2",
                            F2_DATA_DIR=str(stack.var_dir / "data" / "faust-alarms-2"))  # fmt: skip
            second.start()
            try:
                await asyncio.to_thread(second.wait_healthy, 120)
                await asyncio.sleep(6)
            finally:
                await asyncio.to_thread(second.stop)
            await asyncio.sleep(4)
        finally:
            stop.set()
            await task
        await publish(stack, [door(d) for d in devices])  # every alarm ends cleared
        sent["cleared"] += len(devices) if sent["raised"] > sent["cleared"] else 0

        def done() -> bool:
            return Counter(e.transition for _, e in seen.seen) == sent

        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            await seen.poll()
    counted = Counter(e.key for _, e in seen.seen)
    repeated = {key: n for key, n in counted.items() if n > 1}
    assert not repeated, f"transitions produced more than once: {repeated}"
    assert Counter(e.transition for _, e in seen.seen) == sent, "transitions missed"

    async def table_matches() -> bool:
        settings = stack.settings
        conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
        try:
            rows = await conn.fetch("SELECT alarm_id, transition FROM alarm_transitions WHERE device_id = ANY($1)",
                                    devices)  # fmt: skip
        finally:
            await conn.close()
        return {tuple(r) for r in rows} == set(counted)

    await wait_until(table_matches, 30, "alarm_transitions holding each transition of the topic")
