"""Outage or bad record: the one rule the stages' retry logic reads.

An outage (Kafka, the database or the network unavailable) passes by
itself: the batch is retried without limit and nothing is dead-lettered. A
failure that is not an outage may be caused by one record: the batch loop
isolates that record and dead-letters it (`handler_error`), so that it
cannot stall the rest. Decided by exception class, never by message text.
"""

from __future__ import annotations

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)

from f2stream.storage.db import DB_ERRORS, RECORD_FAULTS

__all__ = ["KAFKA_RECORD_FAULTS", "is_outage"]

#: What Kafka says about a record itself; every other Kafka error is an outage.
KAFKA_RECORD_FAULTS = (MessageSizeTooLargeError, RecordTooLargeError, CorruptRecordException, InvalidTimestampError)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says a server or the network is unavailable; False when a record or the code may be at fault.

    Kafka: everything but :data:`KAFKA_RECORD_FAULTS` (an unknown Kafka error
    is retried, never dead-lettered). Database: everything but
    :data:`f2stream.storage.db.RECORD_FAULTS`: a transient failure passes by
    itself, a permanent one (a missing table, a refused password) is the
    deployment's to fix while /health says so, and neither is a record's
    fault. Network: every OSError and timeout.
    """
    if isinstance(exc, KafkaError):
        return not isinstance(exc, KAFKA_RECORD_FAULTS)
    if isinstance(exc, RECORD_FAULTS):
        return False
    return isinstance(exc, DB_ERRORS)
