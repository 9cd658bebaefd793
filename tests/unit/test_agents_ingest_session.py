"""f2stream.agents.ingest: the supervision around the MQTT session (no broker needed)."""

from __future__ import annotations

import asyncio

import faust
import pytest

from f2stream.agents.ingest import MqttIngest
from f2stream.metrics import Metrics
from f2stream.settings import Settings

# The stage without the ingest app's wiring: a bare app, the default settings.
ingest_app = faust.App("test-ingest")
ingest_settings = Settings()


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
