"""The alarm writer on the real PostgreSQL: any order and any repetition of events, one row each; the listing."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from harness import Stack

from f2stream.alarms import AlarmEvent
from f2stream.storage.alarms import AlarmWriter, list_alarms
from f2stream.web import alarms as alarm_views

pytestmark = pytest.mark.integration

START = 1_900_000_000.25


def events(device: str, rule: str = "door-1-forced", offset: int = 1200) -> list[AlarmEvent]:
    """An alarm's three transitions: raised by one record, acknowledged, cleared by another."""
    raised = AlarmEvent(
        alarm_id=f"{device}:{rule}:3:{offset}", transition="raised", device_id=device, rule=rule,
        kind="door_forced_open", severity="critical", at=START, raised_at=START, data_point="door_1", value=1.0,
        text_value=None, raw_partition=3, raw_offset=offset, reason="door opened with no grant within 10 s",
    )  # fmt: skip
    acknowledged = replace(raised, transition="acknowledged", at=START + 30, reason="acknowledged",
                           acknowledged_by="ops-1")  # fmt: skip
    cleared = replace(raised, transition="cleared", at=START + 90.5, value=0.0, raw_offset=offset + 7,
                      reason="door closed")  # fmt: skip
    return [raised, acknowledged, cleared]


async def stored(writer: AlarmWriter, alarm_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pool = await writer._get_pool()
    row = await pool.fetchrow("SELECT * FROM alarms WHERE alarm_id = $1", alarm_id)
    history = await pool.fetch("SELECT * FROM alarm_transitions WHERE alarm_id = $1 ORDER BY transition", alarm_id)
    assert row is not None
    answer = dict(row)
    del answer["updated_at"]
    return answer, [{k: v for k, v in h.items() if k != "written_at"} for h in history]


async def test_every_order_and_repetition_gives_the_same_row_and_one_row_per_transition(stack: Stack) -> None:
    writer = AlarmWriter(stack.settings)
    try:
        seen = []
        shuffle = random.Random(27)
        for n, order in enumerate(itertools.permutations(range(3))):
            alarm = events(f"f2-0000001a{n:04x}")
            batches: list[list[AlarmEvent]] = [[alarm[i]] for i in order]
            batches.insert(shuffle.randrange(len(batches) + 1), [alarm[order[0]]] * 2)  # a re-delivery
            if n % 2:  # the whole alarm in one batch too, repeated
                batches.append(alarm[::-1] + alarm)
            for batch in batches:
                await writer.write(batch)
            row, history = await stored(writer, alarm[0].alarm_id)
            assert [h["transition"] for h in history] == ["acknowledged", "cleared", "raised"]
            seen.append((row | {"alarm_id": "", "device_id": ""}, [h | {"alarm_id": "", "device_id": ""}
                                                                   for h in history]))  # fmt: skip
        assert all(s == seen[0] for s in seen), "an order of delivery made another row"
        row = seen[0][0]
        assert row["state"] == "cleared" and row["acknowledged_by"] == "ops-1" and row["reason"] == "door closed"
        assert (row["raised_raw_partition"], row["raised_raw_offset"]) == (3, 1200)
        assert (row["cleared_raw_partition"], row["cleared_raw_offset"]) == (3, 1207)
        assert row["value"] == 1.0  # the raising value
        assert row["raised_at"].timestamp() == START and row["cleared_at"].timestamp() == START + 90.5
    finally:
        await writer.close()


async def test_the_state_moves_forward_only_and_a_redelivery_touches_nothing(stack: Stack) -> None:
    writer = AlarmWriter(stack.settings)
    raised, acknowledged, cleared = events("f2-0000001b0001")
    try:
        await writer.write([raised])
        row, _ = await stored(writer, raised.alarm_id)
        assert row["state"] == "raised" and row["acknowledged_at"] is None and row["cleared_at"] is None
        await writer.write([acknowledged])
        assert (await stored(writer, raised.alarm_id))[0]["state"] == "acknowledged"
        pool = await writer._get_pool()
        updated = await pool.fetchval("SELECT updated_at FROM alarms WHERE alarm_id = $1", raised.alarm_id)
        await writer.write([raised, acknowledged])
        assert await pool.fetchval("SELECT updated_at FROM alarms WHERE alarm_id = $1", raised.alarm_id) == updated
        # A second acknowledgement (another operator) does not replace the first.
        await writer.write([replace(acknowledged, acknowledged_by="ops-2", at=START + 40)])
        assert (await stored(writer, raised.alarm_id))[0]["acknowledged_by"] == "ops-1"
        await writer.write([cleared, acknowledged])
        assert (await stored(writer, raised.alarm_id))[0]["state"] == "cleared"
        # A clear before its raise: a whole row at once, filled in when the raise arrives.
        early_raised, _, early_cleared = events("f2-0000001b0002")
        await writer.write([early_cleared])
        row, _ = await stored(writer, early_cleared.alarm_id)
        assert row["state"] == "cleared" and row["raised_raw_offset"] is None and row["value"] is None
        await writer.write([early_raised])
        row, _ = await stored(writer, early_cleared.alarm_id)
        assert row["state"] == "cleared" and row["raised_raw_offset"] == 1200 and row["value"] == 1.0
    finally:
        await writer.close()


async def test_a_burst_of_thousands_lands_in_one_write(stack: Stack) -> None:
    writer = AlarmWriter(stack.settings)
    try:
        burst = [e for i in range(2000) for e in events("f2-0000001c0001", offset=10_000 + 10 * i)[:2]]
        await writer.write(burst)
        pool = await writer._get_pool()
        assert await pool.fetchval("SELECT count(*) FROM alarms WHERE device_id = 'f2-0000001c0001'") == 2000
        assert await pool.fetchval(
            "SELECT count(*) FROM alarm_transitions WHERE device_id = 'f2-0000001c0001'"
        ) == 4000  # fmt: skip
    finally:
        await writer.close()


async def test_the_listing_pages_by_alarm_id_and_filters_by_state_and_device(stack: Stack) -> None:
    writer = AlarmWriter(stack.settings)
    # The last ids there are: the listing across devices below reads to the end, and the stack is shared with
    # the other alarm tests (test_alarms.py leaves its devices' alarms active).
    device, other = "f2-ffffffff0001", "f2-ffffffff0002"
    try:
        mine = [events(device, offset=100 + i) for i in range(5)]
        await writer.write([a[0] for a in mine])  # five raised
        await writer.write([mine[1][1], mine[2][2], mine[3][1], mine[3][2]])  # one acknowledged, two cleared
        await writer.write([events(other)[0]])
        pool = await writer._get_pool()
        ids = sorted(a[0].alarm_id for a in mine)

        pages, after = [], None
        while True:
            page = await list_alarms(pool, state="all", device=device, after=after, limit=2)
            pages.append([r["alarm_id"] for r in page])
            if len(page) < 2:
                break
            after = page[-1]["alarm_id"]
        assert pages == [ids[:2], ids[2:4], ids[4:]]

        def states(state: str) -> dict[str, str]:
            return {r["alarm_id"]: r["state"] for r in found[state]}

        found = {s: await list_alarms(pool, state=s, device=device, limit=100)
                 for s in ("active", "raised", "acknowledged", "cleared")}  # fmt: skip
        assert set(states("active").values()) == {"raised", "acknowledged"} and len(states("active")) == 3
        assert set(states("raised")) == {mine[0][0].alarm_id, mine[4][0].alarm_id}
        assert set(states("acknowledged")) == {mine[1][0].alarm_id}
        assert set(states("cleared")) == {mine[2][0].alarm_id, mine[3][0].alarm_id}
        (row,) = [r for r in found["cleared"] if r["alarm_id"] == mine[3][0].alarm_id]
        assert row["raised_at"] == "2030-03-17T17:46:40.250000+00:00"
        assert row["acknowledged_at"] == "2030-03-17T17:47:10.250000+00:00" and row["acknowledged_by"] == "ops-1"
        assert row["cleared_at"] == "2030-03-17T17:48:10.750000+00:00"
        everyone = await list_alarms(pool, state="active", after="f2-ffffffff", limit=5)  # every device's
        assert [r["device_id"] for r in everyone] == [device] * 3 + [other]
    finally:
        await writer.close()


async def test_the_views_page_a_devices_alarms_from_the_database(stack: Stack) -> None:
    device = "f2-0000001e0001"
    writer = AlarmWriter(stack.settings)
    try:
        await writer.write([events(device, offset=500 + i)[0] for i in range(3)])
    finally:
        await writer.close()
    app = faust.App("f2stream-test-alarm-views", broker="memory://", web_enabled=True)
    alarm_views.register(app, stack.settings)
    client = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    try:
        first = await (await client.get("/devices/00:00:00:1E:00:01/alarms?limit=2")).json()
        assert first["device_id"] == device and len(first["alarms"]) == 2
        second = await (await client.get(first["next"])).json()
        assert [a["alarm_id"] for a in first["alarms"] + second["alarms"]] == [
            f"{device}:door-1-forced:3:{500 + i}" for i in range(3)
        ]
        assert "next" not in second
        listed = await (await client.get(f"/alarms?state=raised&device={device}")).json()
        assert [a["raised_at"] for a in listed["alarms"]] == ["2030-03-17T17:46:40.250000+00:00"] * 3
        bad = await client.get("/alarms?state=open")
        assert bad.status == 400 and "state must be one of" in (await bad.json())["error"]
    finally:
        await client.close()
