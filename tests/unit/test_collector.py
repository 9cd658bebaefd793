"""f2stream.collector: the garbage collector's thresholds in a worker, seen in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from f2stream.errors import ConfigError
from f2stream.settings import Settings

# How many young collections a batch-like workload makes: 50,000 objects held together, then dropped.
_PROBE = """
import gc, sys
from f2stream.collector import tune_collector
print(tune_collector(int(sys.argv[1])))
before = gc.get_stats()[0]["collections"]
for _ in range(20):
    batch = [[i] for i in range(50_000)]
    del batch
print(gc.get_stats()[0]["collections"] - before)
"""


def probe(young: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(young)], capture_output=True, text=True, check=True)
    thresholds, collections = out.stdout.split("\n")[:2]
    return thresholds, int(collections)


def test_a_batch_held_and_dropped_makes_no_young_collection_with_the_worker_threshold() -> None:
    assert probe(100_000) == ("(100000, 20, 10)", 0)
    thresholds, collections = probe(0)  # Python's own: a collection every 700 net allocations
    assert thresholds == "(700, 10, 10)" and collections > 1000


@pytest.mark.parametrize("module", ["f2stream.ingest", "f2stream.pipeline"])
def test_both_workers_take_the_setting(module: str) -> None:
    env = {**os.environ, "F2_GC_YOUNG_THRESHOLD": "4321"}
    code = f"import gc, {module}; print(gc.get_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "(4321, 20, 10)"


def test_a_negative_threshold_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match="F2_GC_YOUNG_THRESHOLD: is -1"):
        Settings.from_env({"F2_GC_YOUNG_THRESHOLD": "-1"})
