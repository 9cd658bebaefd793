"""`make bench`: the pipeline against its ceiling, every stage alone, on a private stack.

    .venv/bin/python -m bench.run                      # the short default (a few minutes)
    .venv/bin/python -m bench.run --sustained-s 300    # plus the 5-minute run at --sustained-rate
    .venv/bin/python -m bench.run --sessions 10000     # plus simultaneous mTLS device sessions

Starts its own stack (deploy/stack.sh on free ports under a throwaway
F2_VAR_DIR), migrates, registers `--devices` devices' parameters, then:

0. the C-tool ceiling (bench/ceiling.py): mosquitto_pub, mosquitto_sub and
   kcat doing the ingest worker's job, MQTT -> Kafka, on the same broker with
   the same payloads; every rate below is also reported as a share of it;
1. the load generator alone (no subscriber): its own ceiling;
2. the bare path (bench/bare.py: MQTT -> Kafka forwarder, COPY sink) at each
   offered rate and saturating;
3. both workers at the same rates and saturating (py-spy on the pipeline
   worker in the saturating run with --profile), optionally the sustained run
   and the device-sessions run;
4. ingest alone (pipeline stopped), sink alone and decode alone on what the
   topics hold (bench/stages.py);
5. the backlog: `--backlog` messages queued for the ingest worker's session
   while it is down, then drained by it alone.

Every pipeline run is verified message by message against the generator's
manifest (f2stream.verify.compare). Writes var/bench/<stamp>/results.json,
results.md and results.png, and var/bench/latest -> that folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import ceiling, report
from bench.procstat import Watched, cpu_snapshot, lineage, memory_kb, pid_file
from bench.stack import (
    PORT_SETTINGS,
    SECURE_PORT_SETTINGS,
    db_login,
    free_ports,
    kcat_connection,
    principal,
    read_env_file,
)
from f2stream.alarm_rules import parse_rule_file
from f2stream.devices.alarm_rule_store import load_rules
from f2stream.kafka_client import kafka_options
from f2stream.pki import issue_device_certificate
from f2stream.records import format_time
from f2stream.settings import Settings
from f2stream.simulator import device_ids, register_demo_parameters
from f2stream.storage.db import connect
from f2stream.verify import compare, read_manifest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench"

_WINDOW_ROWS = "SELECT count(*) AS n, max(written_at) AS last FROM iot_measurements WHERE time BETWEEN $1 AND $2"
_WINDOW_KEYS = """
SELECT device_id, component, time, count(*) AS rows FROM iot_measurements
WHERE time BETWEEN $1 AND $2 GROUP BY device_id, component, time
"""
_WINDOW_LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99])
           WITHIN GROUP (ORDER BY extract(epoch FROM written_at - received_at)) AS r,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - time)) AS d
FROM iot_measurements WHERE time BETWEEN $1 AND $2
"""
_BARE_ROWS = "SELECT count(*) AS n, max(written_at) AS last FROM bench_bare"
_BARE_LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99])
           WITHIN GROUP (ORDER BY extract(epoch FROM written_at - received_at)) AS r,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM
           written_at - ((payload::json->>'timestamp')::timestamp AT TIME ZONE 'UTC'))) AS d
FROM bench_bare
"""


class Progress:
    """One line, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + text[:200])
            sys.stderr.flush()
        elif force or time.monotonic() - self.last > 5:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self.last = time.monotonic()

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Bench:
    """The private stack, the processes under test, and the runs."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.var_dir = Path(args.var_dir) if args.var_dir else Path(tempfile.mkdtemp(prefix="f2stream-bench-"))
        self.own_stack = not args.var_dir
        self.secure = False  # the stack's stack.env says (F2_STACK_SECURE=1), once it is up
        self.env: dict[str, str] = {}
        self.settings: Settings | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.web_ports: dict[str, int] = {}
        self.helpers: dict[str, subprocess.Popen[bytes]] = {}
        self.progress = Progress()
        self.results: dict[str, Any] = {"runs": [], "stages": {}, "notes": []}
        self.devices = device_ids(args.devices, args.first_device)
        self.admin: AIOKafkaAdminClient | None = None
        self.offsets: AIOKafkaConsumer | None = None
        self.db: asyncpg.Connection | None = None

    # ------------------------------------------------------------------ stack

    def stack_up(self) -> None:
        self.var_dir.chmod(0o755)  # the postgres user must reach its data dir below
        env = {"F2_VAR_DIR": str(self.var_dir), "F2_PYTHON": sys.executable}
        ports = PORT_SETTINGS + (SECURE_PORT_SETTINGS if self.args.secure else ())
        if self.args.secure:
            env["F2_STACK_SECURE"] = "1"
        if not (self.var_dir / "stack.env").exists():
            env.update(zip(ports, map(str, free_ports(len(ports))), strict=True))
        self.progress.done(f"bench: starting the stack under {self.var_dir}")
        if not self.own_stack and (self.var_dir / "stack.env").exists():
            up = subprocess.CompletedProcess([], 0)  # running already: use it as it is
        else:
            up = self._up(env)
        if up.returncode != 0:
            raise SystemExit(f"bench: stack up failed:\n{up.stdout}\n{up.stderr}")
        self.env = {**read_env_file(self.var_dir / "stack.env"), "F2_DATA_DIR": str(self.var_dir / "data" / "faust")}
        self.secure = self.env.get("F2_STACK_SECURE") == "1"
        if self.secure:  # the bench's own clients (topics, offsets, load, stages alone) as the admin principal
            self.env.update(principal(self.env, "ADMIN"))
        self.settings = Settings.from_env(self.env)
        migrate = self.faust("migrate")
        if migrate.returncode != 0:
            raise SystemExit(f"bench: migrate failed:\n{migrate.stderr}")

    def _up(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "deploy" / "stack.sh"), "up"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )

    def stack_down(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        for name in list(self.helpers):
            self.stop_helper(name)
        if self.own_stack and not self.args.keep_stack:
            subprocess.run(
                ["bash", str(ROOT / "deploy" / "stack.sh"), "down"],
                env={**os.environ, "F2_VAR_DIR": str(self.var_dir)},
                capture_output=True,
                timeout=300,
            )
            shutil.rmtree(self.var_dir, ignore_errors=True)

    def run_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, **extra}

    def faust(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "faust", "-A", "f2stream", *args],
            env=self.run_env(),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.var_dir,
        )

    def watched(self) -> list[Watched]:
        data, run = self.var_dir / "data", self.var_dir / "run"
        procs = [
            Watched("kafka", pid_file(run / "kafka.pid")),
            Watched("mosquitto", pid_file(run / "mosquitto.pid")),
            Watched("pg-params", pid_file(data / "pg-params" / "postmaster.pid"), children=True),
            Watched("pg-timeseries", pid_file(data / "pg-timeseries" / "postmaster.pid"), children=True),
        ]
        for name, proc in {**self.workers, **self.helpers}.items():
            procs.append(Watched(name, lambda p=proc: p.pid if p.poll() is None else None))
        return procs

    # ---------------------------------------------------------------- workers

    def start_worker(self, name: str, app: str, *extra: str) -> None:
        (port,) = free_ports(1)
        log = (self.var_dir / "log" / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "bench.worker", app, "-l", "info", "--web-port", str(port), *extra]
        login = principal(self.env, app.upper()) if self.secure else {}  # each worker as its own principal
        if app == "pipeline":  # and the pipeline as its own database role, as in production
            login.update(db_login(self.env, "PIPELINE"))
        self.workers[name] = subprocess.Popen(
            command, env=self.run_env(PYTHONPATH=str(ROOT), **login), stdout=log, stderr=subprocess.STDOUT,
            cwd=self.var_dir,
        )  # fmt: skip
        self.web_ports[name] = port

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_helper(self, name: str, *command: str) -> None:
        log = (self.var_dir / "log" / f"{name}.log").open("ab")
        self.helpers[name] = subprocess.Popen(
            [sys.executable, "-m", *command], env=self.run_env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def stop_helper(self, name: str) -> None:
        proc = self.helpers.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def metric(self, name: str, metric: str) -> float | None:
        try:
            url = f"http://127.0.0.1:{self.web_ports[name]}/metrics"
            with urllib.request.urlopen(url, timeout=3) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith(metric + " "):
                        return float(line.split()[1])
        except (OSError, KeyError):
            return None
        return None

    def healthy(self, name: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.web_ports[name]}/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                return b'"ok"' in response.read().replace(b" ", b"")
        except OSError:
            return False

    async def wait_healthy(self, name: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.workers[name]
            if proc.poll() is not None:
                raise SystemExit(f"bench: {name} exited; see {self.var_dir}/log/{name}.log")
            if await asyncio.to_thread(self.healthy, name):
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"bench: {name} not healthy after {timeout_s}s; see {self.var_dir}/log/{name}.log")

    async def start_pipeline(self) -> None:
        self.start_worker("pipeline", "pipeline", *self.args.worker_option)
        self.start_worker("ingest", "ingest", *self.args.worker_option)
        await self.wait_healthy("pipeline")
        await self.wait_healthy("ingest")
        deadline = time.monotonic() + 120
        while (self.metric("pipeline", "f2_parameters") or 0) < len(self.devices):
            if time.monotonic() > deadline:
                raise SystemExit("bench: the pipeline worker did not load every device's parameters in 120s")
            self.progress.show(f"bench: pipeline holds {self.metric('pipeline', 'f2_parameters')} devices' parameters")
            await asyncio.sleep(1)

    # ------------------------------------------------------------------ kafka

    async def open_clients(self) -> None:
        assert self.settings is not None
        self.admin = AIOKafkaAdminClient(**kafka_options(self.settings))
        await self.admin.start()
        self.offsets = AIOKafkaConsumer(**kafka_options(self.settings), group_id=None)
        await self.offsets.start()
        self.db = await connect(self.settings.timeseries_dsn, self.settings.timeseries_password)

    async def close_clients(self) -> None:
        if self.admin is not None:
            await self.admin.close()
        if self.offsets is not None:
            await self.offsets.stop()
        if self.db is not None:
            await self.db.close()

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        assert self.offsets is not None
        await self.offsets._client.force_metadata_update()  # noqa: SLF001
        partitions = [TopicPartition(topic, p) for p in self.offsets.partitions_for_topic(topic) or ()]
        ends: dict[TopicPartition, int] = await self.offsets.end_offsets(partitions) if partitions else {}
        return ends

    async def lag(self, groups: Sequence[tuple[str, str]]) -> int:
        """Records behind, summed over (group, topic) pairs: end offset minus committed offset."""
        assert self.admin is not None
        total = 0
        for group, topic in groups:
            ends = await self.end_offsets(topic)
            committed = await self.admin.list_consumer_group_offsets(group)
            for tp, end in ends.items():
                done = committed.get(tp)
                total += max(0, end - (done.offset if done is not None and done.offset >= 0 else 0))
        return total

    # ---------------------------------------------------------------- loadgen

    async def loadgen(
        self, label: str, *, rate: float, duration_s: float, manifest: Path | None, extra: Sequence[str] = ()
    ) -> dict[str, Any]:
        assert self.settings is not None
        a = self.args
        command = [
            sys.executable, "-m", "bench.loadgen",
            "--port", str(self.settings.mqtt_port), "--tls-port", str(self.settings.mqtt_tls_port),
            "--password-file", self.env["F2_SIM_MQTT_PASSWORD_FILE"],
            "--devices", str(len(self.devices)), "--first-device", str(a.first_device),
            "--connections", str(a.connections), "--rate", str(rate), "--duration-s", str(duration_s),
            *(["--manifest", str(manifest)] if manifest else []), *extra,
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None
        summary: dict[str, Any] = {}
        async for raw in proc.stdout:
            line = orjson.loads(raw)
            if "summary" in line:
                summary = line["summary"]
            elif "sent" in line:
                self.progress.show(f"bench: {label}: {line['t']:.0f}s sent {line['sent']} acked {line['acked']}")
            elif "connected" in line:
                self.progress.show(f"bench: {label}: {line['connected']} sessions up in {line['connect_s']}s")
                summary["connect_s"] = line["connect_s"]
        if await proc.wait() != 0 or "sent" not in summary:
            raise SystemExit(f"bench: the load generator failed in {label}")
        return summary

    # ------------------------------------------------------------------- runs

    async def c_ceiling(self) -> None:
        """The C tools doing the ingest worker's job (bench/ceiling.py): what every rate is a share of."""
        assert self.settings is not None
        a = self.args
        watched = [w for w in self.watched() if w.name in ("mosquitto", "kafka")]
        before = cpu_snapshot(watched)
        try:
            result = await ceiling.measure(
                self.settings,
                messages=a.ceiling_messages,
                clients=a.ceiling_clients,
                devices=len(self.devices),
                work_dir=self.var_dir,
                progress=lambda n, of: self.progress.show(f"bench: C-tool ceiling: {n} of {of} messages in Kafka"),
                kcat=kcat_connection(self.env),
            )
        except ceiling.CeilingError as exc:
            raise SystemExit(f"bench: {exc}") from exc
        after = cpu_snapshot(watched)
        cpu = {**result.cpu_s, **{k: after[k] - before[k] for k in after}}
        self.results["ceiling"] = {
            **result.as_dict(),
            "cpu_per_1000": {k: round(1000 * v / result.messages, 3) for k, v in cpu.items()},
            "cpu_per_1000_total": round(1000 * sum(cpu.values()) / result.messages, 3),
        }
        self.save()
        self.progress.done(
            f"bench: C-tool ceiling {result.msg_per_s:.0f} msg/s MQTT -> Kafka ({result.messages} messages, "
            f"{result.clients} mosquitto_pub, {result.seconds:.1f}s)"
        )

    async def generator_ceiling(self) -> None:
        """The generator against Mosquitto with nobody subscribed: what it can offer."""
        watched = [w for w in self.watched() if w.name == "mosquitto"]
        before = cpu_snapshot(watched)
        summary = await self.loadgen("generator ceiling", rate=0, duration_s=self.args.generator_s, manifest=None)
        after = cpu_snapshot(watched)
        run = {
            "path": "generator",
            "offered": "max",
            "sent": summary["sent"],
            "acked": summary["acked"],
            "msg_per_s": summary["ack_rate"],
            "cpu_per_1000": {
                "loadgen": round(1000 * summary["cpu_s"] / max(1, summary["acked"]), 3),
                "mosquitto": round(1000 * (after["mosquitto"] - before["mosquitto"]) / max(1, summary["acked"]), 3),
            },
        }
        self.results["runs"].append(run)
        self.progress.done(f"bench: generator ceiling {run['msg_per_s']:.0f} msg/s acknowledged by Mosquitto")

    async def one_run(
        self, path: str, rate: float, duration_s: float, *, profile: bool = False, extra: Sequence[str] = ()
    ) -> dict[str, Any]:
        """One offered rate through `path` ('pipeline' or 'bare'), until every message landed."""
        assert self.db is not None
        label = f"{path} {'max' if not rate else f'{rate:.0f}/s'}"
        stamp = f"{path}-{int(rate) if rate else 'max'}-{len(self.results['runs'])}"
        manifest = self.out / f"manifest-{stamp}.jsonl" if path == "pipeline" else None
        groups = (
            [("f2stream-decode", "raw_iot_data"), ("f2stream-sink", "decoded_iot_data")]
            if path == "pipeline"
            else [("bench-bare-sink", "bench_bare_raw")]
        )
        if path == "bare":
            await self.db.execute("TRUNCATE bench_bare")
        watched = self.watched()
        cpu_before = cpu_snapshot(watched)
        peaks: dict[str, int] = {}
        lag_series: list[tuple[float, int]] = []
        started = time.monotonic()

        async def sample() -> None:
            while True:
                for name, proc in self.workers.items():
                    rss = memory_kb(proc.pid).get("VmRSS", 0)
                    peaks[name] = max(peaks.get(name, 0), rss)
                with contextlib.suppress(Exception):
                    lag_series.append((round(time.monotonic() - started, 1), await self.lag(groups)))
                await asyncio.sleep(2)

        sampler = asyncio.create_task(sample())
        profilers = []
        if profile and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            profilers = [
                await self.start_profile(name, duration_s) for name in ("ingest", "pipeline") if name in self.workers
            ]
        try:
            summary = await self.loadgen(label, rate=rate, duration_s=duration_s, manifest=manifest, extra=extra)
            published_at = time.monotonic()
            landed = await self.wait_landed(path, label, summary, manifest)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        cpu_after = cpu_snapshot(watched)
        for profiler in profilers:
            await profiler.wait()
        messages = summary["acked"]
        elapsed = landed["last_commit"] - summary["wall_start"] if landed["last_commit"] else None
        cpu = {k: round(1000 * (cpu_after[k] - cpu_before.get(k, 0)) / max(1, messages), 3) for k in cpu_after}
        cpu["loadgen"] = round(1000 * summary["cpu_s"] / max(1, messages), 3)
        lag_end = await self.lag(groups)
        run = {
            "path": path,
            "offered": rate or "max",
            "duration_s": duration_s,
            "sent": summary["sent"],
            "acked": messages,
            "publish_rate": summary["publish_rate"],
            "msg_per_s": round(messages / elapsed, 1) if elapsed else None,
            "rows": landed["rows"],
            "rows_per_s": round(landed["rows"] / elapsed, 1) if elapsed else None,
            "drain_s": round(time.monotonic() - published_at, 1),
            "receipt_to_commit_s": landed["receipt"],
            "device_to_commit_s": landed["device"],
            "cpu_per_1000": cpu,
            "cpu_per_1000_total": round(sum(cpu.values()), 3),
            "rss_peak_mb": {k: round(v / 1024, 1) for k, v in peaks.items()},
            "lag_end": lag_end,
            "lag_series": lag_series,
            "verify": landed["verify"],
        }
        self.results["runs"].append(run)
        self.save()
        self.progress.done(report.one_line(run))
        return run

    async def wait_landed(
        self, path: str, label: str, summary: dict[str, Any], manifest: Path | None
    ) -> dict[str, Any]:
        """Poll the database until every acknowledged message's rows are there (or nothing moves for a while)."""
        assert self.db is not None
        if path == "pipeline":
            assert manifest is not None
            expected = read_manifest(manifest)
            want = sum(expected.values())
            window = (datetime.fromisoformat(summary["first_time"]), datetime.fromisoformat(summary["last_time"]))
            query, args = _WINDOW_ROWS, window
        else:
            expected, want, query, args = Counter(), summary["acked"], _BARE_ROWS, ()
        last_n, moved = -1, time.monotonic()
        deadline = time.monotonic() + self.args.drain_timeout_s
        while True:
            row = await self.db.fetchrow(query, *args)
            if row["n"] != last_n:
                last_n, moved = row["n"], time.monotonic()
            self.progress.show(f"bench: {label}: landed {row['n']} of {want} rows")
            if row["n"] >= want or time.monotonic() - moved > self.args.stall_s or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        last = row["last"].timestamp() if row["last"] else None
        if path == "pipeline":
            found_rows = await self.db.fetch(_WINDOW_KEYS, *args)
            found: Counter[tuple[str, str, str]] = Counter(
                {(r["device_id"], r["component"], format_time(r["time"])): r["rows"] for r in found_rows}
            )
            v = compare(expected, found)
            verdict = {
                "ok": v.ok,
                "messages": v.messages,
                "complete": v.complete,
                "missing": v.missing,
                "wrong_count": v.wrong_count,
                "rows_expected": v.rows_expected,
                "rows_found": v.rows_found,
            }
            latency = await self.db.fetchrow(_WINDOW_LATENCY, *args)
        else:
            verdict = {"ok": row["n"] == want, "messages": want, "rows_found": row["n"]}
            latency = await self.db.fetchrow(_BARE_LATENCY)
        return {
            "rows": row["n"],
            "last_commit": last,
            "verify": verdict,
            "receipt": [round(x, 3) for x in latency["r"] or []],
            "device": [round(x, 3) for x in latency["d"] or []],
        }

    async def start_profile(self, worker: str, duration_s: float) -> asyncio.subprocess.Process:
        py_spy = str(Path(sys.executable).parent / "py-spy")
        pid = str(self.workers[worker].pid)
        seconds = str(max(5, int(duration_s - 5)))
        raw = self.out / f"profile-{worker}.txt"
        self.results.setdefault("profiles", {})[worker] = str(raw)
        return await asyncio.create_subprocess_exec(
            py_spy, "record", "-p", pid, "-d", seconds, "-r", "50", "-f", "raw", "-o", str(raw),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def bare_runs(self) -> None:
        create = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.bare", "create"],
            env=self.run_env(),
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if create.returncode != 0:
            raise SystemExit(f"bench: bench.bare create failed: {create.stderr}")
        self.start_helper("bare-forward", "bench.bare", "forward")
        self.start_helper("bare-sink", "bench.bare", "sink")
        await asyncio.sleep(5)
        try:
            for rate in [*self.args.rates, 0]:
                await self.one_run("bare", rate, self.args.duration_s)
        finally:
            self.stop_helper("bare-forward")
            self.stop_helper("bare-sink")

    async def pipeline_runs(self) -> None:
        for rate in [*self.args.rates, 0]:
            await self.one_run("pipeline", rate, self.args.duration_s, profile=self.args.profile and not rate)
        if self.args.sustained_s:
            await self.one_run("pipeline", self.args.sustained_rate, self.args.sustained_s)

    async def ingest_alone(self) -> None:
        """Ingest worker only: MQTT in, Kafka out; the rate at which raw_iot_data grows."""
        self.stop_worker("pipeline")
        before = sum((await self.end_offsets("raw_iot_data")).values())
        watched = [w for w in self.watched() if w.name in ("ingest", "mosquitto", "kafka")]
        cpu0 = cpu_snapshot(watched)
        # A bounded count: the generator outruns ingest, and what is left queues in its session.
        summary = await self.loadgen(
            "ingest alone", rate=0, duration_s=self.args.duration_s, manifest=None,
            extra=["--count", str(self.args.stage_records)],
        )  # fmt: skip
        started = time.monotonic() - summary["acked_s"]
        last, moved = before, time.monotonic()
        while time.monotonic() - moved < 5:
            now = sum((await self.end_offsets("raw_iot_data")).values())
            if now != last:
                last, moved = now, time.monotonic()
            if now - before >= summary["acked"]:
                moved = time.monotonic()
                break
            await asyncio.sleep(0.25)
        cpu1 = cpu_snapshot(watched)
        produced = last - before
        seconds = moved - started
        self.results["stages"]["ingest"] = {
            "messages": produced,
            "acked_by_broker": summary["acked"],
            "seconds": round(seconds, 2),
            "msg_per_s": round(produced / seconds, 1),
            "cpu_per_1000": {k: round(1000 * (cpu1[k] - cpu0[k]) / max(1, produced), 3) for k in cpu1},
        }
        self.progress.done(f"bench: ingest alone {produced / seconds:.0f} msg/s into raw_iot_data")
        self.stop_worker("ingest")

    async def backlog(self) -> None:
        """Ingest draining its session: `--backlog` messages queued while it was down, then it starts (alone)."""
        for name in ("pipeline", "ingest"):
            self.stop_worker(name)
        n = self.args.backlog
        before = sum((await self.end_offsets("raw_iot_data")).values())
        summary = await self.loadgen("backlog fill", rate=0, duration_s=3600, manifest=None, extra=["--count", str(n)])
        queued = summary["acked"]
        self.start_worker("ingest", "ingest", *self.args.worker_option)
        watched = [w for w in self.watched() if w.name in ("ingest", "mosquitto", "kafka")]
        cpu0, first, last, moved = cpu_snapshot(watched), 0.0, before, time.monotonic()
        while last - before < queued and time.monotonic() - moved < self.args.stall_s:
            await asyncio.sleep(0.1)
            now = sum((await self.end_offsets("raw_iot_data")).values())
            if now != last:
                first = first or time.monotonic()
                last, moved = now, time.monotonic()
        cpu1 = cpu_snapshot(watched)
        drained = last - before
        seconds = max(moved - first, 1e-3) if first else 0.0
        self.results["backlog"] = {
            "queued": queued,
            "drained": drained,
            "seconds": round(seconds, 2),
            "msg_per_s": round(drained / seconds, 1) if seconds else 0.0,
            "cpu_per_1000": {k: round(1000 * (cpu1[k] - cpu0[k]) / max(1, drained), 3) for k in cpu1},
        }
        rate = self.results["backlog"]["msg_per_s"]
        self.progress.done(f"bench: backlog of {queued:,} drained {drained:,} at {rate:,.0f} msg/s into raw_iot_data")
        self.stop_worker("ingest")

    async def stage_alone(self, stage: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.stages", stage, "--max-records", str(self.args.stage_records),
            env=self.run_env(), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        self.progress.show(f"bench: {stage} alone running", force=True)
        out, _ = await proc.communicate()
        result = orjson.loads(out.splitlines()[-1])
        result["cpu_s_per_1000"] = round(1000 * result["cpu_s"] / max(1, result["records"]), 3)
        self.results["stages"][stage] = result
        self.progress.done(
            f"bench: {stage} alone {result['records_per_s']} records/s, {result['rows_per_s']} rows/s, "
            f"{result['cpu_s_per_1000']} CPU s per 1000 records"
        )

    async def sessions(self, count: int) -> None:
        """`count` simultaneous mTLS device sessions, each publishing every --session-period-s."""
        assert self.settings is not None
        ids = device_ids(count, self.args.first_device)
        self.progress.show(f"bench: issuing {count} device certificates", force=True)
        for n, device in enumerate(ids):
            if not (self.settings.pki_dir / "devices" / device / "device.crt").exists():
                issue_device_certificate(self.settings.pki_dir, device)
            if n % 500 == 0:
                self.progress.show(f"bench: issued {n} of {count} device certificates")
        rate = count / self.args.session_period_s
        extra = ["--tls-dir", str(self.settings.pki_dir), "--devices", str(count)]
        run = await self.one_run("pipeline", rate, self.args.sessions_s, extra=extra)
        run["sessions"] = count
        self.results["sessions"] = run

    def save(self) -> None:
        (self.out / "results.json").write_bytes(orjson.dumps(self.results, option=orjson.OPT_INDENT_2))

    def machine(self) -> dict[str, Any]:
        cpu = "unknown"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = Path("/proc/meminfo").read_text().split()[1]
        return {
            "host": platform.node(),
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory_gb": round(int(mem) / 1024 / 1024, 1),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "ulimit_n": int(subprocess.run(["bash", "-c", "ulimit -n"], capture_output=True, text=True).stdout),
            "co_located": "every service, both workers and the load generator on this machine",
        }


async def main_async(bench: Bench) -> None:
    a = bench.args
    bench.results["machine"] = bench.machine()
    bench.results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
    bench.results["options"] = {k: sorted(v) if isinstance(v, set) else v for k, v in vars(a).items() if k != "var_dir"}
    ours = lineage(os.getpid())  # this bench and whatever started it (make, a shell, timeout)
    contention = (
        await asyncio.to_thread(
            subprocess.run,
            ["pgrep", "-af", r"pytest|faust.*worker|bench\.(run|worker|loadgen)"],
            capture_output=True,
            text=True,
        )
    ).stdout
    bench.results["other_processes_at_start"] = [
        line
        for line in contention.splitlines()
        if str(bench.var_dir) not in line and "pgrep" not in line and int(line.split()[0]) not in ours
    ]
    assert bench.settings is not None
    await bench.open_clients()
    try:
        bench.progress.show(f"bench: registering {len(bench.devices)} devices' parameters", force=True)
        await register_demo_parameters(bench.settings, bench.devices)
        bench.results["alarm_rules"] = await load_alarm_rules(bench.settings, a.alarm_rules)
        if "ceiling" in a.phases:
            await bench.c_ceiling()
        if "generator" in a.phases:
            await bench.generator_ceiling()
        if "bare" in a.phases:
            await bench.bare_runs()
        if a.phases & {"pipeline", "sessions", "stages", "ingest", "backlog"}:
            await bench.start_pipeline()
            rss = {k: memory_kb(p.pid) for k, p in bench.workers.items()}
            bench.results["rss_idle_mb"] = {k: round(v.get("VmRSS", 0) / 1024, 1) for k, v in rss.items()}
        if "pipeline" in a.phases:
            await bench.pipeline_runs()
        if "sessions" in a.phases and a.sessions:
            await bench.sessions(a.sessions)
        bench.results["rss_hwm_mb"] = {
            k: round(memory_kb(p.pid).get("VmHWM", 0) / 1024, 1) for k, p in bench.workers.items()
        }
        if a.phases & {"stages", "ingest"}:
            await bench.ingest_alone()
        if "stages" in a.phases:
            await bench.db.execute("TRUNCATE iot_measurements")  # type: ignore[union-attr]
            await bench.stage_alone("sink")
            await bench.stage_alone("decode")
        if "backlog" in a.phases:
            await bench.backlog()
    finally:
        await bench.close_clients()
        bench.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        bench.save()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,5000", help="offered rates, msg/s (a saturating run follows)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="publishing time of each run")
    parser.add_argument("--sustained-s", type=float, default=0.0, help="one more run this long (300: the target)")
    parser.add_argument("--sustained-rate", type=float, default=5000.0)
    parser.add_argument("--devices", type=int, default=10000, help="devices with parameters, all publishing")
    parser.add_argument("--first-device", type=int, default=0x100000)
    parser.add_argument("--connections", type=int, default=4, help="generator sessions on the service listener")
    parser.add_argument("--generator-s", type=float, default=10.0)
    parser.add_argument("--ceiling-messages", type=int, default=300_000, help="messages through the C tools")
    parser.add_argument("--ceiling-clients", type=int, default=8, help="mosquitto_pub processes of the C-tool ceiling")
    parser.add_argument("--sessions", type=int, default=0, help="mTLS device sessions to hold (0: skip)")
    parser.add_argument("--session-period-s", type=float, default=10.0, help="each session publishes this often")
    parser.add_argument("--sessions-s", type=float, default=60.0)
    parser.add_argument("--stage-records", type=int, default=300_000, help="records per stage-alone run")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument("--stall-s", type=float, default=30.0, help="give up waiting when no row lands this long")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True, help="py-spy at saturation")
    parser.add_argument(
        "--phases",
        default="ceiling,generator,bare,pipeline,sessions,stages,backlog",
        help="and `ingest`: of the stages, ingest alone",
    )
    parser.add_argument("--backlog", type=int, default=300_000, help="messages queued for ingest in the backlog phase")
    parser.add_argument("--worker-option", action="append", default=[], help="more `faust worker` options")
    parser.add_argument("--var-dir", default="", help="use the stack running under this F2_VAR_DIR")
    parser.add_argument(
        "--alarm-rules", default=str(ROOT / "bench" / "alarm_rules.json"),
        help="fleet alarm rules every device gets (10 by default); '' for none (F2_ALARMS_ENABLED=false: no alarms)",
    )  # fmt: skip
    parser.add_argument(
        "--secure", action="store_true",
        help="a secure stack (F2_STACK_SECURE=1): every hop on TLS, the workers as their own Kafka principals",
    )  # fmt: skip
    parser.add_argument("--keep-stack", action="store_true", help="leave the private stack running")
    args = parser.parse_args(argv)
    if args.ceiling_messages < 1 or args.ceiling_clients < 1:
        parser.error("--ceiling-messages and --ceiling-clients must be at least 1")
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.phases = set(args.phases.split(","))
    return args


async def load_alarm_rules(settings: Settings, path: str) -> int:
    """Replace the fleet's alarm rules with those of `path` (none for ''); return how many apply to each device."""
    rules = parse_rule_file(Path(path).name, await asyncio.to_thread(Path(path).read_bytes)) if path else []
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await conn.execute("DELETE FROM alarm_rules WHERE scope = 'fleet'")
        if rules:
            await load_rules(conn, rules, replace=True)
    finally:
        await conn.close()
    return len(rules)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out = OUT / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    latest = OUT / "latest"
    with contextlib.suppress(OSError):
        latest.unlink()
    latest.symlink_to(out.name)
    bench = Bench(args, out)
    try:
        bench.stack_up()
        asyncio.run(main_async(bench))
    finally:
        bench.stack_down()
        report.write(bench.results, out)
    bench.progress.done(f"bench: {out}/results.md, results.json, results.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
