"""f2stream.agents.readgate: the ingest worker's byte bound, against a broker made of a loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from f2stream.agents.ingest import manual_ack_client
from f2stream.agents.readgate import MESSAGE_OVERHEAD_BYTES, ReadGate

TOPIC = "stat/f2-e4fd45f654be/access-control-mode/1/strike-1"


def publish_packet(mid: int, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 1."""
    body = len(TOPIC).to_bytes(2, "big") + TOPIC.encode() + mid.to_bytes(2, "big") + payload
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return b"\x32" + length + body


class Broker:
    """Answers CONNECT with CONNACK, then writes what the test gives it; counts the PUBACKs it reads."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.pubacks = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        header = await reader.readexactly(2)  # CONNECT: short enough for a one-byte length
        await reader.readexactly(header[1])
        writer.write(b"\x20\x02\x00\x00")
        self.connected.set()
        while packet := await reader.read(4):
            self.pubacks += packet.count(b"\x40\x02")  # PUBACKs only: nothing else is sent here


@asynccontextmanager
async def session(gate: ReadGate, broker: Broker) -> AsyncIterator[aiomqtt.Client]:
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aiomqtt.Client("127.0.0.1", port, identifier="readgate-test", clean_session=False, keepalive=60)
    mqtt = manual_ack_client(client)
    gate.attach(mqtt)
    try:
        async with client:
            await broker.connected.wait()
            yield client
    finally:
        server.close()


async def until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_message_counts_its_payload_topic_and_overhead() -> None:
    assert ReadGate.size_of(TOPIC, b"x" * 100) == 100 + len(TOPIC) + MESSAGE_OVERHEAD_BYTES


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReadGate(0)


async def test_reading_stops_at_the_limit_and_goes_on_below_half_of_it() -> None:
    size = ReadGate.size_of(TOPIC, b"x" * 10_000)
    pauses = []
    gate, broker = ReadGate(10 * size, on_pause=lambda: pauses.append(1)), Broker()
    async with session(gate, broker) as client:
        assert broker.writer is not None
        broker.writer.write(b"".join(publish_packet(mid, b"x" * 10_000) for mid in range(1, 101)))
        await until(lambda: gate.paused)
        await asyncio.sleep(0.2)  # what the socket holds stays unread
        assert len(client.messages) == 10  # the one that reached the limit is read, then no more
        assert gate.held_bytes == 10 * size and pauses == [1]
        gate.release(4 * size)  # 6 held: above half the limit, still paused
        await asyncio.sleep(0.1)
        assert gate.paused and len(client.messages) == 10
        gate.release(1 * size)  # 5 held: half the limit
        await until(lambda: gate.paused and len(client.messages) == 15)
        for seen in range(1, 101):  # take and acknowledge as the ingest worker does, releasing what was acknowledged
            message = await anext(client.messages)
            client._client.ack(message.mid, message.qos)
            if seen > 5:  # the first five were released above
                gate.release(size)
        assert gate.held_bytes == 0 and not gate.paused
        await until(lambda: broker.pubacks == 100)
    assert len(pauses) > 1


async def test_a_message_larger_than_the_limit_is_read_whole() -> None:
    gate, broker = ReadGate(1000), Broker()
    async with session(gate, broker) as client:
        assert broker.writer is not None
        broker.writer.write(publish_packet(1, b"x" * 300_000) + publish_packet(2, b"small"))
        message = await anext(client.messages)
        assert len(message.payload) == 300_000  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert gate.paused and len(client.messages) == 0
        gate.release(ReadGate.size_of(TOPIC, message.payload))  # type: ignore[arg-type]
        assert (await anext(client.messages)).payload == b"small"


async def test_a_release_after_the_connection_closed_reads_nothing() -> None:
    gate, broker = ReadGate(1), Broker()
    async with session(gate, broker) as client:
        assert broker.writer is not None
        broker.writer.write(publish_packet(1, b"x"))
        message = await anext(client.messages)
        assert gate.paused
    gate.release(ReadGate.size_of(TOPIC, message.payload))  # type: ignore[arg-type]  # no reader on a closed socket
    assert not gate.paused


async def test_an_error_while_reading_ends_the_session() -> None:
    gate, broker = ReadGate(1_000_000), Broker()
    async with session(gate, broker) as client:

        def broken() -> int:
            raise RuntimeError("paho broke")

        client._client.loop_read = broken  # type: ignore[method-assign,assignment]
        assert broker.writer is not None
        broker.writer.write(publish_packet(1, b"x"))
        with pytest.raises(aiomqtt.MqttError, match="reading the MQTT socket failed: RuntimeError: paho broke"):
            await asyncio.wait_for(gate.failed(), timeout=5)
        client._client.loop_read = type(client._client).loop_read.__get__(client._client)  # type: ignore[method-assign]
