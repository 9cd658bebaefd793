"""The bare path: what this machine's services allow without the pipeline's work.

    python -m bench.bare forward   # MQTT (service listener) -> Kafka bench_bare_raw
    python -m bench.bare sink      # Kafka bench_bare_raw -> COPY into bench_bare

Both read the stack's `F2_*` settings. The forwarder subscribes like the
ingest worker (QoS 1, the ingest account, TCP_NODELAY) and produces each
message as it came, with acks=all, to `bench_bare_raw`; it does not hold
the broker's acknowledgement back until Kafka has the record (aiomqtt acks
on arrival), so it is an upper bound. The sink copies each fetched batch
into `bench_bare` (one row per MQTT message, no decoding) and commits the
offsets after the COPY. Used by `make bench` as the ceiling of each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from datetime import UTC, datetime

import aiomqtt
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from f2stream.kafka_client import kafka_options
from f2stream.mqtt_client import ingest_connection
from f2stream.records import format_time
from f2stream.settings import Settings
from f2stream.storage.db import connect

TOPIC = "bench_bare_raw"
TABLE = "bench_bare"
GROUP = "bench-bare-sink"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    device_id   text        NOT NULL,
    topic       text        NOT NULL,
    payload     text        NOT NULL,
    received_at timestamptz NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def forward(settings: Settings) -> None:
    """Forward every device message to Kafka until stopped."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        if TOPIC not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(TOPIC, settings.topic_partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    client = aiomqtt.Client(
        **ingest_connection(settings).client_options(),  # as the ingest worker logs in (over TLS, or not)
        identifier="f2-bench-bare-forwarder",
        clean_session=True,
        max_queued_incoming_messages=0,
    )
    try:
        async with client:
            sock = client._client.socket()  # noqa: SLF001  # paho sets no TCP_NODELAY
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await client.subscribe([("cmnd/#", 1), ("stat/#", 1), ("tele/#", 1)])
            print("forwarding", flush=True)
            async for message in client.messages:
                topic = message.topic.value
                payload = message.payload if isinstance(message.payload, bytes) else b""
                received = format_time(datetime.now(UTC)).encode()
                await producer.send(
                    TOPIC, payload, key=topic.split("/", 2)[1].encode(), headers=[("mqtt_topic", topic.encode()),
                                                                                ("received_at", received)],
                )  # fmt: skip
    finally:
        await producer.stop()


async def sink(settings: Settings) -> None:
    """COPY every fetched batch into bench_bare, then commit, until stopped."""
    conn = await connect(settings.timeseries_dsn, settings.timeseries_password)
    await conn.execute(CREATE_TABLE)
    consumer = AIOKafkaConsumer(
        TOPIC,
        **kafka_options(settings),
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    print("sinking", flush=True)
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=settings.sink_batch_size)
            if not batch:
                continue
            rows = []
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers)
                    rows.append(
                        (
                            (r.key or b"").decode(),
                            headers["mqtt_topic"].decode(),
                            (r.value or b"").decode("utf-8", "replace"),
                            datetime.fromisoformat(headers["received_at"].decode()),
                        )
                    )
            await conn.copy_records_to_table(
                TABLE, records=rows, columns=["device_id", "topic", "payload", "received_at"]
            )
            await consumer.commit()
    finally:
        await consumer.stop()
        await conn.close()


async def clear(settings: Settings) -> None:
    """Empty bench_bare (between benchmark runs)."""
    conn: asyncpg.Connection = await connect(settings.timeseries_dsn, settings.timeseries_password)
    try:
        await conn.execute(CREATE_TABLE)
    finally:
        await conn.close()


def main() -> None:
    settings = Settings.from_env()
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    runners = {"forward": forward, "sink": sink, "create": clear}
    if role not in runners:
        raise SystemExit("usage: python -m bench.bare forward|sink|create")
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runners[role](settings))
    print(f"{role} ran {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
