"""The device-parameter table: every device's parameters in every pipeline worker, from a compacted topic.

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
* :class:`ParameterTable` is the one table that decode and the views read.
  The compacted topic is its changelog: each worker reads all of its
  partitions without a consumer group (nothing to commit, no rebalance),
  from the beginning at start, then follows it, and holds each device's
  compiled codec in memory. Why all partitions, not a Faust table's share:
  the decode stage owns its consumer group, so any worker may meet any
  device; a Faust `GlobalTable` would hold the same, with an open staleness
  bug (faust-streaming#283). Decoding goes on from memory while PostgreSQL
  is down, because the topic is written only after PostgreSQL said so.
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
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from f2stream.backoff import Backoff
from f2stream.codec.model import DeviceCodec, Parameter, ParameterIndex, effective_parameters
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import PARAMETERS_TOPIC
from f2stream.records import ParameterSet
from f2stream.settings import Settings
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure, is_transient

__all__ = ["CHANNEL", "ParameterSync", "ParameterTable", "build_sets", "codec_of", "load_codecs"]

logger = logging.getLogger(__name__)

CHANNEL = "f2stream_parameters"
SYNC_NAME = "pipeline"
_BATCH = 2000
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 10.0
_DEBOUNCE_S = 0.05
_LEADER_POLL_S = 2.0

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
        backoff = Backoff(_RETRY_FIRST_S, _RETRY_MAX_S)
        while not self.should_stop:
            try:
                await self._listen_and_sync()
                backoff.reset()
            except DB_ERRORS as exc:
                self.last_error = failure(exc)
                log = logger.warning if is_transient(exc) else logger.error
                log("Parameters database %s: %s; decoding goes on with the parameters held", where, self.last_error)
            except KafkaError as exc:  # publishing failed: the cursor did not move, the next pass sends again
                self.last_error = f"Kafka: {exc.__class__.__name__}: {exc}"
                logger.warning("Publishing parameters failed (%s); retrying", self.last_error)
            except Exception as exc:  # a bug must not end the sync (and with it the worker): log it, start over
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                logger.exception("Parameter sync failed; starting over")
            await self.sleep(backoff.next())

    async def _listen_and_sync(self) -> None:
        changed = asyncio.Event()
        conn = await connect(self.settings.params_dsn, self.settings.params_password)
        try:
            await conn.add_listener(CHANNEL, lambda *_: changed.set())
            conn.add_termination_listener(lambda _: changed.set())  # a lost connection is found at once
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


_ALL_VERSIONS = "SELECT device_id, version FROM parameter_versions"
_VERSIONS_OF = "SELECT device_id, version FROM parameter_versions WHERE device_id = ANY($1::text[])"


async def load_codecs(conn: asyncpg.Connection, devices: Iterable[str] | None = None) -> ParameterIndex:
    """The parameters in force now, read from PostgreSQL: every device's codec, or those of `devices`.

    Built as the sync builds what it publishes (:func:`build_sets`), so a
    repair decodes exactly as the pipeline will once the sync has run.
    """
    if devices is None:
        versions = [(r["device_id"], r["version"]) for r in await conn.fetch(_ALL_VERSIONS)]
    else:
        versions = [(r["device_id"], r["version"]) for r in await conn.fetch(_VERSIONS_OF, list(devices))]
    index = ParameterIndex()
    for start in range(0, len(versions), _BATCH * 10):
        chunk = versions[start : start + _BATCH * 10]
        names = [device for device, _ in chunk]
        sets = build_sets(chunk, await conn.fetch(_OWN_ROWS, names), await conn.fetch(_TEMPLATE_ROWS, names))
        for s in sets:
            if s.parameters:
                index.put(DeviceCodec(s.device_id, s.version, [Parameter.from_row(row) for row in s.parameters]))
    return index


def codec_of(value: bytes | None) -> tuple[str, DeviceCodec | None] | None:
    """A `device_parameters` record as (device id, codec), codec None for a deletion; None if unreadable."""
    try:
        record = orjson.loads(value or b"null")
        if record is None:
            return None
        device = str(record["device_id"])
        rows = record["parameters"]
        if not rows:
            return device, None
        return device, DeviceCodec(device, record.get("version"), [Parameter.from_row(row) for row in rows])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        logger.warning("Unreadable parameter record skipped: %s: %s", exc.__class__.__name__, exc)
        return None


def apply_records(records: Iterable[ConsumerRecord[bytes, bytes]], into: ParameterIndex) -> None:
    """Apply `device_parameters` records in order.

    A parameter set replaces the device's codec; an empty set or a tombstone drops it.
    """
    for record in records:
        parsed = codec_of(record.value)
        if parsed is None:
            if record.value is None and record.key:  # a tombstone
                into.remove(record.key.decode("utf-8", "replace"))
            continue
        device, codec = parsed
        if codec is None:
            into.remove(device)
        else:
            into.put(codec)


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


class ParameterTable(Service):
    """The one parameter table: every device's codec, kept in step with the compacted `device_parameters` topic.

    Decode looks codecs up with :meth:`codec`; the views answer from
    :meth:`parameter_set`. In the pipeline worker the leader's
    :class:`ParameterSync` (a child service, `sync`) writes the topic from
    PostgreSQL; without it the table only reads (`make bench`'s stages).
    """

    def __init__(
        self, settings: Settings, *, topic: str = PARAMETERS_TOPIC, sync: ParameterSync | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic_name = topic
        self.sync = sync
        if sync is not None:
            self.add_dependency(sync)
        self._index = ParameterIndex()
        self._caught_up = asyncio.Event()

    def codec(self, device_id: str) -> DeviceCodec | None:
        """The device's codec, or None for a device without parameters."""
        return self._index.codec(device_id)

    def parameter_set(self, device_id: str) -> ParameterSet | None:
        """The device's parameters and their version, as published; None for a device without parameters."""
        codec = self._index.codec(device_id)
        if codec is None or codec.version is None:
            return None
        return ParameterSet(
            device_id=device_id, version=codec.version, parameters=[p.as_row() for p in codec.parameters]
        )

    @property
    def size(self) -> int:
        """Devices with parameters."""
        return len(self._index)

    async def wait_ready(self, *, settle_s: float = 2.0) -> None:
        """Return once the topic is read to where it was at start, and after a deployment's first sync.

        On a fresh deployment the leader's first publication may still be on
        its way: when PostgreSQL says it happened, wait up to `settle_s` for
        it to arrive. When PostgreSQL cannot say, decode with what the topic
        holds.
        """
        await self._caught_up.wait()
        if self.sync is not None and await self.sync.first_sync():
            settle = time.monotonic() + settle_s
            while not len(self._index) and time.monotonic() < settle:  # noqa: ASYNC110  # no event to wait on
                await asyncio.sleep(0.1)

    @Service.task
    async def _follow(self) -> None:
        backoff = Backoff(_RETRY_FIRST_S, _RETRY_MAX_S)
        while not self.should_stop:
            # Without a group, aiokafka assigns every partition of the subscribed topic.
            consumer = AIOKafkaConsumer(
                self.topic_name,
                **kafka_options(self.settings),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="f2stream-params",
            )
            try:
                await consumer.start()
                await self._read(consumer, backoff)
            except KafkaError as exc:
                logger.warning("Reading %s failed (%s: %s); decoding goes on with what is held",
                               self.topic_name, exc.__class__.__name__, exc)  # fmt: skip
            except Exception:  # a bug here must not silently stop parameter updates: log it, start over
                logger.exception("Reading %s failed; starting over", self.topic_name)
            finally:
                await consumer.stop()
            await self.sleep(backoff.next())

    async def _read(self, consumer: AIOKafkaConsumer, backoff: Backoff) -> None:
        fresh = ParameterIndex()
        while not consumer.assignment():  # the first fetch assigns the partitions
            for records in (await consumer.getmany(timeout_ms=500)).values():
                apply_records(records, fresh)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(consumer.assignment()))
        # A restart of this reader builds a new index, so a deletion missed meanwhile cannot linger.
        while not await _reached(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                apply_records(records, fresh)
        self._index = fresh
        backoff.reset()
        if not self._caught_up.is_set():
            logger.info("Parameters of %d devices read from %s", len(fresh), self.topic_name)
            self._caught_up.set()
        while not self.should_stop:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                apply_records(records, self._index)
