"""f2stream.agents.ingest: the checks and the supervision around the MQTT session (no broker needed)."""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
import faust
import paho.mqtt.client as paho
import pytest

from f2stream.agents.ingest import ManualAckUnavailable, MqttIngest, manual_ack_client
from f2stream.metrics import Metrics
from f2stream.settings import Settings

# The stage without the ingest app's wiring: a bare app, the default settings.
ingest_app = faust.App("test-ingest")
ingest_settings = Settings()


async def test_the_installed_aiomqtt_and_paho_take_manual_ack() -> None:
    client = aiomqtt.Client("localhost")
    mqtt = manual_ack_client(client)
    assert isinstance(mqtt, paho.Client)
    assert mqtt._manual_ack is True  # the flag paho reads when a PUBLISH arrives


async def test_a_client_without_its_paho_client_is_refused() -> None:
    client = aiomqtt.Client("localhost")
    client._client = object()  # type: ignore[assignment]  # as if a release renamed it
    with pytest.raises(ManualAckUnavailable, match="pin aiomqtt"):
        manual_ack_client(client)


async def test_a_paho_that_ignores_manual_ack_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho.Client, "manual_ack_set", lambda self, on: None)
    with pytest.raises(ManualAckUnavailable, match="pin paho-mqtt"):
        manual_ack_client(aiomqtt.Client("localhost"))


async def test_ingest_refuses_to_start_without_manual_ack_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(paho.Client, "manual_ack_set", lambda self, on: None)
    service = MqttIngest(ingest_app, ingest_settings, Metrics())
    with caplog.at_level(logging.CRITICAL, logger="f2stream.agents.ingest"), pytest.raises(SystemExit) as exited:
        await service.on_start()
    assert exited.value.code == 2
    [record] = [r for r in caplog.records if r.name == "f2stream.agents.ingest"]
    assert record.getMessage().startswith("Ingest refuses to run: paho-mqtt ")
    assert "\n" not in record.getMessage()


async def test_ingest_starts_with_manual_ack() -> None:
    await MqttIngest(ingest_app, ingest_settings, Metrics()).on_start()


async def test_a_session_that_fails_unexpectedly_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    service = MqttIngest(ingest_app, ingest_settings, Metrics())
    sessions = 0

    async def session() -> None:
        nonlocal sessions
        sessions += 1
        if sessions == 1:
            raise AssertionError("a bug in a library under the session")
        service._stopped.set()  # the worker stops: the loop ends

    monkeypatch.setattr(service, "_session", session)
    await asyncio.wait_for(MqttIngest._run(service), timeout=10)  # type: ignore[call-arg, arg-type]
    assert sessions == 2
    assert service.last_error == "AssertionError: a bug in a library under the session"
    assert not service.connected
