"""Liveness state at scale, in-process: RSS of N devices' state, per-message and per-tick cost.

`python -m bench.liveness --devices 100000` builds the pure state
(f2stream.liveness.LivenessState) for N devices as the decode stage would
(one message each), then measures: RSS before and after, the cost of one
observe per message, and of a tick when nothing is due and when 1% of the
devices fall silent. The state is what a worker adds for liveness; the
parameter table's own footprint is bench/memory.py's.
"""

from __future__ import annotations

import argparse
import json
import time

from f2stream.liveness import LivenessState
from f2stream.simulator import device_ids


def rss_mb() -> float:
    """Resident set size of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    args = parser.parse_args()
    n = args.devices
    names = device_ids(n, 1)
    timeouts = {name: 600.0 + (i % 100) * 6 for i, name in enumerate(names)}  # spread deadlines
    before = rss_mb()
    state = LivenessState(timeouts.__getitem__)
    t0 = 1_800_000_000.0
    started = time.perf_counter()
    for i, name in enumerate(names):
        state.observe(name, i % 8, i, t0, t0, False, t0)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i, name in enumerate(names):
        state.observe(name, i % 8, n + i, t0 + 10, t0 + 10, False, t0 + 10)
    steady = time.perf_counter() - started
    after = rss_mb()
    started = time.perf_counter()
    idle = state.expire(t0 + 11, lambda p: float("inf"))
    idle_s = time.perf_counter() - started
    started = time.perf_counter()
    due = state.expire(t0 + 10 + 600.0, lambda p: float("inf"))  # the 1% with the shortest timeout
    due_s = time.perf_counter() - started
    print(json.dumps({
        "devices": n,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "state_mb": round(after - before, 1),
        "first_message_us": round(first / n * 1e6, 2),
        "observe_us": round(steady / n * 1e6, 2),
        "tick_nothing_due_ms": round(idle_s * 1000, 3),
        "tick_changes": len(due),
        "tick_with_changes_ms": round(due_s * 1000, 3),
        "heap_entries": state.heap_size,
    }, indent=2))  # fmt: skip
    assert not idle


if __name__ == "__main__":
    main()
