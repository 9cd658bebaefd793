"""Enrolling and revoking devices: certificate, registry row and broker access kept in step.

The certificates come from :mod:`f2stream.pki`, the registry is
:mod:`f2stream.devices.registry`, the broker's side is :mod:`f2stream.devices.dynsec`.
Revocation acts at once, without restarting the broker, in three places:

1. the broker: the device's session is cut and every topic denied to it;
2. `crl.pem` gets the certificate's serial and the broker reloads it, so the
   next TLS handshake of the device fails;
3. the registry row becomes `revoked`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from f2stream.devices import dynsec
from f2stream.devices.registry import DeviceRecord, fetch_device, mark_revoked, record_certificate
from f2stream.pki import (
    DEVICE_DAYS,
    CertificateInfo,
    DeviceExistsError,
    PkiPaths,
    issue_device_certificate,
    revoke_in_crl,
)
from f2stream.settings import Settings

__all__ = ["ensure_device_certificates", "register_device", "revoke_device"]

logger = logging.getLogger(__name__)


async def register_device(
    conn: asyncpg.Connection,
    settings: Settings,
    device_id: str,
    serial_number: str,
    *,
    force: bool = False,
    days: int = DEVICE_DAYS,
) -> CertificateInfo:
    """Issue the device's certificate and record it in the registry.

    A device that was revoked is re-enabled in the broker, which needs the broker.

    Args:
        conn: a connection to the parameters database.
        device_id: the canonical device id (`f2-` and 12 hex digits).

    Raises:
        DeviceExistsError: the device is registered or has a certificate, and `force` is false.
    """
    existing = await fetch_device(conn, device_id)
    if existing is not None and not force:
        raise DeviceExistsError(device_id)
    info = issue_device_certificate(settings.pki_dir, device_id, force=force, days=days)
    await record_certificate(conn, device_id, serial_number, info)
    if existing is not None and existing.status == "revoked":
        await dynsec.enable_device(settings, device_id)
    logger.info("Registered %s (certificate %s)", device_id, info.serial)
    return info


async def revoke_device(
    conn: asyncpg.Connection, settings: Settings, device_id: str, *, now: datetime | None = None
) -> DeviceRecord:
    """Revoke the device: registry, CRL (reloaded by the broker), broker (session cut, topics denied).

    Raises:
        RegistryError: the device is not registered.
        DynsecError: the broker did not disable the device (the CRL and the registry say revoked).
    """
    now = now or datetime.now(UTC)
    record = await mark_revoked(conn, device_id, now)
    revoke_in_crl(settings.pki_dir, record.cert_serial, now=now)
    dynsec.reload_crl(settings)
    await dynsec.disable_device(settings, device_id)
    logger.info("Revoked %s (certificate %s)", device_id, record.cert_serial)
    return record


async def ensure_device_certificates(
    conn: asyncpg.Connection, settings: Settings, device_ids: Sequence[str], serial_prefix: str
) -> int:
    """Register the devices that have no certificate in the PKI folder yet; return how many."""
    paths = PkiPaths(settings.pki_dir)
    issued = 0
    for device_id in device_ids:
        if paths.device_cert(device_id).exists() and paths.device_key(device_id).exists():
            continue
        try:
            await register_device(conn, settings, device_id, f"{serial_prefix}-{device_id[3:]}", force=True)
        except DeviceExistsError:  # pragma: no cover - force=True never raises it
            continue
        issued += 1
    return issued
