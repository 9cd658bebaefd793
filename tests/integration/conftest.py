"""The real services, started once per session on free ports: Kafka, PostgreSQL, Mosquitto.

`deploy/stack.sh up` starts them under a throwaway var dir, exactly as
`make up` does for users; the two workers run as subprocesses with the
stack's settings. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ROOT, Stack, Worker, Workers, db_login, principal

from bench.stack import CLUSTER_PORT_SETTINGS, PORT_SETTINGS, SECURE_PORT_SETTINGS, free_ports, read_env_file


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka, two PostgreSQL clusters and Mosquitto on free ports, migrated."""
    yield from _stack(brokers=1)


@pytest.fixture(scope="session")
def cluster_stack() -> Iterator[Stack]:
    """The same with a Kafka cluster of three brokers (replication 3, min.insync.replicas 2)."""
    yield from _stack(brokers=3)


@pytest.fixture(scope="session")
def cluster_workers(cluster_stack: Stack) -> Iterator[Workers]:
    """The pipeline and ingest workers against the three-broker stack, healthy."""
    yield from _workers(cluster_stack)


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[Stack]:
    """The same with Kafka secured (F2_STACK_SECURE=1): SASL_SSL and mTLS listeners, SCRAM users, ACLs."""
    yield from _stack(brokers=1, secure=True)


@pytest.fixture(scope="session")
def secure_workers(secure_stack: Stack) -> Iterator[Workers]:
    """Both workers against the secure stack, each logged in as its own principal (f2-pipeline, f2-ingest).

    The pipeline worker logs in to both databases as f2_pipeline: on this stack it would refuse to
    start as their owner (F2_DB_STRICT_PRIVILEGES=1).
    """
    pipeline_env = {**principal(secure_stack, "PIPELINE"), **db_login(secure_stack, "PIPELINE")}
    yield from _workers(secure_stack, pipeline_env=pipeline_env, ingest_env=principal(secure_stack, "INGEST"))


def _stack(brokers: int, *, secure: bool = False) -> Iterator[Stack]:
    var_dir = Path(tempfile.mkdtemp(prefix="f2stream-test-"))
    var_dir.chmod(0o755)  # the postgres user must reach its data dir below
    names = PORT_SETTINGS + (CLUSTER_PORT_SETTINGS if brokers == 3 else ()) + (SECURE_PORT_SETTINGS if secure else ())
    ports = map(str, free_ports(len(names)))
    env = {
        "F2_VAR_DIR": str(var_dir),
        "F2_PYTHON": sys.executable,
        "F2_KAFKA_BROKERS": str(brokers),
        "F2_STACK_SECURE": "1" if secure else "0",
        # After the fault tests' kills and restarts, a broker's controlled shutdown can wait out
        # its whole grace (10 s each of three, measured); the suite throws the data away, so 2 s.
        "F2_KAFKA_STOP_GRACE": "2",
        **dict(zip(names, ports, strict=True)),
    }
    script = str(ROOT / "deploy" / "stack.sh")
    up = subprocess.run(["bash", script, "up"], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        running = Stack(
            var_dir, {**read_env_file(var_dir / "stack.env"), "F2_DATA_DIR": str(var_dir / "data" / "faust")}
        )
        migrate = running.faust("migrate")
        assert migrate.returncode == 0, migrate.stderr
        yield running
    finally:
        started = time.monotonic()
        down = subprocess.run(["bash", script, "down"], env={**os.environ, **env}, capture_output=True, timeout=300)
        if time.monotonic() - started > 30:  # a slow stop is a finding: say where the time went
            said = (down.stdout + down.stderr).decode(errors="replace")
            print(f"stack down took {time.monotonic() - started:.0f}s:\n{said}")
        if os.environ.get("F2_TEST_KEEP_VAR") == "1":  # logs and data, to read after a failure
            print(f"stack var dir kept: {var_dir}", flush=True)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def workers(stack: Stack) -> Iterator[Workers]:
    """The pipeline and ingest workers, running against the stack, healthy."""
    yield from _workers(stack)


def _workers(
    stack: Stack, *, pipeline_env: dict[str, str] | None = None, ingest_env: dict[str, str] | None = None
) -> Iterator[Workers]:
    pipeline_port, ingest_port = free_ports(2)
    running = Workers(
        pipeline=Worker(stack, "f2stream", pipeline_port, "pipeline", F2_INGEST_URL=f"http://127.0.0.1:{ingest_port}",
                        **(pipeline_env or {})),
        ingest=Worker(stack, "f2stream.ingest", ingest_port, "ingest", **(ingest_env or {})),
    )  # fmt: skip
    running.pipeline.start()
    running.ingest.start()
    try:
        running.pipeline.wait_healthy()
        running.ingest.wait_healthy()
        yield running
    finally:  # both at once: the session's teardown waits for the slower only
        for worker in (running.ingest, running.pipeline):
            worker.signal()
        for worker in (running.ingest, running.pipeline):
            worker.wait_stopped(timeout_s=30)


_next_device = [100]


@pytest.fixture
def device_numbers() -> Iterator[int]:
    """A block of 100 device numbers no other test uses (ids f2-02f2000000NN)."""
    _next_device[0] += 100
    yield _next_device[0]
