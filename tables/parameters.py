"""The device-parameter table: a Faust table backed by its changelog, kept in step with PostgreSQL.

How it flows:

* Triggers (migrations params/002 and 004) raise a device's version in
  `parameter_versions` on every change of its rows or its template, and
  NOTIFY `f2stream_parameters`.
* :class:`ParameterSync` LISTENs. On the leader worker it reads only the
  devices whose version passed its cursor (`parameter_sync_state`), builds
  each one's effective parameter set (template merged with own rows), and
  publishes it to the compacted topic `device_parameters`, keyed by device
  id; then it advances the cursor. Missed notifications cannot leave the
  table stale: the cursor catches up on every wake-up, reconnect and
  `params_refresh_s` tick, and a restart reads no more than what changed.
* The table agent writes each set into the `device_parameters` table, whose
  changelog a restarting worker recovers from. The topic is co-partitioned
  with raw_iot_data (same key, same partition count), so the decode agent
  finds its devices' parameters in local memory, and decodes while
  PostgreSQL is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
import faust
from faust.exceptions import PartitionsMismatch
from mode import Service

from f2stream.codec.model import Parameter, effective_parameters
from f2stream.records import ParameterSet
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure, is_transient

__all__ = ["CHANNEL", "ParameterSync", "ParameterTable", "build_sets"]

logger = logging.getLogger(__name__)

CHANNEL = "f2stream_parameters"
SYNC_NAME = "pipeline"
_BATCH = 2000
_RETRY_S = 2.0
_DEBOUNCE_S = 0.05
_LEADER_POLL_S = 2.0
_WRITE_ATTEMPTS = 20

_CHANGED = """
SELECT device_id, version FROM parameter_versions WHERE version > $1 ORDER BY version LIMIT $2
"""
_OWN_ROWS = "SELECT * FROM device_parameters WHERE device_id = ANY($1::text[])"
_TEMPLATE_ROWS = """
SELECT pt.*, dt.device_id
FROM device_templates dt JOIN parameter_templates pt ON pt.template = dt.template
WHERE dt.device_id = ANY($1::text[])
"""
_CURSOR = "SELECT last_version FROM parameter_sync_state WHERE name = $1"
_ADVANCE = """
INSERT INTO parameter_sync_state (name, last_version, synced_at) VALUES ($1, $2, now())
ON CONFLICT (name) DO UPDATE SET last_version = greatest(parameter_sync_state.last_version, EXCLUDED.last_version),
                                 synced_at = now()
"""


def build_sets(versions: list[tuple[str, int]], own: Iterable[Any], template: Iterable[Any]) -> list[ParameterSet]:
    """Effective parameter sets of the changed devices; invalid rows are skipped and logged."""
    own_by: dict[str, list[Parameter]] = {}
    template_by: dict[str, list[Parameter]] = {}
    for rows, into in ((own, own_by), (template, template_by)):
        for row in rows:
            try:
                parameter = Parameter.from_row(row)
            except ValueError as exc:
                logger.warning("Parameter row of %s skipped: %s", row["device_id"], exc)
                continue
            into.setdefault(parameter.device_id, []).append(parameter)
    return [
        ParameterSet(
            device_id=device,
            version=version,
            parameters=[
                p.as_row() for p in effective_parameters(device, own_by.get(device, ()), template_by.get(device, ()))
            ],
        )
        for device, version in versions
    ]


class ParameterSync(Service):
    """Publishes changed parameter sets from PostgreSQL to the `device_parameters` topic (leader only)."""

    def __init__(self, app: faust.App, settings: Settings, topic: faust.TopicT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.topic = topic
        self.last_error: str | None = None
        self.synced_at: float | None = None

    @Service.task
    async def _follow(self) -> None:
        where = describe_dsn(self.settings.params_dsn)
        while not self.should_stop:
            try:
                await self._listen_and_sync()
            except DB_ERRORS as exc:
                self.last_error = failure(exc)
                log = logger.warning if is_transient(exc) else logger.error
                log("Parameters database %s: %s; decoding goes on with the parameters held", where, self.last_error)
            await self.sleep(_RETRY_S)

    async def _listen_and_sync(self) -> None:
        changed = asyncio.Event()
        conn = await connect(self.settings.params_dsn, self.settings.params_password)
        try:
            await conn.add_listener(CHANNEL, lambda *_: changed.set())
            while not self.should_stop:
                changed.clear()
                if self.app.is_leader():
                    await self.sync(conn)
                    wait = self.settings.params_refresh_s
                else:
                    wait = _LEADER_POLL_S  # the leader may move to this worker on a rebalance
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=wait)
                await asyncio.sleep(_DEBOUNCE_S)  # one pass for a burst of changes
        finally:
            await conn.close()

    async def sync(self, conn: asyncpg.Connection) -> int:
        """Publish every device changed since the cursor; return how many."""
        cursor = await conn.fetchval(_CURSOR, SYNC_NAME) or 0
        published = 0
        while True:
            changed = [(r["device_id"], r["version"]) for r in await conn.fetch(_CHANGED, cursor, _BATCH)]
            if not changed:
                break
            devices = [device for device, _ in changed]
            sets = build_sets(changed, await conn.fetch(_OWN_ROWS, devices), await conn.fetch(_TEMPLATE_ROWS, devices))
            pending = [await self.topic.send(key=s.device_id.encode(), value=s) for s in sets]
            await asyncio.gather(*pending)  # Kafka has them all before the cursor moves
            cursor = changed[-1][1]
            await conn.execute(_ADVANCE, SYNC_NAME, cursor)
            published += len(sets)
        self.synced_at, self.last_error = time.time(), None
        if published:
            logger.info("Published parameters of %d devices (version %d)", published, cursor)
        return published


class ParameterTable:
    """The parameter table of the pipeline app, its agent, its sync, and compiled lookups."""

    def __init__(self, app: faust.App, settings: Settings, topic: faust.TopicT) -> None:
        self.settings = settings
        self.table = app.Table(
            "device_parameters", default=None, partitions=settings.topic_partitions,
            key_type=str, value_type=ParameterSet, help="Effective parameters per device, from PostgreSQL",
        )  # fmt: skip
        self.sync = ParameterSync(app, settings, topic)
        app.service(self.sync)  # type: ignore[arg-type]  # faust takes instances too; its stub says classes
        self.agent = app.agent(topic, name="f2stream.codec.model")(self._apply)

    async def _apply(self, stream: faust.StreamT[ParameterSet]) -> None:
        async for event in stream.events():
            value = event.value
            if not isinstance(value, ParameterSet):
                continue
            for attempt in range(_WRITE_ATTEMPTS):
                try:
                    if value.parameters:
                        self.table[value.device_id] = value
                    elif value.device_id in self.table:
                        del self.table[value.device_id]
                    break
                except PartitionsMismatch as exc:  # changelog metadata not fetched yet: it will be
                    logger.warning("Parameter table write of %s deferred (%s)", value.device_id, exc)
                    await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))

    async def first_sync(self, timeout_s: float = 30.0) -> bool:
        """Wait until the parameters were published at least once; False when PostgreSQL cannot say in time.

        On a fresh deployment the leader's first sync has not run yet: wait
        for its cursor, but never past `timeout_s`, and not at all when
        PostgreSQL is unreachable (decode with what the topic holds).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                conn = await connect(self.settings.params_dsn, self.settings.params_password, timeout_s=3.0)
                try:
                    if await conn.fetchval(_CURSOR, SYNC_NAME) is not None:
                        return True
                finally:
                    await conn.close()
            except DB_ERRORS:
                return False
            await asyncio.sleep(0.5)
        return False
