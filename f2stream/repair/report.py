"""What a repair did: tallies per device, the progress line, and metrics for node exporter's textfile collector."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from f2stream.records import Measurement
from f2stream.repair.plan import MessagePlan, Stored

__all__ = ["CHANGES", "Example", "Progress", "Tally", "TextfileMetrics"]

#: What a repair does to a row, in the order reports list it.
CHANGES = ("added", "changed", "restamped", "removed", "unchanged")
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Example:
    """One row before and after, for the report."""

    device_id: str
    time: str
    component: str
    data_point: str
    before: str
    after: str


@dataclass(slots=True)
class Tally:
    """Messages and rows per device, and what the current decode refused."""

    messages: Counter[str] = field(default_factory=Counter)  # per device: messages worked on
    repaired: Counter[str] = field(default_factory=Counter)  # per device: messages whose rows changed
    rows: dict[str, Counter[str]] = field(default_factory=dict)  # per device: rows per change
    refused: Counter[str] = field(default_factory=Counter)  # by the current decode's reason
    examples: list[Example] = field(default_factory=list)

    def count(self, device: str, plan: MessagePlan) -> None:
        """Count one message's plan."""
        self.messages[device] += 1
        if plan.touched:
            self.repaired[device] += 1
        rows = self.rows.setdefault(device, Counter())
        rows["added"] += len(plan.add)
        rows["changed"] += len(plan.change)
        rows["restamped"] += len(plan.restamp)
        rows["removed"] += len(plan.remove)
        rows["unchanged"] += plan.unchanged + plan.newer
        if len(self.examples) < _EXAMPLES:
            self._keep_examples(plan)

    def total(self, change: str) -> int:
        """Rows of one kind of change, over every device."""
        return sum(rows[change] for rows in self.rows.values())

    def _keep_examples(self, plan: MessagePlan) -> None:
        device, _, _, component, moment = plan.key
        pairs: list[tuple[str, Stored | None, Measurement | None]] = [
            *((after.data_point, before, after) for before, after in plan.change),
            *((after.data_point, None, after) for after in plan.add),
            *((before.data_point, before, None) for before in plan.remove),
        ]
        for point, before, after in pairs[: _EXAMPLES - len(self.examples)]:
            self.examples.append(Example(device, moment, component, point, _show(before), _show(after)))

    def lines(self, *, dry_run: bool, top: int = 20) -> list[str]:
        """The per-device table (the devices with the most changes first), then the examples."""
        verb = "would be " if dry_run else ""
        head = f"{'device':<17} {'messages':>9} {'repaired':>9} " + " ".join(f"{c:>9}" for c in CHANGES)
        out = [head]
        order = sorted(self.messages, key=lambda d: (-self.repaired[d], d))
        for device in order[:top]:
            rows = self.rows.get(device, Counter())
            out.append(
                f"{device:<17} {self.messages[device]:>9,} {self.repaired[device]:>9,} "
                + " ".join(f"{rows[c]:>9,}" for c in CHANGES)
            )
        if len(order) > top:
            out.append(f"... and {len(order) - top:,} more devices")
        out.append(
            f"{'total':<17} {sum(self.messages.values()):>9,} {sum(self.repaired.values()):>9,} "
            + " ".join(f"{self.total(c):>9,}" for c in CHANGES)
        )
        if self.refused:
            refused = ", ".join(f"{reason} {n:,}" for reason, n in sorted(self.refused.items()))
            out.append(f"left alone, the current parameters refuse them: {refused}")
        for e in self.examples:
            out.append(f"  e.g. {e.device_id} {e.component}/{e.data_point} at {e.time}: {e.before} -> {verb}{e.after}")
        return out


def _show(row: Stored | Measurement | None) -> str:
    if row is None:
        return "(no row)"
    shown = row.text_value if row.value is None else f"{row.value:g}"
    return f"{shown}{' ' + row.unit if row.unit else ''} (v{row.param_version})"


class Progress:
    """A line on stderr every few seconds: how much of the window is read, how fast, how long to go."""

    def __init__(self, what: str, total: int, *, every_s: float = 2.0, out: TextIO = sys.stderr) -> None:
        self.what = what
        self.total = total
        self.every_s = every_s
        self.out = out
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started

    def advance(self, count: int) -> None:
        """Count `count` more records read; print when the last line is old enough."""
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(now), file=self.out, flush=True)

    def finish(self) -> None:
        """Print the last line: everything read."""
        print(self.line(), file=self.out, flush=True)

    def line(self, now: float | None = None) -> str:
        """Where the work stands."""
        elapsed = max(1e-6, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        share = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.what}: {self.done:,} of {self.total:,} records ({share:.0f}%), {rate:,.0f}/s, {left:,.0f} s left"

    @property
    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.monotonic() - self.started


class TextfileMetrics:
    """Counters that add up over runs, in a `.prom` file node exporter's textfile collector reads.

    A command lives seconds or hours, shorter than any scrape plan: it
    writes its totals (the previous file's plus its own) to
    `<dir>/f2stream_<command>.prom` atomically, at the end and as it goes.
    """

    def __init__(self, directory: Path, command: str) -> None:
        self.path = directory / f"f2stream_{command}.prom"
        self.command = command
        self._previous = _read_counters(self.path)
        self._added: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def add(self, name: str, amount: int, **labels: str) -> None:
        """Add to counter `name` (without `_total`) with `labels`."""
        if amount:
            self._added[(name, tuple(sorted(labels.items())))] += amount

    def write(self) -> None:
        """Write the totals, and the time of this write."""
        totals = Counter(self._previous)
        totals.update(self._added)
        registry = CollectorRegistry()
        counters: dict[str, PromCounter] = {}
        for (name, labels), value in sorted(totals.items()):
            if name not in counters:
                counters[name] = PromCounter(name, _HELP.get(name, name), [k for k, _ in labels], registry=registry)
            counter = counters[name]
            (counter.labels(**dict(labels)) if labels else counter).inc(value)
        Gauge(f"f2_{self.command}_last_run_timestamp_seconds", f"When {self.command} last wrote its totals",
              registry=registry).set(time.time())  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(self.path), registry)
        os.chmod(self.path, 0o644)


_HELP = {
    "f2_replay_messages": "Raw messages replayed, by whether their rows changed",
    "f2_replay_rows": "Rows replay added, changed, restamped, removed or left unchanged",
    "f2_redrive_letters": "Dead letters redriven, by their reason and what became of them",
}


def _read_counters(path: Path) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    found: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return found
    for family in text_string_to_metric_families(text):
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                found[(family.name, tuple(sorted(sample.labels.items())))] += int(sample.value)
    return found


def by_reason(counts: Iterable[tuple[str, int]]) -> str:
    """`reason n, reason n` for a report line."""
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts))
