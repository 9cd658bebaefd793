"""f2stream.simulator: a controller's link comes back after a broker restart and re-sends what was not acked."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from f2stream.simulator import DeviceLink, reconnect_delay


def test_reconnect_delay_is_random_growing_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        ceiling = min(10.0, 0.5 * 2**attempt)
        delays = [reconnect_delay(attempt, rng) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert max(reconnect_delay(100, rng) for _ in range(200)) > 5.0


class FakeClient:
    """A connection that acks publishes (or holds them) until the test drops it."""

    def __init__(self, broker: FakeBroker, ack: bool) -> None:
        self.broker, self.ack = broker, ack
        self.dropped = asyncio.Event()

    async def __aenter__(self) -> FakeClient:
        if self.broker.refuse:
            raise aiomqtt.MqttError("refused")
        self.broker.clients.append(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def messages(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        await self.dropped.wait()
        raise aiomqtt.MqttCodeError(128, "Unexpected disconnection")
        yield  # an async generator

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.broker.sent.append((len(self.broker.clients), payload))
        if not self.ack:
            await asyncio.Event().wait()  # PUBACK never comes: the broker died


class FakeBroker:
    def __init__(self) -> None:
        self.clients: list[FakeClient] = []
        self.sent: list[tuple[int, bytes]] = []
        self.refuse = False
        self.ack_next = False

    def client(self) -> FakeClient:
        return FakeClient(self, ack=self.ack_next)


async def test_a_message_is_sent_again_after_a_reconnect_and_acked_once() -> None:
    broker = FakeBroker()
    link = DeviceLink("f2-02f200000001", broker.client, random.Random(0))  # type: ignore[arg-type]
    runner = asyncio.create_task(link.run())
    try:
        await link.first_connection()
        publishing = asyncio.create_task(link.publish("stat/x", b"m1"))
        await asyncio.sleep(0.05)
        assert not publishing.done()  # no PUBACK on the first connection
        broker.ack_next = True
        broker.clients[0].dropped.set()  # broker restart
        await asyncio.wait_for(publishing, timeout=5)
        assert broker.sent == [(1, b"m1"), (2, b"m1")]
        assert link.reconnects == 1
        await link.publish("stat/x", b"m2")
        assert broker.sent[-1] == (2, b"m2")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_broker_down_for_a_while_is_retried_until_it_is_back() -> None:
    broker = FakeBroker()
    broker.ack_next = True
    link = DeviceLink("f2-02f200000001", broker.client, random.Random(0))  # type: ignore[arg-type]
    runner = asyncio.create_task(link.run())
    try:
        await link.first_connection()
        broker.refuse = True
        broker.clients[0].dropped.set()
        publishing = asyncio.create_task(link.publish("stat/x", b"m"))
        await asyncio.sleep(0.3)
        assert not publishing.done() and len(broker.clients) == 1
        broker.refuse = False
        await asyncio.wait_for(publishing, timeout=15)
        assert len(broker.clients) == 2 and broker.sent == [(2, b"m")]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_refused_first_connection_is_an_error() -> None:
    broker = FakeBroker()
    broker.refuse = True
    link = DeviceLink("f2-02f200000001", broker.client, random.Random(0))  # type: ignore[arg-type]
    runner = asyncio.create_task(link.run())
    with pytest.raises(aiomqtt.MqttError, match="refused"):
        await link.first_connection()
    await asyncio.wait_for(runner, timeout=1)
