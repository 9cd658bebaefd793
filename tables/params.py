"""The device-parameter cache: loaded from PostgreSQL, reloaded on change.

Agents read :attr:`ParameterCache.index` from memory and never wait on the
database per message. A trigger (migration params/002) sends a notification
on every change; the cache LISTENs and reloads within moments, and also
reloads every `params_refresh_s` and after every reconnect, because
notifications sent while nobody listened are lost. While PostgreSQL is down
the last loaded index stays in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from mode import Service

from f2stream.db import connect, describe_dsn
from f2stream.parameters import Parameter, ParameterIndex
from f2stream.settings import Settings

__all__ = ["CHANNEL", "ParameterCache", "build_index"]

logger = logging.getLogger(__name__)

CHANNEL = "f2stream_parameters"
_SELECT = """
SELECT device_id, mode, component_type, component_number, encoding, unit, scale_factor
FROM device_parameters
"""
_RETRY_S = 2.0
_DEBOUNCE_S = 0.05


def build_index(rows: list[Any]) -> tuple[ParameterIndex, int]:
    """Index the valid rows; return the index and how many rows were invalid (logged)."""
    parameters, invalid = [], 0
    for row in rows:
        try:
            parameters.append(Parameter.from_row(row))
        except ValueError as exc:
            invalid += 1
            logger.warning("device_parameters row for %s skipped: %s", row["device_id"], exc)
    return ParameterIndex(parameters), invalid


class ParameterCache(Service):
    """Holds the current :class:`ParameterIndex` and keeps it in step with the database."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.index = ParameterIndex()
        self.loaded_at: float | None = None
        self.last_error: str | None = None
        self._ready = asyncio.Event()

    async def wait_ready(self) -> None:
        """Wait until the first load succeeded."""
        await self._ready.wait()

    @Service.task
    async def _follow(self) -> None:
        where = describe_dsn(self.settings.params_dsn)
        while not self.should_stop:
            try:
                await self._listen_and_reload()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning(
                    "Device parameters from %s unavailable (%s); %s",
                    where,
                    self.last_error,
                    "decoding goes on with the last ones" if self._ready.is_set() else "decoding waits",
                )
            await self.sleep(_RETRY_S)

    async def _listen_and_reload(self) -> None:
        changed = asyncio.Event()
        conn = await connect(self.settings.params_dsn, self.settings.params_password)
        try:
            await conn.add_listener(CHANNEL, lambda *_: changed.set())
            while not self.should_stop:
                changed.clear()
                await self._reload(conn)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=self.settings.params_refresh_s)
                await asyncio.sleep(_DEBOUNCE_S)  # one reload for a burst of changes
        finally:
            await conn.close()

    async def _reload(self, conn: asyncpg.Connection) -> None:
        index, invalid = build_index(await conn.fetch(_SELECT))
        first = not self._ready.is_set()
        self.index, self.loaded_at, self.last_error = index, time.time(), None
        self._ready.set()
        logger.log(
            logging.INFO if first else logging.DEBUG,
            "Loaded %d parameters of %d devices (%d invalid rows skipped)",
            index.size,
            index.device_count,
            invalid,
        )
