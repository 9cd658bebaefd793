"""Web views both workers serve: `/metrics` (Prometheus) and `/health`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from f2stream.metrics import Metrics

__all__ = ["Check", "register"]

Status = Literal["ok", "degraded", "failing"]
_RANK: dict[Status, int] = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """The state of one dependency, as `/health` reports it (never a secret)."""

    name: str
    status: Status
    detail: str


def overall(checks: list[Check]) -> Status:
    """The worst status of all checks."""
    worst: Status = "ok"
    for check in checks:
        if _RANK[check.status] > _RANK[worst]:
            worst = check.status
    return worst


def register(app: faust.App, metrics: Metrics, checks: Callable[[], list[Check]]) -> None:
    """Serve `/metrics` (Faust's and ours, one registry) and `/health` (200 unless failing)."""
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry)

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        results = checks()
        status = overall(results)
        body: dict[str, Any] = {
            "status": status,
            "app": app.conf.id,
            "checks": {c.name: {"status": c.status, "detail": c.detail} for c in results},
        }
        return self.json(body, status=503 if status == "failing" else 200)

    @app.page("/livez")
    async def livez(self: View, request: Request) -> Response:
        return self.json({"status": "alive"})
