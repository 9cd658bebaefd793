"""Device identities: `pki init`, `register-device`, `revoke-device`, `devices`.

The certificates come from :mod:`f2stream.pki`; the registry is the
`device_registry` table of the parameters database. Revocation acts at once,
without restarting the broker, in three places:

1. Mosquitto's dynamic-security plugin (over its MQTT control API, as the
   `F2_MQTT_ADMIN_USERNAME` service account): the device becomes a disabled
   client holding the role `f2-revoked`, which denies every topic. Disabling
   it kicks its live session; the deny role outranks the ACL file's
   per-device patterns, so a reconnection can neither publish nor subscribe.
2. `crl.pem` gets the certificate's serial and, when `F2_MQTT_PID_FILE` names
   the broker's pid file (the local stack), the broker is sent SIGHUP, which
   reloads the CRL: the next TLS handshake of the device fails.
3. The registry row becomes `revoked`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import faust
import orjson
from faust.cli import argument, option

from f2stream.db import connect, describe_dsn
from f2stream.errors import F2StreamError
from f2stream.pki import (
    DEVICE_DAYS,
    CertificateInfo,
    DeviceExistsError,
    PkiPaths,
    init_pki,
    issue_device_certificate,
    revoke_in_crl,
)
from f2stream.settings import Settings
from f2stream.topics import canonical_device_id

__all__ = [
    "REVOKED_ROLE",
    "DeviceRecord",
    "DynsecError",
    "ensure_device_certificates",
    "list_devices",
    "register",
    "register_device",
    "revoke_device",
]

logger = logging.getLogger(__name__)

#: The dynamic-security role of revoked devices: every topic denied.
REVOKED_ROLE = "f2-revoked"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
EXPIRY_WARNING = timedelta(days=30)


class DynsecError(F2StreamError):
    """The broker's dynamic-security plugin did not do what was asked."""


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


# --------------------------------------------------------------------------- registry


async def _connect(settings: Settings) -> asyncpg.Connection:
    from f2stream.cli import CommandError  # cli imports this module

    try:
        return await connect(settings.params_dsn, settings.params_password)
    except (TimeoutError, OSError, Exception) as exc:  # asyncpg raises many kinds
        raise CommandError(
            f"cannot connect to the parameters database at {describe_dsn(settings.params_dsn)} "
            f"({exc.__class__.__name__}); start it (make up) or set F2_PARAMS_DSN"
        ) from exc


async def _fetch(conn: asyncpg.Connection, device_id: str) -> DeviceRecord | None:
    from f2stream.cli import CommandError

    try:
        row = await conn.fetchrow("SELECT * FROM device_registry WHERE device_id = $1", device_id)
    except asyncpg.UndefinedTableError as exc:
        raise CommandError("the device registry does not exist: run `faust -A f2stream migrate`") from exc
    return None if row is None else _record(row)


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


_UPSERT = """
INSERT INTO device_registry (device_id, serial_number, cert_serial, cert_sha256, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (device_id) DO UPDATE SET
    serial_number = EXCLUDED.serial_number, cert_serial = EXCLUDED.cert_serial,
    cert_sha256 = EXCLUDED.cert_sha256, issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at,
    status = 'active', revoked_at = NULL, updated_at = now()
"""


def _device_id(mac: str) -> str:
    from f2stream.cli import CommandError

    try:
        return canonical_device_id(mac)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


async def register_device(
    settings: Settings, mac: str, serial_number: str, *, force: bool = False, days: int = DEVICE_DAYS
) -> CertificateInfo:
    """Issue the device's certificate and record it in the registry.

    A device that was revoked is re-enabled in the broker (its dynamic-security
    client is deleted), which needs the broker.

    Raises:
        DeviceExistsError: the device is registered or has a certificate, and `force` is false.
    """
    device_id = _device_id(mac)
    conn = await _connect(settings)
    try:
        existing = await _fetch(conn, device_id)
        if existing is not None and not force:
            raise DeviceExistsError(device_id)
        info = issue_device_certificate(settings.pki_dir, device_id, force=force, days=days)
        await conn.execute(
            _UPSERT, device_id, serial_number, info.serial, info.fingerprint_sha256, info.not_before, info.not_after
        )
    finally:
        await conn.close()
    if existing is not None and existing.status == "revoked":
        await _dynsec(settings, [{"command": "deleteClient", "username": device_id}], tolerate_errors=True)
    logger.info("Registered %s (certificate %s)", device_id, info.serial)
    return info


async def revoke_device(settings: Settings, mac: str, *, now: datetime | None = None) -> DeviceRecord:
    """Revoke the device: broker (session cut, topics denied), CRL, registry."""
    from f2stream.cli import CommandError

    device_id = _device_id(mac)
    now = now or datetime.now(UTC)
    conn = await _connect(settings)
    try:
        record = await _fetch(conn, device_id)
        if record is None:
            raise CommandError(f"device {device_id} is not registered: see `faust -A f2stream devices`")
        await conn.execute(
            "UPDATE device_registry SET status = 'revoked', revoked_at = coalesce(revoked_at, $2), updated_at = now() "
            "WHERE device_id = $1",
            device_id,
            now,
        )
        revoked = await _fetch(conn, device_id)
    finally:
        await conn.close()
    assert revoked is not None
    revoke_in_crl(settings.pki_dir, record.cert_serial, now=now)
    _reload_broker(settings)
    await _disable_in_broker(settings, device_id)
    logger.info("Revoked %s (certificate %s)", device_id, record.cert_serial)
    return revoked


async def list_devices(settings: Settings) -> list[DeviceRecord]:
    """Every registered device, by device id."""
    from f2stream.cli import CommandError

    conn = await _connect(settings)
    try:
        rows = await conn.fetch("SELECT * FROM device_registry ORDER BY device_id")
    except asyncpg.UndefinedTableError as exc:
        raise CommandError("the device registry does not exist: run `faust -A f2stream migrate`") from exc
    finally:
        await conn.close()
    return [_record(r) for r in rows]


async def ensure_device_certificates(settings: Settings, device_ids: Sequence[str], serial_prefix: str) -> int:
    """Register the devices that have no certificate in the PKI folder yet; return how many."""
    paths = PkiPaths(settings.pki_dir)
    issued = 0
    for device_id in device_ids:
        if paths.device_cert(device_id).exists() and paths.device_key(device_id).exists():
            continue
        try:
            await register_device(settings, device_id, f"{serial_prefix}-{device_id[3:]}", force=True)
        except DeviceExistsError:  # pragma: no cover - force=True never raises it
            continue
        issued += 1
    return issued


# --------------------------------------------------------------------------- broker


def _reload_broker(settings: Settings) -> None:
    """SIGHUP the broker, when its pid file is known, so that it reloads crl.pem."""
    if not settings.mqtt_pid_file:
        logger.info("F2_MQTT_PID_FILE not set: the broker reloads crl.pem at its next restart")
        return
    try:
        pid = int(Path(settings.mqtt_pid_file).read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        logger.warning("Could not signal the broker (F2_MQTT_PID_FILE %s): %s", settings.mqtt_pid_file, exc)


async def _disable_in_broker(settings: Settings, device_id: str) -> None:
    deny = [
        {"acltype": kind, "topic": "#", "priority": 100, "allow": False}
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    # Creating what exists already fails harmlessly; the final getClient says
    # whether the client ended up disabled and in the role.
    responses = await _dynsec(
        settings,
        [
            {"command": "createRole", "rolename": REVOKED_ROLE, "acls": deny},
            {"command": "createClient", "username": device_id, "roles": [{"rolename": REVOKED_ROLE}]},
            {"command": "addClientRole", "username": device_id, "rolename": REVOKED_ROLE, "priority": 100},
            {"command": "disableClient", "username": device_id},
            {"command": "getClient", "username": device_id},
        ],
        tolerate_errors=True,
    )
    client = (responses[-1].get("data") or {}).get("client") or {}
    roles = {r.get("rolename") for r in client.get("roles") or []}
    if not client.get("disabled") or REVOKED_ROLE not in roles:
        raise DynsecError(
            f"the broker did not disable {device_id} ({responses[-1].get('error', 'unexpected answer')}); "
            "the CRL and the registry say revoked: run revoke-device again once the broker is reachable"
        )


async def _dynsec(
    settings: Settings, commands: list[dict[str, Any]], *, tolerate_errors: bool = False, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Send commands to the dynamic-security plugin; return its responses, in order."""
    password = settings.mqtt_admin_password
    if password is None:
        raise DynsecError(
            "F2_MQTT_ADMIN_PASSWORD(_FILE) is not set: the broker's admin login is needed to change device access"
        )
    tag = uuid.uuid4().hex
    for n, command in enumerate(commands):
        command["correlationData"] = f"{tag}-{n}"
    try:
        async with aiomqtt.Client(
            settings.mqtt_host,
            settings.mqtt_port,
            username=settings.mqtt_admin_username,
            password=password.reveal(),
            identifier=f"f2stream-admin-{tag[:8]}",
            timeout=timeout_s,
        ) as client:
            await client.subscribe(CONTROL_TOPIC + "/response", qos=1)
            await client.publish(CONTROL_TOPIC, orjson.dumps({"commands": commands}), qos=1)
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    body = orjson.loads(bytes(message.payload))
                    responses: list[dict[str, Any]] = body.get("responses") or []
                    if responses and str(responses[0].get("correlationData", "")).startswith(tag):
                        break
    except (aiomqtt.MqttError, TimeoutError) as exc:
        raise DynsecError(
            f"MQTT at {settings.mqtt_host}:{settings.mqtt_port} did not take the admin commands "
            f"({exc.__class__.__name__}); start the broker (make up) or check F2_MQTT_ADMIN_*"
        ) from exc
    failed = [r for r in responses if r.get("error")]
    if failed and not tolerate_errors:
        raise DynsecError(f"the broker refused {failed[0].get('command')}: {failed[0].get('error')}")
    return responses


# --------------------------------------------------------------------------- commands


def _flag(record: DeviceRecord, now: datetime) -> str:
    if record.status != "active":
        return ""
    if record.expires_at <= now:
        return "EXPIRED"
    if record.expires_at - now < EXPIRY_WARNING:
        return "EXPIRES SOON"
    return ""


def format_devices(records: Sequence[DeviceRecord], now: datetime) -> list[str]:
    """The `devices` table: one line per device, certificates close to expiry marked."""
    lines = [f"{'device':<16} {'serial number':<20} {'status':<8} {'expires (UTC)':<17} {'certificate':<16} note"]
    for r in records:
        lines.append(
            f"{r.device_id:<16} {r.serial_number:<20} {r.status:<8} "
            f"{r.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} {r.cert_serial[:16]:<16} {_flag(r, now)}".rstrip()
        )
    return lines


def register(app: faust.App, settings: Settings) -> None:
    """Attach `pki`, `register-device`, `revoke-device` and `devices`."""
    import click

    from f2stream.cli import one_line_errors  # cli imports this module

    @app.command(argument("action", type=click.Choice(["init"])))
    @one_line_errors
    async def pki(self: Any, action: str) -> None:
        """`pki init`: create the CA once (never replaced) and the broker's certificate."""
        hosts = [settings.mqtt_host, *settings.pki_hosts.split(",")]
        result = init_pki(settings.pki_dir, hosts)
        state = "created" if result.ca_created else "kept (exists)"
        print(f"pki: CA {state} in {settings.pki_dir}; server certificate for {', '.join(result.hosts)}", flush=True)

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
        info = await register_device(settings, mac, serial_number, force=force, days=days)
        print(
            f"register-device: {info.common_name} certificate {info.serial} valid until "
            f"{info.not_after:%Y-%m-%d}, in {PkiPaths(settings.pki_dir).device_cert(info.common_name).parent}",
            flush=True,
        )

    @app.command(argument("mac"), name="revoke-device")
    @one_line_errors
    async def revoke_device_command(self: Any, mac: str) -> None:
        """Revoke a device: its session is cut and the broker refuses it from now on."""
        record = await revoke_device(settings, mac)
        print(f"revoke-device: {record.device_id} revoked (certificate {record.cert_serial})", flush=True)

    @app.command()
    @one_line_errors
    async def devices(self: Any) -> None:
        """List the device registry; certificates expiring within 30 days are marked."""
        for line in format_devices(await list_devices(settings), datetime.now(UTC)):
            print(line, flush=True)
