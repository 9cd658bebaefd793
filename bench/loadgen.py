"""The benchmark's load generator: simulated F2 telemetry over MQTT 3.1.1, QoS 1, on raw sockets.

    python -m bench.loadgen --port 1883 --username f2-simulator --password-file F \\
        --devices 10000 --rate 2000 --duration-s 30 --manifest run.jsonl

It speaks just enough MQTT (CONNECT, PUBLISH QoS 1, PUBACK, DISCONNECT) to
stay far faster than the pipeline it drives: no client library, one packet
built per message from pre-rendered payload bodies, one write per tick per
connection. Its own ceiling is measured by `make bench` (docs/performance.md).

Messages follow :mod:`f2stream.simulator` (the same topics, payloads and
rows per message); each payload's `timestamp` is the wall clock when the
message is written to the socket, strictly increasing per device, so that
the database can tell device-to-commit latency. Every message the broker
acknowledged is appended to the manifest that `faust -A f2stream verify`
reads. Progress: one JSON line per second on stdout, a summary line at the end.

Two modes: the service listener (`--username`, a few connections shared by
all devices, as bench/e2e.py did) or one mTLS session per device
(`--tls-dir`: the device's own certificate, its id as client id).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from f2stream.simulator import _COMPONENTS, _payload, device_ids

_VARIANTS = 64  # pre-rendered payload bodies per component type
_DEVICE_TIME = "%Y-%m-%d %H:%M:%S"  # a payload timestamp to the second; microseconds follow


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive_s: int) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + _string(client_id.encode())
    if username:
        body += _string(username.encode())
    if password:
        body += _string(password.encode())
    return b"\x10" + _remaining_length(len(body)) + body


@dataclass(frozen=True, slots=True)
class Body:
    """One pre-rendered payload: everything after the timestamp, and what it yields."""

    topic_tail: str  # mode/connector/component
    kind: str
    rest: bytes  # the JSON object's fields after "timestamp"
    component: str
    points: int


def bodies(seed: int) -> list[list[Body]]:
    """`_VARIANTS` payload bodies per component type (in simulator order)."""
    rng = random.Random(seed)
    table = []
    for component in _COMPONENTS:
        variants = []
        for _ in range(_VARIANTS):
            kind, path, fields = _payload(component, rng)
            rest = orjson.dumps(fields)[1:]  # '"state":"locked",...}'
            variants.append(Body(path, kind, rest, path.rsplit("/", 1)[1], len(fields)))
        table.append(variants)
    return table


def body_of(n: int, devices: int, table: list[list[Body]]) -> tuple[int, Body]:
    """Message `n`'s device (an index) and body: every device in turn, then the next component type, then variant."""
    kind = (n // devices) % len(_COMPONENTS)
    return n % devices, table[kind][(n // (devices * len(_COMPONENTS))) % _VARIANTS]


def payload(stamp: bytes, body: Body) -> bytes:
    """A message's payload: the device timestamp (`YYYY-MM-DD hh:mm:ss.ffffff`), then the body's fields."""
    return b'{"timestamp":"' + stamp + b'",' + body.rest


def device_stamp(micros: int) -> bytes:
    """The payload timestamp of `micros` microseconds since the epoch (UTC), spelled as :class:`Clock` does."""
    second, micro = divmod(micros, 1_000_000)
    return time.strftime(_DEVICE_TIME, time.gmtime(second)).encode() + b".%06d" % micro


class Clock:
    """Device timestamps: the wall clock in microseconds, strictly increasing per device, both spellings cached."""

    def __init__(self, devices: int) -> None:
        self.last = [0] * devices
        self._second = -1
        self._device_prefix = b""
        self._iso_prefix = ""

    def stamp(self, device: int) -> tuple[bytes, str]:
        """(payload timestamp, manifest time) for the next message of `device`."""
        now = time.time_ns() // 1000
        if now <= self.last[device]:
            now = self.last[device] + 1
        self.last[device] = now
        second, micro = divmod(now, 1_000_000)
        if second != self._second:
            self._second = second
            moment = time.gmtime(second)
            self._device_prefix = time.strftime(_DEVICE_TIME, moment).encode()
            self._iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", moment)
        frac = b".%06d" % micro
        return self._device_prefix + frac, f"{self._iso_prefix}.{micro:06d}+00:00"


@dataclass(slots=True)
class Session:
    """One MQTT connection: its socket, in-flight messages by packet id, and a window of them."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    window: asyncio.Semaphore
    inflight: dict[int, tuple[str, str, str, int]] = field(default_factory=dict)
    next_mid: int = 1
    out: bytearray = field(default_factory=bytearray)

    def mid(self) -> int:
        mid = self.next_mid
        self.next_mid = 1 if mid == 65535 else mid + 1
        return mid


class Generator:
    """Paced (or saturating) publishes over a set of sessions; counts acknowledgements, writes the manifest."""

    def __init__(self, args: argparse.Namespace, password: str | None, manifest: IO[bytes] | None) -> None:
        self.args = args
        self.password = password
        self.devices = device_ids(args.devices, args.first_device)
        self.bodies = bodies(args.seed)
        self.clock = Clock(len(self.devices))
        self.sessions: list[Session] = []
        self.sent = 0
        self.acked = 0
        self.first_time: str | None = None
        self.last_time: str | None = None
        self.manifest = manifest
        self.n = 0
        self.lines: list[bytes] = []

    async def open(self) -> None:
        """Open the sessions: `--connections` over the service listener, or one per device over mTLS."""
        a = self.args
        if a.tls_dir:
            ids = self.devices
            gate = asyncio.Semaphore(a.connect_concurrency)

            async def one(device: str) -> Session:
                async with gate:
                    return await self._open(device, None, None, self._tls(device))

            self.sessions = list(await asyncio.gather(*(one(d) for d in ids)))
        else:
            ids = [f"f2-bench-{os.getpid()}-{i}" for i in range(a.connections)]
            self.sessions = [await self._open(i, a.username, self.password, None) for i in ids]

    def _tls(self, device: str) -> ssl.SSLContext:
        root = Path(self.args.tls_dir)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(root / "ca.crt"))
        context.load_cert_chain(
            str(root / "devices" / device / "device.crt"), str(root / "devices" / device / "device.key")
        )
        return context

    async def _open(self, client_id: str, username: str | None, password: str | None, tls: Any) -> Session:
        a = self.args
        port = a.tls_port if tls else a.port
        for attempt in range(5):
            try:
                reader, writer = await asyncio.open_connection(a.host, port, ssl=tls, limit=1 << 20)
                break
            except OSError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5 + attempt)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(connect_packet(client_id, username, password, a.keepalive_s))
        connack = await asyncio.wait_for(reader.readexactly(4), 30)
        if connack[0] != 0x20 or connack[3] != 0:
            raise SystemExit(f"loadgen: broker refused {client_id}: CONNACK {connack.hex()}")
        return Session(reader, writer, asyncio.Semaphore(a.window))

    def build(self, session: Session) -> bytes:
        """The next message's PUBLISH packet; remembers it as in flight on `session`."""
        n = self.n
        self.n = n + 1
        device, body = body_of(n, len(self.devices), self.bodies)
        stamp, iso = self.clock.stamp(device)
        device_id = self.devices[device]
        topic = f"{body.kind}/{device_id}/{body.topic_tail}".encode()
        data = payload(stamp, body)
        mid = session.mid()
        session.inflight[mid] = (device_id, body.component, iso, body.points)
        if self.first_time is None:
            self.first_time = iso
        self.last_time = iso
        variable = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid)
        return b"\x32" + _remaining_length(len(variable) + len(data)) + variable + data

    def session_of(self, n: int) -> Session:
        """The session that carries message `n`: its device's own one (mTLS), or one of the shared ones."""
        return self.sessions[(n % len(self.devices)) % len(self.sessions)]

    async def read_acks(self, session: Session) -> None:
        """Count PUBACKs, write their messages to the manifest, free the window."""
        buffer = b""
        while True:
            chunk = await session.reader.read(65536)
            if not chunk:
                if session.inflight:
                    raise ConnectionError(f"broker closed a session with {len(session.inflight)} in flight")
                return
            buffer += chunk
            pos = 0
            while len(buffer) - pos >= 2:
                kind, length = buffer[pos], buffer[pos + 1]  # PUBACK/PINGRESP: one-byte remaining length
                if len(buffer) - pos < 2 + length:
                    break
                if kind == 0x40:
                    (mid,) = struct.unpack_from("!H", buffer, pos + 2)
                    entry = session.inflight.pop(mid, None)
                    if entry is not None:
                        self.acked += 1
                        session.window.release()
                        if self.manifest is not None:
                            self.lines.append(b'{"device_id":"%s","component":"%s","time":"%s","points":%d}\n' % (
                                entry[0].encode(), entry[1].encode(), entry[2].encode(), entry[3]))  # fmt: skip
                pos += 2 + length
            buffer = buffer[pos:]

    async def run(self) -> dict[str, Any]:
        a = self.args
        readers = [asyncio.create_task(self.read_acks(s)) for s in self.sessions]
        reporter = asyncio.create_task(self.report())
        started = time.monotonic()
        wall_start = time.time()
        cpu_start = time.process_time()
        tick = a.tick_ms / 1000
        try:
            while True:
                elapsed = time.monotonic() - started
                if (a.duration_s and elapsed >= a.duration_s) or (a.count and self.sent >= a.count):
                    break
                due = int(elapsed * a.rate) + 1 if a.rate else self.sent + a.burst
                if a.count:
                    due = min(due, a.count)
                touched: set[int] = set()
                while self.sent < due:
                    index = (self.n % len(self.devices)) % len(self.sessions)
                    session = self.sessions[index]
                    if session.window.locked():
                        for i in touched:  # let what is built go out before waiting for room
                            self._flush(self.sessions[i])
                        touched.clear()
                    await session.window.acquire()
                    session.out += self.build(session)
                    touched.add(index)
                    self.sent += 1
                for i in touched:
                    self._flush(self.sessions[i])
                self._write_manifest()
                await asyncio.sleep(tick if a.rate else 0)
            published_s = time.monotonic() - started
            deadline = time.monotonic() + a.ack_timeout_s
            while self.acked < self.sent and time.monotonic() < deadline:
                self._write_manifest()
                await asyncio.sleep(0.05)
            acked_s = time.monotonic() - started
        finally:
            reporter.cancel()
            self._write_manifest()
            for s in self.sessions:
                with contextlib.suppress(OSError):
                    s.writer.write(b"\xe0\x00")
                    s.writer.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        return {
            "sent": self.sent,
            "acked": self.acked,
            "sessions": len(self.sessions),
            "devices": len(self.devices),
            "offered_rate": a.rate or None,
            "published_s": round(published_s, 3),
            "acked_s": round(acked_s, 3),
            "publish_rate": round(self.sent / published_s, 1),
            "ack_rate": round(self.acked / acked_s, 1),
            "wall_start": wall_start,
            "cpu_s": round(time.process_time() - cpu_start, 3),
            "first_time": self.first_time,
            "last_time": self.last_time,
        }

    def _flush(self, session: Session) -> None:
        if session.out:
            session.writer.write(bytes(session.out))
            session.out.clear()

    def _write_manifest(self) -> None:
        if self.manifest is not None and self.lines:
            self.manifest.write(b"".join(self.lines))
            self.lines.clear()

    async def report(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            line = {"t": round(time.monotonic() - started, 1), "sent": self.sent, "acked": self.acked}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            sys.stdout.flush()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883, help="service listener")
    parser.add_argument("--tls-port", type=int, default=8883, help="device listener (mTLS)")
    parser.add_argument("--username", default="f2-simulator")
    parser.add_argument("--password-file", default="")
    parser.add_argument("--tls-dir", default="", help="PKI folder: one mTLS session per device instead")
    parser.add_argument("--connections", type=int, default=4, help="service-listener sessions")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="mTLS handshakes at once")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--first-device", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s in all (0: as fast as the window allows)")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--window", type=int, default=500, help="unacknowledged messages per session")
    parser.add_argument("--burst", type=int, default=200, help="messages per tick when saturating")
    parser.add_argument("--tick-ms", type=float, default=5.0)
    parser.add_argument("--keepalive-s", type=int, default=600)
    parser.add_argument("--ack-timeout-s", type=float, default=60.0)
    parser.add_argument("--manifest", default="")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, password: str | None, manifest: IO[bytes] | None) -> None:
    """Connect, publish, report."""
    generator = Generator(args, password, manifest)
    opened = time.monotonic()
    await generator.open()
    connect_s = time.monotonic() - opened
    sys.stdout.write(orjson.dumps({"connected": len(generator.sessions), "connect_s": round(connect_s, 2)}).decode())
    sys.stdout.write("\n")
    sys.stdout.flush()
    summary = await generator.run()
    summary["connect_s"] = round(connect_s, 2)
    sys.stdout.write(orjson.dumps({"summary": summary}).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    password = Path(args.password_file).read_text().strip() if args.password_file else None
    with contextlib.ExitStack() as files:
        manifest = files.enter_context(Path(args.manifest).open("ab")) if args.manifest else None
        asyncio.run(run(args, password, manifest))


if __name__ == "__main__":
    main()
