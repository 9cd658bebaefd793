"""The pipeline worker's memory with many devices' parameters: RSS after it holds them all.

    .venv/bin/python -m bench.memory --devices 0,10000,100000

Starts a private stack (as `make bench` does), gives the devices the demo
parameters through one template (device_templates rows, as a fleet is
managed), starts the pipeline worker, waits until it holds every device's
parameters (the `f2_parameters` gauge) and the RSS settles, and prints
VmRSS and VmHWM per device count. Each count starts a fresh worker (its
Faust data dir removed) over the same growing fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time

from bench.procstat import memory_kb
from bench.run import OUT, Bench
from bench.run import parse as parse_bench
from f2stream.simulator import DEMO_PARAMETERS
from f2stream.storage.db import connect

TEMPLATE = "bench-demo"
_TEMPLATE_ROW = """
INSERT INTO parameter_templates (template, mode, component_type, component_number, encoding, unit, scale_factor)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""
# Device ids as simulator.device_ids makes them: f2-02f2 and 8 hex digits.
_ASSIGN = """
INSERT INTO device_templates (device_id, template)
SELECT 'f2-02f2' || lpad(to_hex(n), 8, '0'), $1 FROM generate_series($2::int, $3::int) AS n
ON CONFLICT DO NOTHING
"""


async def give_parameters(bench: Bench, first: int, count: int) -> None:
    """Devices first .. first+count-1 get the demo template."""
    assert bench.settings is not None
    conn = await connect(bench.settings.params_dsn, bench.settings.params_password)
    try:
        await conn.executemany(_TEMPLATE_ROW, [(TEMPLATE, *row) for row in DEMO_PARAMETERS])
        if count:
            await conn.execute(_ASSIGN, TEMPLATE, first, first + count - 1)
    finally:
        await conn.close()


async def measure(bench: Bench, devices: int, settle_s: float) -> dict[str, float]:
    """Start a fresh pipeline worker, wait until it holds `devices` parameter sets and its RSS settles."""
    shutil.rmtree(bench.var_dir / "data" / "faust", ignore_errors=True)
    bench.start_worker("pipeline", "pipeline")
    started = time.monotonic()
    try:
        await bench.wait_healthy("pipeline", timeout_s=300)
        while (bench.metric("pipeline", "f2_parameters") or 0) < devices:
            if time.monotonic() - started > 600:
                raise SystemExit(f"bench: the worker did not load {devices} devices in 600 s")
            await asyncio.sleep(1)
        loaded_s = time.monotonic() - started
        await asyncio.sleep(settle_s)
        memory = memory_kb(bench.workers["pipeline"].pid)
        return {
            "devices": devices,
            "loaded_s": loaded_s,
            "rss_mb": memory["VmRSS"] / 1024,
            "hwm_mb": memory["VmHWM"] / 1024,
        }
    finally:
        bench.stop_worker("pipeline")


async def main(args: argparse.Namespace) -> None:
    counts = sorted(int(n) for n in args.devices.split(","))
    bench = Bench(parse_bench(["--var-dir", args.var_dir] if args.var_dir else []), OUT)
    bench.stack_up()
    try:
        given = 0
        results = []
        for count in counts:
            await give_parameters(bench, 1 + given, count - given)
            given = count
            results.append(await measure(bench, count, args.settle_s))
            print(
                "devices {devices:>7}: loaded in {loaded_s:5.1f} s, RSS {rss_mb:6.1f} MB, peak {hwm_mb:6.1f} MB".format(
                    **results[-1]
                ),
                flush=True,
            )
    finally:
        bench.stack_down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="0,10000,100000", help="device counts, ascending")
    parser.add_argument("--settle-s", type=float, default=15.0, help="wait this long after loading before reading RSS")
    parser.add_argument("--var-dir", default="", help="use the stack running under this F2_VAR_DIR")
    asyncio.run(main(parser.parse_args()))
