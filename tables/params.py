"""The device-parameter cache: loaded from PostgreSQL, refreshed in the background.

Agents read :attr:`ParameterCache.index` from memory and never wait on the
database per message. While PostgreSQL is down the last loaded index stays
in use.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mode import Service

from f2stream.db import connect, describe_dsn
from f2stream.parameters import Parameter, ParameterIndex
from f2stream.settings import Settings

__all__ = ["ParameterCache", "load_parameters"]

logger = logging.getLogger(__name__)

_SELECT = """
SELECT device_id, mode, component_type, component_number, encoding, unit, scale_factor
FROM device_parameters
"""
_FIRST_LOAD_RETRY_S = 2.0


async def load_parameters(settings: Settings) -> tuple[ParameterIndex, int]:
    """Read every parameter row; return the index and how many rows were invalid."""
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        rows = await conn.fetch(_SELECT)
    finally:
        await conn.close()
    parameters, invalid = [], 0
    for row in rows:
        try:
            parameters.append(Parameter.from_row(row))
        except ValueError as exc:
            invalid += 1
            logger.warning("device_parameters row for %s skipped: %s", row["device_id"], exc)
    return ParameterIndex(parameters), invalid


class ParameterCache(Service):
    """Holds the current :class:`ParameterIndex`; reloads it every `params_refresh_s`."""

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.index = ParameterIndex()
        self.loaded_at: float | None = None
        self.last_error: str | None = None
        self._ready = asyncio.Event()

    async def wait_ready(self) -> None:
        """Wait until the first load succeeded."""
        await self._ready.wait()

    async def reload(self) -> None:
        """Load the parameters now and swap the index in."""
        index, invalid = await load_parameters(self.settings)
        self.index = index
        self.loaded_at = time.time()
        self.last_error = None
        if not self._ready.is_set():
            logger.info(
                "Loaded %d parameters of %d devices from %s (%d invalid rows skipped)",
                index.size, index.device_count, describe_dsn(self.settings.params_dsn), invalid,
            )
            self._ready.set()

    @Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            try:
                await self.reload()
            except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001  # any failure: keep the last index
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.warning(
                    "Cannot load device parameters from %s (%s); %s",
                    describe_dsn(self.settings.params_dsn), self.last_error,
                    "keeping the last ones" if self._ready.is_set() else "decoding waits",
                )
            delay = self.settings.params_refresh_s if self._ready.is_set() else _FIRST_LOAD_RETRY_S
            await self.sleep(delay)
