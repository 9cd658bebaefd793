"""f2stream.agents.mqtt_session against a loopback socket that speaks the broker's side in raw bytes.

What the session does with a real Mosquitto (persistent sessions, re-delivery
after kill -9, TLS) is tested on the real broker in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from f2stream.agents.mqtt_session import MqttError, MqttSession
from f2stream.agents.readgate import ReadGate
from f2stream.mqtt_client import MqttConnection
from f2stream.mqtt_wire import PacketReader, encode_publish

TOPIC = "stat/f2-e4fd45f654be/access-control-mode/1/strike-1"


class Broker:
    """Answers CONNECT with `connack`, then writes what the test gives it; keeps every packet it reads."""

    def __init__(self, connack: bytes = b"\x20\x02\x01\x00") -> None:
        self.connack = connack
        self.writer: asyncio.StreamWriter | None = None
        self.received: list[tuple[int, bytes]] = []
        self.connected = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        packets = PacketReader()
        while data := await reader.read(65536):
            for packet in packets.feed(data):
                self.received.append((packet[0], packet[1]))  # type: ignore[arg-type]  # Control: (kind, body)
                if packet[0] == 1:  # CONNECT
                    writer.write(self.connack)
                    self.connected.set()

    def pubacks(self) -> list[int]:
        return [int.from_bytes(body, "big") for kind, body in self.received if kind == 4]


@asynccontextmanager
async def session(gate: ReadGate, broker: Broker, keepalive: int = 60) -> AsyncIterator[MqttSession]:
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mqtt = await MqttSession.open(
        MqttConnection("127.0.0.1", port, "ingest", "pw"), client_id="session-test", gate=gate, keepalive=keepalive
    )
    try:
        yield mqtt
    finally:
        mqtt.close()
        server.close()


async def until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_connects_with_a_persistent_session_and_acknowledges_only_when_told() -> None:
    broker = Broker()
    async with session(ReadGate(1_000_000), broker) as mqtt:
        assert mqtt.session_present
        assert broker.writer is not None
        broker.writer.write(b"".join(encode_publish(TOPIC, b"%d" % i, packet_id=i) for i in range(1, 6)))
        burst = await mqtt.messages(3)
        assert [m.payload for m in burst] == [b"1", b"2", b"3"]
        assert [m.payload for m in await mqtt.messages(10)] == [b"4", b"5"]
        await asyncio.sleep(0.1)
        assert broker.pubacks() == []  # nothing acknowledged on arrival
        mqtt.ack([1, 2, 3, 4, 5])
        await until(lambda: broker.pubacks() == [1, 2, 3, 4, 5])
    [(kind, connect)] = broker.received[:1]
    assert kind == 1 and connect[7] == 0xC0  # user name and password, clean session off


async def test_a_refused_connection_says_why() -> None:
    broker = Broker(connack=b"\x20\x02\x00\x05")
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(MqttError, match="refused the connection: not authorized"):
        await MqttSession.open(MqttConnection("127.0.0.1", port, "ingest"), client_id="x", gate=ReadGate(1))
    server.close()


async def test_subscribe_waits_for_its_suback_and_a_refused_filter_raises() -> None:
    broker = Broker()
    async with session(ReadGate(1_000_000), broker) as mqtt:
        subscribed = asyncio.create_task(mqtt.subscribe([("tele/#", 1), ("stat/#", 1)]))
        await until(lambda: any(kind == 8 for kind, _ in broker.received))
        assert not subscribed.done()
        assert broker.writer is not None
        broker.writer.write(b"\x90\x04\x00\x01\x01\x80")  # SUBACK: the second filter refused
        with pytest.raises(MqttError, match="refused the subscription to stat/#"):
            await subscribed


async def test_reading_stops_at_the_byte_bound_and_goes_on_below_half_of_it() -> None:
    size = ReadGate.size_of(TOPIC, b"x" * 10_000)
    gate, broker = ReadGate(10 * size), Broker()
    async with session(gate, broker) as mqtt:
        assert broker.writer is not None
        broker.writer.write(b"".join(encode_publish(TOPIC, b"x" * 10_000, packet_id=i) for i in range(1, 101)))
        await until(lambda: gate.paused)
        await asyncio.sleep(0.2)
        held = len(mqtt)
        assert 10 <= held < 100  # what one read brought is parsed; then nothing more is read
        taken: list[int] = []
        while len(taken) < 100:
            burst = await asyncio.wait_for(mqtt.messages(7), 5)
            taken += [m.packet_id for m in burst]
            mqtt.ack([m.packet_id for m in burst])
            gate.release(sum(ReadGate.size_of(m.topic, m.payload) for m in burst))
        assert taken == list(range(1, 101)) and gate.held_bytes == 0
        await until(lambda: len(broker.pubacks()) == 100)
    assert gate.pauses >= 2


async def test_a_lost_connection_raises_to_whoever_waits() -> None:
    broker = Broker()
    async with session(ReadGate(1_000_000), broker) as mqtt:
        waiting = asyncio.create_task(mqtt.messages(10))
        assert broker.writer is not None
        broker.writer.close()
        with pytest.raises(MqttError, match=r"closed the connection|connection was lost"):
            await asyncio.wait_for(waiting, 5)
        assert not mqtt.is_open
        mqtt.ack([1])  # ignored: the connection is gone
        with pytest.raises(MqttError):
            await mqtt.closed()


async def test_a_packet_no_broker_sends_ends_the_session() -> None:
    broker = Broker()
    async with session(ReadGate(1_000_000), broker) as mqtt:
        assert broker.writer is not None
        broker.writer.write(b"\x34\x05\x00\x01t\x00\x01")  # QoS 2
        with pytest.raises(MqttError, match="protocol error: a PUBLISH at QoS 2"):
            await asyncio.wait_for(mqtt.closed(), 5)


async def test_an_idle_session_pings_and_ends_when_the_ping_goes_unanswered() -> None:
    broker = Broker()
    async with session(ReadGate(1_000_000), broker, keepalive=1) as mqtt:
        await until(lambda: any(kind == 12 for kind, _ in broker.received), timeout_s=4)  # PINGREQ
        with pytest.raises(MqttError, match="no PINGRESP within the keepalive"):
            await asyncio.wait_for(mqtt.closed(), 5)
