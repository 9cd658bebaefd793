"""Simulated F2 controllers: realistic telemetry for every component type.

`faust -A f2stream simulate` publishes over MQTT (QoS 1), each controller
on its own mTLS connection (port `F2_MQTT_TLS_PORT`) with its own
certificate from `F2_PKI_DIR`, and can write a manifest of what it sent,
which `faust -A f2stream verify` checks against the database.

Alarm drills (:class:`Drill`, `simulate --drill`) replace one device's door
sensor messages for a while with a scripted episode (a door forced, a door
held open, a tamper, a door opened after a card read) beside its normal
traffic; :func:`drill_steps` says what each sends and when, with no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, get_args

import aiomqtt
import asyncpg
import orjson

from f2stream.codec.values import encode_modbus_frame
from f2stream.devices.enrolment import ensure_device_certificates
from f2stream.pki import PkiError, PkiPaths
from f2stream.records import format_time
from f2stream.settings import Settings
from f2stream.storage.db import connect

__all__ = [
    "DEMO_PARAMETERS",
    "DRILL_DEFAULT_S",
    "DRILL_KINDS",
    "DRILL_START_S",
    "DeviceLink",
    "DeviceTimes",
    "Drill",
    "DrillKind",
    "DrillStep",
    "Silence",
    "SimMessage",
    "Traffic",
    "device_ids",
    "device_tls_context",
    "drill_starts",
    "drill_steps",
    "enrol_demo_devices",
    "messages",
    "reconnect_delay",
    "register_demo_parameters",
    "run_simulation",
    "write_demo_parameters",
]

logger = logging.getLogger(__name__)

#: Parameter rows every simulated device gets (mode, component type, number, encoding, unit, scale).
DEMO_PARAMETERS: tuple[tuple[str, str, str | None, str, str, float], ...] = (
    ("access-control-mode", "strike", None, "boolean", "state", 1.0),
    ("access-control-mode", "door-sensors", None, "boolean_map", "state", 1.0),
    ("access-control-mode", "reader", None, "raw_string", "text", 1.0),
    ("access-control-mode", "exit-buttons", None, "boolean", "pressed", 1.0),
    ("alarm-mode", "motion-sensor", None, "boolean", "presence", 1.0),
    ("alarm-mode", "siren", None, "boolean", "state", 1.0),
    ("sensor-mode", "sensor", None, "hex_to_float", "celsius", 0.1),
)

_UPSERT = """
INSERT INTO device_parameters (device_id, mode, component_type, component_number, encoding, unit, scale_factor)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (device_id, mode, component_type, coalesce(component_number, ''), coalesce(data_point, ''))
DO UPDATE SET encoding = EXCLUDED.encoding, unit = EXCLUDED.unit,
              scale_factor = EXCLUDED.scale_factor, updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One simulated publication and the number of measurements it must yield."""

    topic: str
    payload: bytes
    device_id: str
    component: str
    time: str
    points: int


@dataclass(frozen=True, slots=True)
class Silence:
    """A device that stops publishing `from_s` seconds after publishing began, for `seconds` seconds."""

    device: str
    from_s: float
    seconds: float

    def covers(self, device: str, elapsed_s: float) -> bool:
        """Whether `device` keeps quiet `elapsed_s` seconds after publishing began."""
        return device == self.device and self.from_s <= elapsed_s < self.from_s + self.seconds


DrillKind = Literal["forced-door", "held-door", "tamper", "granted-door"]
DRILL_KINDS: Final[tuple[DrillKind, ...]] = get_args(DrillKind)

#: SECONDS of each drill when not given: how long the door stays open, or the tamper lasts.
DRILL_DEFAULT_S: Final[Mapping[DrillKind, float]] = {
    "forced-door": 10.0,
    "held-door": 40.0,
    "tamper": 5.0,
    "granted-door": 5.0,
}

#: Seconds after publishing begins at which each device's first drill starts.
DRILL_START_S: Final = 2.0
#: A forced door opens this long after its drill starts: no grant (card, exit button, strike) meanwhile.
_FORCED_QUIET_S: Final = 30.0
#: A granted (or held) door opens this long after its card read.
_GRANT_LEAD_S: Final = 2.0
#: The card a drill reads.
_DRILL_CARD: Final = "D0D0D0D0"

_DOOR_SENSORS = ("stat", "access-control-mode/1/door-sensors")
_READER = ("tele", "access-control-mode/1/reader-1")
_CLOSED: Final[Mapping[str, Any]] = {"door_1": "closed", "door_2": "closed", "tamper": False}
#: The components that grant access (a card read, an exit button, the strike unlocked).
_GRANTING = frozenset({"reader-1", "exit-buttons", "strike-1"})


@dataclass(frozen=True, slots=True)
class DrillStep:
    """One message of a drill: `at_s` seconds after its drill starts (or, from :func:`drill_steps`, after
    publishing began), its MQTT type and path, its fields (no timestamp) and what it means."""

    at_s: float
    device: str
    kind: str
    path: str
    fields: Mapping[str, Any]
    what: str


@dataclass(frozen=True, slots=True)
class Drill:
    """An alarm drill on one device: a scripted episode of its door sensors (`seconds`: open or tampered).

    * `forced-door`: door_2 closed; 30 s later open, with no reader, exit
      button or strike message in between (no grant); `seconds` later closed.
    * `held-door`: a card read and door_1 closed; 2 s later door_1 open,
      with no door sensor message for `seconds`; then closed.
    * `tamper`: tamper true; `seconds` later false.
    * `granted-door`: a card read and door_2 closed; 2 s later door_2 open,
      `seconds` later closed (must raise no forced open).
    """

    kind: DrillKind
    device: str
    seconds: float

    def script(self) -> tuple[DrillStep, ...]:
        """The drill's messages, `at_s` from its start, in order."""
        s = self.seconds

        def door(at_s: float, what: str, **changes: Any) -> DrillStep:
            return DrillStep(at_s, self.device, *_DOOR_SENSORS, {**_CLOSED, **changes}, what)

        card = DrillStep(
            0.0,
            self.device,
            *_READER,
            {"card_id": _DRILL_CARD, "read_type": "nfc", "signal_strength": 90},
            f"card {_DRILL_CARD} read",
        )
        if self.kind == "forced-door":
            quiet = _FORCED_QUIET_S
            return (
                door(0.0, "doors closed"),
                door(quiet, "door_2 open (forced)", door_2="open"),
                door(quiet + s, "door_2 closed"),
            )
        if self.kind == "held-door":
            lead = _GRANT_LEAD_S
            return (
                door(0.0, "doors closed"),
                card,
                door(lead, "door_1 open (held)", door_1="open"),
                door(lead + s, "door_1 closed"),
            )
        if self.kind == "tamper":
            return door(0.0, "tamper true", tamper=True), door(s, "tamper false")
        lead = _GRANT_LEAD_S
        return (
            door(0.0, "doors closed"),
            card,
            door(lead, "door_2 open (granted)", door_2="open"),
            door(lead + s, "door_2 closed"),
        )

    @property
    def length_s(self) -> float:
        """Seconds from its start to its last message."""
        return self.script()[-1].at_s

    @property
    def withheld(self) -> frozenset[str]:
        """The device's components whose random messages are not sent during the drill."""
        if self.kind == "forced-door":
            return _GRANTING | {"door-sensors"}
        return frozenset({"door-sensors"})


def drill_starts(drills: Sequence[Drill], start_s: float = DRILL_START_S) -> list[float]:
    """When each drill starts, in seconds after publishing began: one after another per device."""
    free: dict[str, float] = {}
    starts = []
    for drill in drills:
        at = free.get(drill.device, start_s)
        starts.append(at)
        free[drill.device] = at + drill.length_s
    return starts


def drill_steps(drills: Sequence[Drill], start_s: float = DRILL_START_S) -> list[DrillStep]:
    """Every drill's messages with their times (`at_s`: seconds after publishing began), in time order."""
    steps = [
        DrillStep(at + step.at_s, step.device, step.kind, step.path, step.fields, step.what)
        for drill, at in zip(drills, drill_starts(drills, start_s), strict=True)
        for step in drill.script()
    ]
    return sorted(steps, key=lambda step: step.at_s)  # stable: a drill's steps at one time keep their order


def device_ids(count: int, first: int = 1) -> list[str]:
    """Deterministic, locally administered MACs: f2-02f2000000NN."""
    return [f"f2-02f2{n:08x}" for n in range(first, first + count)]


class DeviceTimes:
    """Message times from a clock, strictly increasing per device even when the clock stands still or goes back."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._last: dict[str, datetime] = {}

    def next(self, device: str) -> datetime:
        """The time of the device's next message."""
        now = self._clock()
        last = self._last.get(device)
        if last is not None and now <= last:
            now = last + timedelta(microseconds=1)
        self._last[device] = now
        return now


def _message(device: str, kind: str, path: str, fields: Mapping[str, Any], now: datetime) -> SimMessage:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    return SimMessage(
        topic=f"{kind}/{device}/{path}",
        payload=orjson.dumps({"timestamp": stamp, **fields}),
        device_id=device,
        component=path.rsplit("/", 1)[1],
        time=format_time(now),
        points=len(fields),
    )


def _payload(component: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """(type, mode/connector/component, fields) for one component type."""
    if component == "strike":
        locked = rng.random() < 0.8
        return (
            "stat",
            "access-control-mode/1/strike-1",
            {
                "state": "locked" if locked else "unlocked",
                "voltage": round(rng.gauss(12.0, 0.15), 2),
                "current": round(rng.uniform(0.05, 0.2) if locked else rng.uniform(1.2, 1.8), 2),
            },
        )
    if component == "door-sensors":
        return (
            "stat",
            "access-control-mode/1/door-sensors",
            {
                "door_1": rng.choice(["open", "closed", "closed", "closed"]),
                "door_2": rng.choice(["open", "closed", "closed", "closed"]),
                "tamper": rng.random() < 0.01,
            },
        )
    if component == "reader":
        return (
            "tele",
            "access-control-mode/1/reader-1",
            {
                "card_id": f"{rng.getrandbits(32):08X}",
                "read_type": rng.choice(["nfc", "rfid", "nfc"]),
                "signal_strength": rng.randint(40, 100),
            },
        )
    if component == "exit-buttons":
        return (
            "stat",
            "access-control-mode/1/exit-buttons",
            {
                "button_pressed": rng.random() < 0.3,
                "button_id": rng.randint(1, 2),
            },
        )
    if component == "motion-sensor":
        return (
            "stat",
            "alarm-mode/3/motion-sensor-1",
            {
                "motion_detected": rng.random() < 0.2,
                "sensitivity": rng.randint(1, 10),
                "zone": rng.choice(["zone_1", "zone_2"]),
            },
        )
    if component == "siren":
        active = rng.random() < 0.05
        return (
            "stat",
            "alarm-mode/3/siren-1",
            {
                "state": "active" if active else "inactive",
                "volume": rng.randint(80, 110) if active else 0,
                "pattern": rng.choice(["pulsing", "steady"]),
            },
        )
    tenths = round(rng.gauss(215, 25))  # an RS-485 thermometer: 0.1 °C per unit, signed
    frame = encode_modbus_frame(1, 3, tenths.to_bytes(2, "big", signed=True))
    return "cmnd", "sensor-mode/4/sensor-3", {"data": frame}


_COMPONENTS = ("strike", "door-sensors", "reader", "exit-buttons", "motion-sensor", "siren", "sensor")


def messages(
    devices: list[str],
    rng: random.Random,
    clock: Callable[[], datetime],
    *,
    doors_closed: Collection[str] = (),
    times: DeviceTimes | None = None,
) -> Iterator[SimMessage]:
    """Endless messages, devices and components in turn, each device's times strictly increasing.

    Args:
        doors_closed: devices whose door sensors always say both doors
            closed and no tamper (the drilled ones: random doors would raise
            door alarms by themselves); their other values are unchanged.
        times: the devices' message times, when shared with other messages
            (drills); by default from `clock`.
    """
    times = times or DeviceTimes(clock)
    n = 0
    while True:
        device = devices[n % len(devices)]
        component = _COMPONENTS[(n // len(devices)) % len(_COMPONENTS)]
        kind, path, fields = _payload(component, rng)
        if component == "door-sensors" and device in doors_closed:
            fields = dict(_CLOSED)
        yield _message(device, kind, path, fields, times.next(device))
        n += 1


class Traffic:
    """What the simulator publishes, in order, without the MQTT: random messages, silences and drills.

    :meth:`due_drills` gives the drill messages due by a moment;
    :meth:`next_random` the next random message to send, skipping the
    silenced devices and the components a drill withholds. A silenced device
    sends no drill message either. Times are the clock's, strictly
    increasing per device across both kinds.
    """

    def __init__(
        self,
        devices: list[str],
        rng: random.Random,
        clock: Callable[[], datetime],
        *,
        silences: Sequence[Silence] = (),
        drills: Sequence[Drill] = (),
        start_s: float = DRILL_START_S,
    ) -> None:
        self._devices = devices
        self._silences = silences
        self._times = DeviceTimes(clock)
        drilled = {drill.device for drill in drills}
        self._source = messages(devices, rng, clock, doors_closed=drilled, times=self._times)
        self._steps = drill_steps(drills, start_s)
        self._next_step = 0
        self._spans = [
            (drill.device, at, at + drill.length_s, drill.withheld)
            for drill, at in zip(drills, drill_starts(drills, start_s), strict=True)
        ]

    def _silent(self, device: str, elapsed_s: float) -> bool:
        return any(s.covers(device, elapsed_s) for s in self._silences)

    def _withheld(self, message: SimMessage, elapsed_s: float) -> bool:
        return any(
            device == message.device_id and begin <= elapsed_s <= end and message.component in components
            for device, begin, end, components in self._spans
        )

    def due_drills(self, elapsed_s: float) -> Iterator[tuple[DrillStep, SimMessage]]:
        """The drill messages due `elapsed_s` seconds after publishing began, not sent yet, with their steps."""
        while self._next_step < len(self._steps) and self._steps[self._next_step].at_s <= elapsed_s:
            step = self._steps[self._next_step]
            self._next_step += 1
            if self._silent(step.device, elapsed_s):
                continue
            yield step, _message(step.device, step.kind, step.path, step.fields, self._times.next(step.device))

    def next_random(self, elapsed_s: float) -> SimMessage | None:
        """The next random message to send `elapsed_s` seconds after publishing began; None if none may be."""
        for _ in range(len(self._devices) * len(_COMPONENTS)):
            message = next(self._source)
            if not (self._silent(message.device_id, elapsed_s) or self._withheld(message, elapsed_s)):
                return message
        return None


async def register_demo_parameters(settings: Settings, devices: list[str]) -> None:
    """Upsert the demo parameter rows for the given devices, over a connection of its own."""
    conn = await connect(settings.params_dsn, settings.params_password)
    try:
        await write_demo_parameters(conn, devices)
    finally:
        await conn.close()


async def write_demo_parameters(conn: asyncpg.Connection, devices: list[str]) -> None:
    """Upsert the demo parameter rows for the given devices."""
    await conn.executemany(_UPSERT, [(d, *row) for d in devices for row in DEMO_PARAMETERS])


async def enrol_demo_devices(
    conn: asyncpg.Connection, settings: Settings, devices: list[str], *, parameters: bool
) -> None:
    """Register the devices that have no certificate yet and, when asked, write their demo parameters.

    Args:
        conn: a connection to the parameters database.
    """
    issued = await ensure_device_certificates(conn, settings, devices, serial_prefix="SIM")
    if issued:
        logger.info("Registered %d demo devices and issued their certificates", issued)
    if parameters:
        await write_demo_parameters(conn, devices)
        logger.info("Registered demo parameters for %d devices", len(devices))


def device_tls_context(settings: Settings, device_id: str) -> ssl.SSLContext:
    """TLS 1.2+ client context: the broker checked against our CA, the device's own certificate.

    Raises:
        PkiError: the device has no certificate in `F2_PKI_DIR`.
    """
    paths = PkiPaths(settings.pki_dir)
    cert, key = paths.device_cert(device_id), paths.device_key(device_id)
    if not (cert.exists() and key.exists() and paths.ca_cert.exists()):
        raise PkiError(
            f"no certificate for {device_id} in {settings.pki_dir}: run "
            f"`faust -A f2stream register-device {device_id} --serial SN` or simulate --register-devices"
        )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(paths.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def run_simulation(
    settings: Settings,
    ids: list[str],
    *,
    rate: float,
    count: int,
    duration_s: float,
    manifest: Path | None,
    seed: int,
    silences: Sequence[Silence] = (),
    drills: Sequence[Drill] = (),
) -> int:
    """Publish simulated telemetry from the given devices; return how many messages the broker acknowledged.

    A device in `silences` keeps its connection but publishes nothing during
    its silence (its turns go to the other devices); the manifest holds only
    what was published. `drills` run from 2 s after publishing begins, one
    after another per device (:class:`Traffic`); their messages count like
    the others (`count`, `rate`, the manifest).

    Raises:
        PkiError: a device has no certificate.
        aiomqtt.MqttError: the broker refused a device's first connection.
    """
    contexts = {d: device_tls_context(settings, d) for d in ids}
    traffic = Traffic(ids, random.Random(seed), lambda: datetime.now(UTC), silences=silences, drills=drills)
    sent = 0
    out = manifest.open("ab") if manifest else None
    window = asyncio.Semaphore(500)
    started = time.monotonic()

    def client_for(device: str) -> Callable[[], aiomqtt.Client]:
        return lambda: aiomqtt.Client(
            settings.mqtt_host,
            settings.mqtt_tls_port,
            identifier=device,
            tls_context=contexts[device],
            max_inflight_messages=1000,
            timeout=30,
        )

    # One MQTT connection per controller, as the real ones do; each comes back
    # by itself after a broker restart.
    links = {d: DeviceLink(d, client_for(d), random.Random(f"{seed}/{d}")) for d in ids}
    runners = [asyncio.create_task(link.run(), name=f"f2stream-simulate-link-{d}") for d, link in links.items()]
    try:
        for link in links.values():
            await link.first_connection()
        publishing = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            while (not count or sent < count) and (not duration_s or time.monotonic() - started < duration_s):
                for step, drilled in traffic.due_drills(time.monotonic() - publishing):
                    if count and sent >= count:
                        break
                    logger.info("drill on %s: %s", step.device, step.what)
                    await window.acquire()
                    tasks.create_task(_publish(links[drilled.device_id], drilled, window, out))
                    sent += 1
                due = int((time.monotonic() - started) * rate) + 1 if rate else sent + 100
                while sent < due and (not count or sent < count):
                    message = traffic.next_random(time.monotonic() - publishing)
                    if message is None:  # every device silent: this round is over
                        break
                    await window.acquire()
                    tasks.create_task(_publish(links[message.device_id], message, window, out))
                    sent += 1
                await asyncio.sleep(0.005)
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        if out is not None:
            out.close()
    return sent


#: Reconnect delays: random in [0, min(cap, base * 2**attempt)] ("full jitter"),
#: so that many controllers cut off together do not come back together.
_RECONNECT_BASE_S = 0.5
_RECONNECT_CAP_S = 10.0


def reconnect_delay(
    attempt: int, rng: random.Random, base_s: float = _RECONNECT_BASE_S, cap_s: float = _RECONNECT_CAP_S
) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 for the first after a loss)."""
    return rng.uniform(0.0, min(cap_s, base_s * 2 ** min(attempt, 32)))


class DeviceLink:
    """One simulated controller's MQTT connection, re-established after a loss.

    :meth:`run` keeps the connection (a new client each time, clean session);
    :meth:`publish` returns once the broker has acknowledged a message
    (PUBACK), re-sending it on the next connection if the one it went out
    on was lost first. A message can so reach the broker twice, never zero
    times; the database's primary key absorbs the second copy.
    """

    def __init__(self, device: str, make_client: Callable[[], aiomqtt.Client], rng: random.Random) -> None:
        self.device = device
        self._make_client = make_client
        self._rng = rng
        self._current: tuple[aiomqtt.Client, asyncio.Future[None]] | None = None
        self._up = asyncio.Event()
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reconnects = 0

    async def first_connection(self) -> None:
        """Wait for the first connection; raise its error if it failed (a refused device is not retried)."""
        await self._first

    async def run(self) -> None:
        """Connect, hold the connection until the broker drops it, and connect again after a delay."""
        attempt = 0
        while True:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                async with self._make_client() as client:
                    self._current = (client, lost)
                    self._up.set()
                    if self._first.done():
                        self.reconnects += 1
                        logger.info("%s: connected again after %d attempt(s)", self.device, attempt)
                    else:
                        self._first.set_result(None)
                    attempt = 0
                    async for _ in client.messages:  # ends only by MqttError, when the connection is lost
                        pass
            except aiomqtt.MqttError as exc:
                if not self._first.done():
                    self._first.set_exception(exc)
                    return
                if attempt == 0:
                    logger.warning("%s: connection lost (%s); reconnecting", self.device, exc)
            finally:
                self._up.clear()
                self._current = None
                if not lost.done():
                    lost.set_result(None)
            await asyncio.sleep(reconnect_delay(attempt, self._rng))
            attempt += 1

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1; return once the broker acknowledged it, on whichever connection."""
        while True:
            await self._up.wait()
            if self._current is None:
                continue
            client, lost = self._current
            sending = asyncio.ensure_future(client.publish(topic, payload, qos=1))
            await asyncio.wait((sending, lost), return_when=asyncio.FIRST_COMPLETED)
            if sending.done() and sending.exception() is None:
                return
            if not sending.done():
                sending.cancel()  # the connection it went out on is gone: send again on the next
                await asyncio.gather(sending, return_exceptions=True)
            else:
                # Refused while the link has not noticed the loss yet: give it a moment, then retry.
                await asyncio.wait((lost,), timeout=1.0)


async def _publish(link: DeviceLink, message: SimMessage, window: asyncio.Semaphore, out: Any) -> None:
    try:
        await link.publish(message.topic, message.payload)
        if out is not None:
            out.write(
                orjson.dumps(
                    {
                        "device_id": message.device_id,
                        "component": message.component,
                        "time": message.time,
                        "points": message.points,
                    }
                )
                + b"\n"
            )
    finally:
        window.release()
