"""The device views' answers, from the table and from database rows."""

from __future__ import annotations

from datetime import UTC, datetime

from f2stream.records import ParameterSet
from f2stream.web.views import latest_points, parameters_answer

DEVICE = "f2-e4fd45f654be"
HELD = {DEVICE: ParameterSet(device_id=DEVICE, version=4, parameters=[{"encoding": "boolean"}])}


def test_parameters_of_a_device_in_any_mac_spelling() -> None:
    status, body = parameters_answer("E4:FD:45:F6:54:BE", HELD.get)
    assert status == 200
    assert body == {"device_id": DEVICE, "version": 4, "parameters": [{"encoding": "boolean"}]}


def test_a_device_without_parameters_is_404_and_a_bad_id_400() -> None:
    assert parameters_answer("f2-000000000001", HELD.get) == (
        404,
        {"device_id": "f2-000000000001", "error": "no parameters for this device"},
    )
    status, body = parameters_answer("not-a-mac", HELD.get)
    assert status == 400 and "is not a MAC address" in body["error"]


def test_latest_points_carry_utc_times_and_every_column() -> None:
    moment = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    row = {
        "time": moment, "mode": "access-control-mode", "connector": 1, "component": "strike-1",
        "data_point": "state", "value": 1.0, "text_value": "locked", "unit": "state", "param_version": 4,
        "received_at": moment,
    }  # fmt: skip
    (point,) = latest_points([row])
    assert point == {
        **row,
        "time": "2025-01-31T12:00:00.123456+00:00",
        "received_at": "2025-01-31T12:00:00.123456+00:00",
    }
    assert latest_points([]) == []
