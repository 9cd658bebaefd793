"""`faust -A f2stream simulate`: simulated F2 controllers over mTLS (:mod:`f2stream.simulator`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import faust
from faust.cli import option

from f2stream.commands.base import connect_database
from f2stream.errors import F2StreamError
from f2stream.settings import Settings
from f2stream.simulator import device_ids, enrol_demo_devices, run_simulation

__all__ = ["register"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `simulate` command."""

    @app.command(
        option("--devices", type=int, default=5, show_default=True, help="How many controllers."),
        option("--first-device", type=int, default=1, show_default=True, help="Number of the first device id."),
        option(
            "--rate",
            type=float,
            default=20.0,
            show_default=True,
            help="Messages per second in all (0: as fast as possible).",
        ),
        option("--count", type=int, default=0, help="Stop after this many messages (0: never)."),
        option("--duration-s", type=float, default=0.0, help="Stop after this many seconds (0: never)."),
        option(
            "--register-params",
            is_flag=True,
            default=False,
            help="Write the demo devices' parameter rows first (and register the devices, as --register-devices).",
        ),
        option(
            "--register-devices",
            is_flag=True,
            default=False,
            help="Register the demo devices that have no certificate yet (issues them one).",
        ),
        option("--manifest", type=str, default=None, help="Append what was sent (JSON lines) here, for `verify`."),
        option("--seed", type=int, default=1, show_default=True, help="Random seed of the values."),
    )
    async def simulate(
        self: Any,
        devices: int,
        first_device: int,
        rate: float,
        count: int,
        duration_s: float,
        register_params: bool,
        register_devices: bool,
        manifest: str | None,
        seed: int,
    ) -> None:
        """Publish simulated F2 controller telemetry over MQTT."""
        if devices < 1 or rate < 0 or count < 0:
            print("f2stream: --devices must be at least 1, --rate and --count at least 0", flush=True)
            raise SystemExit(2)
        ids = device_ids(devices, first_device)
        try:
            if register_devices or register_params:
                await _enrol(settings, ids, parameters=register_params)
            sent = await run_simulation(
                settings,
                ids,
                rate=rate,
                count=count,
                duration_s=duration_s,
                manifest=Path(manifest) if manifest else None,
                seed=seed,
            )
        except aiomqtt.MqttError as exc:
            raise SystemExit(
                f"f2stream: MQTT at {settings.mqtt_host}:{settings.mqtt_tls_port} refused or dropped the "
                f"simulator ({exc}); start the stack (make up), check F2_MQTT_TLS_PORT and that the "
                "devices are registered and not revoked (faust -A f2stream devices)"
            ) from None
        except F2StreamError as exc:
            raise SystemExit(f"f2stream: {exc}") from None
        print(f"simulate: {sent} messages published by {devices} devices", flush=True)


async def _enrol(settings: Settings, ids: list[str], *, parameters: bool) -> None:
    conn = await connect_database(settings, "params")
    try:
        await enrol_demo_devices(conn, settings, ids, parameters=parameters)
    finally:
        await conn.close()
    if parameters:
        await asyncio.sleep(1.0)  # the pipeline reloads on the change notification; give it a moment
