"""The C allocator of a worker process: large blocks from the kernel and back, not from the heap.

glibc serves a block of `M_MMAP_THRESHOLD` (128 KiB) or more with its own
mmap and unmaps it on free. But each time such a block is freed it raises the
threshold to that block's size (up to 32 MiB): after the first 3 MiB MQTT
payload, every payload up to that size, and the copies paho makes of it, come
from the heap. Freed, they stay there, and the heap only shrinks from its
top: in the fuzz test the ingest worker held 16 to 24 MB of live data in a heap
of 147 to 177 MB after each round (`mallinfo2`), its RSS 196 to 226 MB, and
which of that came back depended on what happened to lie at the top.

Setting the threshold once pins it (glibc stops adjusting it), and with it
the trim threshold, which the same adjustment raises to twice as much: a
large block that the heap cannot serve from free space it already has is
mapped and unmapped again, the heap gives back its free top beyond 128 KiB,
and a worker's RSS after a burst of large messages returns to what it
holds. The price is a system call and fresh pages per large block, which
large messages are rare enough to afford.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

__all__ = ["MMAP_THRESHOLD_BYTES", "pin_mmap_threshold"]

logger = logging.getLogger(__name__)

#: glibc's own starting value (of both thresholds).
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
_M_TRIM_THRESHOLD: Final = -1  # malloc.h
_M_MMAP_THRESHOLD: Final = -3


def pin_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Map blocks of `threshold_bytes` and more, and trim the heap's free top beyond it, for good.

    Returns False where the C library has no mallopt (or refused).

    Raises:
        ValueError: `threshold_bytes` is not positive.
    """
    if threshold_bytes < 1:
        raise ValueError(f"threshold_bytes must be positive, not {threshold_bytes}")
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (nor musl, whose mallopt does nothing)
        logger.debug("No mallopt in this C library: the allocator keeps its own mmap threshold")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
