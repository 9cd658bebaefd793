"""MQTT over WebSockets on the running stack (F2_MQTT_WS_PORT): paho's websockets transport
through the stack's bridge (websocat) to the real Mosquitto.

Who may use it: password accounts only (browsers cannot present a device
certificate). The read-only dashboard account `f2-dashboard` receives live
telemetry that a device publishes over mTLS, and whatever it publishes is
dropped by the broker. Mosquitto 2.0.11 acknowledges a forbidden publish (and
grants a forbidden subscription) without complaint, so "cannot publish" is
proved by a subscriber that hears a later marker message and never the
dashboard's.
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import ssl
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from harness import Stack
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from f2stream.pki import PkiPaths, issue_device_certificate
from f2stream.simulator import device_ids

pytestmark = pytest.mark.integration

TIMEOUT_S = 15


class Client:
    """A paho client with its loop in a thread: CONNACK and messages land in queues."""

    def __init__(self, *, transport: str = "tcp", username: str | None = None, password: str | None = None) -> None:
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:12]}", transport=transport
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.paho.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.put(reason)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))

    def connect(self, port: int) -> ReasonCode:
        """Connect to 127.0.0.1:`port`; the broker's CONNACK reason."""
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        return self.connacks.get(timeout=TIMEOUT_S)

    def subscribe(self, *topics: str) -> None:
        subscribed: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.paho.on_subscribe = lambda _c, _u, _mid, codes, _p: subscribed.put(codes)
        self.paho.subscribe([(topic, 1) for topic in topics])
        codes = subscribed.get(timeout=TIMEOUT_S)
        assert not any(code.is_failure for code in codes), codes

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; returns on the PUBACK (which Mosquitto sends even for a publish it drops)."""
        info = self.paho.publish(topic, payload, qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next_message(self, timeout_s: float = TIMEOUT_S) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout_s)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def secret(stack: Stack, name: str) -> str:
    return (Path(stack.env["F2_VAR_DIR"]) / "secrets" / name).read_text().splitlines()[0]


def ws_port(stack: Stack) -> int:
    return int(stack.env["F2_MQTT_WS_PORT"])


def dashboard(stack: Stack, password: str | None = None) -> Client:
    assert stack.env["F2_MQTT_DASHBOARD_USERNAME"] == "f2-dashboard"
    if password is None:
        password = Path(stack.env["F2_MQTT_DASHBOARD_PASSWORD_FILE"]).read_text().splitlines()[0]
    return Client(transport="websockets", username="f2-dashboard", password=password)


def device(stack: Stack, device_id: str) -> Client:
    """A device on the mTLS listener with a certificate of the stack's CA."""
    paths = PkiPaths(stack.settings.pki_dir)
    issue_device_certificate(paths.root, device_id)
    client = Client()
    context = ssl.create_default_context(cafile=str(paths.ca_cert))
    context.load_cert_chain(str(paths.device_cert(device_id)), str(paths.device_key(device_id)))
    client.paho.tls_set_context(context)
    return client


def test_the_bridge_answers_the_mqtt_subprotocol(stack: Stack) -> None:
    """Browsers (MQTT.js) drop a connection whose reply lacks the subprotocol they asked for."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{ws_port(stack)}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", ws_port(stack)), timeout=TIMEOUT_S) as sock:
        sock.sendall(request.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {reply!r}"
            reply += chunk
    head = reply.split(b"\r\n\r\n")[0].decode().lower().splitlines()
    assert head[0].startswith("http/1.1 101"), head
    assert "sec-websocket-protocol: mqtt" in head, head


def test_the_dashboard_receives_live_telemetry_from_a_device(stack: Stack) -> None:
    (device_id,) = device_ids(1, 7100)
    viewer = dashboard(stack)
    sender = device(stack, device_id)
    try:
        assert viewer.connect(ws_port(stack)) == 0
        viewer.subscribe("stat/#", "tele/#", "cmnd/#")
        assert sender.connect(stack.settings.mqtt_tls_port) == 0
        sent = []
        for kind, component in (("stat", "strike-1"), ("tele", "reader-1"), ("cmnd", "sensor-3")):
            topic = f"{kind}/{device_id}/access-control-mode/1/{component}"
            payload = f'{{"timestamp": "2024-01-01 00:00:00.000000", "n": "{uuid.uuid4()}"}}'.encode()
            sender.publish(topic, payload)
            sent.append((topic, payload))
        assert [viewer.next_message() for _ in sent] == sent
    finally:
        sender.close()
        viewer.close()


def test_the_dashboard_cannot_publish(stack: Stack) -> None:
    (device_id,) = device_ids(1, 7200)
    topic = f"stat/{device_id}/access-control-mode/1/strike-1"
    # The monitor account reads every topic on the service listener.
    monitor = Client(username="f2-monitor", password=secret(stack, "mqtt_monitor_password"))
    simulator = Client(username="f2-simulator", password=secret(stack, "mqtt_simulator_password"))
    viewer = dashboard(stack)
    try:
        assert monitor.connect(stack.settings.mqtt_port) == 0
        monitor.subscribe("#")
        assert viewer.connect(ws_port(stack)) == 0
        viewer.subscribe("stat/#")
        for forbidden in (topic, "dashboard/anything"):
            viewer.publish(forbidden, b"from the dashboard")  # PUBACKed, then dropped
        # A publish that is allowed, after the forbidden ones: once it arrives, they would have too.
        assert simulator.connect(stack.settings.mqtt_port) == 0
        simulator.publish(topic, b"marker")
        assert monitor.next_message() == (topic, b"marker")
        assert viewer.next_message() == (topic, b"marker")
        with pytest.raises(queue.Empty):
            monitor.next_message(timeout_s=1)
        assert viewer.messages.empty()
    finally:
        for client in (simulator, viewer, monitor):
            client.close()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("f2-dashboard", "not-the-password"),
        ("f2-ingest", "not-the-password"),
        # a device's identity: devices authenticate by certificate, on the mTLS listener only
        ("f2-02f200007300", "any"),
        (None, None),  # anonymous
    ],
    ids=["dashboard-wrong-password", "service-wrong-password", "device-id", "anonymous"],
)
def test_the_websocket_port_refuses_bad_logins(stack: Stack, username: str | None, password: str | None) -> None:
    client = Client(transport="websockets", username=username, password=password)
    try:
        reason = client.connect(ws_port(stack))
    finally:
        client.close()
    assert reason.is_failure, reason
    assert reason.getName() in ("Bad user name or password", "Not authorized"), reason
