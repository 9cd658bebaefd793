"""f2stream.allocator: pinning glibc's mmap threshold, seen in fresh processes."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from f2stream.allocator import pin_mmap_threshold

# Two 4 MiB blocks, one after the other freed: is each mapped? glibc flags a mapped
# chunk in its size field (IS_MMAPPED, bit 2), just before the block.
_PROBE = """
import ctypes, sys
from f2stream.allocator import pin_mmap_threshold
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
mapped = []
for _ in range(2):
    block = libc.malloc(4 * 1024 * 1024)
    mapped.append(bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2))
    libc.free(block)
print(mapped)
"""


def probe(mode: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_a_large_block_is_mapped_even_after_a_large_one_was_freed() -> None:
    assert probe("leave") == "[True, False]"  # glibc's own way: the free raised the threshold, the heap grew
    assert probe("pin") == "[True, True]"


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        pin_mmap_threshold(0)
