"""The simulator across a Mosquitto restart, on the real stack: it reconnects, goes on, and its manifest holds."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter

import orjson
import pytest
from harness import Stack, Workers, restart_mosquitto, verify_database

from f2stream.verify import read_manifest

pytestmark = pytest.mark.integration


async def test_simulator_survives_a_broker_restart_and_its_manifest_is_right(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    # The session's ingest worker subscribes without `$share` (the default), so
    # Mosquitto restores its subscription with its session and queues for it
    # while it reconnects: no loss window (docs/reliability.md, "Broker restart").
    assert not workers.ingest.env.get("F2_MQTT_SHARE_GROUP"), "this test needs the plain subscription"
    manifest = stack.var_dir / f"manifest-restart-{device_numbers}.jsonl"
    command = ["simulate", "--devices", "3", "--first-device", str(device_numbers), "--rate", "100"]
    command += ["--duration-s", "14", "--register-params", "--manifest", str(manifest)]
    simulate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faust",
        "-A",
        "f2stream",
        *command,
        env=stack.run_env(),
        cwd=stack.var_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (manifest.exists() and manifest.stat().st_size > 0):  # publishing has begun
            assert simulate.returncode is None, await simulate.communicate()
            assert time.monotonic() < deadline, "the simulator published nothing"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        lines_before = len(manifest.read_bytes().splitlines())
        # SIGTERM: Mosquitto saves its persistence, so the ingest session's queue survives;
        # what a SIGKILL can lose is the broker's matter (docs/reliability.md), not the simulator's.
        await asyncio.to_thread(restart_mosquitto, stack, signal.SIGTERM, 2.0)
        stdout, stderr = await asyncio.wait_for(simulate.communicate(), timeout=120)
    finally:
        if simulate.returncode is None:
            simulate.kill()
            await simulate.wait()
    out, err = stdout.decode(), stderr.decode()
    assert simulate.returncode == 0, err
    published = int(out.split("simulate: ", 1)[1].split()[0])
    entries = manifest.read_bytes().splitlines()
    assert len(entries) == published > lines_before  # it went on after the restart
    assert len(set(entries)) == len(entries)  # each acknowledged message once
    assert "connected again" in err or "connection lost" in err, err
    # Acknowledged before the restart: Mosquitto saved them at SIGTERM, all must land.
    before = await verify_database(stack.settings, manifest_of(entries[:lines_before]), timeout_s=60)
    assert before.ok, f"acknowledged before the restart: {before}"
    # The last quarter went out long after every link (and the ingest session) was back.
    tail = await verify_database(stack.settings, manifest_of(entries[-published // 4 :]), timeout_s=60)
    assert tail.ok, f"published after the recovery: {tail}"
    # In between too: with the plain subscription the loss window is empty, every acknowledged message lands.
    everything = await verify_database(stack.settings, read_manifest(manifest), timeout_s=30)
    assert everything.ok, f"acknowledged across the restart: {everything}"
    assert everything.messages == published, str(everything)


def manifest_of(lines: list[bytes]) -> Counter[tuple[str, str, str]]:
    """A manifest's expected rows, from some of its lines (as verify.read_manifest does for all)."""
    expected: Counter[tuple[str, str, str]] = Counter()
    for entry in map(orjson.loads, lines):
        expected[(entry["device_id"], entry["component"], entry["time"])] += entry["points"]
    return expected
