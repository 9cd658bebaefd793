"""`register-device`, `revoke-device` and `devices`: device identities (:mod:`f2stream.devices.enrolment`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from faust.cli import argument, option

from f2stream.commands.base import connect_database, device_id_of, one_line_errors
from f2stream.devices.enrolment import register_device, revoke_device
from f2stream.devices.registry import DeviceRecord, list_devices
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

    @app.command()
    @one_line_errors
    async def devices(self: Any) -> None:
        """List the device registry; certificates expiring within 30 days are marked."""
        conn = await connect_database(settings, "params")
        try:
            records = await list_devices(conn)
        finally:
            await conn.close()
        for line in format_devices(records, datetime.now(UTC)):
            print(line, flush=True)


def format_devices(records: Sequence[DeviceRecord], now: datetime) -> list[str]:
    """The `devices` table: one line per device, certificates close to expiry marked."""
    lines = [f"{'device':<16} {'serial number':<20} {'status':<8} {'expires (UTC)':<17} {'certificate':<16} note"]
    for r in records:
        lines.append(
            f"{r.device_id:<16} {r.serial_number:<20} {r.status:<8} "
            f"{f'{r.expires_at.astimezone(UTC):%Y-%m-%d %H:%M}':<17} {r.cert_serial[:16]:<16} {_flag(r, now)}".rstrip()
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
