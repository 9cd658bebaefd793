"""`register-device`, `revoke-device` and `devices`: device identities (:mod:`f2stream.devices.enrolment`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import faust
from faust.cli import argument, option

from f2stream.commands.base import CommandError, connect_database, device_id_of, one_line_errors
from f2stream.devices.enrolment import register_device, revoke_device
from f2stream.devices.registry import DeviceRecord, list_devices
from f2stream.liveness import STATES
from f2stream.pki import DEVICE_DAYS, PkiPaths
from f2stream.settings import Settings

__all__ = ["EXPIRY_WARNING", "format_devices", "register"]

#: Active certificates expiring within this time are marked in the listing.
EXPIRY_WARNING = timedelta(days=30)


def register(app: faust.App, settings: Settings) -> None:
    """Attach `register-device`, `revoke-device` and `devices`."""

    @app.command(
        argument("mac"),
        option("--serial", "serial_number", required=True, help="The controller's serial number."),
        option("--force", is_flag=True, default=False, help="Issue a new certificate for a registered device."),
        option("--days", type=int, default=DEVICE_DAYS, show_default=True, help="Validity of the certificate."),
        name="register-device",
    )
    @one_line_errors
    async def register_device_command(self: Any, mac: str, serial_number: str, force: bool, days: int) -> None:
        """Issue a device certificate (CN = device id) and register the device."""
        device_id = device_id_of(mac)
        conn = await connect_database(settings, "params")
        try:
            info = await register_device(conn, settings, device_id, serial_number, force=force, days=days)
        finally:
            await conn.close()
        print(
            f"register-device: {info.common_name} certificate {info.serial} valid until "
            f"{info.not_after:%Y-%m-%d}, in {PkiPaths(settings.pki_dir).device_cert(info.common_name).parent}",
            flush=True,
        )

    @app.command(argument("mac"), name="revoke-device")
    @one_line_errors
    async def revoke_device_command(self: Any, mac: str) -> None:
        """Revoke a device: its session is cut and the broker refuses it from now on."""
        device_id = device_id_of(mac)
        conn = await connect_database(settings, "params")
        try:
            record = await revoke_device(conn, settings, device_id)
        finally:
            await conn.close()
        print(f"revoke-device: {record.device_id} revoked (certificate {record.cert_serial})", flush=True)

    @app.command(
        option("--state", "state", default=None, help=f"Only devices in this liveness state ({', '.join(STATES)})."),
    )
    @one_line_errors
    async def devices(self: Any, state: str | None) -> None:
        """List the device registry with liveness state and last seen; certificates close to expiry are marked."""
        if state is not None and state not in STATES:
            raise CommandError(f"--state must be one of {', '.join(STATES)}, not {state!r}")
        conn = await connect_database(settings, "params")
        try:
            records = await list_devices(conn)
        finally:
            await conn.close()
        conn = await connect_database(settings, "timeseries")
        try:
            liveness = await _liveness(conn)
        finally:
            await conn.close()
        if state is not None:
            records = [r for r in records if liveness.get(r.device_id, ("never_seen", None))[0] == state]
        for line in format_devices(records, datetime.now(UTC), liveness):
            print(line, flush=True)


async def _liveness(conn: Any) -> dict[str, tuple[str, datetime | None]]:
    """Each device's liveness state and last seen time, from the time-series database (empty before migrating)."""
    try:
        rows = await conn.fetch("SELECT device_id, state, last_seen FROM device_status")
    except asyncpg.UndefinedTableError as exc:
        raise CommandError("the device_status table does not exist: run `faust -A f2stream migrate`") from exc
    return {r["device_id"]: (r["state"], r["last_seen"]) for r in rows}


def format_devices(
    records: Sequence[DeviceRecord],
    now: datetime,
    liveness: Mapping[str, tuple[str, datetime | None]] | None = None,
) -> list[str]:
    """The `devices` table: one line per device with its liveness, certificates close to expiry marked.

    A device the pipeline has not reported on yet shows as `never_seen`.
    """
    liveness = liveness or {}
    lines = [
        f"{'device':<16} {'serial number':<20} {'status':<8} {'expires (UTC)':<17} {'certificate':<16} "
        f"{'state':<10} {'last seen (UTC)':<19} note"
    ]
    for r in records:
        state, seen = liveness.get(r.device_id, ("never_seen", None))
        seen_text = f"{seen.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if seen else "-"
        lines.append(
            f"{r.device_id:<16} {r.serial_number:<20} {r.status:<8} "
            f"{f'{r.expires_at.astimezone(UTC):%Y-%m-%d %H:%M}':<17} {r.cert_serial[:16]:<16} "
            f"{state:<10} {seen_text:<19} {_flag(r, now)}".rstrip()
        )
    return lines


def _flag(record: DeviceRecord, now: datetime) -> str:
    if record.status != "active":
        return ""
    if record.expires_at <= now:
        return "EXPIRED"
    if record.expires_at - now < EXPIRY_WARNING:
        return "EXPIRES SOON"
    return ""
