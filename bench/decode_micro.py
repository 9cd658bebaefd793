"""In-process micro-benchmark of the pipeline worker's per-message Python work: no broker, no database.

    python -m bench.decode_micro --devices 3000 --rounds 2 --repeat 7

Builds raw_iot_data records as the ingest worker writes them (the load
generator's payloads, `mqtt_topic` and a `received_at` shared by a burst
of messages as headers, a tuple of pairs as aiokafka gives them), then
times, per message and best of `--repeat` runs of CPU time:

* decode: :func:`f2stream.agents.decode.decode_batch` over batches of 2000
  (the decode loop's batch size);
* sink: :meth:`f2stream.records.Rows.add_decoded` over the decoded records,
  in batches of 2000, then their columns as the writer takes them;
* liveness: :func:`f2stream.liveness.parse_time` of each record's two times,
  as the liveness tracker reads what a decoded batch saw.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord

from bench.loadgen import bodies, body_of, device_stamp, payload
from f2stream.agents.decode import Decoded, decode_batch
from f2stream.codec.model import Parameter, ParameterIndex
from f2stream.kafka_topics import RAW_TOPIC
from f2stream.liveness import parse_time
from f2stream.mqtt_topics import parse_topic
from f2stream.records import Rows, format_time
from f2stream.simulator import _COMPONENTS, DEMO_PARAMETERS, device_ids

_BATCH = 2000  # the decode loop's max_records
_BURST = 64  # messages the ingest worker stamps with one received_at
_FIRST_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parameters(devices: list[str]) -> ParameterIndex:
    """The demo parameters on every device, version 1."""
    rows = [
        Parameter.from_row({"device_id": d, "mode": m, "component_type": c, "component_number": n, "encoding": e,
                            "unit": u, "scale_factor": s})
        for d in devices
        for m, c, n, e, u, s in DEMO_PARAMETERS
    ]  # fmt: skip
    return ParameterIndex(rows, dict.fromkeys(devices, 1))


def raw_records(devices: list[str], messages: int, seed: int = 7) -> list[ConsumerRecord[bytes, bytes]]:
    """`messages` raw records in the load generator's order, 300 µs apart."""
    table = bodies(seed)
    records = []
    received = b""
    for n in range(messages):
        device, body = body_of(n, len(devices), table)
        micros = _FIRST_US + n * 300
        if n % _BURST == 0:
            received = format_time_us(micros + 15_000).encode()
        topic = f"{body.kind}/{devices[device]}/{body.topic_tail}".encode()
        value = payload(device_stamp(micros), body)
        key = devices[device].encode()
        record = ConsumerRecord(
            topic=RAW_TOPIC, partition=n % 6, offset=n, timestamp=micros // 1000, timestamp_type=0, key=key,
            value=value, checksum=None, serialized_key_size=len(key), serialized_value_size=len(value),
            headers=(("mqtt_topic", topic), ("received_at", received)),
        )  # fmt: skip
        records.append(record)
    return records


def format_time_us(micros: int) -> str:
    """`micros` since the epoch as the topics spell a time."""
    return format_time(_EPOCH + timedelta(microseconds=micros))


def best(run: Callable[[], object], repeat: int) -> float:
    """The least CPU seconds of `repeat` runs."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="each device sends each component's message once a round")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=_COMPONENTS, help="keep only this component type's messages")
    args = parser.parse_args()
    devices = device_ids(args.devices)
    index = parameters(devices)
    records = raw_records(devices, args.devices * len(_COMPONENTS) * args.rounds)  # whole rounds: the full mix
    if args.only:
        records = [r for r in records if parse_topic(r.headers[0][1].decode()).component_type == args.only]
    batches = [records[i : i + _BATCH] for i in range(0, len(records), _BATCH)]

    def decode() -> list[Decoded]:
        return [decode_batch(batch, index) for batch in batches]

    decoded = decode()
    values = [o.value for d in decoded for o in d.outputs]
    seen = [s for d in decoded for s in d.seen]
    assert len(values) == len(records) and not any(d.dead for d in decoded), "every message must decode"

    def sink() -> None:
        for i in range(0, len(values), _BATCH):
            rows = Rows()
            for value in values[i : i + _BATCH]:
                rows.add_decoded(value)
            assert len(rows.columns[0]) == len(rows)  # the writer takes the columns

    def liveness() -> None:
        for _, _, _, received_at, device_time, _ in seen:
            parse_time(received_at)
            parse_time(device_time)

    n = len(records)
    points = sum(d.measurements for d in decoded)
    print(f"{n} messages, {points} points ({points / n:.2f} a message), {args.devices} devices")
    for name, run in (("decode", decode), ("add_decoded", sink), ("parse_time", liveness)):
        print(f"{name:12} {best(run, args.repeat) / n * 1e6:6.2f} µs/message")


if __name__ == "__main__":
    main()
