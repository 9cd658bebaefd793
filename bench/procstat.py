"""CPU seconds and memory of the processes under test, read from /proc."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [0] state, [1] ppid, ... [11] utime [12] stime [13] cutime [14] cstime


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User+system CPU of `pid` (all its threads); with `children`, also of its live and reaped children.

    A PostgreSQL cluster is its postmaster plus one backend per connection:
    reaped backends count in the postmaster's cutime/cstime, live ones are
    read one by one.
    """
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                child = _stat(int(entry.name))
                if child is not None and child[1] == str(pid):
                    ticks += int(child[11]) + int(child[12]) + int(child[13]) + int(child[14])
    return ticks / _TICK


def lineage(pid: int) -> set[int]:
    """`pid` and its ancestors (the shell, make, timeout... that started it)."""
    found = set()
    while pid > 1 and pid not in found:
        found.add(pid)
        fields = _stat(pid)
        if fields is None:
            break
        pid = int(fields[1])
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in kB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


@dataclass
class Watched:
    """A process under test: a name, how to find its pid now, and whether its children count."""

    name: str
    pid: Callable[[], int | None]
    children: bool = False

    def cpu(self) -> float:
        pid = self.pid()
        return 0.0 if pid is None else cpu_seconds(pid, children=self.children)


def pid_file(path: Path) -> Callable[[], int | None]:
    """A pid read from the first line of `path` (None when absent)."""

    def read() -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    return read


def cpu_snapshot(watched: list[Watched]) -> dict[str, float]:
    """CPU seconds of each watched process now."""
    return {w.name: w.cpu() for w in watched}
