"""Health checks: overall status, timeouts, caching, lag and row-age rules."""

from __future__ import annotations

import asyncio

import pytest

from f2stream.health import Check, HealthChecks, kafka_check, lag_check, overall, rows_check, timescaledb_state
from f2stream.kafka_client import kafka_options
from f2stream.settings import Settings


def test_overall_is_the_worst_status():
    assert overall([]) == "ok"
    assert overall([Check("a", "ok", ""), Check("b", "degraded", "")]) == "degraded"
    assert overall([Check("a", "failing", ""), Check("b", "degraded", "")]) == "failing"


async def test_a_slow_check_fails_within_its_timeout_and_others_still_answer():
    async def slow() -> Check:
        await asyncio.sleep(10)
        return Check("slow", "ok", "")

    async def fast() -> Check:
        return Check("fast", "ok", "fine")

    checks = HealthChecks({"slow": slow, "fast": fast}, timeout_s=0.05, ttl_s=0)
    results = await asyncio.wait_for(checks.run(), timeout=1)
    assert results == [Check("slow", "failing", "no answer within 0.05s"), Check("fast", "ok", "fine")]


async def test_a_raising_check_is_failing_without_its_message():
    async def broken() -> Check:
        raise RuntimeError("password=hunter2")

    (result,) = await HealthChecks({"db": broken}, ttl_s=0).run()
    assert result.status == "failing"
    assert "hunter2" not in result.detail


async def test_results_are_cached_and_a_storm_runs_the_checks_once():
    calls = 0

    async def counted() -> Check:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Check("c", "ok", str(calls))

    checks = HealthChecks({"c": counted}, ttl_s=60)
    results = await asyncio.gather(*(checks.run() for _ in range(50)))
    assert calls == 1
    assert all(r == [Check("c", "ok", "1")] for r in results)


def test_bad_arguments_are_refused_at_once():
    with pytest.raises(ValueError, match="timeout_s"):
        HealthChecks({}, timeout_s=0)


async def test_kafka_unreachable_is_failing():
    check = await kafka_check(kafka_options(Settings(kafka_broker="kafka://127.0.0.1:1")), timeout_s=0.5)
    assert check.status == "failing"
    assert "unreachable" in check.detail


def test_lag_check_degrades_above_the_threshold():
    assert lag_check(lambda: {("raw", 0): 5}, degraded_above=10).status == "ok"
    check = lag_check(lambda: {("raw", 0): 5, ("raw", 1): 6}, degraded_above=10)
    assert check.status == "degraded"
    assert check.detail == "11 messages behind on 2 partitions (worst 6)"


def test_rows_check_degrades_only_when_work_waits_and_nothing_lands():
    assert rows_check(None, 0, now=100).status == "ok"
    assert rows_check(None, 3, now=100).status == "degraded"
    assert rows_check(0.0, 0, now=1000).status == "ok"  # idle: old rows are fine
    assert rows_check(990.0, 3, now=1000).status == "ok"
    stale = rows_check(0.0, 3, now=1000, stale_after_s=60)
    assert stale.status == "degraded"
    assert stale.detail == "newest row written 1000s ago, 3 messages waiting"


def test_timescaledb_state_on_plain_postgresql_and_with_failing_jobs() -> None:
    assert timescaledb_state(None, []).status == "ok"
    assert "plain PostgreSQL" in timescaledb_state(None, []).detail
    assert timescaledb_state("2.17.2", []) == Check("timescaledb", "ok", "timescaledb 2.17.2; no policy job failing")
    failing = timescaledb_state("2.28.3", [(1000, "policy_compression"), (1002, "policy_refresh_continuous_aggregate")])
    assert failing.status == "degraded"
    assert "1000 (policy_compression), 1002 (policy_refresh_continuous_aggregate)" in failing.detail
