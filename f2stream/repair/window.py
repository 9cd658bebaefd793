"""The time window of a repair: parsed from the command line, checked against what a topic holds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from f2stream.errors import F2StreamError

__all__ = ["Held", "RepairError", "Window", "WindowError", "check_window", "parse_moment"]

_AGO_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class RepairError(F2StreamError):
    """A repair cannot start or go on; the message says why and what to do."""


class WindowError(RepairError):
    """A window that is empty, in the future, or outside what the topic still holds."""


def parse_moment(text: str, now: datetime, *, option: str) -> datetime:
    """A moment as the operator writes it: ISO 8601 (UTC unless it says), `now`, or a duration ago (`90m`, `2h`, `7d`).

    Raises:
        WindowError: the text is neither, naming the option and the forms it takes.
    """
    spelled = text.strip()
    if spelled == "now":
        return now
    ago = _AGO_RE.match(spelled)
    if ago:
        return now - timedelta(**{_UNITS[ago.group(2)]: float(ago.group(1))})
    try:
        moment = datetime.fromisoformat(spelled)
    except ValueError:
        raise WindowError(
            f"{option} {text!r} is not a time: write ISO 8601 (2026-12-05T10:00, UTC unless it says), "
            "now, or a duration ago (90m, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """Records whose Kafka timestamp is in [since, until)."""

    since: datetime
    until: datetime

    @property
    def since_ms(self) -> int:
        """`since` as a Kafka timestamp."""
        return int(self.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int:
        """`until` as a Kafka timestamp."""
        return int(self.until.timestamp() * 1000)

    def __str__(self) -> str:
        return f"{_show(self.since)} to {_show(self.until)}"


@dataclass(frozen=True, slots=True)
class Held:
    """What a topic still holds: the Kafka timestamps of its oldest and newest records (None when empty)."""

    topic: str
    oldest: datetime | None
    newest: datetime | None
    records: int
    trimmed: bool = False  # retention has removed records: nothing before `oldest` is left

    def __str__(self) -> str:
        if self.oldest is None or self.newest is None:
            return f"{self.topic} holds no records"
        return f"{self.topic} holds {self.records:,} records from {_show(self.oldest)} to {_show(self.newest)}"


def check_window(since: datetime | None, until: datetime | None, now: datetime, held: Held) -> Window:
    """The window to work on: the given bounds, else all that the topic holds up to now.

    Raises:
        WindowError: the window is empty, in the future, or outside the
            records the topic holds, or it reaches back to records that the
            topic's retention removed; saying which window the topic holds.
    """
    if since is not None and since > now:
        raise WindowError(f"--since {_show(since)} is in the future (now is {_show(now)})")
    if since is not None and until is not None and since >= until:
        raise WindowError(f"the window is empty: --since {_show(since)} is not before --until {_show(until)}")
    if held.oldest is None or held.newest is None:
        raise WindowError(f"{held}: there is nothing to work on")
    window = Window(since or held.oldest, until or now)
    if window.until <= held.oldest or window.since > held.newest:
        raise WindowError(f"the window {window} lies outside what the topic holds: {held}")
    if held.trimmed and window.since < held.oldest.replace(microsecond=0):  # the second it shows is fine
        raise WindowError(
            f"the window starts at {_show(window.since)}, but {held} (older ones are past the topic's retention); "
            f"start at --since {_show(held.oldest)} or later"
        )
    return window


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
