"""Helpers of the observability tests: a private stack whose services can be stopped and started
one at a time, a local Prometheus scraping the workers, and small HTTP readers.

The destructive health tests must not share the session stack, so this
starts its own (`deploy/stack.sh up` under its own var dir, free ports).
A stopped service is started again by `deploy/stack.sh up`, which starts
only what is not running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from harness import ROOT, Stack

from bench.stack import PORT_SETTINGS, free_ports, read_env_file

STACK_SH = str(ROOT / "deploy" / "stack.sh")
PROMETHEUS_SH = str(ROOT / "deploy" / "prometheus" / "run.sh")
SERVICES = ("kafka", "pg-params", "pg-timeseries", "mosquitto")


class ControlledStack:
    """A private stack on free ports; `stop(service)` / `start()` for the destructive tests."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        ports = map(str, free_ports(len(PORT_SETTINGS)))
        self.env = {"F2_VAR_DIR": str(var_dir), **dict(zip(PORT_SETTINGS, ports, strict=True))}
        self.stack: Stack | None = None

    def up(self) -> Stack:
        """Start (or restart what is stopped) and return the running stack."""
        result = self._script(STACK_SH, "up", timeout=600)
        assert result.returncode == 0, f"stack up failed:\n{result.stdout}\n{result.stderr}"
        if self.stack is None:
            env = {**read_env_file(self.var_dir / "stack.env"), "F2_DATA_DIR": str(self.var_dir / "data" / "faust")}
            self.stack = Stack(self.var_dir, env)
        return self.stack

    def down(self) -> None:
        self._script(STACK_SH, "down", timeout=300)

    def stop(self, service: str) -> None:
        """Stop one service the way an outage would look to the workers, and wait until it is gone."""
        pid, sig = self._pid(service)
        os.kill(pid, sig)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), f"{service} (pid {pid}) did not stop"

    def _pid(self, service: str) -> tuple[int, int]:
        run = self.var_dir / "run"
        if service == "kafka":
            return int((run / "kafka.pid").read_text().split()[0]), signal.SIGTERM
        if service == "mosquitto":
            return int((run / "mosquitto.pid").read_text().split()[0]), signal.SIGTERM
        if service in ("pg-params", "pg-timeseries"):
            postmaster = self.var_dir / "data" / service / "postmaster.pid"
            return int(postmaster.read_text().splitlines()[0]), signal.SIGINT  # fast shutdown
        raise ValueError(f"unknown service {service!r}; one of {SERVICES}")

    def prometheus(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self._script(PROMETHEUS_SH, command, timeout=120, **env)

    def _script(self, script: str, command: str, *, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", script, command],
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def get(url: str, timeout_s: float = 5) -> tuple[int, bytes]:
    """Status and body of a GET, also for 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(f"http://127.0.0.1:{port}/health")
    return status, json.loads(body)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value of a worker's /metrics (labels as exposed, sorted by the client)."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def promql(prometheus_port: int, expr: str) -> dict[str, Any]:
    """The Prometheus query API's answer to an instant query (status 400 for a bad expression)."""
    query = urllib.parse.urlencode({"query": expr})
    status, body = get(f"http://127.0.0.1:{prometheus_port}/api/v1/query?{query}")
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


def as_always_answering(expr: str) -> str:
    """`expr` with every comparison made a `bool` one, so that it returns data even when not firing.

    Label matchers (`{job=~"..."}`) and strings are left alone.
    """
    out, depth, i, quote = [], 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == quote and expr[i - 1] != "\\":
                quote = ""
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            match = re.match(r"(==|!=|>=|<=|>|<)(\s*bool\b)?", expr[i:])
            if match:
                out.append(f"{match.group(1)} bool")
                i += len(match.group(0))
                continue
        out.append(ch)
        i += 1
    return "".join(out)
