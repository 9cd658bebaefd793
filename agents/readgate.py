"""A byte bound on what the ingest worker holds: MQTT messages read and not yet acknowledged.

Mosquitto 2.0.11 does not hold a session to its inflight window
(docs/reliability.md, "Ingest backlog"): once the ingest worker acknowledges
in order, the broker sends all it has queued for the session, and aiomqtt
queues all of it, however large. A stalled worker, a slow Kafka, or large
payloads then bring the whole backlog into memory at once: the fuzz test's
2,500-message stall with payloads of up to 3 MiB took the worker from 62 to
218 MB. Even a broker that holds the window (1,000 messages) bounds only the
count, not the bytes: MQTT allows 256 MB a message.

:class:`ReadGate` counts every message the paho client delivers, with its
payload, its topic and :data:`MESSAGE_OVERHEAD_BYTES`, and stops reading
the MQTT socket once the count reaches its limit; it reads on when
acknowledgements have brought it down to half the limit. Nothing is dropped
or acknowledged early: what is not read waits in the socket buffers and in
the broker, which holds it for the session anyway. A single message larger
than the limit is still read whole (the count then exceeds the limit until
it is acknowledged).

While reading is paused nothing is read, PINGRESP included: a pause longer
than twice the keepalive (Kafka not acknowledging for a minute) ends the
session through paho's keepalive check, and the broker re-delivers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, NoReturn

import aiomqtt
import paho.mqtt.client as paho

__all__ = ["MESSAGE_OVERHEAD_BYTES", "ReadGate"]

logger = logging.getLogger(__name__)

#: What a message costs beyond its payload and topic until it is acknowledged:
#: paho's and aiomqtt's objects for it, its queue slot and our acknowledgement
#: record (measured: ~300 bytes for paho and aiomqtt; rounded up).
MESSAGE_OVERHEAD_BYTES: Final = 512


class ReadGate:
    """Counts the bytes of messages read and not yet acknowledged, and reads the socket only below a limit.

    One gate serves one MQTT session: :meth:`attach` it to the session's
    paho client before connecting; it then reads that client's socket in
    place of aiomqtt's reader (the same calls, plus the pause).

    Args:
        limit_bytes: reading stops when the bytes held reach this.
        on_pause: called each time reading stops (a metric).
    """

    def __init__(self, limit_bytes: int, *, on_pause: Callable[[], object] | None = None) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be at least 1, not {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._on_pause = on_pause
        #: Bytes of the messages delivered and not yet released.
        self.held_bytes = 0
        #: Times reading stopped at the limit.
        self.pauses = 0
        self._mqtt: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: Any = None  # the socket being read: paho's, until it closes
        self._paused = False
        self._failed: asyncio.Future[BaseException] | None = None

    @staticmethod
    def size_of(topic: str, payload: bytes | bytearray) -> int:
        """What a message counts for: the same when it is read and when it is released."""
        return len(payload) + len(topic) + MESSAGE_OVERHEAD_BYTES

    @property
    def paused(self) -> bool:
        """True while the socket is not being read."""
        return self._paused

    def attach(self, mqtt: paho.Client) -> None:
        """Count what `mqtt` delivers and take over reading its socket once it opens.

        Call it in the event loop, after aiomqtt made the client and before it connects.
        """
        self._mqtt = mqtt
        self._loop = asyncio.get_running_loop()
        self._failed = self._loop.create_future()
        deliver, opened = mqtt.on_message, mqtt.on_socket_open
        if deliver is None or opened is None:
            raise RuntimeError("attach a ReadGate to a client that aiomqtt has set up (it has no on_message)")

        def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
            deliver(client, userdata, message)
            self._take(self.size_of(message.topic, message.payload))

        def on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
            opened(client, userdata, sock)
            # paho calls this in the thread that connects; aiomqtt registers its
            # reader through the loop the same way, so ours replaces it right after.
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._start, sock)

        mqtt.on_message = on_message
        mqtt.on_socket_open = on_socket_open

    def release(self, size: int) -> None:
        """Messages of `size` bytes (as counted) are acknowledged: read on once below half the limit."""
        self.held_bytes -= size
        if self._paused and self.held_bytes <= self.limit_bytes // 2:
            self._resume()

    async def failed(self) -> NoReturn:
        """Raise once reading the socket raised (what aiomqtt's reader would end the session for)."""
        assert self._failed is not None, "attach() first"
        exc = await self._failed
        raise aiomqtt.MqttError(f"reading the MQTT socket failed: {exc.__class__.__name__}: {exc}") from exc

    def _take(self, size: int) -> None:
        self.held_bytes += size
        if not self._paused and self.held_bytes >= self.limit_bytes:
            self._pause()

    def _start(self, sock: Any) -> None:
        self._sock = sock
        fileno = self._fileno()
        if fileno is None:
            return  # closed already
        if self._paused:  # nothing reads while paused (a reader that does not read would spin)
            self._loop_of().remove_reader(fileno)
        else:
            self._loop_of().add_reader(fileno, self._read)

    def _pause(self) -> None:
        self._paused = True
        self.pauses += 1
        if self._on_pause is not None:
            self._on_pause()
        logger.debug("MQTT reading paused: %d bytes held, limit %d", self.held_bytes, self.limit_bytes)
        fileno = self._fileno()
        if fileno is not None:
            self._loop_of().remove_reader(fileno)

    def _resume(self) -> None:
        self._paused = False
        logger.debug("MQTT reading resumed: %d bytes held", self.held_bytes)
        fileno = self._fileno()
        if fileno is not None:
            loop = self._loop_of()
            loop.add_reader(fileno, self._read)
            loop.call_soon(self._read)  # bytes a TLS socket decrypted already do not wake the selector

    def _fileno(self) -> int | None:
        # The socket's number while it is paho's open socket: once closed, the
        # number may already belong to another socket of the process.
        sock = None if self._mqtt is None else self._mqtt.socket()
        if sock is None or sock is not self._sock:
            return None
        fileno = sock.fileno()
        return fileno if fileno >= 0 else None

    def _read(self) -> None:
        # What aiomqtt's reader does (paho's loop_read, then what a TLS socket
        # still holds), stopping at a pause; an exception ends the session.
        mqtt = self._mqtt
        if mqtt is None or self._paused:
            return
        try:
            while True:
                mqtt.loop_read()
                pending = getattr(mqtt.socket(), "pending", None)
                if self._paused or pending is None or pending() <= 0:
                    break
        except Exception as exc:  # noqa: BLE001  # as aiomqtt's reader: whatever paho raised ends the session
            if self._failed is not None and not self._failed.done():
                self._failed.set_result(exc)

    def _loop_of(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "attach() first"
        return self._loop
