"""The ingest app: MQTT (service listener) to Kafka raw_iot_data.

Run it with `faust -A f2stream.ingest worker -l info --web-port 6067`.

Each QoS 1 message is acknowledged to the broker only after Kafka has
acknowledged the record (acks=all), and in the order the messages arrived.
If Kafka fails, the MQTT session is dropped without acknowledging, and the
broker re-delivers from the persistent session on reconnect; duplicates
that this causes are absorbed by the database's primary key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from mode import Service

from f2stream import health, web
from f2stream.appbase import F2App, load_settings
from f2stream.decode import format_time
from f2stream.health import Check, HealthChecks
from f2stream.kafka import RAW_TOPIC
from f2stream.metrics import Metrics
from f2stream.settings import Settings

__all__ = ["MqttIngest", "app", "subscriptions"]

logger = logging.getLogger(__name__)

_TYPES = ("cmnd", "stat", "tele")
_BACKOFF_MAX_S = 30.0


def subscriptions(share_group: str) -> list[str]:
    """The topic filters of the ingest session; shared when a group is set."""
    prefix = f"$share/{share_group}/" if share_group else ""
    return [f"{prefix}{kind}/#" for kind in _TYPES]


def device_key(topic: str) -> bytes:
    """The Kafka key of a message: its topic's device level (validated later, by decode)."""
    parts = topic.split("/", 2)
    return parts[1].encode() if len(parts) > 1 else b""


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
                backoff = 1.0
            except (aiomqtt.MqttError, ProduceFailed, OSError) as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning(
                    "MQTT session to %s:%d ended: %s", self.settings.mqtt_host, self.settings.mqtt_port, self.last_error
                )
            finally:
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
            future = await producer.send(
                RAW_TOPIC,
                key,
                payload,
                None,
                None,
                [("mqtt_topic", topic.encode()), ("received_at", received_at.encode())],
            )
            received.get(topic.partition("/")[0], received["other"]).inc()
            await pending.put((message.mid, message.qos, future))

    async def _acknowledge(
        self, mqtt: paho.Client, pending: asyncio.Queue[tuple[int, int, asyncio.Future[Any]]]
    ) -> None:
        produced = self.metrics.kafka_produced
        while True:
            mid, qos, future = await pending.get()
            try:
                await future
            except Exception as exc:
                raise ProduceFailed(f"Kafka did not take a record ({exc.__class__.__name__}: {exc})") from exc
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
