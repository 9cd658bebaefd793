"""Runs a faust worker for the benchmark: `python -m bench.worker pipeline|ingest --web-port N [options]`.

The same as `faust -A f2stream worker` / `faust -A f2stream.ingest worker`,
under a command line of its own: other test runs on a shared machine stop
their workers by pattern (`pkill -f "f2stream worker"`), which must not
stop the benchmark's.
"""

from __future__ import annotations

import sys

from faust.cli.faust import cli

_APPS = {"pipeline": "f2stream", "ingest": "f2stream.ingest"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in _APPS:
        raise SystemExit("usage: python -m bench.worker pipeline|ingest [faust worker options]")
    sys.argv = ["faust", "-A", _APPS[sys.argv[1]], "worker", *sys.argv[2:]]
    cli()
