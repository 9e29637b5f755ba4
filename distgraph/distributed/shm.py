"""One shared-memory segment of the `shm` all-reduce: layout, barrier, fixed-order reduction, cleanup.

A segment serves one (group, tag, dtype, length) and lives as long as the group: rank 0 creates it on
the first call, the other ranks attach, and every later call reuses it (no allocation, no page faults,
no message through Ray). Layout, each region 64-byte aligned:

    [ world, current, offset of result 0 ][ seq: world × int64 ][ pid: world × int64 ][ vote: world × int64 ]
    [ marks: world × `marks` bytes ][ slot 0 | ... | slot n−1 ][ result 0 | ... ]

A segment may hold several result buffers (`buffers`): the sharded parameter store (zero.py) keeps the
parameters in two and alternates between them; the header's `current` says which one holds them.
It also gives each rank a row of `marks` flags, which the ranks AND together (`marked_by_all`): which
parameters no rank used this step.

One all-reduce = write own slot → barrier → reduce own 1/n chunk of the slots into `result`, adding
slot 0, 1, …, n−1 in that order (the fixed order makes results bit-identical run to run) → barrier →
read `result`. Two barriers per call are enough: a rank reaches the next call's first barrier only
after it has finished reading this call's result, so nobody overwrites a region a peer still reads.

The barrier is a sequence counter per rank in the segment: a rank bumps its own counter and polls
the others' (short spin, then 20 µs sleeps), so crossing it costs no round trip. Waiting is bounded:
a peer whose process has exited (its pid is in the segment) or that does not arrive within
`timeout_s` raises DistributedError, never a hang; so does a peer that gave up (`abort`: its step
raised, say on a NaN in its shard), within the liveness check's 0.2 s instead of the timeout. The
counters are plain int64 stores and loads: data written before a counter is bumped is visible to a
peer that sees the bump on x86 (stores are not reordered with stores, nor loads with loads); a weakly
ordered CPU would need fences here.

Cleanup (the mappings' side is shm_mappings.py): rank 0 owns the name. It unlinks it on `close()`, at interpreter exit (weakref.finalize)
and, if it is killed, through multiprocessing's resource tracker, which unlinks what a dead process
leaked. Attaching ranks unregister from their tracker so that their exit never removes a live segment;
a rank that gives up on a dead peer removes the name itself.
"""

import contextlib
import ctypes
import os
import sys
import threading
import time

import numpy as np

from distgraph.distributed.shm_mappings import (
    _ALIGN,
    _LIVENESS_EVERY_S,
    PREFIX,
    Mapping,
    _alive,
    _attach,
    _close_mapping,
    _overlaps,
    _own,
    _remove,
    sweep,
    view,
)
from distgraph.errors import DistributedError, PeerExitedError, PeerReturnedError

_SPINS = 200  # polls (~1 µs each) before the barrier starts sleeping: a peer on its own core usually arrives by then
_SLEEP_S = 20e-6
_PR_SET_TIMERSLACK = 29  # prctl option (linux/prctl.h), in nanoseconds
_BLOCK_BYTES = 256 * 1024  # sum and copy back per block that stays in L2
_this_thread = threading.local()


def sleep_while_waiting():
    """This thread's barriers sleep from the start, as `barrier(spin=False)`: for a background thread that
    reduces gradient buckets while the thread beside it computes (`buckets.GradBucketer`), whose busy poll
    would hold the GIL that thread needs back after each numpy call."""
    _this_thread.sleeps = True


def _precise_sleeps():
    """Let the barrier's sleeps end when asked. Linux lets a thread's sleep overshoot by its timer slack
    (50 µs by default): measured here, a 20 µs sleep took 101 µs, and 51 µs with a 1 µs slack — the
    latency a sleeping rank adds when its peer arrives. Set for the calling thread and inherited by the
    threads it starts later (the bucket reducer); elsewhere than Linux, nothing to do."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _aligned(nbytes):
    return -(-nbytes // _ALIGN) * _ALIGN


def chunk_bounds(count, world, rank):
    """[lo, hi) of rank's chunk when `count` elements are split over `world` ranks (sizes differ by ≤ 1)."""
    base, extra = divmod(count, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def segment_size(world, dtype, count, buffers=1, marks=0):
    return _layout(world, dtype, count, marks)[3] + buffers * _aligned(count * np.dtype(dtype).itemsize)


def _layout(world, dtype, count, marks=0):
    """(bytes per header region, slot stride in elements, offset of slot 0, offset of result buffer 0)."""
    itemsize = np.dtype(dtype).itemsize
    flags, stride = _aligned(world * 8), _aligned(count * itemsize) // itemsize
    base = _ALIGN + 3 * flags + _aligned(world * marks)
    return flags, stride, base, base + world * stride * itemsize


def read_result(name, world, dtype, count):
    """A copy of the current result buffer of segment `name`, or None when no such segment is on this machine.

    It reads /dev/shm/<name> as a file: an observer (the driver, between two calls of the group, when
    no rank writes) maps nothing and so needs no resource tracker, no rank and no barrier."""
    try:
        with open(f"/dev/shm/{name}", "rb") as f:
            _, current, result = np.fromfile(f, np.int64, 3).tolist()
            f.seek(result + current * _aligned(count * np.dtype(dtype).itemsize))
            return np.fromfile(f, dtype, count)
    except FileNotFoundError:
        return None


def segment_name(group, tag, dtype, count):
    """/dev/shm name of a segment; every distgraph segment starts with PREFIX (what `sweep` looks at)."""
    return f"{PREFIX}{group}.{tag}.{np.dtype(dtype).char}{count}"


class Segment:
    """The segment `name`, opened by `rank` of `world`, holding flat buffers of `count` × `dtype`: a slot
    per rank and `buffers` results, and `marks` flags per rank."""

    def __init__(self, name, rank, world, dtype, count, timeout_s, buffers=1, marks=0, watch=None):
        self.name, self.rank, self.world, self.timeout_s = name, rank, world, timeout_s
        self.watch = watch  # called at every liveness check of a wait: raises when the wait is known to be vain
        self.dtype, self.count = np.dtype(dtype), int(count)
        size = segment_size(world, self.dtype, self.count, buffers, marks)
        flags, stride, base, result = _layout(world, self.dtype, self.count, marks)
        if rank == 0:
            sweep()
            try:
                self.shm = Mapping(name=name, create=True, size=size)
            except FileExistsError:
                raise DistributedError(
                    f"shm all-reduce: segment /dev/shm/{name} already exists: another live group uses the name "
                    f"{name!r}, or a crashed run left it behind (remove it, or choose another group name)"
                ) from None
            self._finalizer = _own(self, name)
            view(self.shm.buf, (3,), np.int64, 0)[[0, 2]] = world, result  # read_result finds result 0
        else:
            self.shm = _attach(name, size, timeout_s, watch)
            self._finalizer = None
        buf = self.shm.buf
        self.pids = view(buf, (world,), np.int64, _ALIGN)
        self.seq_flags = view(buf, (world,), np.int64, _ALIGN + flags)
        self.votes = view(buf, (world,), np.int64, _ALIGN + 2 * flags)
        self.marks = view(buf, (world, marks), np.bool_, _ALIGN + 3 * flags)
        slots = view(buf, (world, stride), self.dtype, base)
        self.slots = slots[:, : self.count]
        nbytes = _aligned(self.count * self.dtype.itemsize)
        self.results = [view(buf, (self.count,), self.dtype, result + k * nbytes) for k in range(buffers)]
        self.result = self.results[0]
        self.current = view(buf, (1,), np.int64, 8)  # which result buffer is current (read_result)
        self.pids[rank] = os.getpid()
        _precise_sleeps()
        self.lo, self.hi = chunk_bounds(self.count, world, rank)
        self.seq = 0  # a new segment is zero-filled; a rank never resets a counter a peer may already have bumped
        self._small_calls = 0  # (allreduce_small: which half of the slot this call writes)
        self.gave_up = False

    @classmethod
    def attach_if_there(cls, name, rank, world, dtype, count, timeout_s):
        """The segment as `Segment(...)` opens it, or None where rank 0 has not created it yet: a rank that
        must not wait for it (call_board.py) looks again later."""
        if rank != 0 and not os.path.exists(f"/dev/shm/{name}"):
            return None
        return cls(name, rank, world, dtype, count, timeout_s)

    @property
    def slot(self):
        """This rank's slot: write the flat input here."""
        return self.slots[self.rank]

    def reduce(self, mean=False):
        """All-reduce of what every rank has written into its slot; the result is `self.result` (a view
        that stays valid until this rank's next call on the segment)."""
        self.barrier()
        lo, hi = self.lo, self.hi
        self._sum_into(self.result[lo:hi], [self.slots[r, lo:hi] for r in range(self.world)], mean)
        self.barrier()
        return self.result

    def allreduce(self, pieces, mean=False):
        """All-reduce of the caller's flat, contiguous, writable arrays `pieces` (together `count` long),
        in place. Only what peers need crosses the segment: this rank copies the parts of its data that
        other ranks reduce into its slot, reads its own chunk straight from `pieces`, publishes its reduced
        chunk and copies the others' chunks back — (n−1)/n of the data each way instead of all of it.
        The sum adds rank 0, 1, …, n−1 in order, exactly as `reduce`, so both give the same bits."""
        offsets = np.cumsum([0] + [p.size for p in pieces])
        outside = ((0, self.lo), (self.hi, self.count))
        slot = self.slot
        for lo, hi in outside:
            for i, a, b, f in _overlaps(offsets, lo, hi):
                np.copyto(slot[f : f + b - a], pieces[i][a:b])
        self.barrier()
        block = max(1, _BLOCK_BYTES // self.dtype.itemsize)
        for i, a, b, f in _overlaps(offsets, self.lo, self.hi):
            for start in range(a, b, block):  # block by block: the copy back reads the sum from cache
                stop = min(start + block, b)
                out = self.result[f + start - a : f + stop - a]
                own = pieces[i][start:stop]
                peers = [
                    own if r == self.rank else self.slots[r, f + start - a : f + stop - a] for r in range(self.world)
                ]
                self._sum_into(out, peers, mean)
                np.copyto(own, out)
        self.barrier()
        for lo, hi in outside:
            for i, a, b, f in _overlaps(offsets, lo, hi):
                np.copyto(pieces[i][a:b], self.result[f : f + b - a])
        return pieces

    def allreduce_small(self, pieces, mean=False):
        """`allreduce` with one barrier instead of two, for a few numbers (SyncBatchNorm's statistics, a
        barrier, a gather's sizes), where the barriers are the cost and not the bytes. The segment is twice
        the data: each call writes all of this rank's data into one half of its slot, alternating, and
        after the barrier every rank sums the whole in rank order itself (the same bits as `allreduce`). A
        rank writes a half again two calls later, after the next call's barrier, which no peer reaches
        before it has read this call's."""
        n = self.count // 2
        lo = n * (self._small_calls % 2)
        self._small_calls += 1
        offsets = np.cumsum([0] + [p.size for p in pieces])
        for p, a in zip(pieces, offsets):
            np.copyto(self.slot[lo + a : lo + a + p.size], p.reshape(-1))
        self.barrier()
        total = np.empty(n, self.dtype)
        self._sum_into(total, [self.slots[r, lo : lo + n] for r in range(self.world)], mean)
        for p, a in zip(pieces, offsets):
            np.copyto(p.reshape(-1), total[a : a + p.size])
        return pieces

    def all_gather(self, block, out):
        """Every rank's `block` — its chunk [lo, hi) of `count` — into `out` (count long) on every rank: each
        publishes its chunk in the shared result and reads the whole back, 1/n of the data in and all of it
        out, where an all-reduce of zero-padded blocks moves (n−1)/n each way and adds."""
        np.copyto(self.result[self.lo : self.hi], block)
        self.barrier()
        np.copyto(out, self.result)
        self.barrier()  # no rank publishes the next call's chunk before every rank has read this one
        return out

    def reduce_scatter(self, data, mean=False):
        """This rank's chunk [lo, hi) of the sum (mean) over the ranks of their `data` (count long), into
        data[lo:hi] in place, the rest of `data` left as it was: the all-reduce's first half, in rank order,
        so the same bits; (n−1)/n of the data crosses the segment, nothing comes back."""
        np.copyto(self.slot[: self.lo], data[: self.lo])
        np.copyto(self.slot[self.hi :], data[self.hi :])
        self.barrier()
        own = data[self.lo : self.hi]
        mine = own if self.rank < 2 else own.copy()  # a source after the first two is read after `own` is written
        self._sum_into(
            own, [mine if r == self.rank else self.slots[r, self.lo : self.hi] for r in range(self.world)], mean
        )
        self.barrier()  # no rank overwrites its slot (the next call) before every rank has read this one
        return own

    @staticmethod
    def _sum_into(out, sources, mean):
        """out = ((sources[0] + sources[1]) + sources[2]) + ... — always this order — then / n for a mean."""
        if len(sources) == 1:
            np.copyto(out, sources[0])
        else:
            np.add(sources[0], sources[1], out=out)
            for src in sources[2:]:
                out += src
        if mean:
            out /= len(sources)

    def any_rank(self, flag):
        """True on every rank when `flag` is true on any rank (one barrier; e.g. "my chunk overflowed")."""
        self.votes[self.rank] = int(bool(flag))
        self.barrier()
        return bool(self.votes.any())

    def mark(self, flags):
        """This rank's row of marks (bools, `marks` long); the peers read it after the next barrier."""
        self.marks[self.rank] = flags

    def marked_by_all(self):
        """Which marks every rank set before the last barrier (read before the barrier after it: a peer
        past that one may be writing its next row)."""
        return self.marks.all(axis=0)

    def abort(self):
        """Tell the peers that this rank will not reach another barrier (its step raised): its pid turns
        negative, and a peer waiting for it raises at its next liveness check instead of at the timeout."""
        if self.shm is not None:
            self.pids[self.rank] = -abs(int(self.pids[self.rank]))
        self.gave_up = True

    def barrier(self, spin=True):
        """Wait until every rank has reached this barrier. `spin=False` (a background thread) skips the
        busy poll, which would hold the GIL the computing thread needs, and sleeps from the start.

        A rank that gave up (`abort`, or a peer it waited for stopped, died or timed out) never bumps its
        counter again: a call already queued behind the failed one (the driver keeps two in flight) would
        otherwise meet its peer's barriers of other steps and sum gradients of different steps."""
        if self.gave_up:
            raise DistributedError(
                f"shm all-reduce on segment {self.name!r}: this rank gave up after a failed step; the group "
                "must be restarted"
            )
        self.seq += 1
        flags, seq = self.seq_flags, self.seq
        flags[self.rank] = seq
        for _ in range(_SPINS if spin and not getattr(_this_thread, "sleeps", False) else 0):
            if flags.min() >= seq:
                return
        start = last_check = time.monotonic()
        while flags.min() < seq:
            time.sleep(_SLEEP_S)
            now = time.monotonic()
            if now - last_check > _LIVENESS_EVERY_S:
                last_check = now
                if self.watch is not None:  # first: a peer that found the mismatch first has given up by now
                    try:
                        self.watch()
                    except PeerReturnedError:
                        if flags.min() >= seq:  # the peer reached this barrier before it returned: complete
                            return
                        self.abort()
                        raise
                    except Exception:
                        self.abort()  # the peers stop waiting for this rank at their next check
                        raise
                self._check_peers(seq, now - start)

    def _check_peers(self, seq, waited):
        late = [r for r in range(self.world) if self.seq_flags[r] < seq]
        gave_up = [r for r in late if self.pids[r] < 0]
        dead = [r for r in late if r not in gave_up and not _alive(int(self.pids[r]))]
        if gave_up or dead or waited > self.timeout_s:
            if gave_up:
                why = f"rank(s) {gave_up} stopped: their step raised (their error is the one to read)"
            elif dead:
                why = f"process of rank(s) {dead} has exited"
            else:
                why = (
                    f"waited {waited:.1f}s (timeout {self.timeout_s}s); a live rank that never arrives may be hung, "
                    "in another collective, or reducing a tensor of another size or dtype (segments are named by "
                    "dtype and element count): every rank must pass the same shapes"
                )
            self.gave_up = True
            _remove(self.name)  # the name, not the mapping: the model may still read parameters from it until close()
            error = PeerExitedError if dead and not gave_up else DistributedError
            raise error(f"shm all-reduce on segment {self.name!r}: rank(s) {late} did not reach barrier {seq}: {why}")

    def close(self, remove=False):
        """Unmap; the owner (rank 0), or any rank with remove=True, also removes the name. Idempotent."""
        if self.shm is None:
            return
        self.seq_flags = self.pids = self.votes = self.marks = self.slots = self.result = self.results = None
        self.current = None  # (every view of the mapping, or it cannot close: BufferError, kept lingering)
        if self._finalizer is not None:
            self._finalizer()  # runs once: remove the name and drop it from the resource tracker
        elif remove:
            _remove(self.name)
        _close_mapping(self.shm)
        self.shm = None
