"""`make demo`, then `make down`: nothing the stack, the demo or its Prometheus started is left running.

The demo runs as README says (`make demo DEMO_SECONDS=N`), under a
throwaway var dir with every port free-picked (the stack's, both workers',
Prometheus' and the node exporter's), so it touches nothing else on the
machine. Its processes are found by what ties them to that var dir: the
path in their command line or `F2_VAR_DIR` in their environment. While the
demo's stack is up there must be such processes (else the check below
could not fail); after `make down` there must be none, and every port must
be free again for another checkout's `make up` and `make prometheus`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import PORT_SETTINGS, free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO_SECONDS = int(os.environ.get("F2_DEMO_TEST_SECONDS", "10"))
EXTRA_PORT_SETTINGS = ("F2_PIPELINE_WEB_PORT", "F2_INGEST_WEB_PORT", "F2_PROMETHEUS_PORT", "F2_NODE_EXPORTER_PORT")


def processes_of(var_dir: Path) -> dict[int, str]:
    """pid -> command line of every process whose command line or environment names `var_dir`."""
    found = {}
    marker = str(var_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in cmdline or b"F2_VAR_DIR=" + marker + b"\0" in environ + b"\0":
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
    return found


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def var_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="f2stream-demo-"))
    path.chmod(0o755)  # the postgres user must reach its data dir below
    yield path
    subprocess.run(["bash", str(REPO / "deploy" / "stack.sh"), "down"], env={**os.environ, "F2_VAR_DIR": str(path)},
                   capture_output=True, timeout=300)  # fmt: skip
    for pid in processes_of(path):  # whatever a failed check left behind
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    shutil.rmtree(path, ignore_errors=True)


def test_make_down_stops_what_make_demo_started(var_dir: Path) -> None:
    names = PORT_SETTINGS + EXTRA_PORT_SETTINGS
    ports = dict(zip(names, map(str, free_ports(len(names))), strict=True))
    env = {**os.environ, "F2_VAR_DIR": str(var_dir), "F2_KAFKA_STOP_GRACE": "2", **ports}

    demo = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_SECONDS={DEMO_SECONDS}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    said = demo.stdout[-4000:] + demo.stderr[-4000:]
    assert demo.returncode == 0, said
    assert " complete, 0 missing" in said, said  # verify's line: every acknowledged message landed

    running = processes_of(var_dir)
    commands = " ".join(running.values())
    for service in ("kafka", "postgres", "mosquitto", "prometheus", "node-exporter"):
        assert service in commands, f"no {service} process of the demo found (the check could not fail):\n{running}"

    down = subprocess.run(["make", "--no-print-directory", "down"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    left = processes_of(var_dir)
    assert not left, "left running after make down:\n" + "\n".join(f"{pid} {cmd}" for pid, cmd in left.items())
    taken = {name: port for name, port in ports.items() if listening(int(port))}
    assert not taken, f"ports still taken after make down: {taken}"
