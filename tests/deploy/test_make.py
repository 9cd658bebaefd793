"""The Makefile's entry points: the seed's target names are aliases of ours and `make help` lists them.

`make -n` prints what a target would run without running it, so these checks
start nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# seed's name -> the command of ours it must run
ALIASES = {
    "full-setup": "bash deploy/demo.sh",
    "logs-connector": "/log/ingest.log",
    "logs-processor": "/log/pipeline.log",
    "logs-sink": "/log/pipeline.log",
}


def make(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_help_lists_the_seeds_targets() -> None:
    listed = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+)\s+(.*)$", make("help"), re.MULTILINE)}
    for alias in ALIASES:
        assert alias in listed, f"make help does not list {alias}"
    assert "demo" in listed["full-setup"]
    assert "pipeline worker" in listed["logs-sink"]


@pytest.mark.parametrize(("alias", "runs"), ALIASES.items())
def test_alias_runs_our_target(alias: str, runs: str) -> None:
    # F2_VAR_DIR pins the log paths: the aliases must follow it like the targets they stand for
    dry = make("-n", alias, "F2_VAR_DIR=/nonexistent/f2-var")
    assert runs in dry, f"make {alias} does not run {runs!r}:\n{dry}"
    if runs.startswith("/log/"):
        assert f"tail -n 50 /nonexistent/f2-var{runs}" in dry


def test_logs_sink_says_where_the_sink_runs() -> None:
    assert "the sink runs in the pipeline worker" in make("-n", "logs-sink")
