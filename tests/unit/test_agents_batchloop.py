"""The offset arithmetic of the batch loop: what may be committed, where a failed batch restarts."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.agents.batchloop import BatchLoop, PendingCommits, first_offsets, next_offsets

A, B = TopicPartition("raw_iot_data", 0), TopicPartition("raw_iot_data", 1)


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0, key=b"k",
        value=b"v", checksum=None, serialized_key_size=1, serialized_value_size=1, headers=[],
    )  # fmt: skip


def test_commit_one_past_the_last_record_of_each_partition() -> None:
    batch = {A: [record(A, 7), record(A, 8), record(A, 12)], B: [record(B, 0)], TopicPartition("x", 0): []}
    assert next_offsets(batch) == {A: 13, B: 1}


def test_a_failed_batch_restarts_at_its_first_record() -> None:
    assert first_offsets({A: [record(A, 7), record(A, 8)], B: [record(B, 3)]}) == {A: 7, B: 3}


def test_pending_offsets_only_move_forward() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    pending.add({A: 5})
    assert pending.of([A, B]) == {A: 10, B: 3}
    assert pending.of([B]) == {B: 3}


def test_a_commit_forgets_only_what_it_committed() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    committing = pending.of([A, B])
    pending.add({A: 20})  # a later batch finished while the commit was on its way
    pending.committed(committing)
    assert pending.of([A, B]) == {A: 20}
    assert pending


def test_revoked_partitions_are_dropped() -> None:
    pending = PendingCommits()
    pending.add({A: 10, B: 3})
    pending.drop([A])
    assert pending.of([A, B]) == {B: 3}
    pending.drop([B])
    assert not pending


@settings(derandomize=True, database=None, max_examples=200)
@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=10), min_size=1, max_size=20))
def test_committed_offsets_never_pass_a_record_not_yet_handled(batches: list[list[int]]) -> None:
    # Batches of one partition, consecutive, each handled in turn: after each, the
    # pending offset is exactly one past the last handled record, never further.
    pending, offset, handled = PendingCommits(), 0, -1
    for sizes in batches:
        records = [record(A, offset + i) for i in range(len(sizes))]
        offset += len(sizes)
        pending.add(next_offsets({A: records}))
        handled = records[-1].offset
        assert pending.of([A]) == {A: handled + 1}


def test_bad_arguments_are_refused_at_once() -> None:
    async def handler(batch: object) -> None:
        return None

    with pytest.raises(ValueError, match="max_records must be >= 1"):
        BatchLoop(name="x", topic="t", group_id="g", handler=handler, bootstrap="localhost:1", max_records=0)
