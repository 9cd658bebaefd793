"""Two pipeline and two ingest workers under load: one of each killed, one of each added back, nothing lost.

The rebalance times are printed (run with -s) and recorded as test
properties; docs/operations.md quotes them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from harness import Stack, Worker, verify_database

from bench.stack import free_ports
from f2stream.agents.stages import DECODE_GROUP, SINK_GROUP
from f2stream.kafka_client import kafka_options
from f2stream.verify import read_manifest

pytestmark = pytest.mark.integration

DEVICES = 32  # spread over all 8 partitions
RATE = 300.0
DURATION_S = 36.0
KILL_AT_S = 8.0
ADD_AT_S = 22.0


def pipeline(stack: Stack, name: str) -> Worker:
    (port,) = free_ports(1)
    return Worker(stack, "f2stream", port, name, F2_DATA_DIR=str(stack.var_dir / "data" / f"faust-{name}"))


def ingest(stack: Stack, name: str) -> Worker:
    (port,) = free_ports(1)
    return Worker(
        stack, "f2stream.ingest", port, name, F2_MQTT_CLIENT_ID=f"f2stream-{name}", F2_MQTT_SHARE_GROUP="scale-ingest"
    )


def simulate(stack: Stack, first_device: int, manifest: Path) -> subprocess.Popen[bytes]:
    """The load: simulated devices over mTLS for DURATION_S, writing the manifest."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "faust", "-A", "f2stream", "simulate", "--devices", str(DEVICES),
            "--first-device", str(first_device), "--rate", str(RATE), "--duration-s", str(DURATION_S),
            "--register-params", "--manifest", str(manifest),
        ],
        env=stack.run_env(), cwd=stack.var_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@contextmanager
def running(*workers: Worker) -> Iterator[None]:
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()


async def members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group."""
    (description,) = await admin.describe_consumer_groups([group])
    row = description.groups[0]  # error_code, group, state, protocol_type, protocol, members, ...
    return row[2], len(row[5])


async def wait_group(admin: AIOKafkaAdminClient, want: int, timeout_s: float = 60) -> float:
    """Seconds until both stage groups are Stable with `want` members."""
    started = time.monotonic()
    while True:
        states = [await members(admin, g) for g in (DECODE_GROUP, SINK_GROUP)]
        if all(state == "Stable" and count == want for state, count in states):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"groups not stable with {want} members: {states}"
        await asyncio.sleep(0.2)


async def test_two_of_each_worker_one_killed_one_added_back(
    stack: Stack, device_numbers: int, record_property: pytest.RecordProperty
) -> None:
    pipelines = [pipeline(stack, "scale-pipeline-a"), pipeline(stack, "scale-pipeline-b")]
    ingests = [ingest(stack, "scale-ingest-a"), ingest(stack, "scale-ingest-b")]
    manifest = stack.var_dir / "scale-workers.jsonl"
    admin = AIOKafkaAdminClient(**kafka_options(stack.settings))
    await admin.start()
    # Pipeline workers already in the groups (the session's, when other tests ran
    # first; its decode loop may still be waiting for the first parameter sync).
    others = max([count for _, count in [await members(admin, g) for g in (DECODE_GROUP, SINK_GROUP)]])
    with running(*pipelines, *ingests):
        for worker in (*pipelines, *ingests):
            worker.start()
        for worker in (*pipelines, *ingests):
            await asyncio.to_thread(worker.wait_healthy, 120)
        await wait_group(admin, others + 2)
        load = simulate(stack, device_numbers, manifest)
        try:
            started = time.monotonic()
            await asyncio.sleep(KILL_AT_S)
            pipelines[0].stop(signal.SIGKILL)
            ingests[0].stop(signal.SIGKILL)
            after_kill = await wait_group(admin, others + 1, timeout_s=90)
            await asyncio.sleep(max(0.0, ADD_AT_S - (time.monotonic() - started)))
            added = time.monotonic()
            # The ingest worker comes back under its own client id: its persistent
            # session holds what the broker had sent it and never saw acknowledged.
            pipelines[0].start()
            ingests[0].start()
            await asyncio.to_thread(ingests[0].wait_healthy, 120)
            after_add = await wait_group(admin, others + 2, timeout_s=90)
            after_add_total = time.monotonic() - added
            out, _ = await asyncio.to_thread(load.communicate, timeout=DURATION_S + 60)
            assert load.returncode == 0, out.decode(errors="replace")[-3000:]
        finally:
            if load.poll() is None:
                load.kill()
            await admin.close()
        verdict = await verify_database(stack.settings, read_manifest(manifest), 120)
    figures = {
        "rebalance_after_kill_9_s": round(after_kill, 1),
        "rebalance_after_add_s": round(after_add, 1),
        "worker_start_to_stable_s": round(after_add_total, 1),
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"\nscale workers: {verdict}; {figures}")
    assert verdict.ok, f"{verdict}\n{pipelines[1].log_tail()}"
