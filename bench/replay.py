"""Replay's rate over a large raw history, with live traffic through the pipeline alongside.

    .venv/bin/python -m bench.replay                         # 1,000,000 raw messages, live at 2,000 msg/s
    .venv/bin/python -m bench.replay --messages 200000       # a shorter run

Starts a private stack (as `make bench` does), gives `--devices` devices the
demo parameters through one template, starts both workers, then:

1. fills raw_iot_data with `--messages` simulator messages (device times two
   days back, produced straight to Kafka with the headers ingest writes) and
   waits until the pipeline has written them all (the drain rate);
2. changes the template (the sensor's scale): every device's version moves,
   so every row is stale, and the sensor rows change value;
3. runs `replay --stale` over the fill's window while the load generator
   sends `--live-rate` msg/s through MQTT and both workers (back-to-back
   30-second runs into one manifest, until replay is done);
4. runs the same replay again (nothing is stale any more: read, decode and
   compare only);
5. the database alone: replay's own reads and writes (fetch the stored rows
   of a batch of messages, restamp every row) over `--db-rows` of the fill's
   rows, on as many connections as replay writes with (`--db-writers`), no
   Kafka and no decode: the most rows/s replay can write on this machine.

Reports each replay's messages/s and rows/s, the live rows' receipt -> row
latency (p50/p95/p99) while the replay ran, and `verify` of the live
traffic. Writes var/bench/replay-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.memory import TEMPLATE, give_parameters
from bench.run import _WINDOW_LATENCY, OUT, Bench
from bench.run import parse as parse_bench
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import DECODE_GROUP, DECODED_TOPIC, RAW_TOPIC, SINK_GROUP
from f2stream.records import Measurement, format_time
from f2stream.repair.plan import MessageKey, MessagePlan, Stored
from f2stream.repair.rows import apply_plans, fetch_stored, relax_commits
from f2stream.simulator import messages
from f2stream.storage.db import connect
from f2stream.verify import poll_database, read_manifest

_SUMMARY = re.compile(
    r"replay: read (?P<read>[\d,]+) raw records in (?P<seconds>[\d.]+) s .*?; (?P<repaired>[\d,]+) of "
    r"(?P<messages>[\d,]+) messages repaired; rows added (?P<added>[\d,]+), changed (?P<changed>[\d,]+), "
    r"restamped (?P<restamped>[\d,]+), removed (?P<removed>[\d,]+), unchanged (?P<unchanged>[\d,]+)"
)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


async def fill(bench: Bench, count: int, devices: list[str]) -> float:
    """Produce `count` simulator messages to raw_iot_data as ingest would; return the seconds it took."""
    assert bench.settings is not None
    start = datetime.now(UTC) - timedelta(days=2)
    tick = [0]

    def clock() -> datetime:
        tick[0] += 1
        return start + timedelta(microseconds=150 * tick[0])

    producer = AIOKafkaProducer(**kafka_options(bench.settings), acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for n, message in enumerate(messages(devices, random.Random(11), clock)):
            if n >= count:
                break
            received = format_time(datetime.fromisoformat(message.time) + timedelta(milliseconds=15)).encode()
            headers = [("mqtt_topic", message.topic.encode()), ("received_at", received)]
            pending.append(
                await producer.send(RAW_TOPIC, message.payload, key=message.device_id.encode(), headers=headers)
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                bench.progress.show(f"bench: filled {n + 1:,} of {count:,} raw messages")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def drained(bench: Bench, label: str) -> float:
    """Wait until decode and sink have caught up; return the seconds it took."""
    started = time.monotonic()
    while (lag := await bench.lag([(DECODE_GROUP, RAW_TOPIC), (SINK_GROUP, DECODED_TOPIC)])) > 0:
        bench.progress.show(f"bench: {label}: {lag:,} records behind")
        await asyncio.sleep(2)
    return time.monotonic() - started


async def replay_with_live(bench: Bench, since: datetime, live_rate: float, manifest: Path) -> dict[str, Any]:
    """`replay --stale` from `since`, with live traffic until it is done."""
    command = [sys.executable, "-m", "faust", "-A", "f2stream", "replay", "--stale", "--since", since.isoformat()]
    proc = await asyncio.create_subprocess_exec(
        *command, env=bench.run_env(), cwd=bench.var_dir, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    outputs = asyncio.ensure_future(proc.communicate())
    segments: list[dict[str, Any]] = []
    while not outputs.done():
        label = f"live during replay ({len(segments)})"
        segments.append(await bench.loadgen(label, rate=live_rate, duration_s=30, manifest=manifest))
    out, err = await outputs
    live_from = min(datetime.fromisoformat(s["first_time"]) for s in segments)
    live_to = max(datetime.fromisoformat(s["last_time"]) for s in segments)
    if proc.returncode != 0:
        raise SystemExit(f"bench: replay failed:\n{err.decode()[-3000:]}")
    found = _SUMMARY.search(out.decode())
    if found is None:
        raise SystemExit(f"bench: no summary in replay's output:\n{out.decode()[-3000:]}")
    figures = {name: _number(value) for name, value in found.groupdict().items()}
    rows = sum(figures[c] for c in ("added", "changed", "restamped", "removed", "unchanged"))
    written = sum(figures[c] for c in ("added", "changed", "restamped", "removed"))
    assert bench.db is not None
    latency = await bench.db.fetchrow(_WINDOW_LATENCY, live_from, live_to)
    return {
        **figures,
        "messages_per_s": round(figures["read"] / figures["seconds"], 1),
        "rows_per_s": round(rows / figures["seconds"], 1),
        "rows_written_per_s": round(written / figures["seconds"], 1),
        "live_segments": len(segments),
        "live_sent": sum(s["acked"] for s in segments),
        "live_receipt_to_row_s": [round(x, 4) for x in latency["r"]] if latency["r"] else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(
        parse_bench(["--devices", str(args.devices), *(["--var-dir", args.var_dir] if args.var_dir else [])]), OUT
    )
    bench.stack_up()
    try:
        await give_parameters(bench, bench.args.first_device, args.devices)
        await bench.start_pipeline()
        await bench.open_clients()
        results: dict[str, Any] = {
            "machine": bench_machine(),
            "messages": args.messages,
            "devices": args.devices,
            "live_rate": args.live_rate,
        }
        since = datetime.now(UTC) - timedelta(seconds=5)
        results["fill_s"] = round(await fill(bench, args.messages, bench.devices), 1)
        drain_s = await drained(bench, "pipeline drains the fill")
        results["raw_bytes_per_record"] = round(raw_bytes(bench.var_dir) / args.messages, 1)
        results["drain_s"] = round(drain_s, 1)
        bench.progress.done(f"bench: filled {args.messages:,} in {results['fill_s']} s, drained in {drain_s:.0f} s")

        assert bench.settings is not None
        conn = await connect(bench.settings.params_dsn, bench.settings.params_password)
        try:
            await conn.execute(
                "UPDATE parameter_templates SET scale_factor = 0.01 WHERE template = $1 AND component_type = 'sensor'",
                TEMPLATE,
            )
        finally:
            await conn.close()
        await asyncio.sleep(5)  # the sync publishes the new versions; the live path decodes with them

        manifest = bench.out / f"replay-live-{int(time.time())}.jsonl"
        for label in ("stale", "again") if "replay" in args.steps else ():
            results[label] = await replay_with_live(bench, since, args.live_rate, manifest)
            r = results[label]
            bench.progress.done(
                f"bench: replay {label}: {r['read']:,.0f} raw in {r['seconds']:.0f} s: "
                f"{r['messages_per_s']:,.0f} msg/s, "
                f"{r['rows_per_s']:,.0f} rows/s ({r['rows_written_per_s']:,.0f} written/s); "
                f"live receipt->row p50/p95/p99 {r['live_receipt_to_row_s']}"
            )
        if "replay" in args.steps:
            verdict = await poll_database(bench.db, read_manifest(manifest), 120)  # type: ignore[arg-type]
            results["live_verify"] = str(verdict)
            results["live_verify_ok"] = verdict.ok
            bench.progress.done(f"bench: live traffic: {verdict}")
        if "database" in args.steps:
            for name in ("ingest", "pipeline"):  # the database alone: nothing else competes for it
                bench.stop_worker(name)
            results["database_alone"] = []
            for writers in map(int, args.db_writers.split(",")):
                d = await database_alone(bench, args.db_rows, writers)
                results["database_alone"].append(d)
                bench.progress.done(
                    f"bench: database alone, {writers} connection(s): {d['messages']:,} messages, {d['rows']:,} "
                    f"rows restamped in {d['seconds']:.1f} s: {d['messages_per_s']:,.0f} msg/s, "
                    f"{d['rows_per_s']:,.0f} rows/s"
                )
        return results
    finally:
        await bench.close_clients()
        bench.stack_down()


# The fill's rows (device times two days back), whole messages in time order.
_FILL_ROWS = """
SELECT device_id, mode, connector, component, time, data_point, value, text_value, unit, source_topic,
       received_at, param_version, raw_partition, raw_offset
FROM iot_measurements WHERE time < now() - interval '1 day' ORDER BY time, device_id LIMIT $1
"""
# As replay: batches of this many messages (replay's 2,000 raw records, one message each).
_DB_BATCH_MESSAGES = 2000


async def database_alone(bench: Bench, row_limit: int, writers: int) -> dict[str, Any]:
    """Replay's database work with every row restamped: fetch a batch's stored rows, then write them."""
    assert bench.settings is not None and bench.db is not None
    plans: dict[MessageKey, MessagePlan] = {}
    for r in await bench.db.fetch(_FILL_ROWS, row_limit):
        key = (r["device_id"], r["mode"], r["connector"], r["component"], format_time(r["time"]))
        plan = plans.setdefault(key, MessagePlan(key, r["param_version"]))
        stored = Stored(r["data_point"], r["value"], r["text_value"], r["unit"], r["param_version"])
        row = Measurement(
            key[4], *key[:4], r["data_point"], r["value"], r["text_value"], r["unit"], r["source_topic"],
            format_time(r["received_at"]), r["param_version"], r["raw_partition"], r["raw_offset"],
        )  # fmt: skip
        plan.restamp.append((stored, row))
    batches = [list(plans.values())[i : i + _DB_BATCH_MESSAGES] for i in range(0, len(plans), _DB_BATCH_MESSAGES)]
    queue: asyncio.Queue[list[MessagePlan]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def writer() -> None:
        conn = await connect(bench.settings.timeseries_dsn, bench.settings.timeseries_password)  # type: ignore[union-attr]
        try:
            await relax_commits(conn)
            while not queue.empty():
                batch = queue.get_nowait()
                await fetch_stored(conn, [p.key for p in batch])
                await apply_plans(conn, batch)
        finally:
            await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(writers)))
    seconds = time.monotonic() - started
    rows = sum(len(p.restamp) for p in plans.values())
    return {
        "messages": len(plans),
        "rows": rows,
        "seconds": round(seconds, 2),
        "messages_per_s": round(len(plans) / seconds, 1),
        "rows_per_s": round(rows / seconds, 1),
        "writers": writers,
    }


def raw_bytes(var_dir: Path) -> int:
    """Bytes raw_iot_data's partitions take on the broker's disk (log segments; indexes are preallocated)."""
    return sum(f.stat().st_size for f in (var_dir / "data" / "kafka").glob(f"{RAW_TOPIC}-*/*.log"))


def bench_machine() -> str:
    """The host, as the results name it."""
    return f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--live-rate", type=float, default=2000.0)
    parser.add_argument("--var-dir", default="")
    parser.add_argument("--db-rows", type=int, default=500_000, help="rows of the database-alone step")
    parser.add_argument("--db-writers", default="2", help="connections of the database-alone step (replay: 2)")
    parser.add_argument("--steps", default="replay,database", help="after the fill: replay, database (alone)")
    args = parser.parse_args()
    args.steps = set(args.steps.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(main_async(args))
    path = OUT / f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"bench: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
