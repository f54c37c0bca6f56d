"""Keep freed memory in the process: glibc's allocator tuned for large, short-lived tensors.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, so each large
activation of a step is first touched page by page: a minor page fault per 4 KiB, paid
again at every step. Turning off mmap for ``malloc`` and raising the trim threshold makes
freed blocks stay in the heap, where the next step reuses them without faults. The
arithmetic, and so every result, is unchanged. What it buys depends on the machine
(``benchmarks/allocator.py`` times fits both ways in one process; ``benchmarks/README.md``,
"Allocator"): on an Intel Xeon three iterations of a ConvNet 128x3 fit took 179 s against
211 s by default; on an AMD EPYC, Fashion-MNIST ConvNet 32x2 fits ran no faster with it
(0.94-1.04x in two side-by-side runs), though glibc still faulted in every large block
afresh.

So the library never changes the allocator on its own. For your own scripts set
``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_=<a large number>`` in the environment
before Python starts (glibc reads them at start-up), or preload jemalloc or tcmalloc; or
use one of the two scopes here:

- :func:`retain_freed_memory`: for the whole process, never undone. The command line
  (``python -m skdistill``) and the benchmark scripts call it at start.
- :func:`keep_freed_memory`, a context manager: the setting inside the block; on exit
  glibc's limits come back and the freed memory goes back to the system (``malloc_trim``),
  so the process holds its peak memory only meanwhile. Nested and concurrent uses share one
  application (the outermost exit restores).

Neither changes anything where the C library is not glibc (macOS, Windows, musl), nor where
the environment already tunes glibc's allocator (any of ``MALLOC_MMAP_MAX_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, or
``glibc.malloc`` in ``GLIBC_TUNABLES``): that choice is the user's.
"""

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading

# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# Free memory at the top of the heap goes back to the system only beyond this: the largest
# value mallopt takes (an int), 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1
# What a scope puts back (malloc/malloc.c): DEFAULT_MMAP_MAX, and the mmap and trim thresholds
# where glibc's dynamic threshold settles once a block of 32 MiB or more has been freed, as
# in any process with large tensors: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, twice that to trim.
# (A mallopt call turns the dynamic threshold off for good, so it is set to its end point.)
_DEFAULT_MMAP_MAX = 65536
_SETTLED_MMAP_THRESHOLD = 32 * 1024 * 1024
_SETTLED_TRIM_THRESHOLD = 2 * _SETTLED_MMAP_THRESHOLD
# environment variables through which a user tunes glibc's malloc (mallopt(3))
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                  "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_state = {"permanent": False, "depth": 0, "applied": False}


def _libc():
    """glibc's handle, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def user_tuned():
    """Whether the environment sets glibc's allocator; then skdistill leaves it alone."""
    return (any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


def _set(mmap_max, trim_threshold, mmap_threshold=None):
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_MAX, mmap_max)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if mmap_threshold is not None:
        ok = ok and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    return ok


def retain_freed_memory():
    """Make glibc's ``malloc`` keep freed blocks for reuse, for the rest of the process.

    Returns whether it applied: False, and nothing changed, where the C library is not glibc
    or where the environment tunes glibc's allocator already.
    """
    with _lock:
        if user_tuned():
            return False
        applied = _set(0, _TRIM_THRESHOLD)
        _state["permanent"] = _state["permanent"] or applied
        return applied


@contextlib.contextmanager
def keep_freed_memory():
    """Keep freed memory for reuse inside the block; glibc's limits again after it.

    Yields whether the setting is in force (False where :func:`retain_freed_memory` does not
    apply). On the outermost exit glibc's limits come back as its dynamic threshold leaves
    them in a process with large tensors (blocks of 32 MiB or more mapped afresh, freed
    memory beyond 64 MiB at the heap's top returned) and the freed memory goes back to the
    system, unless :func:`retain_freed_memory` made the setting permanent meanwhile.
    """
    with _lock:
        if _state["depth"] == 0:
            _state["applied"] = (not _state["permanent"] and not user_tuned()
                                 and _set(0, _TRIM_THRESHOLD))
        _state["depth"] += 1
        in_force = _state["applied"] or _state["permanent"]
    try:
        yield in_force
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["applied"]:
                _state["applied"] = False
                if not _state["permanent"]:
                    _set(_DEFAULT_MMAP_MAX, _SETTLED_TRIM_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
                    _libc().malloc_trim(0)
