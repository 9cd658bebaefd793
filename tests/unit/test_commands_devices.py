"""f2stream.commands.devices.format_devices: the `devices` listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from f2stream.commands.devices import format_devices
from f2stream.devices.registry import DeviceRecord

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def record(device: str, days: float, status: str = "active", *, serial: str = "ab") -> DeviceRecord:
    return DeviceRecord(device, "SN", serial, "0" * 64, NOW, NOW + timedelta(days=days), status, None)


def test_certificates_close_to_expiry_are_marked() -> None:
    lines = format_devices(
        [
            record("f2-000000000001", 400),
            record("f2-000000000002", 10),
            record("f2-000000000003", -1),
            record("f2-000000000004", 5, "revoked"),
        ],
        NOW,
    )
    assert lines[1].endswith("2031-02-05 00:00  ab               never_seen -")
    assert lines[2].endswith("EXPIRES SOON")
    assert lines[3].endswith("EXPIRED")
    assert "revoked" in lines[4] and not lines[4].endswith("SOON")


def test_the_warning_starts_30_days_ahead_and_expiry_is_inclusive() -> None:
    lines = format_devices([record("f2-000000000001", 30), record("f2-000000000002", 29.9), record("f2-0", 0)], NOW)
    assert not lines[1].endswith("SOON")
    assert lines[2].endswith("EXPIRES SOON")
    assert lines[3].endswith("EXPIRED")


def test_an_empty_registry_is_the_header_alone() -> None:
    (header,) = format_devices([], NOW)
    assert header.split() == ["device", "serial", "number", "status", "expires", "(UTC)", "certificate", "state",
                              "last", "seen", "(UTC)", "note"]  # fmt: skip


def test_liveness_columns_show_state_and_last_seen_and_unknown_is_never_seen() -> None:
    seen = datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)
    header, known, unknown = format_devices(
        [record("f2-000000000001", 400), record("f2-000000000002", 400)], NOW, {"f2-000000000001": ("silent", seen)}
    )
    assert known.index("silent") == header.index("state")
    assert known.index("2026-12-01 10:00:05") == header.index("last seen (UTC)")
    assert unknown.index("never_seen") == header.index("state")


def test_columns_line_up_times_are_utc_and_long_serials_are_cut() -> None:
    here = timezone(timedelta(hours=2))
    local = DeviceRecord("f2-000000000001", "SN-1", "c" * 40, "0" * 64, NOW, datetime(2031, 1, 1, 2, tzinfo=here),
                         "active", None)  # fmt: skip
    header, line = format_devices([local], NOW)
    assert line.index("2031-01-01 00:00") == header.index("expires (UTC)")
    assert line.index("c" * 16) == header.index("certificate")
    assert "c" * 17 not in line
