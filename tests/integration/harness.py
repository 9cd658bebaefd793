"""Helpers of the integration tests: free ports, the stack, worker subprocesses.

`deploy/stack.sh up` starts them under a throwaway var dir, exactly as
`make up` does for users; the two workers run as subprocesses with the
stack's settings. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from bench.stack import db_login as stack_db_login
from bench.stack import kcat_connection
from bench.stack import principal as stack_principal
from f2stream.kafka_client import kafka_options
from f2stream.settings import Settings
from f2stream.simulator import device_ids
from f2stream.storage.db import connect
from f2stream.verify import Verdict, poll_database

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    what: str,
    *,
    seen: Callable[[], object] | None = None,
    interval_s: float = 0.3,
) -> T:
    """Poll `condition` (plain or async) until it returns something truthy, and return that.

    Raises AssertionError naming `what` (what did not happen) when `timeout_s`
    passes first, with `seen()` (the last state observed), if given.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if time.monotonic() >= deadline:
            last = f"; last seen: {seen()}" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting until {what}{last}")
        await asyncio.sleep(interval_s)


@dataclass
class Stack:
    """A running stack: its settings as environment variables and as Settings."""

    var_dir: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def run_env(self, **extra: str) -> dict[str, str]:
        """A process environment holding the stack's settings."""
        return {**os.environ, **self.env, **extra}

    def pg_ctl(self, cluster: str, action: str) -> None:
        """Stop or start one PostgreSQL cluster of the stack (`params` or `timeseries`)."""
        data = self.var_dir / "data" / f"pg-{cluster}"
        command = [f"{self.env['F2_STACK_PG_BIN']}/pg_ctl", action, "-D", str(data), "-w", "-t", "60"]
        command += ["-m", "fast"] if action == "stop" else ["-l", str(self.var_dir / "log" / f"pg-{cluster}.log")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"pg_ctl {action} {cluster}: {result.stdout}{result.stderr}"

    def kcat(self, *args: str, broker: int | None = None) -> list[str]:
        """A kcat command line for the stack's brokers (or broker number `broker` alone), secure or not."""
        return ["kcat", *kcat_connection(self.env, broker), *args]

    def faust(
        self, *args: str, app: str = "f2stream", timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run one `faust -A app ...` command to its end."""
        return subprocess.run(
            [sys.executable, "-m", "faust", "-A", app, *args],
            env=self.run_env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.var_dir,
        )


def principal(stack: Stack, name: str) -> dict[str, str]:
    """The Kafka login of one of a secure stack's principals: INGEST, PIPELINE or ADMIN (bench.stack.principal)."""
    return stack_principal(stack.env, name)


def db_login(stack: Stack, name: str) -> dict[str, str]:
    """The database login of one of the stack's processes: PIPELINE or REPAIR (bench.stack.db_login)."""
    return stack_db_login(stack.env, name)


class Worker:
    """One faust worker subprocess, logging to a file."""

    def __init__(self, stack: Stack, app: str, web_port: int, name: str, **env: str) -> None:
        self.stack, self.app, self.web_port, self.name, self.env = stack, app, web_port, name, env
        self.log_path = stack.var_dir / "log" / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # this life's log from here
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    self.app,
                    "worker",
                    "-l",
                    "info",
                    "--web-port",
                    str(self.web_port),
                ],
                env=self.stack.run_env(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.stack.var_dir,
            )

    def get(self, path: str) -> tuple[int, str]:
        """HTTP status and body of a page of the worker's web server."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def health(self) -> tuple[int, str]:
        return self.get("/health")

    def wait_healthy(self, timeout_s: float = 90, accept: tuple[str, ...] = ("ok",)) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"{self.name} exited:\n{self.log_tail()}"
            try:
                status, body = self.health()
                if status == 200 and any(f'"status":"{a}"' in body.replace(" ", "") for a in accept):
                    return
                last = body
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not healthy after {timeout_s}s: {last}\n{self.log_tail()}")

    def stop(self, sig: int = 15, timeout_s: float = 60) -> None:
        self.signal(sig)
        self.wait_stopped(timeout_s)

    def signal(self, sig: int = 15) -> None:
        """Send `sig` if the worker runs (:meth:`wait_stopped` then waits): several workers stop at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait_stopped(self, timeout_s: float = 60) -> None:
        """Wait for the worker to exit; SIGKILL it after `timeout_s`, saying so (a stop that hangs is a finding)."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"{self.name} worker did not stop within {timeout_s:g}s: killed\n{self.log_tail(15)}", flush=True)
            self.process.kill()
            self.process.wait()

    def log_since_start(self) -> str:
        """What the worker logged since it was last started (the log file holds every life of it)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""
        )


@dataclass
class Workers:
    """The two workers of a test session."""

    pipeline: Worker
    ingest: Worker


def service_client(stack: Stack) -> aiomqtt.Client:
    """An MQTT client logged in as the simulator account on the service listener."""
    settings = stack.settings
    assert settings.sim_mqtt_password is not None
    return aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.sim_mqtt_username,
        password=settings.sim_mqtt_password.reveal(),
    )


async def publish(stack: Stack, messages: Iterable[tuple[str, bytes]]) -> None:
    """Publish over the service listener, QoS 1, waiting for each PUBACK."""
    async with service_client(stack) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def rows_for(
    stack: Stack, device: str, expected: int, *, component: str | None = None, timeout_s: float = 60
) -> list[asyncpg.Record]:
    """A device's rows (of one component, if given) by component, data point and time.

    Waits until there are `expected` of them, or the time is up.
    """
    settings = stack.settings
    assert settings.timeseries_password is not None
    conn = await asyncpg.connect(settings.timeseries_dsn, password=settings.timeseries_password.reveal())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await conn.fetch(
                "SELECT * FROM iot_measurements WHERE device_id = $1 AND ($2::text IS NULL OR component = $2)"
                " ORDER BY component, data_point, time",
                device,
                component,
            )
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


# --- Faults: Kafka and Mosquitto stopped and started as deploy/stack.sh runs them ---


def _pid_of(path: Path) -> int:
    pid = int(path.read_text().split()[0])
    assert Path(f"/proc/{pid}").exists(), f"no process {pid} from {path}"
    return pid


def _command_of(pid: int) -> list[str]:
    return [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a child of ours not reaped yet is gone for our purpose)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _running(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs after {timeout_s}s"
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def kafka_port(stack: Stack, broker: int = 1) -> int:
    """The port of the stack's Kafka broker number `broker` (1-based, as in F2_KAFKA_BROKER's list)."""
    return int(stack.env["F2_KAFKA_BROKER"].split(";")[broker - 1].rsplit(":", 1)[1])


def _kafka_file(stack: Stack, folder: str, broker: int, suffix: str) -> Path:
    """deploy/stack.sh's files of one broker: run/kafka.pid for broker 1, run/kafka-2.pid for broker 2..."""
    return stack.var_dir / folder / f"kafka{'' if broker == 1 else f'-{broker}'}{suffix}"


def kill_kafka(stack: Stack, broker: int = 1) -> list[str]:
    """`kill -9` one Kafka broker of the stack; returns its command line, for :func:`start_kafka`."""
    pid = _pid_of(_kafka_file(stack, "run", broker, ".pid"))
    command = _command_of(pid)
    os.kill(pid, 9)
    _wait_gone(pid, 30)
    return command


def start_kafka(stack: Stack, command: list[str], timeout_s: float = 120, broker: int = 1) -> None:
    """Start a broker again with `command` (as deploy/stack.sh does: log appended, pid file), wait until it answers.

    On a cluster, "answers" means its metadata lists every broker again.
    """
    log_path = _kafka_file(stack, "log", broker, ".log")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _kafka_file(stack, "run", broker, ".pid").write_text(f"{process.pid}\n")
    port, deadline = kafka_port(stack, broker), time.monotonic() + timeout_s
    brokers = int(stack.env.get("F2_KAFKA_BROKERS", "1"))
    while time.monotonic() < deadline:
        assert process.poll() is None, f"kafka exited during start-up: see {log_path}"
        if _port_open(port):
            metadata = subprocess.run(stack.kcat("-L", "-m", "3", broker=broker), capture_output=True, text=True)
            if metadata.returncode == 0 and f" {brokers} brokers:" in metadata.stdout:
                return
        time.sleep(0.25)
    raise AssertionError(f"kafka broker {broker} did not answer within {timeout_s}s")


def wait_in_sync(stack: Stack, timeout_s: float = 120) -> None:
    """Wait until every partition of every topic has all its replicas in sync (a broker started again caught up)."""
    deadline = time.monotonic() + timeout_s
    lagging: list[str] = ["no metadata"]
    while time.monotonic() < deadline:
        metadata = subprocess.run(stack.kcat("-L", "-m", "3"), capture_output=True, text=True)
        partitions = _REPLICAS.findall(metadata.stdout)
        lagging = [f"replicas {r}, isrs {i}" for r, i in partitions if set(r.split(",")) != set(i.split(","))]
        if metadata.returncode == 0 and partitions and not lagging:
            return
        time.sleep(0.5)
    raise AssertionError(f"replicas not in sync after {timeout_s}s: {lagging[:5]}")


_REPLICAS = re.compile(r"replicas: ([\d,]+), isrs: ([\d,]*)")


def restart_mosquitto(stack: Stack, sig: int = 15, down_s: float = 0.0, timeout_s: float = 30) -> None:
    """Stop Mosquitto with `sig` (it saves its persistence on SIGTERM), wait `down_s`, start it as before."""
    pid_file = Path(stack.env["F2_MQTT_PID_FILE"])
    pid = _pid_of(pid_file)
    command = _command_of(pid)
    os.kill(pid, sig)
    _wait_gone(pid, timeout_s)
    time.sleep(down_s)
    started = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)  # -d: it daemonizes
    assert started.returncode == 0, f"mosquitto did not start: {started.stdout}{started.stderr}"
    ports = (int(stack.env["F2_MQTT_PORT"]), int(stack.env["F2_MQTT_TLS_PORT"]))
    deadline = time.monotonic() + timeout_s
    while not all(map(_port_open, ports)):
        assert time.monotonic() < deadline, f"mosquitto not listening on {ports} after {timeout_s}s"
        time.sleep(0.1)


def metric(worker: Worker, name: str) -> float | None:
    """The sum of a metric's samples on a worker's /metrics (None: the worker does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=3) as response:
            lines = response.read().decode().splitlines()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((f"{name} ", f"{name}{{")))


async def verify_database(settings: Settings, expected: Counter[tuple[str, str, str]], timeout_s: float) -> Verdict:
    """`verify`'s check (:func:`f2stream.verify.poll_database`) over a connection of its own."""
    conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
    try:
        return await poll_database(conn, expected, timeout_s)
    finally:
        await conn.close()


# --- Waiting on the pipeline: parameters held, records consumed, group members ---


async def parameter_versions(stack: Stack, devices: Iterable[str]) -> dict[str, int]:
    """The devices' current parameter versions in PostgreSQL (`parameter_versions`)."""
    settings = stack.settings
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        rows = await conn.fetch(
            "SELECT device_id, version FROM parameter_versions WHERE device_id = ANY($1::text[])", list(devices)
        )
    finally:
        await conn.close()
    return {r["device_id"]: r["version"] for r in rows}


async def wait_parameters(stack: Stack, worker: Worker, *devices: str, timeout_s: float = 30) -> None:
    """Wait until `worker`'s parameter table holds each device's parameters at its version in PostgreSQL.

    Seen through `/devices/{device_id}/parameters`, which answers from the
    table decode reads.
    """
    versions = await parameter_versions(stack, devices)
    assert set(versions) == set(devices), f"no parameter version in PostgreSQL for {set(devices) - set(versions)}"
    answers: dict[str, str] = {}

    def held() -> bool:
        for device, version in versions.items():
            status, body = worker.get(f"/devices/{device}/parameters")
            answers[device] = f"{status} {body[:200]}"
            if status != 200 or json.loads(body)["version"] < version:
                return False
        return True

    await wait_until(
        held, timeout_s, f"{worker.name} holds the parameters at versions {versions}", seen=lambda: answers
    )


async def wait_consumed(stack: Stack, group: str, topic: str, timeout_s: float = 60) -> None:
    """Wait until consumer group `group` has committed every record of `topic` written so far."""
    kafka = kafka_options(stack.settings)
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        assert partitions, f"Kafka knows no partitions of {topic}: {described}"
        consumer = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        behind: dict[int, tuple[int, int]] = {}

        async def caught_up() -> bool:
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            behind.clear()
            for tp, end in ends.items():
                at = committed[tp].offset if tp in committed else -1  # -1: nothing committed yet
                if max(at, 0) < end:
                    behind[tp.partition] = (at, end)
            return not behind

        await wait_until(
            caught_up,
            timeout_s,
            f"group {group} has committed {topic} up to its end offsets",
            seen=lambda: f"partition: (committed, end) {behind}",
        )
    finally:
        await admin.close()


async def group_assignments(stack: Stack, group: str) -> list[set[TopicPartition]]:
    """The partitions Kafka has assigned to each member of consumer group `group` (one set per member)."""
    admin = AIOKafkaAdminClient(**kafka_options(stack.settings))
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return [
        set(ConsumerProtocolMemberAssignment.decode(member["member_assignment"]).partitions())
        if member["member_assignment"]
        else set()
        for response in responses
        for described in response.to_object()["groups"]
        if described["group"] == group
        for member in described["members"]
    ]


async def dead_letters_since(stack: Stack, since_ms: int) -> list[tuple[dict[str, bytes], bytes]]:
    """(headers, value) of every dead letter written since `since_ms`."""
    consumer = AIOKafkaConsumer(**kafka_options(stack.settings))
    await consumer.start()
    try:
        partitions = [TopicPartition("iot_dead_letter", p) for p in range(stack.settings.topic_partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        for tp in partitions:
            consumer.seek(tp, starts[tp].offset if starts[tp] is not None else ends[tp])
        letters = []
        while True:
            behind = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                return letters
            for records in (await consumer.getmany(*behind, timeout_ms=1000, max_records=5000)).values():
                letters.extend((dict(r.headers), r.value or b"") for r in records)
    finally:
        await consumer.stop()


async def register_device(stack: Stack, pipeline: Worker, device_number: int) -> str:
    """Enrol one simulated device with the demo parameters; return its id once the pipeline worker holds them."""
    [device] = device_ids(1, device_number)
    primed = stack.faust(
        "simulate", "--devices", "1", "--first-device", str(device_number), "--count", "7", "--rate", "0",
        "--register-params",
    )  # fmt: skip
    assert primed.returncode == 0, primed.stderr[-2000:]
    await wait_parameters(stack, pipeline, device)
    return device
