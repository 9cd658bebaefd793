"""Web views both workers serve: `/metrics` (Prometheus), `/health` and `/livez`."""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from f2stream.health import Check, HealthChecks, overall
from f2stream.metrics import Metrics

__all__ = ["Check", "register"]


def register(app: faust.App, metrics: Metrics, checks: HealthChecks, services: HealthChecks | None = None) -> None:
    """Serve `/metrics` (Faust's and ours, one registry), `/health` (200 unless failing), `/livez`.

    With `services` (the pipeline worker: every service of the running
    system), `/health` also carries their summary, and `/health/{service}`
    answers for one of them (503 when it is failing, 404 for an unknown name).
    """
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry)

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        results = await checks.run()
        status = overall(results)  # this worker's own state: the services are a summary beside it
        body: dict[str, Any] = {
            "status": status,
            "app": app.conf.id,
            "checks": {c.name: {"status": c.status, "detail": c.detail} for c in results},
        }
        if services is not None:
            body["services"] = {c.name: {"status": c.status, "detail": c.detail} for c in await services.run()}
        return self.json(body, status=503 if status == "failing" else 200)

    if services is not None:

        @app.page("/health/{service}")
        async def service_health(self: View, request: Request, service: str) -> Response:
            if service not in services.checks:
                known = ", ".join(sorted(services.checks))
                return self.json({"error": f"no service {service!r}; services: {known}"}, status=404)
            found = {c.name: c for c in await services.run()}[service]
            body = {"service": service, "status": found.status, "detail": found.detail}
            return self.json(body, status=503 if found.status == "failing" else 200)

    @app.page("/livez")
    async def livez(self: View, request: Request) -> Response:
        # Liveness: the event loop answers. No dependency is touched here.
        return self.json({"status": "alive"})
