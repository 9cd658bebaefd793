"""Two pipeline workers in one consumer group: partitions, the parameter table and the sink move with them."""

from __future__ import annotations

import urllib.request

import pytest
from harness import Stack, Worker, Workers, group_assignments, metric, verify_database, wait_until

from bench.stack import free_ports
from f2stream.agents.stages import DECODE_GROUP, SINK_GROUP
from f2stream.verify import read_manifest

pytestmark = pytest.mark.integration


def simulate(stack: Stack, first_device: int, count: int, manifest: str) -> None:
    result = stack.faust(
        "simulate", "--devices", "24", "--first-device", str(first_device), "--rate", "300",
        "--count", str(count), "--register-params", "--manifest", str(stack.var_dir / manifest),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def problems(worker: Worker) -> str:
    lines = worker.log_path.read_text(errors="replace").splitlines()
    keep = [line for line in lines if any(w in line for w in ("WARN", "ERROR", "Published", "Recovery", "Traceback"))]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=3) as response:
            metrics = [
                m
                for m in response.read().decode().splitlines()
                if m.startswith(
                    ("f2_dead_letters_total", "f2_messages_decoded_total", "f2_rows_written", "f2_parameters ")
                )
                and not m.endswith(" 0.0")
            ]
    except OSError as exc:
        metrics = [str(exc)]
    return f"--- {worker.name}\n" + "\n".join(keep[-40:] + metrics)


async def split(stack: Stack, group: str) -> bool:
    """True when `group` has exactly two members and each is assigned partitions."""
    members = await group_assignments(stack, group)
    return len(members) == 2 and all(members)


async def test_a_second_worker_takes_partitions_and_gives_them_back(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    (port,) = free_ports(1)
    second = Worker(stack, "f2stream", port, "pipeline-2", F2_DATA_DIR=str(stack.var_dir / "data" / "faust-2"))
    second.start()
    try:
        second.wait_healthy(timeout_s=120)
        workers.pipeline.wait_healthy(timeout_s=120)
        # Kafka has split each stage's partitions between the two workers: two members, each holding some.
        for group in (DECODE_GROUP, SINK_GROUP):
            await wait_until(
                lambda group=group: split(stack, group),
                120,
                f"group {group} has two members, each with partitions",
                seen=second.log_tail,
            )
        # 24 devices spread over all 8 partitions, so both workers decode and sink
        # with the parameter-table partitions they were just given.
        simulate(stack, device_numbers, 600, "scale-out-1.jsonl")
        # Both workers share the partitions (the group may still be settling): every message lands, whole and once.
        verdict = await verify_database(stack.settings, read_manifest(stack.var_dir / "scale-out-1.jsonl"), 90)
        assert verdict.ok, f"{verdict}\n{problems(second)}\n{problems(workers.pipeline)}"
        # The second worker did its share: it decoded messages and wrote rows of this run.
        for name in ("f2_messages_decoded_total", "f2_rows_written_total"):
            assert (metric(second, name) or 0) > 0, f"the second worker shows no {name}\n{problems(second)}"
        assert "Traceback" not in second.log_path.read_text(errors="replace"), second.log_tail()
    finally:
        second.stop()
    # Back to one worker: it takes every partition again, and nothing is lost or doubled.
    workers.pipeline.wait_healthy(timeout_s=120)
    simulate(stack, device_numbers, 600, "scale-out-2.jsonl")
    verdict = await verify_database(stack.settings, read_manifest(stack.var_dir / "scale-out-2.jsonl"), 90)
    assert verdict.ok, f"{verdict}\n{problems(workers.pipeline)}"
