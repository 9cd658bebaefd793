"""Alarms, pure: the transitions a rule's state makes, and the records that carry them.

Nothing here does I/O or reads a clock: times come in as Unix seconds.
(The evaluation itself is below the records; the tracker in
`f2stream.agents.alarms` feeds it the decode stage's batches and a timer.)

An alarm is one episode of one rule on one device. Its id is deterministic,
`<device>:<rule>:<raw partition>:<raw offset>`, the raw record whose data
point began the condition, so that evaluating the same records again
(after a kill -9 or a rebalance) names the same alarm, and a transition
already produced is recognised by `(alarm_id, transition)`. Lifecycle:
`raised` (by the rule) → `acknowledged` (by an operator; optional) →
`cleared` (by the rule), each transition once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import orjson

from f2stream.alarm_rules import Kind, Severity

__all__ = ["TRANSITIONS", "AlarmEvent", "Transition", "decode_event", "encode_event", "iso"]

Transition = Literal["raised", "acknowledged", "cleared"]
TRANSITIONS: Final[tuple[Transition, ...]] = get_args(Transition)


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC with microseconds (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm: a record of the `alarm_events` topic and a row of `alarm_transitions`.

    `at` is device time for `raised` and `cleared` (when the condition held
    long enough, or ended), the operator's time for `acknowledged`. The raw
    partition and offset are the provenance: the record that raised or
    cleared it (for a raise by the timer, the record that began the
    condition; for an acknowledgement, the raising record).
    """

    alarm_id: str
    transition: Transition
    device_id: str
    rule: str
    kind: Kind
    severity: Severity
    at: float
    raised_at: float
    data_point: str
    value: float | None
    text_value: str | None
    raw_partition: int
    raw_offset: int
    reason: str
    acknowledged_by: str | None = None

    @property
    def key(self) -> tuple[str, Transition]:
        """What makes the transition unique: an alarm has each transition once."""
        return self.alarm_id, self.transition

    def as_dict(self) -> dict[str, Any]:
        """The record's JSON body (times ISO 8601, UTC)."""
        return {
            "alarm_id": self.alarm_id,
            "transition": self.transition,
            "device_id": self.device_id,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "at": iso(self.at),
            "raised_at": iso(self.raised_at),
            "data_point": self.data_point,
            "value": self.value,
            "text_value": self.text_value,
            "raw_partition": self.raw_partition,
            "raw_offset": self.raw_offset,
            "reason": self.reason,
            "acknowledged_by": self.acknowledged_by,
        }


def encode_event(event: AlarmEvent) -> bytes:
    """The `alarm_events` value."""
    return orjson.dumps(event.as_dict())


def _seconds(text: object) -> float:
    if not isinstance(text, str):
        raise TypeError("a time must be ISO 8601 text")
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def decode_event(value: bytes) -> AlarmEvent | None:
    """An `alarm_events` value as an event; None when unreadable (it is skipped and logged by the caller)."""
    try:
        v = orjson.loads(value)
        if v["transition"] not in TRANSITIONS:
            return None
        return AlarmEvent(
            alarm_id=str(v["alarm_id"]),
            transition=v["transition"],
            device_id=str(v["device_id"]),
            rule=str(v["rule"]),
            kind=v["kind"],
            severity=v["severity"],
            at=_seconds(v["at"]),
            raised_at=_seconds(v["raised_at"]),
            data_point=str(v["data_point"]),
            value=None if v["value"] is None else float(v["value"]),
            text_value=v["text_value"],
            raw_partition=int(v["raw_partition"]),
            raw_offset=int(v["raw_offset"]),
            reason=str(v["reason"]),
            acknowledged_by=v.get("acknowledged_by"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
