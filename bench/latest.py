"""`/devices/{id}/latest` as it is served today (a query per request) against serving it from state.

    python -m bench.latest --var-dir DIR --devices 100 --values 2016 --interval-s 300
    python -m bench.latest --var-dir DIR --devices 10000 --values 24 --interval-s 3600

Fills `iot_measurements` of the stack under DIR (its stack.env) with a
history for `--devices` devices of their own id range: each device's 18
demo data points (every component of `f2stream.simulator`), `--values`
values each, `--interval-s` apart, ending now (TimescaleDB's daily chunks
as the migrations make them). Then times, on random devices:

* the view's path: open a connection, run its query, close (as the view does);
* the query alone on an open connection (what a pool would give);

and, for the state alternative, the memory of a dict per device holding
each data point's newest row, and the time to answer from it. Prints one
JSON line. The rows stay (they are in the bench's own device range).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stack import read_env_file
from f2stream.settings import Settings
from f2stream.storage.db import connect
from f2stream.web.views import _LATEST, latest_points

#: The 18 data points a simulated device reports: (mode, connector, component, data point, unit).
POINTS = [
    ("access-control-mode", 1, "strike-1", dp, u) for dp, u in (("state", "state"), ("voltage", "V"), ("current", "A"))
] + [
    ("access-control-mode", 1, "door-sensors", dp, "state") for dp in ("door_1", "door_2", "tamper")
] + [
    ("access-control-mode", 1, "reader-1", dp, "text") for dp in ("card_id", "read_type", "signal_strength")
] + [
    ("access-control-mode", 1, "exit-buttons", dp, "pressed") for dp in ("button_pressed", "button_id")
] + [
    ("alarm-mode", 3, "motion-sensor-1", dp, "presence") for dp in ("motion_detected", "sensitivity", "zone")
] + [
    ("alarm-mode", 3, "siren-1", dp, "state") for dp in ("state", "volume", "pattern")
] + [("sensor-mode", 4, "sensor-3", "temperature", "celsius")]  # fmt: skip

_FILL = """
INSERT INTO iot_measurements (time, device_id, mode, connector, component, data_point, value, unit,
                              source_topic, received_at, param_version)
SELECT $5::timestamptz - make_interval(secs => v * $4), d, p.mode, p.connector, p.component, p.data_point,
       random() * 100, p.unit, 'bench/latest', $5::timestamptz - make_interval(secs => v * $4) + interval '50 ms', 1
FROM unnest($1::text[]) AS d,
     unnest($2::text[], $3::text[]) AS p0(mode_component, data_point_unit),
     LATERAL (SELECT split_part(mode_component, '|', 1) AS mode,
                     split_part(mode_component, '|', 2)::smallint AS connector,
                     split_part(mode_component, '|', 3) AS component,
                     split_part(data_point_unit, '|', 1) AS data_point,
                     split_part(data_point_unit, '|', 2) AS unit) AS p,
     generate_series(0, $6 - 1) AS v
ON CONFLICT DO NOTHING
"""


def devices_of(count: int) -> list[str]:
    """The bench's own device range, f2-0b00000000NN: no simulated or benched device has it."""
    return [f"f2-0b{n:010x}" for n in range(count)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 3),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 3),
        "mean_ms": round(1000 * statistics.fmean(ordered), 3),
    }


async def fill(settings: Settings, devices: list[str], values: int, interval_s: float) -> float:
    conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
    started = time.perf_counter()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        modes = [f"{m}|{c}|{comp}" for m, c, comp, _, _ in POINTS]
        points = [f"{dp}|{u}" for _, _, _, dp, u in POINTS]
        for i in range(0, len(devices), 100):
            await conn.execute(_FILL, devices[i : i + 100], modes, points, interval_s, now, values, timeout=3600)
        await conn.execute("ANALYZE iot_measurements", timeout=3600)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def query_per_request(
    settings: Settings, devices: list[str], requests: int, rng: random.Random
) -> dict[str, Any]:
    """The view's path (connect, query, close) and the query alone, on random devices."""
    with_connect, alone = [], []
    held = await connect(settings.timeseries_dsn, settings.timeseries_password)
    try:
        for _ in range(requests):
            device = rng.choice(devices)
            started = time.perf_counter()
            conn = await connect(settings.timeseries_dsn, settings.timeseries_password, timeout_s=3.0)
            try:
                body = json.dumps(latest_points(await conn.fetch(_LATEST, device)))
            finally:
                await conn.close()
            with_connect.append(time.perf_counter() - started)
            assert body.count("data_point") == len(POINTS), body[:200]
            started = time.perf_counter()
            json.dumps(latest_points(await held.fetch(_LATEST, device)))
            alone.append(time.perf_counter() - started)
        plan = await held.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {_LATEST}", rng.choice(devices))
    finally:
        await held.close()
    return {"view_connect_query_close": summary(with_connect), "query_on_open_connection": summary(alone),
            "plan": [r[0] for r in plan]}  # fmt: skip


def from_state(devices: int, requests: int, rng: random.Random) -> dict[str, Any]:
    """A dict per device of its data points' newest rows, as the decode stage would keep it."""
    gc.collect()
    tracemalloc.start()
    now = datetime.now(UTC)
    state: dict[str, dict[tuple[str, int, str, str], tuple[Any, ...]]] = {}
    for n, device in enumerate(devices_of(devices)):
        # Distinct objects per row, as decoded messages would leave them (nothing shared but the keys' names).
        state[device] = {
            (m, c, comp, dp): (now + timedelta(microseconds=n), rng.random() * 100, None, u, 1,
                               now + timedelta(microseconds=n + 50))
            for m, c, comp, dp, u in POINTS
        }  # fmt: skip
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    names = list(state)
    samples = []
    for _ in range(requests):
        device = rng.choice(names)
        started = time.perf_counter()
        rows = [
            {"time": t, "mode": m, "connector": c, "component": comp, "data_point": dp, "value": v,
             "text_value": tv, "unit": u, "param_version": pv, "received_at": r}
            for (m, c, comp, dp), (t, v, tv, u, pv, r) in state[device].items()
        ]  # fmt: skip
        json.dumps(latest_points(rows))
        samples.append(time.perf_counter() - started)
    per_device = held / devices
    return {
        "devices": devices,
        "bytes_per_device": round(per_device),
        "mb_at_100k_devices": round(per_device * 100_000 / 2**20, 1),
        "answer": summary(samples),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = read_env_file(Path(args.var_dir) / "stack.env")
    settings = Settings.from_env(env)
    devices = devices_of(args.devices)
    rng = random.Random(1)
    filled = await fill(settings, devices, args.values, args.interval_s) if args.fill else None
    result: dict[str, Any] = {
        "devices": args.devices,
        "values_per_point": args.values,
        "interval_s": args.interval_s,
        "rows_per_device": args.values * len(POINTS),
        "rows": args.devices * args.values * len(POINTS),
        "fill_s": round(filled, 1) if filled is not None else None,
    }
    result["query"] = await query_per_request(settings, devices, args.requests, rng)
    result["state"] = from_state(min(args.devices, 10_000), args.requests, rng)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var-dir", required=True, help="the stack's F2_VAR_DIR (its stack.env)")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--values", type=int, default=2016, help="values per data point (2016: 7 days at 5 min)")
    parser.add_argument("--interval-s", type=float, default=300.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--fill", action=argparse.BooleanOptionalAction, default=True)
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()
