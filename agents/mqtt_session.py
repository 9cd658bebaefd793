"""The ingest's MQTT session: one connection, QoS 1 in, PUBACK only when the ingest says so.

A small MQTT 3.1.1 client on an asyncio protocol, made for the ingest and
nothing else. It exists for two reasons:

* **The guarantee.** A QoS 1 message is acknowledged only when
  :meth:`MqttSession.ack` is called, which the ingest does once Kafka has
  the message; nothing here acknowledges on its own. (aiomqtt acknowledges
  on arrival; its paho client could be told not to, through private
  attributes a release could rename.)
* **The cost.** paho reads a packet at a time (a read for its type, one per
  length byte, one for the rest) and calls back per message; here one read
  of the socket (up to 256 KiB) is parsed in one pass
  (:class:`f2stream.mqtt_wire.PacketReader`), and a burst's PUBACKs leave
  in one write. At saturation paho and aiomqtt were half of the ingest
  worker's samples (docs/performance.md).

What is read and not yet acknowledged is bounded in bytes by a
:class:`f2stream.agents.readgate.ReadGate`, which pauses the transport.
Keepalive is the client's side of MQTT 3.1.1, 3.1.2.10: a PINGREQ when
nothing was sent for `keepalive` seconds, and the connection is closed when
its PINGRESP has not come `keepalive` seconds later. Any failure (the
connection lost, a refusal, a packet no broker sends a QoS 1 subscriber)
raises :class:`MqttError` to whoever awaits the session; the broker keeps
the session (clean session off) and re-delivers what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from f2stream.agents.readgate import ReadGate
from f2stream.mqtt_client import MqttConnection
from f2stream.mqtt_wire import (
    CONNACK,
    CONNACK_REFUSALS,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    SUBACK,
    UNSUBACK,
    Control,
    PacketReader,
    ProtocolError,
    Publish,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
    encode_unsubscribe,
)

__all__ = ["MqttError", "MqttSession"]

logger = logging.getLogger(__name__)

# How much asyncio reads at once (its default is 64 KiB): fewer, larger reads at saturation.
_READ_SIZE = 256 * 1024


class MqttError(Exception):
    """The MQTT session failed or ended; the reason says how."""


class MqttSession(asyncio.BufferedProtocol):
    """One MQTT 3.1.1 connection of a QoS 1 subscriber; open it with :meth:`open`."""

    def __init__(self, gate: ReadGate, keepalive: int) -> None:
        self.gate = gate
        self.keepalive = keepalive
        self._reader = PacketReader()
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[Publish] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self._replies: dict[tuple[int, int], asyncio.Future[bytes]] = {}  # (kind, packet id) -> its answer
        self._next_id = 0
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._failure: MqttError | None = None
        self._sent_at = time.monotonic()
        self._ping_sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Whether the broker had a session for this client id (CONNACK's flag).
        self.session_present = False

    @classmethod
    async def open(
        cls, connection: MqttConnection, *, client_id: str, gate: ReadGate, keepalive: int = 30, connect_s: float = 10
    ) -> MqttSession:
        """Connect, log in with a persistent session (clean session off), and return once CONNACK accepted it.

        Raises:
            MqttError: the broker refused (its reason) or closed the connection.
            OSError: the connection or its TLS handshake failed, or no CONNACK within `connect_s` (TimeoutError).
        """
        loop = asyncio.get_running_loop()
        session = cls(gate, keepalive)
        tls = connection.tls_context
        try:
            async with asyncio.timeout(connect_s):
                await loop.create_connection(
                    lambda: session, connection.host, connection.port,
                    ssl=tls, server_hostname=connection.host if tls is not None else None,
                )  # fmt: skip
                session._write(
                    encode_connect(
                        client_id,
                        clean_session=False,
                        keepalive=keepalive,
                        username=connection.username,
                        password=connection.password,
                    )
                )
                session.session_present = await session._connack
        except BaseException:
            session.close()
            raise
        session._tick()
        return session

    @property
    def is_open(self) -> bool:
        """True while the connection is up."""
        return not self._closed.done()

    def __len__(self) -> int:
        """Messages received and not yet taken."""
        return len(self._inbox)

    async def messages(self, most: int) -> list[Publish]:
        """What has arrived, in order, up to `most`; waits for the first.

        Raises:
            MqttError: the connection is gone (what was taken and not acknowledged is re-delivered).
        """
        while not self._inbox:
            self._raise_if_closed()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        inbox = self._inbox
        if len(inbox) <= most:
            taken = list(inbox)
            inbox.clear()
            return taken
        return [inbox.popleft() for _ in range(most)]

    def ack(self, packet_ids: Sequence[int]) -> None:
        """Acknowledge QoS 1 messages, in this order, in one write (ignored once the connection is gone)."""
        if packet_ids and self.is_open:
            self._write(encode_pubacks(packet_ids))

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        """Subscribe and wait for SUBACK, without a deadline (a dead connection still ends it).

        Raises:
            MqttError: the broker refused a filter, or the connection is gone.
        """
        granted = await self._request(SUBACK, lambda packet_id: encode_subscribe(packet_id, filters))
        refused = [f for (f, _), code in zip(filters, granted, strict=False) if code == 0x80]
        if refused or len(granted) != len(filters):
            raise MqttError(f"the broker refused the subscription to {', '.join(refused) or filters}")

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK (as :meth:`subscribe`)."""
        await self._request(UNSUBACK, lambda packet_id: encode_unsubscribe(packet_id, filters))

    async def closed(self) -> None:
        """Wait until the connection is gone, then raise why.

        Raises:
            MqttError: always, once the connection is gone.
        """
        await asyncio.shield(self._closed)
        self._raise_if_closed()

    def close(self) -> None:
        """End the session politely (DISCONNECT) and close the connection; the broker keeps the session."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(DISCONNECT)
            transport.close()
        self._lost(MqttError("the session was closed"))

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.gate.attach(transport.pause_reading, transport.resume_reading)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        try:
            packets = self._reader.feed(self._view[:nbytes])
        except ProtocolError as exc:
            self._fail(f"protocol error: {exc}")
            return
        inbox, take, size_of = self._inbox, self.gate.take, ReadGate.size_of
        for packet in packets:
            if type(packet) is Publish:
                inbox.append(packet)
                take(size_of(packet.topic, packet.payload))
            else:
                self._control(packet)  # type: ignore[arg-type]  # not a Publish: a Control
        if inbox and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lost(MqttError("the broker closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        cause = "" if exc is None else f": {exc.__class__.__name__}: {exc}"
        self._lost(MqttError(f"the connection was lost{cause}"))

    # internals

    def _control(self, packet: Control) -> None:
        kind, body = packet
        if kind == CONNACK and len(body) == 2 and not self._connack.done():
            if body[1]:
                code = body[1]
                self._fail(f"the broker refused the connection: {CONNACK_REFUSALS.get(code, f'return code {code}')}")
            else:
                self._connack.set_result(bool(body[0] & 1))
        elif kind in (SUBACK, UNSUBACK) and len(body) >= 2:
            reply = self._replies.pop((kind, (body[0] << 8) | body[1]), None)
            if reply is not None and not reply.done():
                reply.set_result(body[2:])
        elif kind == PINGRESP:
            self._ping_sent_at = None
        else:
            self._fail(f"protocol error: an unexpected packet of type {kind} ({len(body)} bytes)")

    async def _request(self, kind: int, encode: Callable[[int], bytes]) -> bytes:
        self._raise_if_closed()
        self._next_id = self._next_id % 0xFFFF + 1
        reply: asyncio.Future[bytes] = self._loop.create_future()
        self._replies[(kind, self._next_id)] = reply
        self._write(encode(self._next_id))
        return await reply

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._sent_at = time.monotonic()

    def _tick(self) -> None:
        """Keepalive, once a second: ping when idle, close when the ping goes unanswered."""
        if not self.is_open:
            return
        now = time.monotonic()
        if self._ping_sent_at is not None and now - self._ping_sent_at >= self.keepalive:
            self._fail(f"no PINGRESP within the keepalive ({self.keepalive} s)")
            return
        if self._ping_sent_at is None and now - self._sent_at >= self.keepalive:
            self._write(PINGREQ)
            self._ping_sent_at = now
        self._timer = self._loop.call_later(1.0, self._tick)

    def _fail(self, reason: str) -> None:
        logger.debug("MQTT session ends: %s", reason)
        self._lost(MqttError(reason))
        if self._transport is not None:
            self._transport.abort()

    def _lost(self, failure: MqttError) -> None:
        if self._closed.done():
            return
        self._failure = failure
        self._closed.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
        for future in (self._connack, self._waiter, *self._replies.values()):
            if future is not None and not future.done():
                future.set_exception(failure)
        self._replies.clear()

    def _raise_if_closed(self) -> None:
        if self._closed.done():
            assert self._failure is not None
            raise self._failure
