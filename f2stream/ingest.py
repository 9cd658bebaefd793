"""The ingest app: the MQTT ingest stage, its health checks and web views.

Run it with `faust -A f2stream.ingest worker -l info --web-port 6067`.
The stage itself is :mod:`f2stream.agents.ingest`.
"""

from __future__ import annotations

from f2stream import allocator, health
from f2stream.agents.ingest import MqttIngest
from f2stream.appbase import F2App, load_settings
from f2stream.health import Check, HealthChecks
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import INGEST_APP_ID
from f2stream.metrics import Metrics
from f2stream.web import pages

__all__ = ["app", "health_checks", "ingest", "metrics", "settings"]

# Large MQTT payloads are mapped and unmapped, not left in the heap (f2stream.allocator).
allocator.pin_mmap_threshold()
settings = load_settings()
kafka = kafka_options(settings)
app = F2App(INGEST_APP_ID, settings, web_port=6067)
metrics = Metrics()
ingest = MqttIngest(app, settings, metrics)
app.service(ingest)  # type: ignore[arg-type]  # faust takes instances too; its stub says classes


async def _kafka() -> Check:
    return await health.kafka_check(kafka)


health_checks = HealthChecks({"kafka": _kafka, "mqtt": ingest.health})
pages.register(app, metrics, health_checks)
