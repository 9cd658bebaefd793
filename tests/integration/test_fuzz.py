"""Malformed input through MQTT and straight into raw_iot_data: every case dead-lettered, workers up, no leak.

The cases come from a seeded generator: random bytes, truncated and deeply
nested JSON, huge numbers, NaN and Infinity, non-UTF-8, wrong types and
timestamps, non-object JSON, payloads of 1 MiB and over Kafka's limit, and
malformed topics (unknown and malformed device ids, modes, connectors,
components, too few and too many levels, empty and very long levels); through
Kafka also records without or with broken headers, keys and values.

The same cases are sent in F2_FUZZ_ROUNDS rounds (3), the ingest worker
stalled for a while in each, and the workers' RSS is read after each round,
once it is worked off: a leak grows from round to round, the high-water mark
of a round does not (the test's docstring has the rule). F2_FUZZ_CASES
counts the cases of all rounds together.

`make test` runs 3,000; the long run, `make fuzz`, is
`F2_FUZZ_CASES=100000 F2_FUZZ_SEED=7 .venv/bin/pytest tests/integration/test_fuzz.py -s -o timeout=0`
(docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from harness import Stack, Worker, Workers, dead_letters_since, metric, register_device, service_client

from f2stream.codec.model import DeviceCodec, Parameter
from f2stream.errors import BadMessage
from f2stream.kafka_client import kafka_options
from f2stream.mqtt_topics import parse_topic
from f2stream.simulator import DEMO_PARAMETERS, device_ids

pytestmark = pytest.mark.integration

CASES = int(os.environ.get("F2_FUZZ_CASES", "3000"))  # over all rounds
SEED = int(os.environ.get("F2_FUZZ_SEED", "1"))
ROUNDS = int(os.environ.get("F2_FUZZ_ROUNDS", "3"))
ROUND_CASES = CASES // ROUNDS
KEEP = 64 * 1024  # what a too_large dead letter keeps of the payload (ingest and decode alike)
MIB = 1024 * 1024
# The memory check (see the test's docstring): after warm-up, RSS after a round stays where the first round left it.
FIRST_ROUND_RISE_MB = 40
LEAK_NOISE_MB = 8
# Above what the ingest worker holds: the producer's copies of what it holds, the copies paho makes of a message.
PEAK_SLACK_MB = 48
SETTLE_S = 0.6  # RSS is read over this after a round

_VALID_PATHS = (
    "stat/{d}/access-control-mode/1/strike-1",
    "stat/{d}/access-control-mode/1/door-sensors",
    "tele/{d}/access-control-mode/1/reader-1",
    "stat/{d}/alarm-mode/3/motion-sensor-1",
    "cmnd/{d}/sensor-mode/4/sensor-3",
)


@dataclass(frozen=True, slots=True)
class Case:
    """One malformed message: where it goes, what it is."""

    kind: str
    topic: str
    payload: bytes


def _stamp(rng: random.Random) -> str:
    day, hour, minute, micro = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 999999)
    return f"2026-01-{day:02d} {hour:02d}:{minute:02d}:00.{micro:06d}"


def _payloads(rng: random.Random, big: bool) -> Iterator[tuple[str, bytes]]:  # noqa: PLR0912  # one branch a kind
    """Endless (kind, payload) pairs that no codec may accept."""
    while True:
        ts = _stamp(rng)
        good = orjson.dumps({"timestamp": ts, "state": "locked", "voltage": 12.1, "current": 1.5})
        choice = rng.randrange(16 if big else 15)
        if choice == 0:
            yield "random_bytes", rng.randbytes(rng.randint(0, 2000))
        elif choice == 1:
            yield "empty", b""
        elif choice == 2:
            yield "truncated_json", good[: rng.randint(1, len(good) - 2)]
        elif choice == 3:
            depth = rng.choice((100, 1000, 5000, 100_000))
            yield f"nested_array_{depth}", b"[" * depth + b"]" * depth
        elif choice == 4:
            depth = rng.choice((600, 2000, 50_000))
            inner = b'{"a":' * depth + b"1" + b"}" * depth
            yield f"nested_field_{depth}", b'{"timestamp":"' + ts.encode() + b'","state":' + inner + b"}"
        elif choice == 5:
            number = rng.choice((b"1e400", b"-1e400", b"9" * 5000, b"1" + b"0" * 400 + b".5"))
            yield "huge_number", b'{"timestamp":"' + ts.encode() + b'","voltage":' + number + b',"state":"locked"}'
        elif choice == 6:
            literal = rng.choice((b"NaN", b"Infinity", b"-Infinity", b"nan"))
            yield "nan", b'{"timestamp":"' + ts.encode() + b'","voltage":' + literal + b',"state":"locked"}'
        elif choice == 7:
            bad = rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"))
            yield "non_utf8", b'{"timestamp":"' + ts.encode() + b'","state":"lo' + bad + b'cked"}'
        elif choice == 8:
            yield "not_an_object", rng.choice((b"[]", b'"locked"', b"42", b"null", b"true", b"[1,2,3]"))
        elif choice == 9:
            stamp = rng.choice(('"yesterday"', "12345", "null", '"2026-13-45 99:99:99"', '""', "[]"))
            yield "bad_timestamp", b'{"timestamp":' + stamp.encode() + b',"state":"locked"}'
        elif choice == 10:
            yield "no_timestamp", b'{"state":"locked","voltage":12.1}'
        elif choice == 11:
            value = rng.choice(('{"x":1}', "[1]", '"maybe"', "3.5", "null"))
            yield "wrong_type", b'{"timestamp":"' + ts.encode() + b'","state":' + value.encode() + b"}"
        elif choice == 12:
            yield "duplicate_keys_and_junk", good + rng.randbytes(rng.randint(1, 50))
        elif choice == 13:
            yield "bom_and_controls", b"\xef\xbb\xbf\x00" + good
        elif choice == 14:
            yield "no_values", b'{"timestamp":"' + ts.encode() + b'"}'
        else:  # rare and heavy: 1 MiB and over Kafka's 1 MiB limit
            size = rng.choice((900 * 1024, MIB, MIB + 1, 3 * MIB))
            yield f"size_{size}", b'{"timestamp":"' + ts.encode() + b'","x":"' + b"A" * size + b'"}'


def _bad_topics(rng: random.Random, registered: str, unknown: str) -> Iterator[tuple[str, str]]:
    """Endless (kind, topic) pairs under the ingest's filters that no device may have published to."""
    while True:
        kind = rng.choice(("stat", "tele", "cmnd"))
        choice = rng.randrange(11)
        if choice == 0:
            yield "unknown_device", f"{kind}/{unknown}/access-control-mode/1/strike-1"
        elif choice == 1:
            device = rng.choice(("f2-xyz", "notadevice", "F2-E4FD45F654BE", "f2-e4fd45f654be00", "f2-", "ü"))
            yield "bad_device", f"{kind}/{device}/access-control-mode/1/strike-1"
        elif choice == 2:
            yield "bad_mode", f"{kind}/{registered}/party-mode/1/strike-1"
        elif choice == 3:
            yield (
                "bad_connector",
                f"{kind}/{registered}/access-control-mode/{rng.choice(('0', '5', 'x', '-1'))}/strike-1",
            )
        elif choice == 4:
            yield (
                "bad_component",
                f"{kind}/{registered}/access-control-mode/1/{rng.choice(('foo-1', 'strike', 'strike-x'))}",
            )
        elif choice == 5:
            yield "too_few_levels", f"{kind}/{registered}/access-control-mode"
        elif choice == 6:
            yield "too_many_levels", f"{kind}/{registered}/access-control-mode/1/strike-1" + "/x" * rng.randint(1, 150)
        elif choice == 7:
            yield "empty_levels", f"{kind}//access-control-mode//strike-1"
        elif choice == 8:
            yield "long_level", f"{kind}/{registered}/" + "m" * rng.choice((300, 10_000)) + "/1/strike-1"
        elif choice == 9:
            yield "unicode", f"{kind}/{registered}/accèss-contröl-mode/1/strike-1"
        else:
            yield "device_only", f"{kind}/{registered}"


def mqtt_cases(rng: random.Random, registered: str, unknown: str, count: int) -> Iterator[Case]:
    """Half bad payloads on valid topics of a registered device, half valid payloads on bad topics.

    Made one at a time: a long run's large payloads would not fit in memory at once.
    """
    payloads, topics = _payloads(rng, big=True), _bad_topics(rng, registered, unknown)
    for n in range(count):
        if n % 2:
            kind, payload = next(payloads)
            yield Case(kind, rng.choice(_VALID_PATHS).format(d=registered), payload)
        else:
            kind, topic = next(topics)
            payload = orjson.dumps({"timestamp": _stamp(rng), "state": "locked", "voltage": 12.0, "current": 1.5})
            yield Case(kind, topic, payload)


def raw_cases(
    rng: random.Random, registered: str, unknown: str, count: int
) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(kind, key, value, headers) records for raw_iot_data, as no ingest worker would write them."""
    payloads, topics = _payloads(rng, big=False), _bad_topics(rng, registered, unknown)
    records = []
    for _ in range(count):
        kind, value = next(payloads)
        choice = rng.randrange(6)
        topic = rng.choice(_VALID_PATHS).format(d=registered)
        key: bytes | None = registered.encode()
        if choice == 0:
            headers = []  # no mqtt_topic at all
            kind = "no_headers"
        elif choice == 1:
            headers = [("mqtt_topic", rng.randbytes(rng.randint(0, 64))), ("received_at", rng.randbytes(8))]
            kind = "random_headers"
        elif choice == 2:
            headers = [("mqtt_topic", topic.encode()[:-3] + b"\xff\xfe\xfd")]
            kind = "non_utf8_topic"
        elif choice == 3:
            key, value = rng.choice((b"", rng.randbytes(16))), None  # Kafka needs a key or a value
            headers = [("mqtt_topic", topic.encode())]
            kind = "null_value"
        elif choice == 4:
            kind, bad = next(topics)
            headers = [("mqtt_topic", bad.encode()), ("received_at", b"not a time")]
            value = orjson.dumps({"timestamp": _stamp(rng), "state": "locked"})
        else:
            headers = [("mqtt_topic", topic.encode()), ("received_at", b"2026-01-01 00:00:00.000000")]
        records.append((kind, key, value, headers))
    return records


def demo_codec(device: str) -> DeviceCodec:
    """The codec the simulator's parameters give a device (to check the cases offline first)."""
    rows = [
        {"mode": m, "component_type": t, "component_number": n, "encoding": e, "unit": u, "scale_factor": s}
        for m, t, n, e, u, s in DEMO_PARAMETERS
    ]
    return DeviceCodec(device, 1, [Parameter.from_row({"device_id": device, **row}) for row in rows])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def identity(topic: str, payload: bytes) -> tuple[str, bytes]:
    """What ties a dead letter to its MQTT case: the topic and the digest of the payload's kept head."""
    return topic, hashlib.sha256(payload[:KEEP]).digest()


def test_every_generated_case_is_refused_by_the_decoder() -> None:
    """Offline first: the pure decoder refuses every case with a reason (cases it accepts are not malformed)."""
    from f2stream.codec.message import decode_with

    rng = random.Random(SEED)
    registered, unknown = device_ids(2, 1)
    codec = demo_codec(registered)
    accepted = []
    for case in mqtt_cases(rng, registered, unknown, min(CASES, 3000)):
        try:
            info = parse_topic(case.topic)
            if info.device_id != registered:
                continue  # unknown device: refused for want of parameters
            decode_with(info, case.payload, "2026-01-01 00:00:00.000000", codec)
        except BadMessage as exc:
            assert exc.reason, case
            continue
        accepted.append((case.kind, case.topic, case.payload[:120]))
    assert not accepted, accepted[:10]


@dataclass
class Round:
    """What one round sent, and each worker's RSS (MB): its highest sample during the round, and settled after it."""

    mqtt: int
    raw: int
    seconds: float
    peak: dict[str, float]
    after: dict[str, float]


class Memory:
    """RSS samples of the workers' processes, by worker name."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)

    def sample(self) -> dict[str, float]:
        now = {name: rss_mb(pid) for name, pid in self.pids.items()}
        for name, mb in now.items():
            self.peak[name] = max(self.peak[name], mb)
        return now

    async def settled(self) -> dict[str, float]:
        """The least of three samples over SETTLE_S: a batch that happens to be in flight is not counted."""
        samples = []
        for _ in range(3):
            await asyncio.sleep(SETTLE_S / 3)
            samples.append(self.sample())
        return {name: min(s[name] for s in samples) for name in self.pids}

    def reset_peak(self) -> None:
        self.peak = dict.fromkeys(self.pids, 0.0)


async def _send_round(
    stack: Stack, ingest: Worker, registered: str, unknown: str, memory: Memory
) -> tuple[Counter[tuple[str, bytes]], dict[tuple[str, bytes], str], Counter[str]]:
    """One round's cases, the same in every round: MQTT first, then straight into raw_iot_data.

    The ingest worker is stopped (SIGSTOP) for the middle half of the MQTT
    cases, as a stall would: what the broker queued meanwhile then arrives at
    once (Mosquitto 2.0.11 does not hold a session to its inflight window), so
    every round reaches the ingest's bound on what it holds, whatever the
    machine's load. Returns the MQTT identities sent (with their kinds) and
    the Kafka sources of the raw records.
    """
    assert ingest.process is not None
    rng = random.Random(SEED)
    mqtt_count = ROUND_CASES // 2
    sent: Counter[tuple[str, bytes]] = Counter()
    kind_of: dict[tuple[str, bytes], str] = {}
    try:
        async with service_client(stack) as client:
            for n, case in enumerate(mqtt_cases(rng, registered, unknown, mqtt_count)):
                if n == mqtt_count // 4:
                    ingest.process.send_signal(signal.SIGSTOP)
                elif n == mqtt_count * 3 // 4:
                    ingest.process.send_signal(signal.SIGCONT)
                await client.publish(case.topic, case.payload, qos=1)
                key = identity(case.topic, case.payload)
                sent[key] += 1
                kind_of[key] = case.kind
                if n % 50 == 0:
                    memory.sample()
    finally:
        ingest.process.send_signal(signal.SIGCONT)
    raw = raw_cases(rng, registered, unknown, ROUND_CASES - mqtt_count)
    producer = AIOKafkaProducer(**kafka_options(stack.settings), acks="all", max_request_size=2 * MIB)
    await producer.start()
    sources: Counter[str] = Counter()
    try:
        futures = [
            await producer.send("raw_iot_data", value, key=key, headers=headers) for _, key, value, headers in raw
        ]
        for future in futures:
            meta = await future
            sources[f"raw_iot_data/{meta.partition}/{meta.offset}"] += 1
    finally:
        await producer.stop()
    return sent, kind_of, sources


async def _await_letters(
    stack: Stack, since_ms: int, expected_mqtt: Counter[tuple[str, bytes]], sources: Counter[str]
) -> tuple[Counter[tuple[str, bytes]], Counter[str], Counter[str]]:
    """Wait until every case sent since `since_ms` came back as a dead letter, or the deadline.

    Returns the MQTT cases and raw records still missing, and the dead letters' reasons.
    """
    deadline = time.monotonic() + 120 + ROUND_CASES / 500
    while True:
        found_mqtt: Counter[tuple[str, bytes]] = Counter()
        found_raw: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for headers, value in await dead_letters_since(stack, since_ms):
            reason = headers.get("reason", b"").decode()
            source = headers.get("source", b"").decode()
            if source in sources:
                found_raw[source] += 1
            else:
                topic = headers.get("mqtt_topic", b"").decode("utf-8", "replace")
                found_mqtt[identity(topic, value)] += 1
            reasons[reason or "(none)"] += 1
        missing_mqtt, missing_raw = expected_mqtt - found_mqtt, sources - found_raw
        if (not missing_mqtt and not missing_raw) or time.monotonic() > deadline:
            return missing_mqtt, missing_raw, reasons
        await asyncio.sleep(1)


async def test_malformed_input_is_dead_lettered_and_the_workers_stay_up(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    """The same cases in ROUNDS rounds: each round dead-lettered in full, then each worker's RSS read, settled.

    A leak grows with every round; the high-water mark of a round (what the
    ingest worker holds while the broker's backlog arrives, at most
    F2_MQTT_MAX_HELD_MB) does not stay. So: the first round may raise a
    worker's RSS by FIRST_ROUND_RISE_MB (warm-up: imports, caches, the
    allocator's pools), every later round ends within LEAK_NOISE_MB of where
    the first ended, and the ingest worker's peak stays within its bound on
    what it holds plus PEAK_SLACK_MB.
    """
    registered, unknown = device_ids(2, device_numbers)
    assert registered == await register_device(stack, workers.pipeline, device_numbers)
    memory = Memory({w.name: w.process.pid for w in (workers.pipeline, workers.ingest) if w.process is not None})
    rss_start = await memory.settled()
    rounds: list[Round] = []
    reasons: Counter[str] = Counter()
    for number in range(1, ROUNDS + 1):
        # Letters are stamped when produced; the previous round's were all in Kafka before the settling above.
        since_ms = int((time.time() - SETTLE_S / 2) * 1000)
        started = time.monotonic()
        memory.reset_peak()
        sent, kind_of, sources = await _send_round(stack, workers.ingest, registered, unknown, memory)
        missing_mqtt, missing_raw, round_reasons = await _await_letters(stack, since_ms, sent, sources)
        reasons.update(round_reasons)
        rounds.append(Round(sum(sent.values()), len(sources), time.monotonic() - started, dict(memory.peak), {}))
        rounds[-1].after = await memory.settled()
        print(
            f"fuzz round {number}/{ROUNDS}: {rounds[-1].mqtt} MQTT + {rounds[-1].raw} raw cases (seed {SEED}) in "
            f"{rounds[-1].seconds:.0f}s; RSS MB after {_mb(rounds[-1].after)} (peak {_mb(rounds[-1].peak)})",
            flush=True,
        )
        kinds = Counter(kind_of[key] for key in missing_mqtt.elements())
        assert not missing_mqtt, f"round {number}: {sum(missing_mqtt.values())} MQTT cases not dead-lettered: {kinds}"
        assert not missing_raw, f"round {number}: {sum(missing_raw.values())} raw records not dead-lettered"
    pauses = metric(workers.ingest, "f2_mqtt_read_pauses_total") or 0.0
    print(
        f"fuzz: {ROUNDS} x {ROUND_CASES} cases (seed {SEED}); dead letters by reason {dict(reasons)}; the ingest "
        f"worker stopped reading {pauses:.0f} times; RSS MB start {_mb(rss_start)}; after each round "
        + ", ".join(_mb(r.after) for r in rounds),
        flush=True,
    )
    assert "(none)" not in reasons, reasons
    for worker in (workers.pipeline, workers.ingest):
        assert worker.process is not None and worker.process.poll() is None, f"{worker.name} died\n{worker.log_tail()}"
        worker.wait_healthy(timeout_s=30)
    figures = (rss_start, rounds)
    for name in memory.pids:
        first = rounds[0].after[name]
        assert first - rss_start[name] < FIRST_ROUND_RISE_MB, (f"{name}: the first round raised RSS", figures)
        for later in rounds[1:]:
            assert later.after[name] - first <= LEAK_NOISE_MB, (f"{name} grew after round 1 on the same cases", figures)
    held_mb = stack.settings.mqtt_max_held_mb
    for later in rounds:
        peak = later.peak["ingest"] - rss_start["ingest"]
        assert peak < held_mb + PEAK_SLACK_MB, (f"ingest peaked {peak:.0f} MB above its start", figures)


def _mb(rss: dict[str, float]) -> str:
    return "/".join(f"{name} {mb:.1f}" for name, mb in rss.items())
