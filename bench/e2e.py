"""End-to-end benchmark: MQTT in, rows out, on a running local stack.

    make up && (workers running, e.g. make demo in another shell, or by hand)
    set -a; . var/stack.env; set +a
    .venv/bin/python bench/e2e.py --messages 20000 --devices 50 --connections 4 [--rate 2000]

Publishes simulated telemetry (QoS 1) over the service listener as the
simulator account, waits until every row is in iot_measurements, and reports
the publish rate, the end-to-end rate, and latency percentiles of ingest
receipt to database commit (written_at - received_at), measured by the
database itself. Prints one JSON line with the figures and the machine it
ran on. (Device times are stamped when the messages are generated, before
publishing starts, so device-to-commit latency is not reported.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
from datetime import UTC, datetime

import aiomqtt
import asyncpg
import orjson

from f2stream.settings import Settings
from f2stream.simulator import device_ids, messages, register_demo_parameters

_LATENCY = """
SELECT count(*) AS rows,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - received_at))
           AS receipt_to_commit,
       max(written_at) AS last_commit
FROM iot_measurements WHERE device_id = ANY($1::text[])
"""


async def publish(settings: Settings, batch: list[tuple[str, bytes]], rate: float, started: float, share: int) -> None:
    """One MQTT connection publishing its share of the messages, paced to its share of the rate."""
    assert settings.sim_mqtt_password is not None
    async with aiomqtt.Client(
        settings.mqtt_host, settings.mqtt_port, username=settings.sim_mqtt_username,
        password=settings.sim_mqtt_password.reveal(), max_inflight_messages=1000,
        identifier=f"f2-bench-{os.getpid()}-{share}",
    ) as client:  # fmt: skip
        window = asyncio.Semaphore(1000)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()

        async with asyncio.TaskGroup() as tasks:
            for n, (topic, payload) in enumerate(batch):
                if rate:
                    delay = started + n / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await window.acquire()
                tasks.create_task(one(topic, payload))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--first-device", type=int, default=random.randint(10_000, 1_000_000))
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s in all (0: as fast as possible)")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args()

    settings = Settings.from_env()
    ids = device_ids(args.devices, args.first_device)
    await register_demo_parameters(settings, ids)
    await asyncio.sleep(2.0)
    source = messages(ids, random.Random(7), lambda: datetime.now(UTC))
    generated = [next(source) for _ in range(args.messages)]
    expected_rows = sum(m.points for m in generated)
    shares = [[(m.topic, m.payload) for m in generated[i :: args.connections]] for i in range(args.connections)]

    started = time.monotonic()
    per_connection = args.rate / args.connections if args.rate else 0.0
    await asyncio.gather(*(publish(settings, share, per_connection, started, i) for i, share in enumerate(shares)))
    published_s = time.monotonic() - started

    assert settings.timeseries_password is not None
    conn = await asyncpg.connect(settings.timeseries_dsn, password=settings.timeseries_password.reveal())
    try:
        while True:
            row = await conn.fetchrow(_LATENCY, ids)
            if row["rows"] >= expected_rows or time.monotonic() - started > args.timeout_s:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    done_s = time.monotonic() - started
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()} Python {platform.python_version()}",
        "messages": args.messages,
        "devices": args.devices,
        "connections": args.connections,
        "target_rate": args.rate or "max",
        "rows_expected": expected_rows,
        "rows_found": row["rows"],
        "publish_rate_msg_s": round(args.messages / published_s),
        "end_to_end_rate_msg_s": round(args.messages / done_s),
        "receipt_to_commit_s_p50_p95_p99": [round(x, 3) for x in row["receipt_to_commit"] or []],
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    asyncio.run(main())
