"""The cyclic garbage collector of a worker process: young collections rare enough that a batch's objects
are gone before one looks at them.

CPython collects its youngest generation every 700 net allocations of
container objects, and moves what survives two collections to the oldest
generation. A worker's batch (2,000 raw records decoded, or a sink batch
parsed) holds tens of thousands of such objects for the milliseconds it
takes; each is seen by several young collections while the batch lives, and
most reach the oldest generation, where their number triggers a full
collection over everything the worker holds (parameters, liveness and
alarm state: 150 ms each at 10,000 devices). Measured in the saturated
pipeline worker (docs/performance.md, "The garbage collector"): 21 to 27% of its
CPU in the collector with Python's thresholds, under 1% with a young
threshold of 100,000.

The price is memory: garbage in reference cycles waits up to 100,000 net
allocations for its collection, a few megabytes at most. Objects freed by
their reference count (nearly all of them) go at once, as before.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "tune_collector"]

#: Net container allocations between two young collections (Python's own: 700): `F2_GC_YOUNG_THRESHOLD`'s default.
YOUNG_THRESHOLD: Final = 100_000
#: Young collections between two middle ones, middle ones between two full ones (Python's: 10, 10).
_MIDDLE: Final = 20
_OLD: Final = 10


def tune_collector(young: int) -> tuple[int, int, int]:
    """Collect the youngest generation every `young` net allocations (0: keep Python's thresholds).

    Returns the thresholds in force.
    """
    if young > 0:
        gc.set_threshold(young, _MIDDLE, _OLD)
    return gc.get_threshold()
