"""glibc's allocator set to keep freed array memory in the process, as a caching allocator does.

By default glibc hands a freed block above its (dynamic) mmap threshold back to the kernel and trims the
heap's top, so the next step's activation arrays of the same size fault their pages in again, each page
zeroed by the kernel. Which allocation order trips it is glibc's heuristics': the local Trainer's step on
`bench scaling`'s MLP (batch 512, 1 MB activations) took ~800–1,500 page faults a step, and ran at 49k
samples/s against 56k with the settings below (`python -c` loop in the note of the commit that added this
module); a Ray worker's step lost 3 of 17 ms to them. numpy has no allocator hook reachable from Python
(PyDataMem_SetHandler is C-only), so the fix is glibc's own `mallopt`.

A user's process gets bounded settings on `import distgraph` (this module's import applies them): blocks up to `USER["mmap"]` come from the heap
and up to `USER["trim"]` of free memory stays at its top (the rest is returned as before). A worker process,
distgraph's own, keeps all of it (`WORKER`). `DISTGRAPH_KEEP_FREED_MEMORY=0` leaves glibc as it is.
Elsewhere than glibc (macOS, musl's no-op mallopt) nothing changes.
"""

import contextlib
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
USER = {"mmap": 64 << 20, "trim": 256 << 20}
WORKER = {"mmap": 1 << 30, "trim": 2**31 - 1}
OPT_OUT = "DISTGRAPH_KEEP_FREED_MEMORY"


def keep_freed_memory(settings=USER):
    """Set glibc's mmap and trim thresholds in this process → whether both were taken (False off glibc, or
    where the environment variable `OPT_OUT` is "0")."""
    if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        taken = [mallopt(_M_MMAP_THRESHOLD, settings["mmap"]), mallopt(_M_TRIM_THRESHOLD, settings["trim"])]
        return all(t == 1 for t in taken)
    return False


keep_freed_memory()  # on import: `import distgraph` imports this module first
