"""No record stalls a stage: records that make decode or sink fail on every try, with good traffic behind them.

Each kind below stalled its stage for good before the poison policy (the
stage retried the batch forever, and every partition in it waited):

- raw_iot_data, no `received_at` header and a Kafka timestamp in the year
  10000 (the topic set to accept it, as older brokers do): decode computed
  the receipt time outside its try. Now a `bad_timestamp` dead letter.
- raw_iot_data, a message whose dead letter the dead-letter topic refuses
  (here `max.message.bytes` 100 kB on iot_dead_letter): the produce failed the
  same way on every try. Now isolated and dead-lettered (`handler_error`,
  its value's head).
- decoded_iot_data, a data point name too long for the primary key's index
  (SQLSTATE 54000, program limit exceeded): retried as a permanent database
  failure. Now refused alone (`sink_rejected`).
- decoded_iot_data, text where the connector number belongs: asyncpg's own
  DataError, an InterfaceError, counted as a lost connection. Now refused
  alone (`sink_rejected`).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import islice

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from harness import Stack, Workers, dead_letters_since, register_device, verify_database, wait_consumed, wait_until

from f2stream.kafka_client import kafka_options
from f2stream.records import format_time
from f2stream.simulator import messages

RAW = "raw_iot_data"
YEAR_10000_MS = 253_402_300_800_000
LAND_WITHIN_S = 30.0


async def set_topic_config(stack: Stack, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(**kafka_options(stack.settings))
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


def decoded_record(device: str, **changes: object) -> bytes:
    record: dict[str, object] = {
        "time": "2026-01-01 00:00:00.000000", "device_id": device, "mode": "sensor-mode", "connector": 4,
        "component": "sensor-3", "source_topic": f"cmnd/{device}/sensor-mode/4/sensor-3",
        "received_at": "2026-01-01 00:00:00.100000", "param_version": 1,
        "points": [{"data_point": "celsius", "value": 20.5, "text_value": None, "unit": "celsius"}],
    }  # fmt: skip
    for name, value in changes.items():
        if name == "data_point":
            record["points"] = [{"data_point": value, "value": 1.0, "text_value": None, "unit": "x"}]
        else:
            record[name] = value
    return orjson.dumps(record)


async def test_poison_records_are_dead_lettered_once_each_and_good_traffic_behind_them_lands(
    stack: Stack, workers: Workers, device_numbers: int
) -> None:
    device = await register_device(stack, workers.pipeline, device_numbers)
    partition, rng = 0, random.Random(7)  # poison and good traffic share one partition: the good is behind
    since_ms = int(time.time() * 1000) - 1000
    topic = f"cmnd/{device}/sensor-mode/4/sensor-3"
    producer = AIOKafkaProducer(**kafka_options(stack.settings), max_request_size=2_000_000, acks="all")
    await producer.start()
    await set_topic_config(stack, RAW, {"message.timestamp.after.max.ms": str(2**63 - 1)})
    await set_topic_config(stack, "iot_dead_letter", {"max.message.bytes": "100000"})
    poisoned: dict[str, str] = {}  # source of each poison record -> the reason of its one dead letter
    try:

        async def refuses_large_letters() -> bool:
            try:  # a probe the broker must refuse once the topic's new limit is in force
                await producer.send_and_wait("iot_dead_letter", b"x" * 150_000, partition=partition)
            except MessageSizeTooLargeError:
                return True
            return False

        await wait_until(refuses_large_letters, 30, "iot_dead_letter refuses a 150 kB record")

        async def poison(topic_name: str, value: bytes, reason: str, **options: object) -> None:
            sent = await producer.send_and_wait(topic_name, value, key=device.encode(), partition=partition, **options)
            poisoned[f"{topic_name}/{sent.partition}/{sent.offset}"] = reason

        async def letters_of(sources: list[str]) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {s: [] for s in sources}
            for headers, _ in await dead_letters_since(stack, since_ms):
                source = headers.get("source", b"").decode()
                if source in found:
                    found[source].append(headers["reason"].decode())
            return found

        def pipeline_log() -> str:
            lines = workers.pipeline.log_tail(200).splitlines()
            return "\n".join(line[:300] for line in lines if "WARNING" in line or "ERROR" in line)

        async def lands(name: str) -> None:
            """200 good messages of the device straight behind the poison, in its partition: all land in time."""
            expected: Counter[tuple[str, str, str]] = Counter()
            for message in islice(messages([device], rng, lambda: datetime.now(UTC)), 200):
                headers = [
                    ("mqtt_topic", message.topic.encode()),
                    ("received_at", format_time(datetime.now(UTC)).encode()),
                ]
                await producer.send(RAW, message.payload, key=device.encode(), partition=partition, headers=headers)
                expected[(message.device_id, message.component, message.time)] += message.points
            await producer.flush()
            verdict = await verify_database(stack.settings, expected, LAND_WITHIN_S)
            assert verdict.ok and verdict.messages == 200, f"{name}: {verdict}; poison {poisoned}\n{pipeline_log()}"
            # Landed is not enough: a batch that fails after producing lets its good records through
            # again and again. Both stages must have committed past the poison.
            await wait_consumed(stack, "f2stream-decode", RAW, LAND_WITHIN_S)
            await wait_consumed(stack, "f2stream-sink", "decoded_iot_data", LAND_WITHIN_S)

        # One poison record per decode batch: the good traffic behind the first
        # must have landed before the second is sent (a retried batch would
        # produce the first one's letter again).
        received = ("received_at", b"2026-01-01 00:00:00.000000")
        await poison(RAW, b"{" + os.urandom(150_000).hex().encode(), "handler_error",
                     headers=[("mqtt_topic", topic.encode()), received])  # fmt: skip
        await poison("decoded_iot_data", decoded_record(device, data_point=os.urandom(4000).hex()), "sink_rejected")
        await poison("decoded_iot_data", decoded_record(device, connector="one"), "sink_rejected")
        await lands("behind-the-first")
        await poison(RAW, b'{"timestamp": "2026-01-01 00:00:00", "data": "01"}', "bad_timestamp",
                     headers=[("mqtt_topic", topic.encode())], timestamp_ms=YEAR_10000_MS)  # fmt: skip
        await lands("behind-the-second")

        async def all_lettered() -> dict[str, list[str]] | None:
            found = await letters_of(list(poisoned))
            return found if all(found.values()) else None

        found = await wait_until(all_lettered, LAND_WITHIN_S, "a dead letter of each poison record")
        assert found == {source: [reason] for source, reason in poisoned.items()}
        for worker in (workers.pipeline, workers.ingest):
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        status, body = workers.pipeline.health()
        assert status == 200 and '"loops"' in body, body
    finally:
        await set_topic_config(stack, "iot_dead_letter", {})
        await set_topic_config(stack, RAW, {})
        await producer.stop()
