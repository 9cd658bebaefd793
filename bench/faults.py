"""Repeat fault scenarios under load and print the figures of every run, then a table per scenario.

Each scenario is a test of tests/integration/test_faults.py; this runs them
with `F2_FAULT_REPEAT=N` against a private stack on free ports (the test
session starts and removes it, never touching var/), collects the per-run
figures the tests append to a JSON-lines report, and prints them as
docs/reliability.md shows them:

    .venv/bin/python bench/faults.py --repeat 10 kill-pipeline rebalance
    .venv/bin/python bench/faults.py --summarize var/faults/report.jsonl

Scenarios: rebalance, kill-pipeline, kill-ingest, pg-down, kill-kafka,
restart-mosquitto, shared-ingest, kafka-cluster, backlog (or `all`). The exit
status is 1 when any run lost or doubled a message. Here the tests run in
their long form (`F2_FAULT_LONG=1`): kafka-cluster keeps each killed broker
down 30 s under 150 s of load instead of 5 s under 60 s, and starts a stack
of three brokers beside the one-broker stack of the other scenarios.

backlog: the ingest worker down while the devices publish `--backlog`
messages (default 1,000,000; the suite's short form 200,000), started while
they go on publishing, killed with -9 mid-drain and started again; each
run's drain rate is printed below the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = {
    "rebalance": "test_a_second_pipeline_worker_joining_and_leaving_again_and_again",
    "kill-pipeline": "test_kill_9_of_the_pipeline_worker_mid_batch",
    "kill-ingest": "test_kill_9_of_the_ingest_worker",
    "pg-down": "test_timeseries_postgresql_stopped_for_30s",
    "kill-kafka": "test_kill_9_of_kafka",
    "restart-mosquitto": "test_mosquitto_restarted",
    "shared-ingest": "test_two_ingest_workers_sharing_the_subscription_one_killed",
    "kafka-cluster": "test_kill_9_of_one_kafka_broker_then_another_of_three",
    "backlog": "test_ingest_backlog_killed_mid_drain",
}
#: Messages queued for the ingest worker in the backlog scenario (the suite runs fewer).
BACKLOG_MESSAGES = 1_000_000


def run(scenarios: list[str], repeat: int, report: Path, backlog: int = BACKLOG_MESSAGES) -> int:
    """Run the scenarios' tests `repeat` times each in one pytest session; its exit status."""
    selection = " or ".join(TESTS[s] for s in scenarios)
    env = {**os.environ, "F2_FAULT_REPEAT": str(repeat), "F2_FAULT_REPORT": str(report), "F2_FAULT_LONG": "1",
           "F2_BACKLOG_MESSAGES": str(backlog)}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "tests/integration/test_faults.py", "-k", selection, "-s", "-q",
               "-p", "no:cacheprovider", "-o", "timeout=0"]  # fmt: skip
    print(f"faults: {' '.join(command)} (F2_FAULT_REPEAT={repeat}, report {report})", flush=True)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def summarize(report: Path) -> bool:
    """Print one table row per scenario; True when no run lost or doubled anything."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in report.read_text().splitlines():
        if line.strip():
            figures = json.loads(line)
            runs[figures["scenario"]].append(figures)
    print()
    print("| scenario | runs | sent | acknowledged | missing | wrong row count | duplicated raw / decoded / rows "
          "| time to recover (median, max) | time without progress, sink / ingest (max) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    clean = True
    for scenario, items in runs.items():
        total = {k: sum(f[k] for f in items) for k in ("sent", "acknowledged", "missing", "wrong_count")}
        dup = "{} / {} / {:.0f}".format(*(sum(f[k] for f in items) for k in
                                          ("raw_duplicates", "decoded_duplicates", "rows_duplicate")))  # fmt: skip
        recovered = [f["recover_s"] for f in items if f["recover_s"] is not None]
        recover = (f"{statistics.median(recovered):.1f} s, {max(recovered):.1f} s" if recovered else "not measured") + (
            "" if len(recovered) == len(items) else f" ({len(items) - len(recovered)} runs did not recover)"
        )
        stalls = [(f["stall_s"], f["stall_ingest_s"]) for f in items if f.get("stall_s") is not None]
        stall = f"{max(s for s, _ in stalls):.1f} s / {max(i for _, i in stalls):.1f} s" if stalls else "-"
        print(f"| {scenario} | {len(items)} | {total['sent']} | {total['acknowledged']} | {total['missing']} "
              f"| {total['wrong_count']} | {dup} | {recover} | {stall} |")  # fmt: skip
        clean = clean and total["missing"] == 0 and total["wrong_count"] == 0
    print_backlog_drains(runs.get("backlog", []))
    return clean


def print_backlog_drains(items: list[dict[str, Any]]) -> None:
    """The backlog runs' own figures: how fast the devices filled the session, how fast ingest drained it."""
    for figures in items:
        print(f"backlog run {figures['run']}: {'; '.join(figures['notes'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=["all"], help=f"{', '.join(TESTS)} or all")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each scenario (default 5)")
    parser.add_argument("--report", type=Path, default=None, help="JSON-lines report (default var/faults/<time>.jsonl)")
    parser.add_argument("--summarize", type=Path, default=None, help="only print the table of an existing report")
    parser.add_argument("--backlog", type=int, default=BACKLOG_MESSAGES, help="messages queued in the backlog scenario")
    args = parser.parse_args()
    if args.summarize:
        return 0 if summarize(args.summarize) else 1
    scenarios = list(TESTS) if "all" in args.scenarios else args.scenarios
    unknown = [s for s in scenarios if s not in TESTS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(TESTS)} or all")
    report = args.report or ROOT / "var" / "faults" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    report.parent.mkdir(parents=True, exist_ok=True)
    status = run(scenarios, args.repeat, report, args.backlog)
    clean = summarize(report) if report.exists() else False
    return 0 if status == 0 and clean else 1


if __name__ == "__main__":
    sys.exit(main())
