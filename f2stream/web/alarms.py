"""Alarm views: `/alarms?state=active` and `/devices/{device_id}/alarms` (paged like `/devices`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import faust
from faust.web import Request, Response, View

from f2stream.mqtt_topics import canonical_device_id
from f2stream.settings import Settings
from f2stream.storage.alarms import LIST_STATES, list_alarms
from f2stream.storage.db import connect
from f2stream.web.liveness import page_query

__all__ = ["AlarmQuery", "alarm_query", "next_page", "register"]

#: `state`, `device` (canonical, or None), `after` and `limit` of a request.
AlarmQuery = tuple[str, str | None, str, int]


def alarm_query(query: Mapping[str, str], device: str | None = None) -> AlarmQuery:
    """The parameters of an `/alarms` request; `device` from the path wins over the query's.

    Raises:
        ValueError: a value is not one the view accepts (the message says which).
    """
    state = query.get("state") or "active"
    if state not in LIST_STATES:
        raise ValueError(f"state must be one of {', '.join(LIST_STATES)}, not {state!r}")
    text = device if device is not None else query.get("device") or None
    canonical = canonical_device_id(text) if text is not None else None
    # after and limit as /devices takes them (its state is another set: left out)
    _, after, limit = page_query({k: v for k, v in query.items() if k in ("after", "limit")})
    return state, canonical, after, limit


def next_page(path: str, query: AlarmQuery, rows: list[dict[str, Any]], *, with_device: bool) -> str | None:
    """The link to the page after `rows`, or None when it was the last (fewer rows than the limit)."""
    state, device, _, limit = query
    if len(rows) < limit:
        return None
    params = {"state": state, **({"device": device} if with_device and device else {})}
    return f"{path}?{urlencode({**params, 'after': rows[-1]['alarm_id'], 'limit': limit})}"


def register(app: faust.App, settings: Settings) -> None:
    """Serve the alarm views from the time-series database."""

    async def answer(view: View, path: str, query: AlarmQuery, *, with_device: bool) -> Response:
        state, device, after, limit = query
        try:
            conn = await connect(settings.timeseries_dsn, settings.timeseries_password, timeout_s=3.0)
            try:
                rows = await list_alarms(conn, state=state, device=device, after=after, limit=limit)
            finally:
                await conn.close()
        except Exception as exc:  # noqa: BLE001  # answer 503, never a traceback
            return view.json({"error": f"time-series database unavailable ({exc.__class__.__name__})"}, status=503)
        body: dict[str, Any] = {"device_id": device} if not with_device else {}
        body["alarms"] = rows
        link = next_page(path, query, rows, with_device=with_device)
        if link is not None:
            body["next"] = link
        return view.json(body)

    @app.page("/alarms")
    async def alarms(self: View, request: Request) -> Response:
        """Alarms by id, active ones by default: `?state=all|raised|acknowledged|cleared`, `&device=<id>`,
        `&after=<last alarm id>&limit=N` to page."""
        try:
            query = alarm_query(request.query)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return await answer(self, "/alarms", query, with_device=True)

    @app.page("/devices/{device_id}/alarms")
    async def device_alarms(self: View, request: Request, device_id: str) -> Response:
        """The device's alarms by id, active ones by default; `?state=`, `after` and `limit` as `/alarms`."""
        try:
            query = alarm_query(request.query, device_id)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return await answer(self, f"/devices/{query[1]}/alarms", query, with_device=False)
