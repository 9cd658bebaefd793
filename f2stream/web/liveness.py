"""Liveness views: `/devices/{device_id}/status` and `/devices?state=S` (paged)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from f2stream.agents.liveness import LivenessTracker
from f2stream.liveness import STATES
from f2stream.mqtt_topics import canonical_device_id
from f2stream.records import format_time
from f2stream.storage.status import StatusWriter

__all__ = ["MAX_PAGE", "page_query", "register", "row_answer"]

MAX_PAGE = 1000


def page_query(query: Mapping[str, str]) -> tuple[str | None, str, int]:
    """`state`, `after` and `limit` of a `/devices` request.

    Raises:
        ValueError: a value is not one the view accepts (the message says which).
    """
    state = query.get("state") or None
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    after = query.get("after", "")
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise ValueError(f"limit must be a whole number, not {query.get('limit')!r}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    return state, after, limit


def row_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `device_status` row as the views show it."""
    return {
        "device_id": row["device_id"],
        "state": row["state"],
        "since": format_time(row["since"]),
        "last_seen": format_time(row["last_seen"]) if row["last_seen"] else None,
        "reason": row["reason"],
    }


def register(app: faust.App, tracker: LivenessTracker | None, writer: StatusWriter) -> None:
    """Serve the liveness views: this worker's memory for the devices it owns, the database for the others."""

    @app.page("/devices/{device_id}/status")
    async def device_status(self: View, request: Request, device_id: str) -> Response:
        """The device's liveness state, last seen time and counts since its last change."""
        try:
            device = canonical_device_id(device_id)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        held = tracker.live.get(device) if tracker is not None else None
        if held is not None:
            return self.json({**held.as_dict(), "source": "worker"})
        try:
            row = await writer.one(device)
        except Exception as exc:  # noqa: BLE001  # answer 503, never a traceback
            return self.json({"error": f"time-series database unavailable ({exc.__class__.__name__})"}, status=503)
        if row is None:
            return self.json({"device_id": device, "error": "no liveness known for this device"}, status=404)
        return self.json({**row_answer(row), "source": "database"})

    @app.page("/devices")
    async def devices(self: View, request: Request) -> Response:
        """Devices by id with their liveness, `?state=silent` to filter, `&after=<last id>&limit=N` to page."""
        try:
            state, after, limit = page_query(request.query)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        try:
            rows = await writer.page(state, after, limit)
        except Exception as exc:  # noqa: BLE001
            return self.json({"error": f"time-series database unavailable ({exc.__class__.__name__})"}, status=503)
        body: dict[str, Any] = {"devices": [row_answer(r) for r in rows]}
        if len(rows) == limit:
            body["next"] = (
                f"/devices?{'state=' + state + '&' if state else ''}after={rows[-1]['device_id']}&limit={limit}"
            )
        return self.json(body)
