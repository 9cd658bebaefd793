"""Capped exponential backoff with jitter, the one retry pace of every loop that waits out an outage."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from `first_s` up to `max_s`, each drawn at random from its upper half.

    The jitter keeps workers that lost the same server from coming back in
    step. :meth:`reset` after a success starts the next outage from the
    first delay again.
    """

    __slots__ = ("_current", "first_s", "max_s")

    def __init__(self, first_s: float = 0.2, max_s: float = 10.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self._current = first_s

    def next(self) -> float:
        """The delay to wait now, in seconds; the one after it is twice as long, up to `max_s`."""
        delay = self._current * random.uniform(0.5, 1.0)
        self._current = min(self._current * 2, self.max_s)
        return delay

    def reset(self) -> None:
        """Start over from `first_s`."""
        self._current = self.first_s
