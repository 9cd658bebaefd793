"""Device liveness, pure: the state machine, the silence deadlines, timeouts and the records that carry them.

Nothing here does I/O or reads a clock: times come in as Unix seconds. The
tracker (`f2stream.agents.liveness`) feeds it the decode stage's batches and
a timer's `now`, and produces what it returns.

States and what moves a device between them:

* `never_seen`: registered, no message yet (registry reload).
* `online`: a message arrived whose receipt is within the device's timeout
  of now (an old receipt, e.g. replayed data, moves nothing).
* `silent`: no message received for the device's timeout (the deadline).
* `revoked`: the registry says so; only the registry brings it back
  (`reinstated`: to `silent`, or `never_seen` if it never sent).

A silence deadline is kept in a heap with at most one live entry per device
(`armed_at`): a message does not touch the heap; when an entry comes due and
the device received something since, the entry is pushed again at the new
deadline. A tick therefore costs O(entries due), at most one per device per
timeout, never a scan of all devices.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import orjson

__all__ = [
    "STATES",
    "DeviceLiveness",
    "LivenessState",
    "Seen",
    "State",
    "StatusChange",
    "decode_checkpoint",
    "decode_device",
    "encode_change",
    "encode_checkpoint",
    "encode_device",
    "parse_time",
    "resolve_timeout",
]

State = Literal["online", "silent", "never_seen", "revoked"]
STATES: Final[tuple[State, ...]] = get_args(State)
#: Key of a changelog partition's checkpoint record (no device id starts with a NUL).
CHECKPOINT_KEY: Final = b"\x00checkpoint"

#: What the decode stage saw of one raw record: device key, partition, offset,
#: receipt time and device time (ISO 8601, None when unknown), dead-lettered or not.
Seen = tuple[bytes | None, int, int, str | None, str | None, bool]


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 time as Unix seconds (UTC when it names no zone); None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def resolve_timeout(
    device: str,
    default_s: float,
    device_timeouts: Mapping[str, float],
    template_of: Mapping[str, str],
    template_timeouts: Mapping[str, float],
) -> float:
    """A device's silence timeout: its own override, else its template's, else the default."""
    own = device_timeouts.get(device)
    if own is not None:
        return own
    template = template_of.get(device)
    if template is not None:
        shared = template_timeouts.get(template)
        if shared is not None:
            return shared
    return default_s


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One state change: a record of the `device_status` topic."""

    device: str
    from_state: State | None
    to_state: State
    at: float
    last_seen: float | None
    reason: str
    messages: int = 0
    dead_letters: int = 0


def encode_change(change: StatusChange) -> bytes:
    """The `device_status` value: JSON with ISO 8601 times (UTC)."""
    return orjson.dumps(
        {
            "device": change.device,
            "from": change.from_state,
            "to": change.to_state,
            "at": _iso(change.at),
            "last_seen": _iso(change.last_seen),
            "reason": change.reason,
            "messages": change.messages,
            "dead_letters": change.dead_letters,
        }
    )


@dataclass(slots=True)
class DeviceLiveness:
    """What the tracker holds of one device."""

    device: str
    partition: int
    state: State
    changed_at: float
    last_receipt: float | None = None
    newest_device_time: float | None = None
    messages: int = 0
    dead_letters: int = 0
    #: Raw offset of the last message applied (re-delivered records are not counted twice).
    last_offset: int = -1
    #: Deadline of the device's live heap entry; None: not armed.
    armed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The `/devices/{id}/status` body."""
        return {
            "device_id": self.device,
            "state": self.state,
            "since": _iso(self.changed_at),
            "last_seen": _iso(self.last_receipt),
            "newest_device_time": _iso(self.newest_device_time),
            "messages_since_change": self.messages,
            "dead_letters_since_change": self.dead_letters,
        }


def encode_device(d: DeviceLiveness) -> bytes:
    """The changelog value of one device (compact keys: 100,000 of them are read at restore)."""
    return orjson.dumps(
        {
            "p": d.partition,
            "s": d.state,
            "c": d.changed_at,
            "r": d.last_receipt,
            "t": d.newest_device_time,
            "m": d.messages,
            "x": d.dead_letters,
            "o": d.last_offset,
        }
    )


def decode_device(key: bytes, value: bytes) -> DeviceLiveness | None:
    """A changelog record as a device's liveness; None when unreadable (it is skipped)."""
    try:
        v = orjson.loads(value)
        state = v["s"]
        if state not in STATES:
            return None
        return DeviceLiveness(
            device=key.decode(),
            partition=int(v["p"]),
            state=state,
            changed_at=float(v["c"]),
            last_receipt=v["r"],
            newest_device_time=v["t"],
            messages=int(v["m"]),
            dead_letters=int(v["x"]),
            last_offset=int(v["o"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        return None


def encode_checkpoint(offset: int) -> bytes:
    """A changelog partition's checkpoint: every device record before it covers raw offsets below `offset`."""
    return orjson.dumps({"checkpoint": offset})


def decode_checkpoint(value: bytes) -> int | None:
    """The offset of a checkpoint record, None when unreadable."""
    try:
        offset = orjson.loads(value)["checkpoint"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return offset if isinstance(offset, int) else None


class LivenessState:
    """Every tracked device's liveness, the silence heap, counts per state, and what changed.

    Args:
        timeout_of: a device's silence timeout in seconds (read at each use,
            so a changed override applies to the next deadline).
    """

    def __init__(self, timeout_of: Callable[[str], float]) -> None:
        self.timeout_of = timeout_of
        self.devices: dict[str, DeviceLiveness] = {}
        self.counts: dict[State, int] = dict.fromkeys(STATES, 0)
        self._heap: list[tuple[float, str]] = []
        #: Devices changed since the last checkpoint, per partition (their changelog records are due).
        self.dirty: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self.devices)

    def get(self, device: str) -> DeviceLiveness | None:
        """The device's liveness, or None if it is not tracked here."""
        return self.devices.get(device)

    def in_state(self, state: State) -> Iterator[DeviceLiveness]:
        """The devices in `state` (a scan: for views, never for the per-message path)."""
        return (d for d in self.devices.values() if d.state == state)

    def _deadline(self, d: DeviceLiveness) -> float | None:
        if d.state != "online" or d.last_receipt is None:
            return None
        return d.last_receipt + self.timeout_of(d.device)

    def _arm(self, d: DeviceLiveness) -> None:
        deadline = self._deadline(d)
        if deadline is not None and (d.armed_at is None or deadline < d.armed_at):
            d.armed_at = deadline
            heapq.heappush(self._heap, (deadline, d.device))

    def _change(self, d: DeviceLiveness, to: State, at: float, reason: str) -> StatusChange:
        change = StatusChange(d.device, d.state, to, at, d.last_receipt, reason, d.messages, d.dead_letters)
        self.counts[d.state] -= 1
        self.counts[to] += 1
        d.state, d.changed_at, d.messages, d.dead_letters = to, at, 0, 0
        self.dirty.setdefault(d.partition, set()).add(d.device)
        self._arm(d)
        return change

    def _add(self, d: DeviceLiveness) -> None:
        old = self.devices.get(d.device)
        if old is not None:
            self.counts[old.state] -= 1
        self.devices[d.device] = d
        self.counts[d.state] += 1

    def load(self, d: DeviceLiveness) -> None:
        """Take a device's record as restored from the changelog (no change, no event)."""
        d.armed_at = None
        self._add(d)
        self._arm(d)

    def drop_partition(self, partition: int) -> int:
        """Forget the devices of `partition` (it went to another worker); return how many."""
        gone = [name for name, d in self.devices.items() if d.partition == partition]
        for name in gone:
            self.counts[self.devices.pop(name).state] -= 1
        self.dirty.pop(partition, None)
        return len(gone)  # their heap entries die lazily: no device, no expiry

    def observe(
        self,
        device: str,
        partition: int,
        offset: int,
        received_at: float,
        device_time: float | None,
        dead: bool,
        now: float,
    ) -> StatusChange | None:
        """Apply one message of a device; return the change it caused, if any.

        A record at or below the last applied offset (a re-delivery) changes
        nothing. The receipt and device times only move forward. An old
        receipt (older than the timeout) does not bring a device online.
        """
        d = self.devices.get(device)
        if d is None:
            d = DeviceLiveness(device, partition, "never_seen", changed_at=now)
            self._add(d)
        elif offset <= d.last_offset and partition == d.partition:
            return None
        d.partition, d.last_offset = partition, offset
        if dead:
            d.dead_letters += 1
        else:
            d.messages += 1
        if d.last_receipt is None or received_at > d.last_receipt:
            d.last_receipt = received_at
        if device_time is not None and (d.newest_device_time is None or device_time > d.newest_device_time):
            d.newest_device_time = device_time
        self.dirty.setdefault(partition, set()).add(device)
        if d.state in ("silent", "never_seen") and now - received_at < self.timeout_of(device):
            return self._change(d, "online", now, "message")
        return None

    def register(self, device: str, partition: int, revoked: bool, now: float) -> StatusChange | None:
        """Apply the registry's word on a device: new ones become `never_seen`; revocations and reinstatements."""
        d = self.devices.get(device)
        if d is None:
            d = DeviceLiveness(device, partition, "revoked" if revoked else "never_seen", changed_at=now)
            self._add(d)
            self.dirty.setdefault(partition, set()).add(device)
            return StatusChange(device, None, d.state, now, None, "revoked" if revoked else "registered")
        if revoked and d.state != "revoked":
            return self._change(d, "revoked", now, "revoked")
        if not revoked and d.state == "revoked":
            return self._change(d, "silent" if d.last_receipt is not None else "never_seen", now, "reinstated")
        return None

    def rearm(self, device: str) -> None:
        """The device's timeout changed: a shorter one gets its deadline at once (a longer one lazily)."""
        d = self.devices.get(device)
        if d is not None:
            self._arm(d)

    def expire(self, now: float, read_until: Callable[[int], float]) -> list[StatusChange]:
        """Make every online device whose deadline passed `silent`; return the changes.

        `read_until(partition)` is the time up to which every raw record of the
        partition has been applied: a deadline after it is deferred by a second
        (the device's message may be in the backlog not read yet, e.g. after a
        restart), so a silence is declared only when it is known.
        """
        heap, changes = self._heap, []
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            d = self.devices.get(name)
            if d is None or d.armed_at != deadline:
                continue  # stale: the device left, or has a newer entry
            d.armed_at = None
            actual = self._deadline(d)
            if actual is None:
                continue
            if actual > now:
                self._arm(d)  # it received something since: wait for the new deadline
            elif actual > read_until(d.partition):
                d.armed_at = now + 1.0
                heapq.heappush(heap, (d.armed_at, name))
            else:
                late = now - actual
                reason = "timeout" if late < 30 else f"timeout, noticed {late:.0f}s late (worker away)"
                changes.append(self._change(d, "silent", now, reason))
        return changes

    def take_dirty(self, partitions: Iterable[int]) -> dict[int, list[DeviceLiveness]]:
        """The changed devices of `partitions`, and forget that they changed (their records are being written)."""
        out: dict[int, list[DeviceLiveness]] = {}
        for p in partitions:
            names = self.dirty.pop(p, None)
            if names:
                out[p] = [self.devices[n] for n in names if n in self.devices]
        return out

    def mark_dirty(self, devices: Iterable[DeviceLiveness]) -> None:
        """Changelog records that could not be written: due again."""
        for d in devices:
            if self.devices.get(d.device) is d:
                self.dirty.setdefault(d.partition, set()).add(d.device)

    @property
    def heap_size(self) -> int:
        """Entries in the silence heap (live and stale)."""
        return len(self._heap)
