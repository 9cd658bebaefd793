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

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import orjson

from f2stream.alarm_rules import Comparand, Kind, Rule, Severity
from f2stream.liveness import parse_time
from f2stream.mqtt_topics import TopicInfo
from f2stream.records import Point

__all__ = [
    "NO_RULES",
    "OFF",
    "TRANSITIONS",
    "AlarmEvent",
    "AlarmState",
    "DeviceAlarms",
    "Message",
    "RuleSet",
    "RuleState",
    "Transition",
    "condition_of",
    "decode_device",
    "decode_event",
    "encode_device",
    "encode_event",
    "equals",
    "iso",
]

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


# ---------------------------------------------------------------------------------------------- evaluation


#: What the alarm rules read of a decoded message (a :class:`~f2stream.codec.message.DecodedMessage`):
#: its topic, device time, parameter version and values.
Message = tuple[TopicInfo, str, "int | None", list[Point]]

#: A rule's condition on one value (number, text): whether it holds.
Holds = Callable[[float | None, str | None], bool]


def condition_of(rule: Rule) -> Holds:
    """The rule's condition as one small function, made once per rule set and called per message."""
    if rule.kind == "threshold":
        if rule.above is not None:
            above = rule.above
            return lambda value, _: value is not None and value > above
        below = rule.below if rule.below is not None else -math.inf
        return lambda value, _: value is not None and value < below
    if rule.kind == "state":
        return equals(rule.equals)
    return lambda value, _: value == 1.0  # the doors: open is true


def equals(expected: Comparand | None) -> Holds:
    """Whether a value is `expected` (None: any value; a text is compared without case), as one small function:
    a state rule's condition, and what makes a data point a grant.
    """
    if expected is None:
        return lambda value, text: True
    if isinstance(expected, str):
        folded = expected.casefold()
        return lambda _, text: text is not None and text.casefold() == folded
    return lambda value, _: value == expected


#: What the per-message path reads of one rule, in one tuple: its name, component number (None: any),
#: data point, condition, and the rule.
Check = tuple[str, "str | None", str, Holds, Rule]

#: What makes a message an access grant for a rule: the rule's name, the data point, and its condition.
GrantCheck = tuple[str, str, Holds]


class RuleSet:
    """One device's rules, indexed by the component types whose messages they read, with their conditions."""

    __slots__ = ("by_component", "rules")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: dict[str, Rule] = {r.name: r for r in rules}
        by_component: dict[str, list[Check]] = {}
        grants: dict[str, list[GrantCheck]] = {}
        for rule in self.rules.values():
            by_component.setdefault(rule.component, []).append(
                (rule.name, rule.component_number, rule.data_point, condition_of(rule), rule)
            )
            for grant in rule.grants:
                grants.setdefault(grant.component, []).append((rule.name, grant.data_point, equals(grant.equals)))
        #: The component types read, each with its checks (none: only grants) and grants (None: none).
        self.by_component: dict[str, tuple[tuple[Check, ...], list[GrantCheck] | None]] = {
            component: (tuple(by_component.get(component, ())), grants.get(component))
            for component in by_component.keys() | grants.keys()
        }

    def __len__(self) -> int:
        return len(self.rules)


NO_RULES: Final = RuleSet()


class RuleState:
    """What one rule holds for one device: its condition, and the alarm it raised (if active).

    `since` is the device time the condition began (pending, or raised) and
    `origin` the raw record that began it; `armed` the wall time of the
    rule's live timer entry (not kept in the changelog: re-armed on load).
    An idle rule has no object of its own: it is :data:`OFF`.
    """

    __slots__ = ("acked", "alarm_id", "armed", "grant_t", "kind", "on", "origin", "raised_at", "severity", "since",
                 "skew", "t", "text", "value")  # fmt: skip

    def __init__(self) -> None:
        #: Device time of the last value that moved the state, as the topics spell it (which sorts as time does).
        self.t = ""
        self.on: bool | None = None
        self.since: float | None = None
        self.origin: tuple[int, int] = (-1, -1)
        self.skew = 0.0  # receipt minus device time of the record that began the condition
        self.alarm_id: str | None = None
        self.kind: Kind = "state"
        self.severity: Severity = "warning"
        self.raised_at = 0.0
        self.acked = False
        self.grant_t: str | None = None
        self.value: float | None = None
        self.text: str | None = None
        self.armed: float | None = None

    def as_list(self) -> list[Any]:
        """The changelog form, positional and as short as the state allows: idle, pending, or with an alarm.

        (100,000 devices' records are written every checkpoint and read at a restore.)
        """
        t = self.t
        if self.since is None and self.alarm_id is None and self.grant_t is None:
            return [t, self.on]
        pending = [t, self.on, self.since, *self.origin, self.skew, self.grant_t, self.value, self.text]
        if self.alarm_id is None:
            return pending
        return [*pending, self.alarm_id, self.kind, self.severity, self.raised_at, self.acked]

    @classmethod
    def from_list(cls, v: list[Any]) -> RuleState:
        """The inverse of :meth:`as_list`."""
        st = cls()
        t, st.on = v[0], v[1]
        st.t = str(t)
        if len(v) > 2:
            st.since, p, o, st.skew, st.grant_t, st.value, st.text = v[2:9]
            st.origin = (int(p), int(o))
        if len(v) > 9:
            st.alarm_id, st.kind, st.severity, st.raised_at, st.acked = v[9:14]
        return st


#: Every idle rule of every device: its condition seen off, nothing pending, no alarm, no grant. Shared, never
#: changed: a rule that leaves it gets an object of its own, and one that comes back to it drops it (an object
#: per rule per device made most of the state's memory, and the memory was most of the per-message cost).
OFF: Final = RuleState()
OFF.on = False


class DeviceAlarms:
    """Every rule state of one device, the last raw record applied (re-deliveries apply once), and the device
    time of the last message of each of its components (`strike-1`; an older message is late and ignored).

    `saved` is the last applied offset when its changelog record was last
    written and `touched` says a timer, an operator or a rule change moved it
    since: a message marks nothing, so that the per-message path stays short.
    """

    __slots__ = ("device", "last_offset", "partition", "rules", "saved", "times", "touched")

    def __init__(self, device: str, partition: int, last_offset: int = -1) -> None:
        self.device = device
        self.partition = partition
        self.last_offset = last_offset
        self.rules: dict[str, RuleState] = {}
        self.times: dict[str, str] = {}
        self.saved = -2
        self.touched = False


def encode_device(d: DeviceAlarms) -> bytes:
    """The `alarm_state` value of one device."""
    rules = {n: 0 if s is OFF else s.as_list() for n, s in d.rules.items()}
    return orjson.dumps({"p": d.partition, "o": d.last_offset, "t": d.times, "r": rules})


def decode_device(key: bytes, value: bytes) -> DeviceAlarms | None:
    """An `alarm_state` record as a device's alarm state; None when unreadable (it is skipped)."""
    try:
        v = orjson.loads(value)
        d = DeviceAlarms(key.decode(), int(v["p"]), int(v["o"]))
        d.rules = {str(name): OFF if state == 0 else RuleState.from_list(state) for name, state in v["r"].items()}
        d.times = {str(component): str(t) for component, t in v["t"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return d


_SECONDS: dict[str, float] = {}


def seconds_of(text: str) -> float | None:
    """A device time as Unix seconds: :func:`~f2stream.records.format_time`'s form fast (each second parsed
    once), any other ISO 8601 through :func:`~f2stream.liveness.parse_time`.
    """
    if len(text) == 32 and text[19] == "." and text.endswith("+00:00"):
        second = text[:19]
        base = _SECONDS.get(second)
        if base is None:
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            base = _SECONDS[second] = datetime.fromisoformat(second).replace(tzinfo=UTC).timestamp()
        return base + int(text[20:26]) / 1_000_000
    return parse_time(text)


def _point(points: Sequence[Point], name: str) -> Point | None:
    for point in points:
        if point[0] == name:
            return point
    return None


def _cleared(rule: Rule, value: float | None) -> bool:
    """Whether a threshold rule's value is back at or beyond its clear level (hysteresis); a text value: no."""
    if value is None:
        return False
    if rule.above is not None:
        return value <= (rule.above if rule.clear is None else rule.clear)
    below = rule.below if rule.below is not None else -math.inf
    return value >= (below if rule.clear is None else rule.clear)


class AlarmState:
    """Every held device's alarm state, the duration timers, counts of active alarms, and what changed.

    Args:
        ruleset_of: a device's rules (read at each message, so a reload applies at once).
    """

    def __init__(self, ruleset_of: Callable[[str], RuleSet], held: set[int] | None = None) -> None:
        self.ruleset_of = ruleset_of
        #: The raw partitions whose messages are evaluated (None: every one); the tracker keeps it.
        self.held = held
        #: Transitions the messages made, until the caller takes them (:meth:`take_events`).
        self.events: list[AlarmEvent] = []
        self.devices: dict[str, DeviceAlarms] = {}
        #: Active alarms (raised or acknowledged) per (kind, severity).
        self.active: dict[tuple[str, str], int] = {}
        #: Messages older (device time) than the state they would change: ignored.
        self.late = 0
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self.devices)

    # -------------------------------------------------------------- messages

    def observe(self, message: Message, partition: int, offset: int, received_at: str | None) -> None:
        """Apply one decoded message of a held partition; keep the transitions it makes (:meth:`take_events`).

        Called by the decoder for every message it decodes with values: the per-message path, kept short.
        Times stay text here (the topics' one spelling, which sorts as time does): only a rule whose
        condition holds, or whose alarm is active, reads them as numbers (:meth:`_step`). A message
        older than the last of its component (`strike-1`) is late: counted, and it changes nothing.
        """
        held = self.held
        if held is not None and partition not in held:
            return
        info, t, _, points = message
        device = info.device_id
        entry = self.ruleset_of(device).by_component.get(info.component_type)
        if entry is None:
            return
        d = self.devices.get(device)
        if d is None:
            d = self.devices[device] = DeviceAlarms(device, partition)
        elif offset <= d.last_offset and partition == d.partition:
            return  # a re-delivery of a record already applied
        d.partition, d.last_offset = partition, offset
        times, component = d.times, info.component
        last = times.get(component)
        if last is not None and t < last:
            self.late += 1
            return
        times[component] = t
        checks, grants = entry
        if checks:
            self._evaluate(d, checks, info.component_number, points, t, partition, offset, received_at)
        if grants is not None:
            _grant(d, grants, points, t)

    def _evaluate(
        self,
        d: DeviceAlarms,
        checks: tuple[Check, ...],
        number: str | None,
        points: Sequence[Point],
        t: str,
        partition: int,
        offset: int,
        received_at: str | None,
    ) -> None:
        """One message's values against the rules of its component: an idle rule whose condition stays off
        is left :data:`OFF` (the common case); any other goes through :meth:`_step`.
        """
        states = d.rules
        for name, wanted_number, wanted, holds, rule in checks:
            if wanted_number is not None and wanted_number != number:
                continue
            for point in points:
                if point[0] == wanted:
                    break
            else:
                continue
            st = states.get(name)
            if st is OFF or st is None:
                if not holds(point[1], point[2]):  # the common case: an idle rule stays idle
                    if st is None:
                        states[name] = OFF
                    continue
                st = _own_state(states, name, st)
            elif st.alarm_id is None and not holds(point[1], point[2]):
                if st.grant_t is None:
                    states[name] = OFF
                else:
                    st.on, st.since = False, None
                continue
            self._step(d, rule, holds, st, t, point, (partition, offset), received_at, self.events)

    def take_events(self) -> list[AlarmEvent]:
        """The transitions messages made since the last call."""
        events, self.events = self.events, []
        return events

    def _step(
        self,
        d: DeviceAlarms,
        rule: Rule,
        holds: Holds,
        st: RuleState,
        time_text: str,
        point: Point,
        raw: tuple[int, int],
        received_at: str | None,
        events: list[AlarmEvent],
    ) -> None:
        st.t = time_text
        t = seconds_of(time_text)
        if t is None:
            return
        _, value, text, _ = point
        kind = rule.kind
        on = holds(value, text)
        back = _cleared(rule, value) if kind == "threshold" else not on
        st.value, st.text = value, text
        if st.alarm_id is not None:
            if back:
                events.append(self._clear(d, st, t, raw, "condition ended"))
        elif kind == "door_forced_open":
            if on and st.on is False:
                granted_at = seconds_of(st.grant_t) if st.grant_t is not None else None
                granted = granted_at is not None and 0.0 <= t - granted_at <= rule.window_s
                if not granted:
                    st.since, st.origin = t, raw
                    events.append(self._raise(d, rule, st, t, raw, "opened with no access grant before it"))
        elif on:
            if st.since is None:
                st.since, st.origin = t, raw
                receipt = parse_time(received_at)
                st.skew = 0.0 if receipt is None else receipt - t
            if t - st.since >= rule.for_s:
                events.append(self._raise(d, rule, st, st.since + rule.for_s, raw, _held(rule)))
            else:
                self._arm(d, rule.name, st, st.since + rule.for_s)
        else:
            st.since = None
        st.on = on

    def _raise(
        self, d: DeviceAlarms, rule: Rule, st: RuleState, at: float, raw: tuple[int, int], reason: str
    ) -> AlarmEvent:
        st.alarm_id = f"{d.device}:{rule.name}:{st.origin[0]}:{st.origin[1]}"
        st.kind, st.severity, st.raised_at, st.acked = rule.kind, rule.severity, at, False
        key = (st.kind, st.severity)
        self.active[key] = self.active.get(key, 0) + 1
        d.touched = True
        return self._event(d, st, "raised", at, raw, reason, rule.data_point)

    def _clear(self, d: DeviceAlarms, st: RuleState, at: float, raw: tuple[int, int], reason: str) -> AlarmEvent:
        event = self._event(d, st, "cleared", at, raw, reason)
        key = (st.kind, st.severity)
        self.active[key] = self.active.get(key, 1) - 1
        st.alarm_id, st.since, st.acked = None, None, False
        d.touched = True
        return event

    def _event(
        self,
        d: DeviceAlarms,
        st: RuleState,
        transition: Transition,
        at: float,
        raw: tuple[int, int],
        reason: str,
        data_point: str | None = None,
        by: str | None = None,
    ) -> AlarmEvent:
        alarm_id = st.alarm_id or ""
        rule = alarm_id.split(":", 2)[1] if alarm_id else ""
        if data_point is None:
            known = self.ruleset_of(d.device).rules.get(rule)
            data_point = known.data_point if known is not None else ""
        return AlarmEvent(alarm_id, transition, d.device, rule, st.kind, st.severity, at, st.raised_at, data_point,
                          st.value, st.text, raw[0], raw[1], reason, by)  # fmt: skip

    # -------------------------------------------------------------- timers

    def _arm(self, d: DeviceAlarms, name: str, st: RuleState, due: float) -> None:
        wall = due + st.skew
        if st.armed is None or wall < st.armed:
            st.armed = wall
            heapq.heappush(self._heap, (wall, d.device, name))

    def expire(self, now: float, read_until: Callable[[int], float]) -> list[AlarmEvent]:
        """Raise every pending condition whose duration passed with no message against it.

        `now` is wall time; a condition's deadline is its device-time end
        moved by the device's clock offset at its start. A deadline after
        `read_until(partition)` (the records of the partition applied up to
        then) is deferred by a second: a message ending the condition may
        still be in the backlog.
        """
        heap, events = self._heap, []
        while heap and heap[0][0] <= now:
            wall, device, name = heapq.heappop(heap)
            d = self.devices.get(device)
            st = d.rules.get(name) if d is not None else None
            if d is None or st is None or st.armed != wall:
                continue  # stale: the device or the rule left, or it has a newer entry
            st.armed = None
            rule = self.ruleset_of(device).rules.get(name)
            if rule is None or st.alarm_id is not None or st.since is None or not st.on or rule.for_s <= 0:
                continue
            due = st.since + rule.for_s
            if due + st.skew > now:
                self._arm(d, name, st, due)
            elif due + st.skew > read_until(d.partition):
                st.armed = now + 1.0
                heapq.heappush(heap, (st.armed, device, name))
            else:
                events.append(self._raise(d, rule, st, due, st.origin, _held(rule) + " (timer)"))
        return events

    # -------------------------------------------------------------- operators, rules, partitions

    def acknowledge(self, alarm_id: str, by: str, at: float) -> AlarmEvent | None:
        """An operator's acknowledgement of an active alarm held here; None if it is not (or already acked)."""
        device, _, rest = alarm_id.partition(":")
        d = self.devices.get(device)
        st = d.rules.get(rest.split(":", 1)[0]) if d is not None else None
        if d is None or st is None or st.alarm_id != alarm_id or st.acked:
            return None
        st.acked = True
        d.touched = True
        return self._event(d, st, "acknowledged", at, st.origin, f"acknowledged by {by}", by=by)

    def reconcile(self, partitions: Iterable[int]) -> list[AlarmEvent]:
        """After the rules changed: clear the alarms of rules gone (or of another kind now), re-arm the timers."""
        wanted = set(partitions)
        events: list[AlarmEvent] = []
        for d in self.devices.values():
            if d.partition not in wanted:
                continue
            rules = self.ruleset_of(d.device).rules
            for name, st in list(d.rules.items()):
                rule = rules.get(name)
                if rule is None or (st.alarm_id is not None and rule.kind != st.kind):
                    if st.alarm_id is not None:
                        reason = "rule removed" if rule is None else "rule changed"
                        events.append(self._clear(d, st, seconds_of(st.t) or st.raised_at, st.origin, reason))
                    del d.rules[name]
                    d.touched = True
                elif st.alarm_id is None and st.since is not None and st.on and rule.for_s > 0:
                    st.armed = None
                    self._arm(d, name, st, st.since + rule.for_s)
        return events

    def load(self, d: DeviceAlarms) -> None:
        """Take a device's record as restored from the changelog (no transition); re-arm its timers."""
        old = self.devices.pop(d.device, None)
        if old is not None:
            self._count(old, -1)
        self.devices[d.device] = d
        d.saved, d.touched = d.last_offset, False
        self._count(d, 1)
        rules = self.ruleset_of(d.device).rules
        for name, st in d.rules.items():
            rule = rules.get(name)
            if rule is not None and st.alarm_id is None and st.since is not None and st.on and rule.for_s > 0:
                self._arm(d, name, st, st.since + rule.for_s)

    def _count(self, d: DeviceAlarms, sign: int) -> None:
        for st in d.rules.values():
            if st.alarm_id is not None:
                key = (st.kind, st.severity)
                self.active[key] = self.active.get(key, 0) + sign

    def drop_partition(self, partition: int) -> int:
        """Forget the devices of `partition` (it went to another worker); return how many."""
        gone = [d for d in self.devices.values() if d.partition == partition]
        for d in gone:
            del self.devices[d.device]
            self._count(d, -1)
        return len(gone)  # their timer entries die lazily

    def take_dirty(self, partitions: Iterable[int]) -> list[DeviceAlarms]:
        """The devices of `partitions` changed since their record was written, now marked written (a scan)."""
        wanted = set(partitions)
        out: list[DeviceAlarms] = []
        for d in self.devices.values():
            if d.partition in wanted and (d.touched or d.last_offset != d.saved):
                d.saved, d.touched = d.last_offset, False
                out.append(d)
        return out

    def mark_dirty(self, devices: Iterable[str]) -> None:
        """Their records could not be written: due again at the next checkpoint."""
        for name in devices:
            d = self.devices.get(name)
            if d is not None:
                d.touched = True

    def active_alarms(self) -> Iterator[tuple[DeviceAlarms, str, RuleState]]:
        """Every active alarm held here (a scan: for views and acknowledgements, never per message)."""
        for d in self.devices.values():
            for name, st in d.rules.items():
                if st.alarm_id is not None:
                    yield d, name, st


def _grant(d: DeviceAlarms, grants: list[GrantCheck], points: Sequence[Point], t: str) -> None:
    """Note an access grant (a card read, an exit button, the strike unlocked) for the rules it excuses."""
    for name, data_point, holds in grants:
        point = _point(points, data_point)
        if point is None or not holds(point[1], point[2]):
            continue
        st = d.rules.get(name)
        if st is OFF or st is None:
            st = _own_state(d.rules, name, st)
        if st.grant_t is None or t > st.grant_t:
            st.grant_t = t


def _own_state(states: dict[str, RuleState], name: str, st: RuleState | None) -> RuleState:
    """A state of its own for a rule leaving :data:`OFF` (its condition seen off) or never seen (None)."""
    own = states[name] = RuleState()
    own.on = None if st is None else False
    return own


def _held(rule: Rule) -> str:
    if rule.for_s <= 0:
        return "condition met"
    return f"condition held for {rule.for_s:g} s"
