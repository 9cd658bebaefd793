"""Health checks of both workers: each dependency actually checked, bounded and cached.

A check is an async function returning a :class:`Check`. :class:`HealthChecks`
runs them concurrently, each under a timeout, and caches the result for a
moment, so that a storm of `/health` requests costs the dependencies one
round of checks per `ttl_s`, never one per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiokafka
import aiomqtt

from f2stream.kafka_client import KafkaOptions
from f2stream.mqtt_client import MqttConnection
from f2stream.settings import Secret
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure, is_transient

__all__ = [
    "Check",
    "CheckFn",
    "HealthChecks",
    "Status",
    "kafka_check",
    "lag_check",
    "mqtt_check",
    "overall",
    "postgres_check",
    "rows_check",
    "tcp_check",
    "timescaledb_check",
    "timescaledb_state",
    "websocket_check",
    "worker_check",
]

logger = logging.getLogger(__name__)

Status = Literal["ok", "degraded", "failing"]
_RANK: dict[Status, int] = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """The state of one dependency, as `/health` reports it (never a secret)."""

    name: str
    status: Status
    detail: str


CheckFn = Callable[[], Awaitable[Check]]


def overall(checks: Sequence[Check]) -> Status:
    """The worst status of all checks."""
    worst: Status = "ok"
    for check in checks:
        if _RANK[check.status] > _RANK[worst]:
            worst = check.status
    return worst


class HealthChecks:
    """Runs named checks concurrently, each within `timeout_s`; caches the result for `ttl_s`."""

    def __init__(self, checks: Mapping[str, CheckFn], *, timeout_s: float = 2.0, ttl_s: float = 1.5) -> None:
        if timeout_s <= 0 or ttl_s < 0:
            raise ValueError(f"timeout_s must be > 0 and ttl_s >= 0 (got {timeout_s}, {ttl_s})")
        self.checks = dict(checks)
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._result: list[Check] = []
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def run(self) -> list[Check]:
        """The current checks: cached when younger than `ttl_s`; concurrent callers share one round."""
        if time.monotonic() - self._at < self.ttl_s:
            return self._result
        async with self._lock:
            if time.monotonic() - self._at < self.ttl_s:  # another caller just refreshed it
                return self._result
            results = await asyncio.gather(*(self._one(name, fn) for name, fn in self.checks.items()))
            self._result, self._at = list(results), time.monotonic()
            return self._result

    async def _one(self, name: str, fn: CheckFn) -> Check:
        try:
            return await asyncio.wait_for(fn(), timeout=self.timeout_s)
        except TimeoutError:
            return Check(name, "failing", f"no answer within {self.timeout_s:g}s")
        except Exception as exc:  # a broken check must not break /health
            logger.debug("Health check %s raised", name, exc_info=True)
            return Check(name, "failing", f"check raised {exc.__class__.__name__}")


async def kafka_check(
    kafka: KafkaOptions, assignment: Callable[[], int] | None = None, *, timeout_s: float = 1.5
) -> Check:
    """Kafka answers a metadata request; with `assignment`, the worker holds partitions too.

    `kafka`: where and how to connect (:func:`f2stream.kafka_client.kafka_options`).
    """
    bootstrap = kafka["bootstrap_servers"]
    client = aiokafka.AIOKafkaClient(**kafka, request_timeout_ms=int(timeout_s * 1000))
    try:
        await client.bootstrap()
        brokers = len(client.cluster.brokers())
    except Exception as exc:  # noqa: BLE001  # aiokafka raises its own errors and OSErrors alike
        return Check("kafka", "failing", f"{bootstrap} unreachable ({exc.__class__.__name__})")
    finally:
        await client.close()
    if assignment is None:
        return Check("kafka", "ok", f"{brokers} broker(s) at {bootstrap}")
    assigned = assignment()
    if assigned == 0:
        return Check("kafka", "degraded", f"{brokers} broker(s) at {bootstrap}, no partitions assigned")
    return Check("kafka", "ok", f"{brokers} broker(s) at {bootstrap}, {assigned} partitions assigned")


async def postgres_check(
    name: str, dsn: str, password: Secret | None, query: str, *, describe: Callable[[Any], str], timeout_s: float = 1.5
) -> Check:
    """Connect, run `query` (one value), close; `describe` turns the value into the detail."""
    where = describe_dsn(dsn)
    try:
        conn = await connect(dsn, password, timeout_s=timeout_s)
        try:
            value = await conn.fetchval(query, timeout=timeout_s)
        finally:
            await conn.close(timeout=timeout_s)
    except DB_ERRORS as exc:
        if is_transient(exc):
            return Check(name, "failing", f"{where} unavailable ({exc.__class__.__name__})")
        return Check(name, "failing", f"{where}: {failure(exc)}")
    return Check(name, "ok", f"{where}: {describe(value)}")


_TIMESCALEDB_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
_FAILING_JOBS = """
SELECT s.job_id, j.proc_name FROM timescaledb_information.job_stats s
JOIN timescaledb_information.jobs j USING (job_id) WHERE s.last_run_status = 'Failed' ORDER BY s.job_id
"""


def timescaledb_state(version: str | None, failing_jobs: Sequence[tuple[int, str]]) -> Check:
    """The `timescaledb` entry of `/health` from the extension's version and its failing policy jobs."""
    if version is None:
        return Check("timescaledb", "ok", "plain PostgreSQL: no hypertable, compression, retention or aggregate")
    if failing_jobs:
        jobs = ", ".join(f"{job} ({proc})" for job, proc in failing_jobs)
        return Check(
            "timescaledb", "degraded", f"timescaledb {version}; policy jobs failing: {jobs} (docs/timescaledb.md)"
        )
    return Check("timescaledb", "ok", f"timescaledb {version}; no policy job failing")


async def timescaledb_check(dsn: str, password: Secret | None, *, timeout_s: float = 1.5) -> Check:
    """The time-series database's TimescaleDB: its version, and whether its policies' jobs fail."""
    where = describe_dsn(dsn)
    try:
        conn = await connect(dsn, password, timeout_s=timeout_s)
        try:
            version = await conn.fetchval(_TIMESCALEDB_VERSION, timeout=timeout_s)
            rows = [] if version is None else await conn.fetch(_FAILING_JOBS, timeout=timeout_s)
        finally:
            await conn.close(timeout=timeout_s)
    except DB_ERRORS as exc:
        return Check("timescaledb", "failing", f"{where}: {failure(exc)}")
    return timescaledb_state(version, [(r["job_id"], r["proc_name"]) for r in rows])


async def tcp_check(name: str, host: str, port: int, *, timeout_s: float = 1.5) -> Check:
    """Something accepts TCP connections on host:port (a listener that takes no login from us)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        return Check(name, "failing", f"{host}:{port} refuses connections ({exc.__class__.__name__})")
    writer.close()
    await writer.wait_closed()
    return Check(name, "ok", f"{host}:{port} accepts connections")


async def websocket_check(
    name: str, host: str, port: int, *, subprotocol: str = "mqtt", timeout_s: float = 1.5
) -> Check:
    """A WebSocket handshake asking for `subprotocol` is answered with 101 Switching Protocols."""
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: ZjJzdHJlYW0taGVhbHRoIQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    )
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        try:
            writer.write(request.encode())
            status_line = await asyncio.wait_for(reader.readline(), timeout_s)
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return Check(name, "failing", f"ws://{host}:{port} unreachable ({exc.__class__.__name__})")
    answer = status_line.decode("latin-1").strip()
    if answer.split(" ")[1:2] == ["101"]:
        return Check(name, "ok", f"ws://{host}:{port} upgrades to {subprotocol}")
    return Check(name, "failing", f"ws://{host}:{port} answered {answer[:80]!r} to a WebSocket upgrade")


async def mqtt_check(name: str, connection: MqttConnection, *, timeout_s: float = 1.5) -> Check:
    """An MQTT session opens and closes as `connection` logs in (a clean session of its own client id)."""
    client = aiomqtt.Client(
        **connection.client_options(), identifier="f2stream-health", clean_session=True, timeout=timeout_s
    )
    try:
        async with client:
            pass
    except aiomqtt.MqttError as exc:
        return Check(name, "failing", f"{connection}: {exc}")
    return Check(name, "ok", f"{connection} accepted")


async def worker_check(name: str, url: str, *, timeout_s: float = 1.5) -> Check:
    """Another worker's `/health`: its overall status, and which of its checks are not ok."""

    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # our own setting
                return response.status, response.read()
        except urllib.error.HTTPError as exc:  # 503: failing, with its body
            return exc.code, exc.read()

    try:
        code, raw = await asyncio.to_thread(fetch)
        body = json.loads(raw)
        status: Status = body["status"] if body.get("status") in _RANK else "failing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check(name, "failing", f"{url} unreachable ({exc.__class__.__name__})")
    not_ok = [f"{k}: {v.get('status')}" for k, v in (body.get("checks") or {}).items() if v.get("status") != "ok"]
    return Check(name, status, f"{url}: {status}" + (f" ({'; '.join(not_ok)})" if not_ok else f" (HTTP {code})"))


def lag_check(lag: Callable[[], Mapping[tuple[str, int], int]], *, degraded_above: int) -> Check:
    """Degraded when the worker is more than `degraded_above` messages behind in total."""
    values = lag()
    total = sum(values.values())
    worst = max(values.values(), default=0)
    detail = f"{total} messages behind on {len(values)} partitions (worst {worst})"
    return Check("consumer_lag", "degraded" if total > degraded_above else "ok", detail)


def rows_check(
    last_commit_at: float | None, backlog: int, *, now: float | None = None, stale_after_s: float = 60.0
) -> Check:
    """Age of the newest row this worker committed; degraded when work waits and nothing lands."""
    now = time.time() if now is None else now
    if last_commit_at is None:
        if backlog > 0:
            return Check("rows", "degraded", f"no rows written yet, {backlog} messages waiting")
        return Check("rows", "ok", "no rows written yet (nothing to write)")
    age = max(0.0, now - last_commit_at)
    if backlog > 0 and age > stale_after_s:
        return Check("rows", "degraded", f"newest row written {age:.0f}s ago, {backlog} messages waiting")
    return Check("rows", "ok", f"newest row written {age:.1f}s ago")
