"""The device registry: the `device_registry` table of the parameters database.

One row per device: its serial number, its current certificate and whether it
is active or revoked. The functions take an open connection and never open one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from f2stream.errors import F2StreamError
from f2stream.pki import CertificateInfo

__all__ = ["DeviceRecord", "RegistryError", "fetch_device", "list_devices", "mark_revoked", "record_certificate"]

_MISSING = "the device registry does not exist: run `faust -A f2stream migrate`"

_UPSERT = """
INSERT INTO device_registry (device_id, serial_number, cert_serial, cert_sha256, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (device_id) DO UPDATE SET
    serial_number = EXCLUDED.serial_number, cert_serial = EXCLUDED.cert_serial,
    cert_sha256 = EXCLUDED.cert_sha256, issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at,
    status = 'active', revoked_at = NULL, updated_at = now()
"""
_REVOKE = """
UPDATE device_registry SET status = 'revoked', revoked_at = coalesce(revoked_at, $2), updated_at = now()
WHERE device_id = $1
RETURNING *
"""


class RegistryError(F2StreamError):
    """The registry is missing, or does not hold the device; the message says what to run."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One row of the device registry."""

    device_id: str
    serial_number: str
    cert_serial: str
    cert_sha256: str
    issued_at: datetime
    expires_at: datetime
    status: str
    revoked_at: datetime | None


async def fetch_device(conn: asyncpg.Connection, device_id: str) -> DeviceRecord | None:
    """The device's row, or None for a device never registered."""
    try:
        row = await conn.fetchrow("SELECT * FROM device_registry WHERE device_id = $1", device_id)
    except asyncpg.UndefinedTableError as exc:
        raise RegistryError(_MISSING) from exc
    return None if row is None else _record(row)


async def list_devices(conn: asyncpg.Connection) -> list[DeviceRecord]:
    """Every registered device, by device id."""
    try:
        rows = await conn.fetch("SELECT * FROM device_registry ORDER BY device_id")
    except asyncpg.UndefinedTableError as exc:
        raise RegistryError(_MISSING) from exc
    return [_record(r) for r in rows]


async def record_certificate(
    conn: asyncpg.Connection, device_id: str, serial_number: str, info: CertificateInfo
) -> None:
    """Register the device with its new certificate; an existing row becomes active again."""
    await conn.execute(
        _UPSERT, device_id, serial_number, info.serial, info.fingerprint_sha256, info.not_before, info.not_after
    )


async def mark_revoked(conn: asyncpg.Connection, device_id: str, now: datetime) -> DeviceRecord:
    """Mark the device revoked (the first revocation time is kept); return its row.

    Raises:
        RegistryError: the device is not registered, or the registry does not exist.
    """
    try:
        row = await conn.fetchrow(_REVOKE, device_id, now)
    except asyncpg.UndefinedTableError as exc:
        raise RegistryError(_MISSING) from exc
    if row is None:
        raise RegistryError(f"device {device_id} is not registered: see `faust -A f2stream devices`")
    return _record(row)


def _record(row: asyncpg.Record) -> DeviceRecord:
    return DeviceRecord(
        device_id=row["device_id"],
        serial_number=row["serial_number"],
        cert_serial=row["cert_serial"],
        cert_sha256=row["cert_sha256"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        revoked_at=row["revoked_at"],
    )
