"""Device parameters on the real Kafka and PostgreSQL: live changes, restarts, outages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from harness import Stack, Workers, metric, rows_for, service_client, wait_parameters, wait_until

from f2stream.codec.values import encode_modbus_frame
from f2stream.simulator import device_ids, register_demo_parameters

pytestmark = pytest.mark.integration

FRAME = encode_modbus_frame(1, 3, (235).to_bytes(2, "big"))  # 235 units: 23.5 at scale 0.1


async def params_conn(stack: Stack) -> asyncpg.Connection:
    s = stack.settings
    assert s.params_password is not None
    return await asyncpg.connect(s.params_dsn, password=s.params_password.reveal())


def sensor_message(device: str, moment: datetime) -> tuple[str, bytes]:
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"cmnd/{device}/sensor-mode/4/sensor-3", orjson.dumps({"timestamp": stamp, "data": FRAME})


async def ready_device(stack: Stack, workers: Workers, device_number: int) -> str:
    device = device_ids(1, device_number)[0]
    await register_demo_parameters(stack.settings, [device])
    await wait_parameters(stack, workers.pipeline, device)
    return device


async def test_a_change_while_traffic_flows_applies_to_later_messages(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = await ready_device(stack, workers, device_numbers)
    sent = 0
    changed_at: datetime | None = None
    start = datetime.now(UTC)
    async with service_client(stack) as client:
        while sent < 200:
            if sent == 80:
                conn = await params_conn(stack)
                try:
                    await conn.execute(
                        "UPDATE device_parameters SET scale_factor = 0.01"
                        " WHERE device_id = $1 AND component_type = 'sensor'",
                        device,
                    )
                finally:
                    await conn.close()
                changed_at = datetime.now(UTC)
            await client.publish(*sensor_message(device, start + timedelta(milliseconds=30 * sent)), qos=1)
            sent += 1
            await asyncio.sleep(0.03)
    rows = await rows_for(stack, device, component="sensor-3", expected=sent)
    assert len(rows) == sent, workers.pipeline.log_tail(80)
    values = [round(r["value"], 6) for r in rows]
    assert set(values) == {23.5, 2.35}
    switch = values.index(2.35)
    assert values[:switch] == [23.5] * switch and values[switch:] == [2.35] * (sent - switch)  # never back
    old_versions = {r["param_version"] for r in rows[:switch]}
    new_versions = {r["param_version"] for r in rows[switch:]}
    assert len(old_versions) == 1 and len(new_versions) == 1 and min(new_versions) > max(old_versions)
    # The change reached the decoder within seconds: everything sent 3 s after it uses the new scale.
    assert changed_at is not None
    late = [r for r in rows if r["time"] > changed_at + timedelta(seconds=3)]
    assert late and all(round(r["value"], 6) == 2.35 for r in late)


async def test_a_restarted_worker_decodes_from_the_changelog_with_postgres_down(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = await ready_device(stack, workers, device_numbers)
    base = datetime.now(UTC)
    async with service_client(stack) as client:
        await client.publish(*sensor_message(device, base), qos=1)
    [before] = await rows_for(stack, device, component="sensor-3", expected=1)

    log_size = workers.pipeline.log_path.stat().st_size
    stack.pg_ctl("params", "stop")
    try:
        workers.pipeline.stop()
        workers.pipeline.start()
        workers.pipeline.wait_healthy(accept=("ok", "degraded"))
        async with service_client(stack) as client:
            await client.publish(*sensor_message(device, base + timedelta(seconds=1)), qos=1)
        rows = await rows_for(stack, device, component="sensor-3", expected=2)
        assert [(r["value"], r["param_version"]) for r in rows] == [(before["value"], before["param_version"])] * 2
    finally:
        stack.pg_ctl("params", "start")
        back_at = time.time()
    # Back with PostgreSQL: the restarted worker reads only what changed since its cursor.
    workers.pipeline.wait_healthy()
    await wait_until(
        lambda: (metric(workers.pipeline, "f2_parameters_last_sync_timestamp_seconds") or 0) > back_at,
        60,
        "the restarted pipeline worker has synced its parameters with PostgreSQL again",
        seen=workers.pipeline.log_tail,
    )
    restarted_log = workers.pipeline.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert "Published parameters" not in restarted_log
    conn = await params_conn(stack)
    try:
        await conn.execute(
            "UPDATE device_parameters SET unit = 'kelvin' WHERE device_id = $1 AND component_type = 'sensor'", device
        )
    finally:
        await conn.close()
    deadline = time.monotonic() + 20
    while "Published parameters of 1 devices" not in workers.pipeline.log_path.read_bytes()[log_size:].decode(
        errors="replace"
    ):
        assert time.monotonic() < deadline, workers.pipeline.log_tail()
        await asyncio.sleep(0.3)


async def test_a_template_serves_many_devices_with_per_device_overrides(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    first, second = device_ids(2, device_numbers)
    template = f"door-controller-{device_numbers}"
    conn = await params_conn(stack)
    try:
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO parameter_templates"
                " (template, mode, component_type, component_number, encoding, unit, scale_factor, data_point, field,"
                "  decimals, true_words, false_words)"
                " VALUES ($1, 'access-control-mode', 'strike', NULL, $2, $3, 1.0, $4, $5, $6, $7, $8)",
                [
                    (template, "boolean", "state", None, None, None, ["engaged"], ["free"]),
                    (template, "number", "V", "voltage", "voltage", 1, None, None),
                ],
            )
            await conn.executemany(
                "INSERT INTO device_templates (device_id, template) VALUES ($1, $2)",
                [(first, template), (second, template)],
            )
            # The second device's supply is measured in millivolts.
            await conn.execute(
                "INSERT INTO device_parameters"
                " (device_id, mode, component_type, component_number, encoding, unit, scale_factor, data_point, field)"
                " VALUES ($1, 'access-control-mode', 'strike', NULL, 'number', 'V', 0.001, 'voltage', 'voltage')",
                second,
            )
    finally:
        await conn.close()
    await wait_parameters(stack, workers.pipeline, first, second)
    stamp = "2025-06-01 08:00:00.000000"
    async with service_client(stack) as client:
        await client.publish(
            f"stat/{first}/access-control-mode/1/strike-1",
            orjson.dumps({"timestamp": stamp, "state": "engaged", "voltage": 12.04}),
            qos=1,
        )
        await client.publish(
            f"stat/{second}/access-control-mode/1/strike-1",
            orjson.dumps({"timestamp": stamp, "state": "free", "voltage": 11980}),
            qos=1,
        )
    s = stack.settings
    assert s.timeseries_password is not None
    ts = await asyncpg.connect(s.timeseries_dsn, password=s.timeseries_password.reveal())
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = await ts.fetch(
                "SELECT device_id, data_point, value, text_value, unit FROM iot_measurements"
                " WHERE device_id = ANY($1::text[]) ORDER BY device_id, data_point",
                [first, second],
            )
            if len(rows) >= 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await ts.close()
    assert [tuple(r) for r in rows] == [
        (first, "state", 1.0, "engaged", "state"),
        (first, "voltage", 12.0, None, "V"),
        (second, "state", 0.0, "free", "state"),
        (second, "voltage", 11.98, None, "V"),
    ]
