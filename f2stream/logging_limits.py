"""Repeated log records collapsed: the first line of a kind, then a summary per window.

While Kafka is down, aiokafka and faust log the same few ERROR lines
thousands of times (2,000 to 3,000 per worker in 30 s). What an operator
needs is the first line of each kind, when it changes, and how often it
recurred: :class:`RepeatFilter` lets the first record of a kind through,
drops the repeats within `window_s`, and then emits one summary,
``<the first message> ... repeated N times in the last Ts``.

A kind is the logger name, the level and the message template (the `msg`
before `%` arguments), so a line that differs only in its arguments (an
address, a counter, a traceback) counts as a repeat. Records below WARNING
pass untouched: the floods are warnings and errors, and an INFO line (a
rebalance, a parameter publication) is the news an operator reads the log for.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_WINDOW_S", "RepeatFilter", "install"]

#: How long repeats of one kind are held back before their summary.
DEFAULT_WINDOW_S = 30.0
#: Kinds remembered at once; beyond, new kinds pass uncounted (memory stays bounded).
_MAX_KINDS = 1000
_SUMMARY = "_f2_repeat_summary"

_Kind = tuple[str, int, str]


@dataclass(slots=True)
class _Window:
    started: float
    first: logging.LogRecord
    repeats: int = 0


class RepeatFilter(logging.Filter):
    """A handler filter that collapses repeated records (see the module docstring).

    Args:
        emit: where summaries go, normally the `handle` of the handler this
            filter sits on (they pass through this filter untouched).
        window_s: how long repeats are counted before their summary.
        clock: seconds, monotonic; tests pass a fake one.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        super().__init__()
        self._emit = emit
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[_Kind, _Window] = {}
        self._next_expiry = float("inf")  # no window ends before: most records skip the sweep
        self._lock = threading.Lock()  # records can come from threads (paho, executors)

    def filter(self, record: logging.LogRecord) -> bool:
        """Let `record` through unless it repeats a kind seen within the window."""
        if getattr(record, _SUMMARY, False):
            return True
        kind: _Kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            due = self._take_due(now)  # any record brings the summaries that are due
            window = self._windows.get(kind)
            if record.levelno < logging.WARNING:
                passes = True
            elif window is not None:  # still open: _take_due closed every expired one
                window.repeats += 1
                passes = False
            else:
                if len(self._windows) < _MAX_KINDS:
                    self._windows[kind] = _Window(now, record)
                    self._next_expiry = min(self._next_expiry, now + self._window_s)
                passes = True
        for summary in due:
            self._emit(summary)
        return passes

    def flush(self) -> None:
        """Emit the summaries of every window that holds repeats, now (at shutdown)."""
        with self._lock:
            due = [self._summary(w, self._clock()) for w in self._windows.values() if w.repeats]
            self._windows.clear()
            self._next_expiry = float("inf")
        for summary in due:
            self._emit(summary)

    def _take_due(self, now: float) -> list[logging.LogRecord]:
        if now < self._next_expiry:
            return []
        expired = [kind for kind, w in self._windows.items() if now - w.started >= self._window_s]
        due = []
        for kind in expired:
            window = self._windows.pop(kind)
            if window.repeats:
                due.append(self._summary(window, now))
        self._next_expiry = min((w.started + self._window_s for w in self._windows.values()), default=float("inf"))
        return due

    @staticmethod
    def _summary(window: _Window, now: float) -> logging.LogRecord:
        first = window.first
        try:
            text = first.getMessage()
        except Exception:  # noqa: BLE001  # a broken format must not break logging
            text = str(first.msg)
        summary = logging.makeLogRecord(
            {
                "name": first.name,
                "levelno": first.levelno,
                "levelname": first.levelname,
                "msg": "%s ... repeated %d times in the last %.0fs",
                "args": (text, window.repeats, now - window.started),
                "pathname": first.pathname,
                "lineno": first.lineno,
                "module": first.module,
                "funcName": first.funcName,
                _SUMMARY: True,
            }
        )
        return summary


def install(
    logger: logging.Logger, *, window_s: float = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic
) -> list[RepeatFilter]:
    """Put a :class:`RepeatFilter` on each of `logger`'s handlers that has none yet; returns those added."""
    added = []
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            repeat_filter = RepeatFilter(handler.handle, window_s=window_s, clock=clock)
            handler.addFilter(repeat_filter)
            # Runs before logging's own shutdown (atexit is last in, first out).
            atexit.register(repeat_filter.flush)
            added.append(repeat_filter)
    return added
