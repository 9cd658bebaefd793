"""The broker's side of device access: Mosquitto's dynamic-security plugin and its CRL.

The plugin is driven over its MQTT control API, as the
`F2_MQTT_ADMIN_USERNAME` service account. A revoked device becomes a disabled
client holding the role `f2-revoked`, which denies every topic: disabling it
kicks its live session, and the deny role outranks the ACL file's per-device
patterns, so a reconnection can neither publish nor subscribe.

The broker reads `crl.pem` at start and on SIGHUP: when `F2_MQTT_PID_FILE`
names its pid file (the local stack), :func:`reload_crl` signals it, and the
next TLS handshake of a revoked device fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from f2stream.errors import F2StreamError
from f2stream.settings import Settings

__all__ = ["CONTROL_TOPIC", "REVOKED_ROLE", "DynsecError", "disable_device", "enable_device", "reload_crl", "send"]

logger = logging.getLogger(__name__)

#: The dynamic-security role of revoked devices: every topic denied.
REVOKED_ROLE = "f2-revoked"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"


class DynsecError(F2StreamError):
    """The broker's dynamic-security plugin did not do what was asked."""


async def disable_device(settings: Settings, device_id: str) -> None:
    """Cut the device's session and deny it every topic from now on.

    Raises:
        DynsecError: the broker is unreachable, or the device did not end up disabled.
    """
    deny = [
        {"acltype": kind, "topic": "#", "priority": 100, "allow": False}
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    # Creating what exists already fails harmlessly; the final getClient says
    # whether the client ended up disabled and in the role.
    responses = await send(
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


async def enable_device(settings: Settings, device_id: str) -> None:
    """Give a device revoked earlier its access back (its dynamic-security client is deleted)."""
    await send(settings, [{"command": "deleteClient", "username": device_id}], tolerate_errors=True)


def reload_crl(settings: Settings) -> None:
    """SIGHUP the broker, when its pid file is known, so that it reloads crl.pem."""
    if not settings.mqtt_pid_file:
        logger.info("F2_MQTT_PID_FILE not set: the broker reloads crl.pem at its next restart")
        return
    try:
        pid = int(Path(settings.mqtt_pid_file).read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        logger.warning("Could not signal the broker (F2_MQTT_PID_FILE %s): %s", settings.mqtt_pid_file, exc)


async def send(
    settings: Settings, commands: list[dict[str, Any]], *, tolerate_errors: bool = False, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Send commands to the dynamic-security plugin; return its responses, in order.

    Raises:
        DynsecError: no admin password, the broker did not answer, or (unless
            `tolerate_errors`) it refused a command.
    """
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
