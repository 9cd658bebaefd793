"""Repairing history: re-decode raw data with the parameters in force now, and redrive dead letters.

* :mod:`.window` reads the operator's time window (pure).
* :mod:`.plan` compares what the current decode makes of a message with the
  rows it has, row by row (pure).
* :mod:`.rows` reads the rows of messages and applies the changes, in one
  transaction per batch, guarded by `param_version` (PostgreSQL I/O).
* :mod:`.source` reads a window of a Kafka topic without a consumer group,
  and finds where the live pipeline's durable frontier is (Kafka I/O).
* :mod:`.replay` and :mod:`.redrive` run the two commands; :mod:`.report`
  holds their tallies, progress line and metrics.
"""
