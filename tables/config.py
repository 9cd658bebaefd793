"""Settings held from the parameters database, reloaded live: the base of the alarm rules and liveness settings.

The database announces a change (NOTIFY on the follower's channel) and bumps
a version row; the follower holds one connection, reloads when the version
moved, and polls it every `F2_PARAMS_REFRESH_S` in case a notification was
missed. While the database is unreachable the settings held stay in force,
`last_error` says why, and a fresh connection is tried with a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import asyncpg
from mode import Service

from f2stream.backoff import Backoff
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, connect, failure

__all__ = ["DatabaseConfig"]

logger = logging.getLogger(__name__)


class DatabaseConfig(Service):
    """Follows one kind of settings in the parameters database; subclasses say which and how to load them.

    Class attributes: `channel` (the NOTIFY channel), `version_query` (one
    value, the settings' version), `what` (their name in logs), `coalesce_s`
    (changes announced this soon after one join its reload).
    """

    channel: ClassVar[str]
    version_query: ClassVar[str]
    what: ClassVar[str]
    coalesce_s: ClassVar[float] = 0.1

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        #: The version loaded, None before the first load.
        self.version: int | None = None
        #: Why the database cannot be read, while it cannot (`/health`).
        self.last_error: str | None = None
        #: Set when a reload changed something; the tracker clears it when it applied it.
        self.changed = asyncio.Event()
        self._loaded = asyncio.Event()

    async def load(self, conn: asyncpg.Connection, version: int) -> None:
        """Read the settings at `version` (the version row moved since the last load)."""
        raise NotImplementedError

    async def wait_loaded(self, timeout_s: float = 10.0) -> bool:
        """Wait for the first load; False when the database did not answer in time (nothing loaded yet)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), timeout_s)
        return self._loaded.is_set()

    @Service.task
    async def _follow(self) -> None:
        backoff = Backoff(1.0, 10.0)
        while not self.should_stop:
            try:
                await self._listen()
            except DB_ERRORS as exc:
                self.last_error = failure(exc)
                logger.warning("%s: %s; the settings held stay in force", self.what, self.last_error)
            except Exception:  # a bug must not end the reloads (and with them the worker): start over
                logger.exception("%s: reloading failed; starting over", self.what)
            await self.sleep(backoff.next())

    async def _listen(self) -> None:
        woken = asyncio.Event()
        conn = await connect(self.settings.params_dsn, self.settings.params_password)
        try:
            await conn.add_listener(self.channel, lambda *_: woken.set())
            conn.add_termination_listener(lambda _: woken.set())  # a lost connection is found at once
            while not self.should_stop:
                woken.clear()
                version = await conn.fetchval(self.version_query)
                self.last_error = None  # the database answers, whether or not the settings changed
                if version != self.version:
                    await self.load(conn, version)
                    self.version = version
                    self._loaded.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self.settings.params_refresh_s)
                    await asyncio.sleep(self.coalesce_s)  # a burst of changes (a fleet enrolled) is one reload
        finally:
            await conn.close()
