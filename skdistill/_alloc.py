"""Keep freed memory in the process: glibc's allocator tuned for large, short-lived tensors.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, so each large
activation of a step is first touched page by page: a minor page fault per 4 KiB, paid
again at every step. A ConvNet 128x3 on a 1,024-image batch allocates and frees hundreds of
megabytes per layer and per step; on the 2-core Xeon of the benchmarks three iterations of
such a fit took 211 s with the faults and 179 s without (``benchmarks/README.md``,
"Allocator"). Turning off mmap for ``malloc`` and raising the trim threshold makes freed
blocks stay in the heap, where the next step reuses them without faults. The arithmetic, and so every result, is unchanged;
the process keeps its peak memory until it exits instead of returning it to the system.

This changes the whole process, so the library never does it on its own: the command line
(``python -m skdistill``) and the benchmark scripts call :func:`retain_freed_memory` at
start. For your own scripts set ``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_=<a
large number>`` in the environment before Python starts (glibc reads them at start-up), or
preload jemalloc or tcmalloc.
"""

import ctypes
import ctypes.util
import sys

# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap goes back to the system only beyond this: the largest
# value mallopt takes (an int), 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1


def retain_freed_memory():
    """Make glibc's ``malloc`` keep freed blocks for reuse; returns whether it applied.

    Returns False, and changes nothing, where the C library is not glibc (macOS, Windows,
    musl): there the default allocator stays.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
