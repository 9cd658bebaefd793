"""The ingest stage: MQTT (service listener) to Kafka raw_iot_data.

The ingest app (:mod:`f2stream.ingest`) runs it:
`faust -A f2stream.ingest worker -l info --web-port 6067`.

Each QoS 1 message is acknowledged to the broker only after Kafka has
acknowledged the record (acks=all), and in the order the messages arrived.
If Kafka fails, the MQTT session is dropped without acknowledging, and the
broker re-delivers from the persistent session on reconnect; duplicates
that this causes are absorbed by the database's primary key. The session is
our own small client (:mod:`f2stream.agents.mqtt_session`), which never
acknowledges on its own.

Messages are taken off the session in bursts (what has arrived, up to
500): one produce call per burst, acknowledged together, in one write, once
Kafka acknowledged them all. What the worker holds, read and not yet
acknowledged, is bounded in bytes (`F2_MQTT_MAX_HELD_MB`): at the bound it
stops reading the MQTT connection until acknowledgements bring it down
(:mod:`f2stream.agents.readgate`).

A message too large for a Kafka record (over 1 MB with its headers) would
be refused again on every re-delivery: it goes to iot_dead_letter instead (reason `too_large`, its first
:data:`TOO_LARGE_KEEP_BYTES`, its full size in the `payload_bytes` header),
and is acknowledged once Kafka has the dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import faust
from aiokafka.errors import KafkaError
from mode import Service
from prometheus_client import Counter as PromCounter

from f2stream.agents.mqtt_session import MqttError, MqttSession
from f2stream.agents.producer import MAX_RECORD_BYTES, Output, Producer
from f2stream.agents.readgate import ReadGate
from f2stream.backoff import Backoff
from f2stream.deadletter import dead_letter_headers
from f2stream.health import Check
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, RAW_TOPIC
from f2stream.metrics import Metrics
from f2stream.mqtt_client import ingest_connection
from f2stream.mqtt_wire import Publish
from f2stream.records import format_time
from f2stream.settings import Settings

__all__ = [
    "TOO_LARGE_KEEP_BYTES",
    "MqttIngest",
    "ProduceFailed",
    "message_identity",
    "subscriptions",
    "too_large_dead_letter",
]

logger = logging.getLogger(__name__)

_TYPES = ("cmnd", "stat", "tele")
_BACKOFF_MAX_S = 30.0
# The share group ingest workers used by default before a plain subscription became the default.
_FORMER_DEFAULT_GROUP = "f2stream-ingest"
# Most messages taken off the MQTT queue at once.
_BURST = 500
#: How much of an oversized payload its dead letter keeps: enough to see what
#: it was, far below any Kafka limit (the MQTT topic, up to 64 KB, is a header).
TOO_LARGE_KEEP_BYTES: Final = 64 * 1024
_MIB = 1024 * 1024


def subscriptions(share_group: str) -> list[str]:
    """The topic filters of the ingest session; shared when a group is set."""
    prefix = f"$share/{share_group}/" if share_group else ""
    return [f"{prefix}{kind}/#" for kind in _TYPES]


def device_key(topic: str) -> bytes:
    """The Kafka key of a message: its topic's device level (validated later, by decode)."""
    parts = topic.split("/", 2)
    return parts[1].encode("utf-8", "surrogateescape") if len(parts) > 1 else b""


def message_identity(topic: str, payload: bytes) -> str:
    """A stable identity of an MQTT message that has no Kafka offset: the same on every re-delivery.

    A device's payload carries its own timestamp, so topic and bytes tell
    messages apart; a re-delivered copy has the same identity.
    """
    digest = hashlib.sha256(topic.encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(payload)
    return f"mqtt:sha256:{digest.hexdigest()}"


def too_large_dead_letter(topic: str, payload: bytes, received_at: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter of a message too large for a Kafka record: its start, and headers saying why."""
    detail = (
        f"{len(payload)} bytes, more than the {MAX_RECORD_BYTES} a Kafka record may hold; the value keeps "
        f"the first {TOO_LARGE_KEEP_BYTES}"
    )
    headers = dead_letter_headers(
        reason="too_large",
        detail=detail,
        stage="ingest",
        mqtt_topic=topic,
        received_at=received_at,
        source=message_identity(topic, payload),
        payload_bytes=len(payload),
    )
    return payload[:TOO_LARGE_KEEP_BYTES], headers


@dataclass(frozen=True, slots=True)
class _Burst:
    """A burst: its QoS 1 packet ids in arrival order, its size as the read gate counts it, Kafka's answer."""

    acks: list[int]
    messages: int
    held: int
    done: asyncio.Future[Any]


class ProduceFailed(Exception):
    """Kafka did not take a record; the MQTT session is dropped so the broker re-delivers."""


class MqttIngest(Service):
    """One persistent MQTT session feeding raw_iot_data, reconnecting with capped random backoff."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.connected = False
        self.last_error: str | None = None
        self._session_now: MqttSession | None = None
        self._gate: ReadGate | None = None
        self.connection = ingest_connection(settings)  # where, as whom, TLS or not: for the session and messages
        metrics.mqtt_held_bytes.set_function(lambda: self._gate.held_bytes if self._gate is not None else 0)
        # A child: started before the MQTT session, stopped after it.
        self.producer = Producer(kafka_options(settings), "f2stream-ingest")
        self.add_dependency(self.producer)

    @Service.task
    async def _run(self) -> None:
        # The supervisor of the MQTT session: any failure of a session, expected
        # or not, ends in a new session after a capped random backoff. The worker
        # stays up meanwhile (its /health says why the session is down): a session
        # holds no state of its own, and whatever it had not acknowledged is
        # re-delivered by the broker, so a restart in place loses nothing.
        backoff, first = Backoff(1.0, _BACKOFF_MAX_S), True
        while not self.should_stop:
            if not first:
                self.metrics.mqtt_reconnects.inc()
            first = False
            try:
                await self._session()
            except (MqttError, ProduceFailed, OSError) as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning("MQTT session to %s ended: %s", self.connection, self.last_error)
            except Exception as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.exception("MQTT session to %s failed unexpectedly; starting a new one", self.connection)
            finally:
                if self.connected:
                    # A session that was up ends with an error too: start the backoff over,
                    # or a broker restart after a few earlier ones waits up to 30 s. While we
                    # are away, Mosquitto drops what arrives for a $share subscription after
                    # its own restart (docs/reliability.md): come back fast.
                    backoff.reset()
                self._set_connected(False)
            await self.sleep(backoff.next())

    async def _session(self) -> None:
        s = self.settings
        # What the session holds is bounded in bytes: reading stops at the bound.
        gate = ReadGate(s.mqtt_max_held_mb * _MIB, on_pause=self.metrics.mqtt_read_pauses.inc)
        self._gate = gate
        session = await MqttSession.open(self.connection, client_id=s.mqtt_client_id, gate=gate, keepalive=30)
        self._session_now = session
        pending: asyncio.Queue[_Burst] = asyncio.Queue(max(2, s.mqtt_max_inflight // _BURST))
        try:
            logger.info("MQTT connected as %s, subscribing to %s", s.mqtt_client_id, subscriptions(s.mqtt_share_group))
            # A resumed session's messages arrive right after CONNACK, ahead of the
            # SUBACK: forwarding starts before subscribing, so that however much the
            # broker sends first, it is being worked off while the SUBACK is on its way.
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._acknowledge(session, pending, gate), name="f2stream-ingest-acks")
                tasks.create_task(self._forward(session, pending), name="f2stream-ingest-forward")
                tasks.create_task(self._subscribe(session), name="f2stream-ingest-subscribe")
                tasks.create_task(session.closed(), name="f2stream-ingest-connection")
        except* (MqttError, ProduceFailed, OSError) as group:
            raise group.exceptions[0] from None
        finally:
            session.close()

    async def _subscribe(self, session: MqttSession) -> None:
        # No deadline on SUBACK and UNSUBACK: Mosquitto answers them only after
        # what it sends a resumed session first, which 2.0.11 does not bound by
        # its inflight window (after a kill mid-drain: the whole backlog, minutes
        # of reading). A dead connection still ends the session: the keepalive
        # closes it, and the wait raises.
        s = self.settings
        await session.subscribe([(f, 1) for f in subscriptions(s.mqtt_share_group)])
        if not s.mqtt_share_group:
            # A session kept from a release that shared by default still holds
            # those filters: without this, every message would arrive twice.
            await session.unsubscribe(subscriptions(_FORMER_DEFAULT_GROUP))
        self._set_connected(True)
        logger.info("MQTT session up as %s, subscribed to %s", s.mqtt_client_id, subscriptions(s.mqtt_share_group))

    async def _forward(self, session: MqttSession, pending: asyncio.Queue[_Burst]) -> None:
        # What has arrived is taken in bursts: one produce call and one
        # acknowledgement future per burst, not per message.
        received = {kind: self.metrics.mqtt_received.labels(type=kind) for kind in (*_TYPES, "other")}
        while True:
            burst = await session.messages(_BURST)
            await pending.put(await self._produce(burst, received))
            del burst  # its payloads are not kept while the next burst is awaited

    async def _produce(self, burst: list[Publish], received: dict[str, PromCounter]) -> _Burst:
        """Hand a burst to the producer; its acknowledgements wait for Kafka's answer."""
        received_at = format_time(datetime.now(UTC))
        stamp = received_at.encode()
        outputs, acks, held = [], [], 0
        kinds: dict[str, int] = {}
        devices: set[bytes] = set()
        for topic, payload, packet_id, qos, _, _ in burst:
            key = device_key(topic)
            devices.add(key)
            held += ReadGate.size_of(topic, payload)
            output = Output(
                RAW_TOPIC,
                key,
                payload,
                None,
                [("mqtt_topic", topic.encode("utf-8", "surrogateescape")), ("received_at", stamp)],
            )
            if output.size > MAX_RECORD_BYTES:
                output = self._dead_letter(key, topic, payload, received_at)
            outputs.append(output)
            if qos:
                acks.append(packet_id)
            kind = topic.partition("/")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        note_device, now = self.metrics.devices.note, time.monotonic()
        for key in devices:
            note_device(key, now)
        for kind, count in kinds.items():
            received.get(kind, received["other"]).inc(count)
        try:
            done = await self.producer.submit(outputs)
        except KafkaError as exc:
            raise ProduceFailed(f"Kafka did not take {len(outputs)} records ({_describe(exc)})") from exc
        return _Burst(acks, len(burst), held, done)

    def _dead_letter(self, key: bytes, topic: str, payload: bytes, received_at: str) -> Output:
        """The dead letter that stands in for a message too large for Kafka; acknowledged like the record."""
        value, headers = too_large_dead_letter(topic, payload, received_at)
        # Once per oversized message, not per message: the operator should hear of it.
        logger.warning("MQTT message on %.200s of %d bytes is too large for Kafka: dead-lettered", topic, len(payload))
        self.metrics.dead_letters.labels(reason="too_large").inc()
        return Output(DEAD_LETTER_TOPIC, key, value, None, headers)

    async def _acknowledge(self, session: MqttSession, pending: asyncio.Queue[_Burst], gate: ReadGate) -> None:
        produced = self.metrics.kafka_produced
        while True:
            burst = await pending.get()
            try:
                await burst.done
            except Exception as exc:
                raise ProduceFailed(f"Kafka did not take a record ({_describe(exc)})") from exc
            produced.inc(burst.messages)
            session.ack(burst.acks)  # in arrival order, one write
            gate.release(burst.held)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.metrics.mqtt_connected.set(1 if up else 0)

    async def health(self) -> Check:
        """The MQTT entry of `/health`: the session is up and its connection open right now."""
        where = str(self.connection)
        if self.connected and self._session_now is not None and self._session_now.is_open:
            return Check("mqtt", "ok", f"session up at {where}")
        return Check("mqtt", "failing", f"not connected to {where}: {self.last_error or 'connecting'}")


def _describe(exc: BaseException) -> str:
    # A wrapped error repeats its cause's repr; name the root cause instead.
    root = exc.__cause__ or exc
    return f"{root.__class__.__name__}: {root}"
