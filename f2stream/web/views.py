"""Device views of the pipeline worker: what the parameter table holds, and the newest values."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from f2stream.mqtt_topics import canonical_device_id
from f2stream.records import format_time
from f2stream.settings import Settings
from f2stream.storage.db import connect
from f2stream.tables.parameters import ParameterTable

__all__ = ["latest_points", "parameters_answer", "register"]

# The newest row by device time of each data point. DISTINCT ON would read and
# sort all of the device's history (387 ms for 36,000 rows, docs/performance.md);
# this walks the primary key instead: one probe to find each data point after
# the last, one backward probe for its newest time, O(data points) either way.
_LATEST = """
WITH RECURSIVE points AS (
    (SELECT mode, connector, component, data_point FROM iot_measurements
     WHERE device_id = $1
     ORDER BY mode, connector, component, data_point LIMIT 1)
    UNION ALL
    SELECT n.mode, n.connector, n.component, n.data_point
    FROM points p, LATERAL (
        SELECT mode, connector, component, data_point FROM iot_measurements
        WHERE device_id = $1
          AND (mode, connector, component, data_point) > (p.mode, p.connector, p.component, p.data_point)
        ORDER BY mode, connector, component, data_point LIMIT 1) n
)
SELECT newest.*
FROM points p, LATERAL (
    SELECT time, mode, connector, component, data_point, value, text_value, unit, param_version, received_at
    FROM iot_measurements m
    WHERE m.device_id = $1 AND m.mode = p.mode AND m.connector = p.connector
      AND m.component = p.component AND m.data_point = p.data_point
    ORDER BY m.time DESC LIMIT 1) newest
ORDER BY mode, connector, component, data_point
"""


def parameters_answer(device_text: str, lookup: Callable[[str], Any]) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for `/devices/{device_id}/parameters`; `lookup` reads the table."""
    try:
        device = canonical_device_id(device_text)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    current = lookup(device)
    if current is None:
        return 404, {"device_id": device, "error": "no parameters for this device"}
    return 200, {"device_id": device, "version": current.version, "parameters": current.parameters}


def latest_points(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The body's `data_points` from the newest row of each data point."""
    return [
        {
            "time": format_time(r["time"]),
            "mode": r["mode"],
            "connector": r["connector"],
            "component": r["component"],
            "data_point": r["data_point"],
            "value": r["value"],
            "text_value": r["text_value"],
            "unit": r["unit"],
            "param_version": r["param_version"],
            "received_at": format_time(r["received_at"]),
        }
        for r in rows
    ]


def register(app: faust.App, settings: Settings, params: ParameterTable) -> None:
    """Serve `/devices/{device_id}/parameters` and `/devices/{device_id}/latest`."""

    @app.page("/devices/{device_id}/parameters")
    async def device_parameters(self: View, request: Request, device_id: str) -> Response:
        """The device's parameters as the parameter table holds them, with their version."""
        status, body = parameters_answer(device_id, params.parameter_set)
        return self.json(body, status=status)

    @app.page("/devices/{device_id}/latest")
    async def device_latest(self: View, request: Request, device_id: str) -> Response:
        """The newest decoded value of each of the device's data points."""
        try:
            device = canonical_device_id(device_id)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        try:
            conn = await connect(settings.timeseries_dsn, settings.timeseries_password, timeout_s=3.0)
        except Exception as exc:  # noqa: BLE001  # answer 503, never a traceback
            return self.json({"error": f"time-series database unavailable ({exc.__class__.__name__})"}, status=503)
        try:
            rows = await conn.fetch(_LATEST, device)
        finally:
            await conn.close()
        return self.json({"device_id": device, "data_points": latest_points(rows)})
