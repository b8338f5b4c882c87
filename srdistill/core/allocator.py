"""The C allocator's settings for a process that churns through image-sized arrays (a build's shard worker).

glibc's malloc hands blocks over its mmap threshold (128 KiB, raised by itself only as far as the largest mmapped
block freed so far) to fresh mmaps, and returns the top of its heap to the kernel once more than twice that is
free. A worker degrading 512x512 crops frees several 3 MiB float32 images at once after every op, so each next
op's arrays are fresh pages again: 768 page faults per image-sized array, 5-8% of a build's CPU on 512x512
crops (bench/bench_build.py's A/B line). Fixed thresholds keep the freed memory for the next image instead, at
the cost of up to `TRIM_THRESHOLD` of freed heap held by the process. Only glibc has these knobs; elsewhere
nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for it on 64-bit: the largest arrays of a 512x512 build fit below
TRIM_THRESHOLD = 128 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Serve arrays up to 32 MiB from the heap and keep up to 128 MiB of it freed; True where this took effect
    (glibc), once per process."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                         TRIM_THRESHOLD))
