"""The ingest app: MQTT (service listener) to Kafka raw_iot_data.

Run it with `faust -A f2stream.ingest worker -l info --web-port 6067`.

Each QoS 1 message is acknowledged to the broker only after Kafka has
acknowledged the record (acks=all), and in the order the messages arrived.
If Kafka fails, the MQTT session is dropped without acknowledging, and the
broker re-delivers from the persistent session on reconnect; duplicates
that this causes are absorbed by the database's primary key.

A message Kafka refuses for its size (above the producer's
`max_request_size`, 1 MB) would be refused again on every re-delivery: it
goes to iot_dead_letter instead (reason `too_large`, its first
:data:`TOO_LARGE_KEEP_BYTES`, its full size in the `payload_bytes` header),
and is acknowledged once Kafka has the dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import time
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError
from mode import Service

from f2stream import health, web
from f2stream.appbase import F2App, load_settings
from f2stream.deadletter import dead_letter_headers
from f2stream.decode import format_time
from f2stream.health import Check, HealthChecks
from f2stream.kafka import DEAD_LETTER_TOPIC, RAW_TOPIC
from f2stream.metrics import Metrics
from f2stream.settings import Settings

__all__ = [
    "TOO_LARGE_KEEP_BYTES",
    "MqttIngest",
    "ProduceFailed",
    "app",
    "is_too_large",
    "message_identity",
    "subscriptions",
    "too_large_dead_letter",
]

logger = logging.getLogger(__name__)

_TYPES = ("cmnd", "stat", "tele")
_BACKOFF_MAX_S = 30.0
#: How much of an oversized payload its dead letter keeps: enough to see what
#: it was, far below any Kafka limit (the MQTT topic, up to 64 KB, is a header).
TOO_LARGE_KEEP_BYTES: Final = 64 * 1024


def subscriptions(share_group: str) -> list[str]:
    """The topic filters of the ingest session; shared when a group is set."""
    prefix = f"$share/{share_group}/" if share_group else ""
    return [f"{prefix}{kind}/#" for kind in _TYPES]


def device_key(topic: str) -> bytes:
    """The Kafka key of a message: its topic's device level (validated later, by decode)."""
    parts = topic.split("/", 2)
    return parts[1].encode() if len(parts) > 1 else b""


def is_too_large(exc: BaseException) -> bool:
    """Whether Kafka refused a record for its size; faust wraps aiokafka's error, so causes count too."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, MessageSizeTooLargeError | RecordTooLargeError):
            return True
        seen = seen.__cause__
    return False


def message_identity(topic: str, payload: bytes) -> str:
    """A stable identity of an MQTT message that has no Kafka offset: the same on every re-delivery.

    A device's payload carries its own timestamp, so topic and bytes tell
    messages apart; a re-delivered copy has the same identity.
    """
    digest = hashlib.sha256(topic.encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(payload)
    return f"mqtt:sha256:{digest.hexdigest()}"


def too_large_dead_letter(
    topic: str, payload: bytes, received_at: str, cause: BaseException
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter of a message Kafka refused for its size: its start, and headers saying why."""
    detail = (
        f"{len(payload)} bytes, more than Kafka takes ({_describe(cause)}); the value keeps the first "
        f"{TOO_LARGE_KEEP_BYTES}"
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


class ProduceFailed(Exception):
    """Kafka did not take a record; the MQTT session is dropped so the broker re-delivers."""


class MqttIngest(Service):
    """One persistent MQTT session feeding raw_iot_data, reconnecting with capped random backoff."""

    def __init__(self, app: F2App, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.connected = False
        self.last_error: str | None = None
        self._paho: paho.Client | None = None

    @Service.task
    async def _run(self) -> None:
        backoff, first = 1.0, True
        while not self.should_stop:
            if not first:
                self.metrics.mqtt_reconnects.inc()
            first = False
            try:
                await self._session()
            except (aiomqtt.MqttError, ProduceFailed, OSError) as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning(
                    "MQTT session to %s:%d ended: %s", self.settings.mqtt_host, self.settings.mqtt_port, self.last_error
                )
            finally:
                if self.connected:
                    # A session that was up ends with an error too: start the backoff over,
                    # or a broker restart after a few earlier ones waits up to 30 s. While we
                    # are away, Mosquitto drops what arrives for a $share subscription after
                    # its own restart (docs/reliability.md): come back fast.
                    backoff = 1.0
                self._set_connected(False)
            await self.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _session(self) -> None:
        s = self.settings
        client = aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=None if s.mqtt_password is None else s.mqtt_password.reveal(),
            identifier=s.mqtt_client_id,
            clean_session=False,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=30,
            timeout=10,
        )
        # aiomqtt acknowledges QoS 1 on arrival and exposes no manual ack; its
        # paho client does, so we switch it on there and ack after Kafka.
        mqtt: paho.Client = client._client  # noqa: SLF001
        mqtt.manual_ack_set(True)
        self._paho = mqtt
        producer = await self.app.maybe_start_producer()
        pending: asyncio.Queue[tuple[int, int, asyncio.Future[Any]]] = asyncio.Queue(s.mqtt_max_inflight)
        async with client:
            _set_nodelay(mqtt.socket())
            await client.subscribe([(f, 1) for f in subscriptions(s.mqtt_share_group)])
            self._set_connected(True)
            logger.info("MQTT session up as %s, subscribed to %s", s.mqtt_client_id, subscriptions(s.mqtt_share_group))
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._acknowledge(mqtt, pending), name="f2stream-ingest-acks")
                    tasks.create_task(self._forward(client, producer, pending), name="f2stream-ingest-forward")
            except* (aiomqtt.MqttError, ProduceFailed, OSError) as group:
                raise group.exceptions[0] from None

    async def _forward(
        self, client: aiomqtt.Client, producer: Any, pending: asyncio.Queue[tuple[int, int, asyncio.Future[Any]]]
    ) -> None:
        # Label children resolved once, not per message; the label set is bounded.
        received = {kind: self.metrics.mqtt_received.labels(type=kind) for kind in (*_TYPES, "other")}
        note_device, clock = self.metrics.devices.note, time.monotonic
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            received_at = format_time(datetime.now(UTC))
            key = device_key(topic)
            note_device(key, clock())
            try:
                future = await producer.send(
                    RAW_TOPIC,
                    key,
                    payload,
                    None,
                    None,
                    [("mqtt_topic", topic.encode()), ("received_at", received_at.encode())],
                )
            except ProducerSendError as exc:
                if not is_too_large(exc):
                    raise ProduceFailed(f"Kafka did not take a record ({_describe(exc)})") from exc
                future = await self._dead_letter(producer, key, topic, payload, received_at, exc)
            received.get(topic.partition("/")[0], received["other"]).inc()
            await pending.put((message.mid, message.qos, future))

    async def _dead_letter(
        self, producer: Any, key: bytes, topic: str, payload: bytes, received_at: str, cause: BaseException
    ) -> asyncio.Future[Any]:
        """Send a too-large message's dead letter; its future stands in for the record's."""
        value, headers = too_large_dead_letter(topic, payload, received_at, cause)
        # Once per oversized message, not per message: the operator should hear of it.
        logger.warning("MQTT message on %.200s of %d bytes is too large for Kafka: dead-lettered", topic, len(payload))
        self.metrics.dead_letters.labels(reason="too_large").inc()
        try:
            future: asyncio.Future[Any] = await producer.send(DEAD_LETTER_TOPIC, key, value, None, None, headers)
        except ProducerSendError as exc:
            raise ProduceFailed(f"Kafka did not take a dead letter ({_describe(exc)})") from exc
        return future

    async def _acknowledge(
        self, mqtt: paho.Client, pending: asyncio.Queue[tuple[int, int, asyncio.Future[Any]]]
    ) -> None:
        produced = self.metrics.kafka_produced
        while True:
            mid, qos, future = await pending.get()
            try:
                await future
            except Exception as exc:
                raise ProduceFailed(f"Kafka did not take a record ({_describe(exc)})") from exc
            produced.inc()
            if qos > 0:
                mqtt.ack(mid, qos)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.metrics.mqtt_connected.set(1 if up else 0)

    async def health(self) -> Check:
        """The MQTT entry of `/health`: the session is up and its socket connected right now."""
        where = f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"
        if self.connected and self._paho is not None and self._paho.is_connected():
            return Check("mqtt", "ok", f"session up at {where}")
        return Check("mqtt", "failing", f"not connected to {where}: {self.last_error or 'connecting'}")


def _describe(exc: BaseException) -> str:
    # faust's ProducerSendError repeats its cause's repr; name the root cause instead.
    root = exc.__cause__ or exc
    return f"{root.__class__.__name__}: {root}"


def _set_nodelay(sock: Any) -> None:
    # paho never sets TCP_NODELAY; without it every PUBACK can wait on Nagle.
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


settings = load_settings()
app = F2App("f2stream-ingest", settings, web_port=6067)
metrics = Metrics()
ingest = MqttIngest(app, settings, metrics)
app.service(ingest)  # type: ignore[arg-type]  # faust takes instances too; its stub says classes


async def _kafka() -> Check:
    return await health.kafka_check(settings.kafka_bootstrap)


health_checks = HealthChecks({"kafka": _kafka, "mqtt": ingest.health})
web.register(app, metrics, health_checks)
