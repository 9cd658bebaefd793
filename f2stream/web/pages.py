"""Web views both workers serve: `/metrics` (Prometheus), `/health` and `/livez`."""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from f2stream.health import Check, HealthChecks, overall
from f2stream.metrics import Metrics

__all__ = ["Check", "register"]


def register(app: faust.App, metrics: Metrics, checks: HealthChecks) -> None:
    """Serve `/metrics` (Faust's and ours, one registry), `/health` (200 unless failing), `/livez`."""
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry)

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        results = await checks.run()
        status = overall(results)
        body: dict[str, Any] = {
            "status": status,
            "app": app.conf.id,
            "checks": {c.name: {"status": c.status, "detail": c.detail} for c in results},
        }
        return self.json(body, status=503 if status == "failing" else 200)

    @app.page("/livez")
    async def livez(self: View, request: Request) -> Response:
        # Liveness: the event loop answers. No dependency is touched here.
        return self.json({"status": "alive"})
