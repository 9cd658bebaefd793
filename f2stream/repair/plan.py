"""What a repair changes in one message's rows: compare the current decode with the stored rows (pure).

A message's rows share its identity (:data:`MessageKey`: device, mode,
connector, component and device time), which is a prefix of the primary
key; the data point tells the rows apart. After a repair the rows of a
message are exactly what the current parameters make of it: rows added,
values changed, versions restamped (the value was already right), rows the
decode no longer produces removed, and the rest left alone. A row decoded
with a newer parameter version than the repair's is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from f2stream.records import Measurement

__all__ = ["MessageKey", "MessagePlan", "Stored", "is_stale", "key_of", "plan_message"]

#: device_id, mode, connector, component, time (ISO 8601, as :func:`f2stream.records.format_time` writes it).
MessageKey = tuple[str, str, int, str, str]


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored row of a message, as much of it as a repair compares."""

    data_point: str
    value: float | None
    text_value: str | None
    unit: str | None
    param_version: int | None


@dataclass(slots=True)
class MessagePlan:
    """The changes that make a message's rows what the current decode makes of it."""

    key: MessageKey
    version: int | None  # the parameter version of the current decode
    add: list[Measurement] = field(default_factory=list)
    change: list[tuple[Stored, Measurement]] = field(default_factory=list)
    restamp: list[tuple[Stored, Measurement]] = field(default_factory=list)
    remove: list[Stored] = field(default_factory=list)
    unchanged: int = 0
    newer: int = 0  # rows decoded with a newer version than the repair's: left alone

    @property
    def writes(self) -> list[Measurement]:
        """The rows to insert or update."""
        return [*self.add, *(m for _, m in self.change), *(m for _, m in self.restamp)]

    @property
    def touched(self) -> bool:
        """Whether applying the plan writes anything."""
        return bool(self.add or self.change or self.restamp or self.remove)


def key_of(measurement: Measurement) -> MessageKey:
    """The identity of the message a measurement belongs to."""
    m = measurement
    return (m.device_id, m.mode, m.connector, m.component, m.time)


def plan_message(
    key: MessageKey, decoded: Sequence[Measurement], stored: Iterable[Stored], version: int | None
) -> MessagePlan:
    """Compare the current decode of one message, made with parameter `version`, with its stored rows."""
    plan = MessagePlan(key, version)
    wanted: dict[str, Measurement] = {}
    for measurement in decoded:
        wanted.setdefault(measurement.data_point, measurement)  # the first value of a data point is the one stored
    for row in stored:
        m = wanted.pop(row.data_point) if row.data_point in wanted else None
        if _newer(row.param_version, version):
            plan.newer += 1
        elif m is None:
            plan.remove.append(row)
        elif not _same_value(row, m):
            plan.change.append((row, m))
        elif row.param_version != m.param_version:
            plan.restamp.append((row, m))
        else:
            plan.unchanged += 1
    plan.add.extend(wanted.values())
    return plan


def is_stale(stored: Iterable[Stored], current: int | None) -> bool:
    """Whether some row was decoded with an older version than `current` (or before versions were kept)."""
    if current is None:
        return False
    return any(row.param_version is None or row.param_version < current for row in stored)


def _newer(stored: int | None, version: int | None) -> bool:
    return stored is not None and version is not None and stored > version


def _same_value(row: Stored, m: Measurement) -> bool:
    return _same_number(row.value, m.value) and row.text_value == m.text_value and row.unit == m.unit


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))
