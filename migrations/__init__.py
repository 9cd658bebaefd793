"""Versioned SQL for the two databases, applied by `faust -A f2stream migrate`.

Each file is `NNN_name.sql` under `params/` or `timeseries/`. Header lines
steer the runner:

* `-- f2stream: requires timescaledb`: applied only where the extension is
  available (and applied later if it becomes available).
* `-- f2stream: no-transaction`: run statement by statement outside a
  transaction (TimescaleDB continuous aggregates need this); statements end
  with `;` at the end of a line.
"""
