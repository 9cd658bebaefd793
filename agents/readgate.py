"""A byte bound on what the ingest worker holds: MQTT messages read and not yet acknowledged.

Mosquitto 2.0.11 does not hold a session to its inflight window
(docs/reliability.md, "Ingest backlog"): once the ingest worker acknowledges
in order, the broker sends all it has queued for the session, however
large. A stalled worker, a slow Kafka, or large payloads would then bring
the whole backlog into memory at once: the fuzz test's 2,500-message stall
with payloads of up to 3 MiB took the worker from 62 to 218 MB before this
bound. Even a broker that holds the window (1,000 messages) bounds only the
count, not the bytes: MQTT allows 256 MB a message.

:class:`ReadGate` counts every message the session delivers, with its
payload, its topic and :data:`MESSAGE_OVERHEAD_BYTES`, and pauses reading
the connection once the count reaches its limit; it reads on when
acknowledgements have brought it down to half the limit. Nothing is dropped
or acknowledged early: what is not read waits in the socket buffers and in
the broker, which holds it for the session anyway. A single message larger
than the limit is still read whole (the count then exceeds the limit until
it is acknowledged), and what one read of the socket brought is parsed
whole (up to 256 KiB past the limit).

While reading is paused nothing is read, PINGRESP included: a pause longer
than twice the keepalive (Kafka not acknowledging for a minute) ends the
session through its keepalive check, and the broker re-delivers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

__all__ = ["MESSAGE_OVERHEAD_BYTES", "ReadGate"]

logger = logging.getLogger(__name__)

#: What a message costs beyond its payload and topic until it is acknowledged:
#: its Publish tuple, its Kafka record until the batch is sent, its queue slot
#: and our acknowledgement record (measured ~300 bytes; rounded up).
MESSAGE_OVERHEAD_BYTES: Final = 512


class ReadGate:
    """Counts the bytes of messages read and not yet acknowledged, and reads only below a limit.

    One gate serves one MQTT session: the session :meth:`attach`-es its
    transport's `pause_reading` and `resume_reading` once connected, calls
    :meth:`take` for each message it delivers, and the ingest calls
    :meth:`release` once the messages are acknowledged.

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
        self._paused = False
        self._pause_reading: Callable[[], object] | None = None
        self._resume_reading: Callable[[], object] | None = None

    @staticmethod
    def size_of(topic: str, payload: bytes | bytearray) -> int:
        """What a message counts for: the same when it is read and when it is released."""
        return len(payload) + len(topic) + MESSAGE_OVERHEAD_BYTES

    @property
    def paused(self) -> bool:
        """True while the connection is not being read."""
        return self._paused

    def attach(self, pause_reading: Callable[[], object], resume_reading: Callable[[], object]) -> None:
        """Gate the connection these stop and start reading (an asyncio transport's methods)."""
        self._pause_reading, self._resume_reading = pause_reading, resume_reading
        if self._paused:
            pause_reading()

    def take(self, size: int) -> None:
        """A message of `size` bytes (:meth:`size_of`) was delivered: stop reading at the limit."""
        self.held_bytes += size
        if not self._paused and self.held_bytes >= self.limit_bytes:
            self._paused = True
            self.pauses += 1
            if self._on_pause is not None:
                self._on_pause()
            logger.debug("MQTT reading paused: %d bytes held, limit %d", self.held_bytes, self.limit_bytes)
            if self._pause_reading is not None:
                self._pause_reading()

    def release(self, size: int) -> None:
        """Messages of `size` bytes (as counted) are acknowledged: read on once below half the limit."""
        self.held_bytes -= size
        if self._paused and self.held_bytes <= self.limit_bytes // 2:
            self._paused = False
            logger.debug("MQTT reading resumed: %d bytes held", self.held_bytes)
            if self._resume_reading is not None:
                self._resume_reading()
