"""The sink stage's batch handler: rows written once, dead letters for what is not a row, nothing lost."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from fakes import BAD_DEVICE, FakePool, FakeProducer
from test_storage_timeseries import GOOD, writer_with

from f2stream.agents.sink import SinkStage
from f2stream.kafka_topics import DEAD_LETTER_TOPIC, DECODED_TOPIC
from f2stream.metrics import Metrics
from f2stream.records import encode_decoded

TP = TopicPartition(DECODED_TOPIC, 2)


def record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TP.topic, partition=TP.partition, offset=offset, timestamp=0, timestamp_type=0, key=b"k", value=value,
        checksum=None, serialized_key_size=1, serialized_value_size=len(value), headers=[],
    )  # fmt: skip


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_rows_land_and_garbage_and_refused_rows_are_dead_lettered() -> None:
    pool, producer, metrics = FakePool(), FakeProducer(), Metrics()
    stage = SinkStage(producer, writer_with(pool), metrics)  # type: ignore[arg-type]
    message = [GOOD, replace(GOOD, data_point="voltage", value=12.1)]
    batch = {
        TP: [
            record(encode_decoded(message), 0),
            record(b"garbage", 1),
            record(encode_decoded([replace(GOOD, device_id=BAD_DEVICE)]), 2),
        ]
    }
    await stage(batch)
    assert len(pool.rows) == 2
    reasons = [dict(o.headers)["reason"] for o in producer.sent]
    assert reasons == [b"bad_record", b"sink_rejected"]
    assert all(o.topic == DEAD_LETTER_TOPIC for o in producer.sent)
    assert dict(producer.sent[0].headers)["source"] == f"{DECODED_TOPIC}/2/1".encode()
    assert dict(producer.sent[1].headers)["source"] == f"{DECODED_TOPIC}/2/2".encode()
    assert producer.sent[0].value == b"garbage"
    assert sample(metrics, "f2_rows_written_total") == 2
    assert sample(metrics, "f2_dead_letters_total", reason="sink_rejected") == 1


async def test_a_dead_letter_kafka_did_not_take_fails_the_batch() -> None:
    stage = SinkStage(FakeProducer(failures=1), writer_with(FakePool()), Metrics())  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await stage({TP: [record(b"garbage", 0)]})
