"""The C-tool ceiling: Debian's MQTT and Kafka command-line tools doing the ingest worker's job.

    clients x  mosquitto_pub -q 1 --nodelay -l -t bench/ceiling/<n>   < the load generator's payloads, one a line
            -> Mosquitto (service listener, as the simulator user)
            -> mosquitto_sub -q 1 --nodelay -c -i <id> -C <messages> -F '%t\\t%p' -t 'bench/ceiling/#'
               (as the ingest user)
             | kcat -P -b <bootstrap> -t bench_ceiling -K '\\t' -X acks=all

The rate is the messages over the time from the first publish until Kafka's
end offsets of `bench_ceiling` have grown by all of them; the end offsets
confirm the count. Nothing else subscribes to `bench/ceiling/#`: the ingest
worker's topics are cmnd/, stat/ and tele/.

Two things that make a naive version of this hang, both handled here:

- A QoS 1 message published before the relay's subscription is in place has
  no session to go to and is dropped, so `-C <messages>` is never reached.
  The relay's subscription is therefore made first, in a persistent session
  (`-c -i <id>`, `-E`: exit once the broker acknowledged it); from then on
  Mosquitto queues every message for the relay, connected or not. The
  session is removed at the end (a clean-session connect with the same id).
- kcat reads stdin in blocking 128-byte `fread`s, so a message stays in kcat
  until more input or EOF follows it: Kafka cannot serve as a handshake for a
  lone marker message. Here kcat sees EOF when mosquitto_sub has its count.

Passwords never reach a command line: mosquitto_pub and mosquitto_sub read
them from `$XDG_CONFIG_HOME/mosquitto_pub` and `.../mosquitto_sub` (mode
600, in a private folder removed at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.loadgen import bodies, body_of, device_stamp, payload
from f2stream.errors import F2StreamError
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import RAW_TOPIC
from f2stream.settings import Secret, Settings

__all__ = [
    "KAFKA_TOPIC",
    "MQTT_TOPICS",
    "CeilingError",
    "CeilingResult",
    "measure",
    "option_file",
    "payload_lines",
    "split_lines",
]

logger = logging.getLogger(__name__)

#: Where the ceiling's messages go: a Kafka topic of their own, an MQTT tree nobody else reads.
KAFKA_TOPIC: Final = "bench_ceiling"
MQTT_TOPICS: Final = "bench/ceiling/#"
_TOPIC_ALREADY_EXISTS: Final = 36
_TOOLS: Final = ("mosquitto_pub", "mosquitto_sub", "kcat")
# QoS 1 as the ingest worker; TCP_NODELAY as the load generator and the broker (set_tcp_nodelay) set it.
_PUB: Final = ("mosquitto_pub", "-q", "1", "--nodelay")
_SUB: Final = ("mosquitto_sub", "-q", "1", "--nodelay")


class CeilingError(F2StreamError):
    """The ceiling could not be measured: a tool failed, or messages stopped arriving.

    Attributes:
        arrived: messages in `bench_ceiling` (of this run) when it gave up.
        expected: messages published.
    """

    def __init__(self, detail: str, *, arrived: int, expected: int) -> None:
        super().__init__(f"C-tool ceiling: {detail} ({arrived} of {expected} messages in Kafka topic {KAFKA_TOPIC})")
        self.detail = detail
        self.arrived = arrived
        self.expected = expected


@dataclass(frozen=True, slots=True)
class CeilingResult:
    """What the C tools achieved: messages, seconds from first publish to all in Kafka, their CPU."""

    messages: int
    clients: int
    seconds: float
    #: CPU seconds (user + system) by tool: every mosquitto_pub together, mosquitto_sub, kcat.
    cpu_s: Mapping[str, float]

    @property
    def msg_per_s(self) -> float:
        """Messages per second, MQTT publish to Kafka acknowledged."""
        return self.messages / self.seconds

    @property
    def cpu_s_total(self) -> float:
        """CPU seconds of all the tools."""
        return sum(self.cpu_s.values())

    def as_dict(self) -> dict[str, Any]:
        """The result for results.json."""
        return {
            "messages": self.messages,
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "msg_per_s": round(self.msg_per_s, 1),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_s_total": round(self.cpu_s_total, 3),
        }


# ------------------------------------------------------------------ pure parts


def payload_lines(messages: int, *, devices: int, first_us: int, seed: int = 7) -> Iterator[bytes]:
    """The load generator's payloads for messages 0..messages-1, one line each.

    The same component mix and bodies as bench/loadgen.py sends for `devices`
    devices with `seed`; message `n` is stamped `first_us + n` microseconds.
    """
    table = bodies(seed)
    for n in range(messages):
        _, body = body_of(n, devices, table)
        yield payload(device_stamp(first_us + n), body) + b"\n"


def split_lines(lines: Iterator[bytes], outputs: Sequence[IO[bytes]]) -> list[int]:
    """Deal `lines` to `outputs` in turn (line n to output n mod len); the count written to each."""
    counts = [0] * len(outputs)
    for n, line in enumerate(lines):
        outputs[n % len(outputs)].write(line)
        counts[n % len(outputs)] += 1
    return counts


def option_file(host: str, port: int, username: str, password: Secret) -> str:
    """A mosquitto_pub/mosquitto_sub options file: one option and its value a line."""
    if any(c in text for text in (host, username, password.reveal()) for c in "\r\n"):
        raise ValueError("a host, user name or password with a line break cannot go in an options file")
    return f"-h {host}\n-p {port}\n-u {username}\n-P {password.reveal()}\n"


def relay_options(settings: Settings) -> str:
    """mosquitto_sub's options file: logged in as the ingest worker is (over TLS with its certificate, or not)."""
    s = settings
    if not s.mqtt_tls:
        if s.mqtt_password is None:
            raise ValueError("the settings lack F2_MQTT_PASSWORD(_FILE)")
        return option_file(s.mqtt_host, s.mqtt_port, s.mqtt_username, s.mqtt_password)
    files = {"--cafile": s.mqtt_ca_file, "--cert": s.mqtt_cert_file, "--key": s.mqtt_key_file}
    lines = [f"-h {s.mqtt_host}", f"-p {s.mqtt_tls_port}", *(f"{o} {f}" for o, f in files.items() if f is not None)]
    if s.mqtt_password is not None:
        lines += [f"-u {s.mqtt_username}", f"-P {s.mqtt_password.reveal()}"]
    if any(c in line for line in lines for c in "\r\n"):
        raise ValueError("a host, file name or password with a line break cannot go in an options file")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- children


class _Child:
    """A tool's process: exited-or-not without reaping it, then reaped with its own CPU time."""

    def __init__(self, name: str, tool: str, proc: subprocess.Popen[bytes], stderr: Path) -> None:
        self.name, self.tool, self.proc, self.stderr = name, tool, proc, stderr
        self.cpu_s = 0.0
        self.returncode: int | None = None

    def exited(self) -> bool:
        if self.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def reap(self) -> int:
        """Wait for the exit (call once `exited`), record the exit code and CPU seconds."""
        if self.returncode is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            # Not Popen.kill: it polls first, which would reap the process before reap() could.
            os.kill(self.proc.pid, signal.SIGKILL)  # unreaped, so the pid is still this process's
            self.reap()

    def tail(self) -> str:
        """The last lines the tool wrote to stderr."""
        with contextlib.suppress(OSError):
            lines = self.stderr.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:]) or "(nothing on stderr)"
        return "(no stderr)"


class _Run:
    """The tools of one measurement, their private folder, and the Kafka clients that watch them."""

    def __init__(self, settings: Settings, folder: Path, messages: int, kcat: Sequence[str] = ()) -> None:
        self.settings = settings
        self.kcat = list(kcat) or ["-b", settings.kafka_bootstrap]  # how kcat reaches the brokers
        self.folder = folder
        self.messages = messages
        self.children: list[_Child] = []
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "config")}
        self.client_id = f"f2-ceiling-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.session = f"{self.client_id}-relay"
        self.consumer: AIOKafkaConsumer | None = None  # made when first needed: never one left unclosed
        self.partitions: list[TopicPartition] = []

    def write_options(self) -> None:
        """mosquitto_pub publishes as the simulator user; mosquitto_sub relays as the ingest worker logs in."""
        s = self.settings
        if s.sim_mqtt_password is None:
            raise ValueError("the settings lack F2_SIM_MQTT_PASSWORD(_FILE)")
        config = self.folder / "config"
        config.mkdir(mode=0o700)
        files = {
            "mosquitto_pub": option_file(s.mqtt_host, s.mqtt_port, s.sim_mqtt_username, s.sim_mqtt_password),
            "mosquitto_sub": relay_options(s),
        }
        for name, text in files.items():
            path = config / name
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(text)

    def start(
        self, name: str, command: Sequence[str], *, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.DEVNULL
    ) -> _Child:
        stderr = self.folder / f"{name.replace(' ', '-')}.err"
        with stderr.open("wb") as err:
            proc = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=err, env=self.env, cwd=self.folder)
        child = _Child(name, command[0], proc, stderr)
        self.children.append(child)
        return child

    def error(self, detail: str, arrived: int = 0) -> CeilingError:
        return CeilingError(detail, arrived=arrived, expected=self.messages)

    async def finish(self, child: _Child, timeout_s: float, when: str, arrived: int = 0) -> None:
        """Wait until `child` exits, with 0, within `timeout_s`; else raise (measure() then kills every tool)."""
        deadline = time.monotonic() + timeout_s
        while not child.exited():
            if time.monotonic() > deadline:
                raise self.error(f"{child.name} did not exit within {timeout_s:g}s {when}", arrived)
            await asyncio.sleep(0.02)
        if child.reap() != 0:
            raise self.error(f"{child.name} exited with {child.returncode} {when}: {child.tail()}", arrived)

    async def subscribe(self, timeout_s: float) -> None:
        """The relay's persistent session and its subscription, acknowledged by Mosquitto."""
        child = self.start("session", [*_SUB, "-c", "-i", self.session, "-t", MQTT_TOPICS, "-E"])
        await self.finish(child, timeout_s, "while subscribing the relay's session")

    async def forget_session(self) -> None:
        """Remove the relay's session: a clean-session connect with its id (best effort, a few seconds)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            await asyncio.to_thread(
                subprocess.run,
                ["mosquitto_sub", "-i", self.session, "-t", MQTT_TOPICS, "-E", "-W", "5"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                cwd=self.folder,
            )

    async def create_topic(self) -> None:
        """`bench_ceiling` with raw_iot_data's partitions and replicas (the settings' when it does not exist yet)."""
        admin = AIOKafkaAdminClient(**kafka_options(self.settings))
        await admin.start()
        try:
            described = {t["topic"]: t for t in await admin.describe_topics([RAW_TOPIC, KAFKA_TOPIC])}
            if described.get(KAFKA_TOPIC, {}).get("error_code") == 0:
                return
            raw = described.get(RAW_TOPIC, {})
            if raw.get("error_code") == 0 and raw["partitions"]:
                partitions, replicas = len(raw["partitions"]), len(raw["partitions"][0]["replicas"])
            else:
                partitions, replicas = self.settings.topic_partitions, self.settings.topic_replication or 1
            response = await admin.create_topics([NewTopic(KAFKA_TOPIC, partitions, replicas)])
            for name, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise self.error(f"creating topic {name} failed: Kafka error {code} {rest}")
            logger.info("Created topic %s with %d partitions, %d replicas", KAFKA_TOPIC, partitions, replicas)
        finally:
            await admin.close()

    async def in_kafka(self) -> int:
        """Messages in `bench_ceiling` now: its end offsets, summed."""
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(**kafka_options(self.settings), group_id=None)
            await self.consumer.start()
        if not self.partitions:
            await self.consumer._client.force_metadata_update()  # noqa: SLF001  # a topic created a moment ago
            ids = self.consumer.partitions_for_topic(KAFKA_TOPIC) or ()
            self.partitions = [TopicPartition(KAFKA_TOPIC, p) for p in sorted(ids)]
            if not self.partitions:
                return 0
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.partitions)
        return sum(ends.values())

    async def close(self) -> None:
        """Kill what still runs, remove the relay's session, stop the Kafka client."""
        try:
            for child in self.children:
                child.kill()
            await self.forget_session()
        finally:
            if self.consumer is not None:
                await self.consumer.stop()

    def cpu_by_tool(self) -> dict[str, float]:
        cpu = dict.fromkeys(_TOOLS, 0.0)
        for child in self.children:
            if child.name != "session":
                cpu[child.tool] += child.cpu_s
        return cpu


# ------------------------------------------------------------------ measurement


async def measure(
    settings: Settings,
    *,
    messages: int = 300_000,
    clients: int = 8,
    devices: int = 10_000,
    seed: int = 7,
    work_dir: Path,
    stall_s: float = 30.0,
    timeout_s: float = 600.0,
    progress: Callable[[int, int], None] | None = None,
    kcat: Sequence[str] = (),
) -> CeilingResult:
    """Publish `messages` through the C tools to Kafka and time them (module docstring).

    Args:
        settings: the stack's: the MQTT service listener, both MQTT accounts, Kafka.
        messages: published in all, dealt to `clients` mosquitto_pub processes in turn.
        clients: mosquitto_pub processes, each on its own topic bench/ceiling/<n>.
        devices: the payloads' component mix follows the load generator's for this many devices.
        seed: the load generator's payload seed.
        work_dir: a private folder for the tools' input, options and stderr is made (and removed) in it.
        stall_s: give up when Kafka's count has not moved for this long.
        timeout_s: give up after this long in all.
        progress: called with (messages in Kafka, messages) as they arrive.
        kcat: kcat's options to reach the brokers (bench.stack.kcat_connection); none: `-b` the bootstrap.

    Raises:
        CeilingError: a tool failed or did not exit, or messages stopped arriving; every tool is killed first.
        ValueError: nonsensical counts, or the settings lack an MQTT password.
    """
    if messages < 1 or clients < 1:
        raise ValueError(f"messages ({messages}) and clients ({clients}) must be at least 1")
    for tool in _TOOLS:
        if shutil.which(tool) is None:
            raise CeilingError(f"{tool} is not installed: make stack-install", arrived=0, expected=messages)
    folder = Path(tempfile.mkdtemp(prefix="ceiling-", dir=work_dir))  # mode 700
    run = _Run(settings, folder, messages, kcat)
    try:
        run.write_options()
        inputs = [folder / f"input-{n}" for n in range(clients)]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(path.open("wb")) for path in inputs]
            split_lines(payload_lines(messages, devices=devices, first_us=time.time_ns() // 1000, seed=seed), files)
        await run.create_topic()
        base = await run.in_kafka()
        await run.subscribe(timeout_s=30)
        return await _relay(run, inputs, messages, base, stall_s=stall_s, timeout_s=timeout_s, progress=progress)
    finally:
        try:
            await run.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


async def _relay(
    run: _Run,
    inputs: list[Path],
    messages: int,
    base: int,
    *,
    stall_s: float,
    timeout_s: float,
    progress: Callable[[int, int], None] | None,
) -> CeilingResult:
    """Start the relay and the publishers; wait until Kafka holds every message; reap the tools."""
    started = time.monotonic()
    sub = run.start(
        "mosquitto_sub",
        [*_SUB, "-c", "-i", run.session, "-C", str(messages), "-F", "%t\\t%p", "-t", MQTT_TOPICS],
        stdout=subprocess.PIPE,
    )
    assert sub.proc.stdout is not None
    kcat = run.start(
        "kcat",
        ["kcat", "-P", *run.kcat, "-t", KAFKA_TOPIC, "-K", "\\t", "-X", "acks=all"],
        stdin=sub.proc.stdout,
    )
    sub.proc.stdout.close()  # kcat's now: mosquitto_sub gets SIGPIPE if kcat dies
    publishers = []
    for n, path in enumerate(inputs):
        with path.open("rb") as lines:
            command = [*_PUB, "-l", "-t", f"bench/ceiling/{n}", "-i", f"{run.client_id}-pub-{n}"]
            publishers.append(run.start(f"mosquitto_pub {n}", command, stdin=lines))
    arrived, moved = 0, time.monotonic()
    while True:
        now = await run.in_kafka() - base
        if now != arrived:
            arrived, moved = now, time.monotonic()
            if progress is not None:
                progress(arrived, messages)
        if arrived >= messages:
            done = time.monotonic()
            break
        for child in run.children:
            if child.returncode is None and child.exited() and child.reap() != 0:
                raise run.error(f"{child.name} exited with {child.returncode}: {child.tail()}", arrived)
        # kcat exits once it has delivered what mosquitto_sub passed on: Kafka must hold everything by then.
        if kcat.returncode is not None and await run.in_kafka() - base < messages:
            raise run.error(f"kcat exited before all arrived: {kcat.tail()}", arrived)
        stalled, elapsed = time.monotonic() - moved, time.monotonic() - started
        if stalled > stall_s or elapsed > timeout_s:
            waiting = ", ".join(c.name for c in run.children if not c.exited()) or "none"
            raise run.error(
                (f"no progress for {stalled:.0f}s" if stalled > stall_s else f"not done within {timeout_s:g}s")
                + f"; tools still running: {waiting}. A missing ACL right shows as silence: Mosquitto "
                "acknowledges the subscription and the publishes and delivers nothing (deploy/mosquitto/acl.tmpl)",
                arrived,
            )
        await asyncio.sleep(0.05)
    for child in (*publishers, sub, kcat):
        await run.finish(child, 30, "after all messages arrived", arrived)
    total = await run.in_kafka() - base
    if total != messages:
        raise run.error(f"Kafka holds {total} new messages, {messages} were published", total)
    return CeilingResult(messages, len(inputs), done - started, run.cpu_by_tool())
