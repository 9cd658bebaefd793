"""`faust -A f2stream alarms` against the real PostgreSQL: rule files loaded whole or not at all, acknowledgements.

Only the stack's databases: no worker. The rules are of this module's own
device and template, deleted at the end, so that no other test's alarms see them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from harness import Stack

from f2stream.simulator import device_ids, register_demo_parameters
from f2stream.storage.db import connect

pytestmark = pytest.mark.integration


def run(stack: Stack, *args: str) -> tuple[int, list[str], list[str]]:
    """Exit status, stdout lines and stderr lines of `faust -A f2stream alarms ...`."""
    done = stack.faust("alarms", *args)
    return done.returncode, done.stdout.splitlines(), done.stderr.splitlines()


@pytest.fixture
async def scopes(stack: Stack, device_numbers: int) -> AsyncIterator[tuple[str, str, str]]:
    """A device with the demo parameters, a template whose sensor produces `temperature`, and a device following it."""
    device, member = device_ids(2, device_numbers)
    template = f"alarms-test-{device_numbers}"
    await register_demo_parameters(stack.settings, [device])
    s = stack.settings
    conn = await connect(s.params_dsn, s.params_password)
    try:
        await conn.execute(
            "INSERT INTO parameter_templates (template, mode, component_type, encoding, unit, scale_factor,"
            " data_point, field) VALUES ($1, 'sensor-mode', 'sensor', 'hex_to_float', 'celsius', 0.1,"
            " 'temperature', 'data')",
            template,
        )
        await conn.execute("INSERT INTO device_templates (device_id, template) VALUES ($1, $2)", member, template)
        yield device, template, member
    finally:
        await conn.execute("DELETE FROM alarm_rules WHERE target = ANY($1::text[])", [device, template, member])
        await conn.close()


def rule(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "threshold", "severity": "major", "component": "sensor", "data_point": "data",
            "above": 40, **fields}  # fmt: skip


async def stored(stack: Stack, *targets: str) -> list[tuple[str, str, str]]:
    s = stack.settings
    conn = await connect(s.params_dsn, s.params_password)
    try:
        rows = await conn.fetch(
            "SELECT scope, target, name FROM alarm_rules WHERE target = ANY($1::text[]) ORDER BY 1, 2, 3", list(targets)
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def config_version(stack: Stack) -> int:
    s = stack.settings
    conn = await connect(s.params_dsn, s.params_password)
    try:
        return int(await conn.fetchval("SELECT version FROM alarm_config_version"))
    finally:
        await conn.close()


async def test_a_bad_rule_file_says_every_problem_on_its_own_line_and_loads_nothing(
    stack: Stack, scopes: tuple[str, str, str], tmp_path: Path
) -> None:
    device, template, member = scopes
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps({"rules": [
        rule("fine", device=device),
        rule("door-1-forced", device=device, kind="door_forcd"),
        rule("no-limit", device=device, above=None),
        rule("negative", device=device, for_s=-5),
        rule("not-produced", device=device, data_point="temperature"),
        rule("fleet-nobody", data_point="no_such_point"),
        rule("template-fine", template=template, data_point="temperature"),
        rule("member-inherits", device=member, data_point="temperature"),
    ]}))  # fmt: skip
    status, out, err = run(stack, "rules", "load", str(path))
    assert (status, out) == (2, []), err
    assert err == [
        "f2stream: rules.json rule 2 (door-1-forced): unknown kind 'door_forcd' "
        "(one of threshold, state, door_held_open, door_forced_open)",
        "f2stream: rules.json rule 3 (no-limit): a threshold rule needs exactly one limit: above or below",
        "f2stream: rules.json rule 4 (negative): for_s -5 is negative: a duration is 0 or more seconds",
        f"f2stream: rule 'not-produced' (device {device}): data point 'temperature' of sensor is not produced by "
        "its parameters",
        "f2stream: rule 'fleet-nobody' (fleet): data point 'no_such_point' of sensor is not produced by any device's "
        "or template's parameters",
    ]
    assert await stored(stack, device, template, member, "") == []


async def test_a_good_file_loads_lists_and_replaces(stack: Stack, scopes: tuple[str, str, str], tmp_path: Path) -> None:
    device, template, member = scopes
    forced = {"name": "door-1-forced", "kind": "door_forced_open", "severity": "critical", "device": device,
              "component": "door-sensors", "data_point": "door_1", "window_s": 5,
              "grants": [{"component": "reader", "data_point": "card_id"},
                         {"component": "exit-buttons", "data_point": "button_pressed", "equals": True}]}  # fmt: skip
    path = tmp_path / "rules.toml"
    path.write_text(f"""
[[rules]]
name = "hot"
kind = "threshold"
severity = "major"
device = "{device.removeprefix("f2-").upper()}"
component = "sensor"
data_point = "data"
above = 40
clear = 38
for_s = 30

[[rules]]
name = "hot"
kind = "threshold"
severity = "minor"
template = "{template}"
component = "sensor"
data_point = "temperature"
below = -10
""")
    before = await config_version(stack)
    status, out, err = run(stack, "rules", "load", str(path))
    assert (status, err) == (0, []), err
    assert out == ["alarms: 2 rules of 2 scopes loaded; the pipeline applies them live"]
    assert await config_version(stack) > before  # the pipeline's cue to reload
    more = tmp_path / "more.json"
    more.write_bytes(orjson.dumps([forced, rule("hot-member", device=member, data_point="temperature")]))
    assert run(stack, "rules", "load", str(more))[0] == 0
    assert await stored(stack, device, template, member) == [
        ("device", device, "door-1-forced"), ("device", device, "hot"), ("device", member, "hot-member"),
        ("template", template, "hot"),
    ]  # fmt: skip
    status, out, err = run(stack, "rules", "list")
    assert status == 0, err
    listed = {(r.get("device") or r.get("template"), r["name"]): r for r in map(orjson.loads, out)}
    assert listed[device, "hot"] == {"name": "hot", "kind": "threshold", "severity": "major", "device": device,
                                     "component": "sensor", "data_point": "data", "above": 40.0, "clear": 38.0,
                                     "for_s": 30.0}  # fmt: skip
    assert listed[device, "door-1-forced"]["grants"][1]["equals"] == 1.0
    assert listed[template, "hot"]["below"] == -10.0
    # --replace: the device's other rules go; another scope's stay.
    again = tmp_path / "again.json"
    again.write_bytes(orjson.dumps([forced]))
    status, out, err = run(stack, "rules", "load", str(again), "--replace")
    assert status == 0, err
    assert await stored(stack, device, template, member) == [
        ("device", device, "door-1-forced"), ("device", member, "hot-member"), ("template", template, "hot"),
    ]  # fmt: skip


async def test_an_acknowledgement_is_recorded_once_for_a_raised_alarm(
    stack: Stack, scopes: tuple[str, str, str]
) -> None:
    device = scopes[0]
    raised, cleared = f"{device}:hot:0:1", f"{device}:hot:0:2"
    s = stack.settings
    ts = await connect(s.timeseries_dsn, s.timeseries_password)
    params: asyncpg.Connection | None = None
    try:
        await ts.executemany(
            "INSERT INTO alarms (alarm_id, device_id, rule, kind, severity, state, data_point, raised_at, value,"
            " reason) VALUES ($1, $2, 'hot', 'threshold', 'major', $3, 'data', $4, 41.5, 'data 41.5 above 40')",
            [(raised, device, "raised", datetime.now(UTC)), (cleared, device, "cleared", datetime.now(UTC))],
        )
        status, out, err = run(stack, "ack", raised, "--by", "ops", "--note", "on site")
        assert (status, err) == (0, []), err
        assert out == [f"alarms: acknowledgement of {raised} by ops recorded; the pipeline worker that owns {device} "
                       "emits its acknowledged transition"]  # fmt: skip
        params = await connect(s.params_dsn, s.params_password)
        row = await params.fetchrow("SELECT device_id, acked_by, note FROM alarm_acks WHERE alarm_id = $1", raised)
        assert tuple(row) == (device, "ops", "on site")
        for alarm_id, said in (
            (raised, f"f2stream: an acknowledgement of alarm {raised} is already recorded"),
            (cleared, f"f2stream: alarm {cleared} is already cleared"),
            (f"{device}:nothing:0:0", f"f2stream: no such alarm '{device}:nothing:0:0'"),
        ):
            status, out, err = run(stack, "ack", alarm_id)
            assert status == 2 and len(err) == 1 and err[0].startswith(said), err
        status, out, err = run(stack, "list", "--device", device, "--state", "all")
        assert status == 0 and [line.split()[-1] for line in out[1:]] == [raised, cleared], out
    finally:
        await ts.execute("DELETE FROM alarms WHERE device_id = $1", device)
        await ts.close()
        if params is not None:
            await params.execute("DELETE FROM alarm_acks WHERE device_id = $1", device)
            await params.close()
