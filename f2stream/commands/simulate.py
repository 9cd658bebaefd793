"""`faust -A f2stream simulate`: simulated F2 controllers over mTLS (:mod:`f2stream.simulator`).

Alarm drills: `--drill KIND:DEVICE_INDEX[:SECONDS]` (repeatable) plays a
scripted episode on a simulated device (DEVICE_INDEX 0 is the first,
f2-02f200000001 with the default --first-device) while its other components
keep their random traffic. KIND is `forced-door` (door_2 closed, opened 30 s
later with no card read, exit button or strike message before it, closed
SECONDS later, default 10: raises door_forced_open), `held-door` (a card
read, door_1 open 2 s later with no door sensor message for SECONDS, default
40, then closed: raises door_held_open by its timer alone), `tamper` (tamper
true for SECONDS, default 5: a `state` rule) or `granted-door` (a card read,
door_2 open 2 s later for SECONDS, default 5: must raise no forced open).
A device's drills start 2 s after publishing begins, one after another in
the order given; its door sensors say both doors closed and no tamper
whenever it is not in a drill, so that random doors raise nothing. The
schedule is printed first; drill messages count like the others (--count,
--rate, --manifest). Run long enough (--duration-s) for the drills to end.

    faust -A f2stream simulate --devices 2 --duration-s 60 --drill forced-door:0 --drill granted-door:1
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import faust
from faust.cli import option

from f2stream.commands.base import CommandError, connect_database, device_id_of, one_line_errors
from f2stream.errors import F2StreamError
from f2stream.settings import Settings
from f2stream.simulator import (
    DRILL_DEFAULT_S,
    DRILL_KINDS,
    Drill,
    Silence,
    device_ids,
    drill_starts,
    enrol_demo_devices,
    run_simulation,
)

__all__ = ["describe_drills", "drills_end", "parse_drill", "parse_silence", "register"]

#: Longest text taken as a device number rather than a MAC (device ids hold the number in 8 hex digits).
_NUMBER_DIGITS = 10


def parse_silence(text: str, ids: Sequence[str], first_device: int) -> Silence:
    """A `--silence DEVICE:FROM:SECONDS` value.

    DEVICE is a MAC in any usual spelling (colons included, as the last two
    fields are split off from the right) or a device number as simulate
    numbers them: `--first-device 1 --devices 5` simulates 1 to 5, and
    `3` is f2-02f200000003. It must be one of the simulated devices.

    Raises:
        CommandError: the value is malformed or names a device not simulated.
    """
    usage = f"--silence {text!r}: expected DEVICE:FROM:SECONDS, e.g. 3:10:30 or e4:fd:45:f6:54:be:10:30"
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0].strip():
        raise CommandError(usage)
    device_text, from_text, seconds_text = parts
    try:
        from_s, seconds = float(from_text), float(seconds_text)
    except ValueError:
        raise CommandError(f"{usage} (FROM and SECONDS are numbers of seconds)") from None
    if not (math.isfinite(from_s) and math.isfinite(seconds)) or from_s < 0 or seconds <= 0:
        raise CommandError(f"{usage} (FROM at least 0, SECONDS more than 0)")
    device_text = device_text.strip()
    if device_text.isdecimal() and len(device_text) <= _NUMBER_DIGITS:
        number = int(device_text)
        if not first_device <= number < first_device + len(ids):
            raise CommandError(
                f"--silence {text!r}: device {number} is not simulated "
                f"(this run simulates {first_device} to {first_device + len(ids) - 1})"
            )
        return Silence(ids[number - first_device], from_s, seconds)
    device = device_id_of(device_text)
    if device not in ids:
        raise CommandError(f"--silence {text!r}: {device} is not one of the {len(ids)} simulated devices")
    return Silence(device, from_s, seconds)


def parse_drill(text: str, ids: Sequence[str]) -> Drill:
    """A `--drill KIND:DEVICE_INDEX[:SECONDS]` value.

    KIND is one of :data:`DRILL_KINDS`; DEVICE_INDEX the 0-based index among
    the simulated devices; SECONDS (more than 0) how long the door stays
    open or the tamper lasts, by default the kind's (:data:`DRILL_DEFAULT_S`).

    Raises:
        CommandError: the value is malformed or names a device not simulated.
    """
    usage = (
        f"--drill {text!r}: expected KIND:DEVICE_INDEX[:SECONDS], e.g. forced-door:0 or held-door:1:40, "
        f"KIND one of {', '.join(DRILL_KINDS)}"
    )
    parts = [part.strip() for part in text.split(":")]
    if len(parts) not in (2, 3):
        raise CommandError(usage)
    kind = next((k for k in DRILL_KINDS if k == parts[0].lower()), None)
    if kind is None:
        raise CommandError(f"{usage} (not {parts[0]!r})")
    if not (parts[1].isdecimal() and parts[1].isascii()):
        raise CommandError(f"{usage} (DEVICE_INDEX is 0 to {len(ids) - 1})")
    index = int(parts[1])
    if index >= len(ids):
        raise CommandError(
            f"--drill {text!r}: device index {index} is not simulated "
            f"(this run simulates {len(ids)} devices, DEVICE_INDEX 0 to {len(ids) - 1})"
        )
    seconds = DRILL_DEFAULT_S[kind]
    if len(parts) == 3:
        try:
            seconds = float(parts[2])
        except ValueError:
            raise CommandError(f"{usage} (SECONDS is a number of seconds)") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise CommandError(f"{usage} (SECONDS more than 0)")
    return Drill(kind, ids[index], seconds)


def describe_drills(drills: Sequence[Drill]) -> list[str]:
    """One line per drill: its device, when it starts and ends (seconds after publishing began), what it sends."""
    lines = []
    for drill, at in zip(drills, drill_starts(drills), strict=True):
        steps = ", ".join(f"+{at + step.at_s:g} s {step.what}" for step in drill.script())
        lines.append(f"drill {drill.kind} on {drill.device}: from +{at:g} s to +{at + drill.length_s:g} s ({steps})")
    return lines


def drills_end(drills: Sequence[Drill]) -> float:
    """Seconds after publishing begins at which the last drill ends (0 without drills)."""
    return max((at + d.length_s for d, at in zip(drills, drill_starts(drills), strict=True)), default=0.0)


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
        option(
            "--silence",
            "silence",
            multiple=True,
            metavar="DEVICE:FROM:SECONDS",
            help="The device (MAC, or number as --first-device counts) publishes nothing from FROM s after "
            "publishing began, for SECONDS s, then resumes. Repeatable.",
        ),
        option(
            "--drill",
            "drill",
            multiple=True,
            metavar="KIND:DEVICE_INDEX[:SECONDS]",
            help="An alarm drill on the simulated device DEVICE_INDEX (0: the first): forced-door (default "
            "10 s open), held-door (40 s), tamper (5 s) or granted-door (5 s, must raise nothing). A device's "
            "drills run one after another from 2 s after publishing began; its doors stay closed otherwise. "
            "Repeatable.",
        ),
    )
    @one_line_errors
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
        silence: tuple[str, ...],
        drill: tuple[str, ...],
    ) -> None:
        """Publish simulated F2 controller telemetry over MQTT."""
        if devices < 1 or rate < 0 or count < 0:
            raise CommandError("--devices must be at least 1, --rate and --count at least 0")
        ids = device_ids(devices, first_device)
        silences = [parse_silence(text, ids, first_device) for text in silence]
        drills = [parse_drill(text, ids) for text in drill]
        for line in describe_drills(drills):
            print(f"simulate: {line}", flush=True)
        end = drills_end(drills)
        if drills and duration_s and duration_s < end:
            print(
                f"simulate: warning: --duration-s {duration_s:g} stops before the drills end "
                f"(+{end:g} s after publishing begins)",
                file=sys.stderr,
                flush=True,
            )
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
                silences=silences,
                drills=drills,
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
