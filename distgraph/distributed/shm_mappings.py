"""The /dev/shm mappings behind the shm segments: made or attached, closed while arrays may still view them,
owned (rank 0 unlinks) or not, and the ones a killed group left behind found and removed (`sweep`).

Split from shm.py, whose Segment lays out and synchronises what lives in them; the async store (async_store.py)
keeps its own layout in the same kind of mapping.
"""

import _posixshmem
import contextlib
import os
import threading
import time
import weakref
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from distgraph.errors import DistributedError

PREFIX = "dg."
_ALIGN = 64
_LIVENESS_EVERY_S = 0.2
_ABANDONED_S = 60.0  # a segment with no rank's pid this long after it was made was left half made (`sweep`)


class Mapping(shared_memory.SharedMemory):
    """A SharedMemory whose finalizer leaves a mapping that arrays still view to the process's exit (the kernel
    unmaps it then), instead of printing "Exception ignored in SharedMemory.__del__ ... BufferError" from
    every worker a launch stops after a failed step."""

    def __del__(self):
        with contextlib.suppress(BufferError):
            super().__del__()


def view(buf, shape, dtype, offset):
    """An array of `shape` over the shared buffer `buf` at byte `offset` that holds the buffer exported, so
    the mapping cannot be unmapped under it. np.frombuffer holds it; np.ndarray(buffer=...) does not: with
    it, closing a segment while a view lived (a bucket thread still reducing when its launch closed the
    communicator) unmapped the memory, and the next touch was a SIGSEGV that killed the worker."""
    return np.frombuffer(buf, dtype, int(np.prod(shape, dtype=np.int64)), offset).reshape(shape)


_lingering = []  # mappings whose close met views still alive (BufferError): closed once those are gone
_lingering_lock = threading.Lock()  # ranks run as threads close at once: a mapping closed twice closed its fd twice


def _close_mapping(shm):
    """Close `shm`'s mapping now, or, while arrays still view it, as soon as a later close finds them gone
    (the memory stays valid for them meanwhile; the name is removed by the owner either way)."""
    with _lingering_lock:
        for m in [shm, *_lingering]:
            try:
                m.close()
            except BufferError:
                if m not in _lingering:
                    _lingering.append(m)
            else:
                if m in _lingering:
                    _lingering.remove(m)


def _overlaps(offsets, lo, hi):
    """(piece, start in piece, stop in piece, flat start) for each piece that overlaps flat [lo, hi);
    piece i covers flat [offsets[i], offsets[i + 1])."""
    for i in range(len(offsets) - 1):
        a, b = max(lo, int(offsets[i])), min(hi, int(offsets[i + 1]))
        if a < b:
            yield i, a - int(offsets[i]), b - int(offsets[i]), a


def _remove(name):
    """Unlink /dev/shm/<name> if it is still there (a peer may have done it already)."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


_owned = set()  # names this process created (rank 0's), until released


def _own(holder, name):
    """`holder` created segment `name`: it is removed when `holder` is closed or collected (`_release`)."""
    _owned.add(name)
    return weakref.finalize(holder, _release, name)


def _release(name):
    """The owner's cleanup: remove the name and tell the resource tracker it is gone (no leak warning)."""
    _owned.discard(name)
    _remove(name)
    resource_tracker.unregister("/" + name, "shared_memory")


def _alive(pid):
    if pid <= 0:
        return True  # not attached yet (a rank that gave up is told apart by the caller): only the timeout can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attach(name, size, timeout_s, watch=None):
    start = last_check = time.monotonic()
    deadline = start + timeout_s
    while True:
        try:
            shm = Mapping(name=name, create=False)
        except (FileNotFoundError, ValueError):  # ValueError: created, not yet sized ("cannot mmap an empty file")
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"shm all-reduce: segment {name!r} was not created by rank 0 within {timeout_s}s (its name "
                    "holds the dtype and element count this rank reduces: ranks calling the same collective "
                    "with tensors of other sizes or dtypes never meet — every rank must pass the same shapes)"
                ) from None
            if watch is not None and time.monotonic() - last_check > _LIVENESS_EVERY_S:
                last_check = time.monotonic()
                watch()
            time.sleep(0.002)
            continue
        # rank 0 owns the lifetime; without this, this process's tracker would unlink the segment at exit (a
        # rank in the owner's own process, a thread, leaves the owner's registration alone: `_release` ends it)
        if name not in _owned:
            resource_tracker.unregister(shm._name, "shared_memory")
        if shm.size == 0 and time.monotonic() <= deadline:
            # sized between our fstat and mmap (rank 0's shm_open, then ftruncate): look again
            shm.close()
            time.sleep(0.002)
            continue
        if shm.size < size:
            shm.close()
            raise DistributedError(f"shm all-reduce: segment {name!r} is {shm.size} bytes, this rank needs {size}")
        return shm


def leaked(group=""):
    """Names of distgraph segments of `group` (all groups: "") under /dev/shm."""
    try:
        return sorted(f for f in os.listdir("/dev/shm") if f.startswith(PREFIX + group))
    except FileNotFoundError:  # no /dev/shm (not Linux): nothing to list
        return []


def remove_group(group):
    """Remove every segment of `group` (its owners may have been killed before they could clean up)."""
    for name in leaked(group + "."):
        _remove(name)


def sweep():
    """Remove distgraph segments whose ranks have all exited (a group killed before it could clean up).

    Rank 0 runs this before it creates a segment, so what a SIGKILLed group left is gone by the next group's
    start. One being set up (no pid yet) is kept, unless so for `_ABANDONED_S` (its creator killed before it
    wrote the header: seen once in CI). Any rank's pid counts (an async store rank 0 left is a higher rank's)."""
    removed = []
    for name in leaked():
        try:  # read the header as a file: mapping it would involve this process's resource tracker
            with open(f"/dev/shm/{name}", "rb") as f:
                stat = os.fstat(f.fileno())
                world = int(np.frombuffer(f.read(8), np.int64)[0]) if stat.st_size >= 8 else 0
                f.seek(_ALIGN)
                pids = (
                    [abs(p) for p in np.frombuffer(f.read(8 * world), np.int64).tolist()] if 0 < world < 1 << 16 else []
                )  # a rank that gave up: −pid
        except (FileNotFoundError, PermissionError, ValueError):
            continue
        abandoned = not any(p > 0 for p in pids) and time.time() - stat.st_mtime > _ABANDONED_S
        if abandoned or (any(p > 0 for p in pids) and not any(_alive(p) for p in pids if p > 0)):
            _remove(name)
            removed.append(name)
    return removed
