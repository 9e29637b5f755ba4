"""The all-reduce layer: one interface, three backends, chosen by `make_allreduce`.

Every backend is a communicator created inside each Ray actor of a group (rank, world size, group
name) with the same two calls:

    comm.allreduce(arrays, op="sum" | "mean") -> arrays   # a list of arrays, or one (flat) array
    comm.close()                                           # destroy the group's resources

Results are written back into the caller's arrays (as torch.distributed and ray.util.collective
do), except read-only ones (arrays that came out of Ray's object store), which get a fresh result.
Arrays of several dtypes are reduced per dtype; the arrays of one dtype are packed into one flat
buffer so a call costs one collective per dtype, not one per array.

- `shm`  (numpy): distgraph's own reduce-scatter + all-gather through a persistent shared-memory
  segment per group (`shm.py`). `buffer(dtype, count)` hands out this rank's slot of the segment:
  data written there is reduced without the packing copy (DDP's gradient_as_bucket_view), and
  `allreduce(slot)` returns the reduced flat buffer. Sums in fixed rank order: bit-identical runs.
- `gloo` (numpy, needs torch): `ray.util.collective`, which Ray 2.60 implements on
  torch.distributed's gloo process groups (pygloo is no longer used).
- `nccl` (cupy on GPUs): `ray.util.collective` with NCCL through cupy.
"""

import os
import time

import numpy as np

from distgraph.backend import address, namespace, writeable
from distgraph.distributed import wire
from distgraph.distributed.call_board import ROW, CallBoard
from distgraph.distributed.shm import Segment, segment_name
from distgraph.errors import DistributedError, DTypeError

BACKENDS = ("auto", "shm", "gloo", "nccl")
SMALL_COUNT = 4096  # elements up to which shm reduces with one barrier (`Segment.allreduce_small`)
OPS = ("sum", "mean")


def _check_op(backend, op, dtype):
    if op not in OPS:
        raise DistributedError(f"{backend} all-reduce: op must be 'sum' or 'mean', got {op!r}")
    if op == "mean" and not np.issubdtype(np.dtype(dtype), np.inexact):
        raise DTypeError(f"{backend} all-reduce: op='mean' needs a floating dtype, got {np.dtype(dtype)}")


def _by_dtype(arrays):
    """{dtype: [index, ...]} in first-appearance order (deterministic for a given argument list)."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(np.dtype(a.dtype), []).append(i)
    return groups


def _write_back(arrays, idx, flat):
    """Copy the reduced flat buffer into the arrays at `idx` (fresh arrays for read-only ones)."""
    offset = 0
    for i in idx:
        a = arrays[i]
        part = flat[offset : offset + a.size].reshape(a.shape)
        offset += a.size
        if writeable(a):
            a[...] = part
        else:
            arrays[i] = part.copy()


class ShmAllReduce:
    """All-reduce of numpy arrays between the ranks of one group on one node, through shared memory."""

    backend = "shm"

    def __init__(self, rank, world_size, group="distgraph", timeout_s=60.0, bucket_mb=25):
        if not 0 <= rank < world_size:
            raise DistributedError(f"shm all-reduce: rank {rank} is outside a group of {world_size}")
        self.rank, self.world_size, self.group = rank, world_size, group
        self.timeout_s, self.bucket_mb = timeout_s, bucket_mb
        self.segments, self.aborted = {}, False
        self.board = None  # what each rank reduces, so that ranks reducing different shapes fail at once
        if world_size > 1:
            name = segment_name(group, "board", np.int64, ROW)
            self.board = CallBoard(name, rank, world_size, timeout_s)

    def _segment(self, dtype, count, tag):
        dtype = np.dtype(dtype)
        key = (str(tag), dtype, int(count))
        seg = self.segments.get(key)
        if seg is None or seg.shm is None:
            if self.aborted:  # (a call queued behind the failed one would meet its peers' other steps)
                raise DistributedError(
                    f"shm all-reduce: rank {self.rank} gave up after a failed step; the group must be restarted"
                )
            name = segment_name(self.group, tag, dtype, count)
            watch = None if self.board is None else self.board.check
            seg = self.segments[key] = Segment(
                name, self.rank, self.world_size, dtype, count, self.timeout_s, watch=watch
            )
        return seg

    def _post(self, tag, kind, dtype, count):
        """Tell the peers which call this rank now waits in (call_board.py), before it waits."""
        if self.board is not None:
            self.board.post(tag, kind, dtype, count)

    def buffer(self, dtype, count, tag=0):
        """This rank's flat slot for (dtype, count, tag): write data here, then `allreduce(slot)`.

        Distinct tags get distinct segments, so buffers of equal size (buckets) can be in flight together."""
        return self._segment(dtype, count, tag).slot

    def allreduce(self, arrays, op="sum", tag=0):
        """Reduce across ranks. A list/tuple of arrays is reduced in place and returned as a list; one array
        is reduced in place and returned; this rank's `buffer(...)` slot returns the reduced flat view (valid
        until this rank's next call with the same tag)."""
        if isinstance(arrays, np.ndarray):
            slot_tag, slot_seg = self._owning_segment(arrays)
            if slot_seg is not None:
                _check_op("shm", op, arrays.dtype)
                self._post(slot_tag, "all-reduce", arrays.dtype, arrays.size)
                return slot_seg.reduce(mean=op == "mean")
            return self.allreduce([arrays], op, tag)[0]
        arrays = list(arrays)
        for dtype, idx in _by_dtype(arrays).items():
            _check_op("shm", op, dtype)
            pieces = []
            for i in idx:
                a = arrays[i]
                if not (a.flags.c_contiguous and writeable(a)):
                    a = arrays[i] = np.array(a, order="C")  # a fresh result for read-only / strided inputs
                pieces.append(a.reshape(-1))
            count = sum(p.size for p in pieces)
            self._post(tag, "all-reduce", dtype, count)
            if count <= SMALL_COUNT:  # a few numbers: one barrier, not two (measured 2–3× faster at 33 floats)
                self._segment(dtype, 2 * count, f"{tag}.small").allreduce_small(pieces, mean=op == "mean")
            else:
                self._segment(dtype, count, tag).allreduce(pieces, mean=op == "mean")
        return arrays

    def all_gather(self, block, tag=0):
        """→ every rank's equal-sized flat `block`, concatenated in rank order (a new array)."""
        count = block.size * self.world_size
        out = np.empty(count, block.dtype)
        self._post(tag, "all-gather", block.dtype, block.size)
        return self._segment(block.dtype, count, f"{tag}.gather").all_gather(block.reshape(-1), out)

    def reduce_scatter(self, data, op="sum", tag=0):
        """→ this rank's block (1/world of the flat, contiguous, writable `data`) of the sum or mean of every
        rank's `data`: a view of `data`, overwritten there."""
        _check_op("shm", op, data.dtype)
        self._post(tag, "reduce-scatter", data.dtype, data.size)
        return self._segment(data.dtype, data.size, f"{tag}.scatter").reduce_scatter(data, mean=op == "mean")

    def _owning_segment(self, array):
        """(tag, segment) of the segment whose slot of this rank *is* `array` (same memory, same length), else
        (None, None)."""
        ptr = address(array)
        for (tag, _, _), seg in list(self.segments.items()):  # (a snapshot: a bucket thread may open one meanwhile)
            if seg.shm is not None and array.ndim == 1 and array.size == seg.count:
                if ptr == address(seg.slot):
                    return tag, seg
        return None, None

    def abort(self):
        """This rank's step raised: peers waiting for it in any segment raise at once (`Segment.abort`), and in
        one it never opened at their next look at the board (`CallBoard.give_up`); it opens no segment again."""
        self.aborted = True
        for seg in list(self.segments.values()):  # (a snapshot: a bucket thread may open one meanwhile)
            seg.abort()
        if self.board is not None:
            self.board.give_up()

    def finish(self):
        """This rank's launched function returned: peers waiting for it in a collective raise at their next look
        at the board (`CallBoard.finish`), not at their timeout."""
        if self.board is not None:
            self.board.finish()

    def close(self):
        """Destroy the group's segments (every rank may call it; unlinking is idempotent)."""
        for seg in list(self.segments.values()):  # (a snapshot: a bucket thread may open one meanwhile)
            seg.close()
        self.segments = {}
        if self.board is not None:
            self.board.close()


def gloo_available():
    """Whether `ray.util.collective` can run gloo here (on torch.distributed). Asked, not imported up front:
    importing ray.util.collective imports torch, a second and more of every worker process's start (every
    launch's rank paid it before any collective ran)."""
    from ray.util import collective

    return collective.gloo_available()


class CollectiveAllReduce:
    """gloo (numpy, needs torch) or nccl (cupy) through `ray.util.collective`, one group per name."""

    def __init__(self, rank, world_size, backend, group="distgraph", timeout_s=60.0, bucket_mb=25):
        from ray.util import collective

        if backend == "gloo" and not gloo_available():
            raise DistributedError("gloo all-reduce needs torch (ray.util.collective runs gloo on torch.distributed)")
        if backend == "nccl" and not collective.nccl_available():
            raise DistributedError("nccl all-reduce needs cupy with NCCL and a CUDA GPU")
        self.collective, self.backend, self.group = collective, backend, group
        self.rank, self.world_size, self.bucket_mb = rank, world_size, bucket_mb
        kwargs = {"gloo_timeout": int(timeout_s * 1000)} if backend == "gloo" else {}
        collective.init_collective_group(world_size, rank, backend=backend, group_name=group, **kwargs)

    def allreduce(self, arrays, op="sum", tag=0):
        """Same contract as `ShmAllReduce.allreduce`, but `tag` is accepted for interchangeability and unused: a
        group's collectives pair up across ranks in the order each rank issues them, so two threads reducing
        concurrently (DDP's buckets, SyncBatchNorm's sums) need a group each (sync_group.py)."""
        single = not isinstance(arrays, list | tuple)
        arrays = [arrays] if single else list(arrays)
        for dtype, idx in _by_dtype(arrays).items():
            _check_op(self.backend, op, dtype)
            xp = namespace(arrays[idx[0]])
            first = arrays[idx[0]]
            in_place = len(idx) == 1 and first.flags.c_contiguous and writeable(first)
            flat = first.reshape(-1) if in_place else xp.concatenate([arrays[i].reshape(-1) for i in idx])
            carried, finish = wire.for_reduction(self.backend, flat)
            self.collective.allreduce(carried, group_name=self.group)
            finish()
            if op == "mean":
                flat /= self.world_size
            if not in_place:
                _write_back(arrays, idx, flat)
        return arrays[0] if single else arrays

    def all_gather(self, block, tag=0):
        """`ShmAllReduce.all_gather`'s contract, as an all-reduce of zero-padded blocks (exact: each element
        is one rank's plus zeros)."""
        k = block.size
        full = namespace(block).zeros(k * self.world_size, dtype=block.dtype)
        full[self.rank * k : (self.rank + 1) * k] = block.reshape(-1)
        return self.allreduce(full, "sum", tag)

    def reduce_scatter(self, data, op="sum", tag=0):
        """`ShmAllReduce.reduce_scatter`'s contract, through the all-reduce."""
        k = data.size // self.world_size
        return self.allreduce(data, op, tag)[self.rank * k : (self.rank + 1) * k]

    def abort(self):
        """Nothing to tell: a peer blocked in a collective waits out its timeout (gloo's `timeout_s`)."""

    def finish(self):
        """Nothing to tell (as `abort`)."""

    def close(self):
        self.collective.destroy_collective_group(self.group)


class Alone:
    """A group of one rank on a collective backend: every call's result is its input, and no gloo or NCCL group is
    made (NCCL's start takes seconds and a library that may not load, for a group that never communicates)."""

    def __init__(self, backend, bucket_mb=25):
        self.backend, self.rank, self.world_size, self.bucket_mb = backend, 0, 1, bucket_mb

    def allreduce(self, arrays, op="sum", tag=0):
        for a in arrays if isinstance(arrays, list | tuple) else [arrays]:
            _check_op(self.backend, op, a.dtype)
        return list(arrays) if isinstance(arrays, list | tuple) else arrays

    def all_gather(self, block, tag=0):
        return block.reshape(-1).copy()

    def reduce_scatter(self, data, op="sum", tag=0):
        _check_op(self.backend, op, data.dtype)
        return data

    def abort(self):
        """Nothing waits on this rank."""

    def finish(self):
        """Nothing waits on this rank."""

    def close(self):
        """Nothing to destroy."""


def make_allreduce(
    rank, world_size, backend="auto", group="distgraph", timeout_s=60.0, device="cpu", bucket_mb=25, array=None
):
    """The communicator for this rank: "auto" is nccl for cupy arrays (or a cuda device), shm for numpy.

    `array`, when given, decides "auto" by its type; otherwise `device` does. `bucket_mb` is the bucket
    size a `GradBucketer` built on this communicator uses by default."""
    if backend not in BACKENDS:
        raise DistributedError(f"unknown all-reduce backend {backend!r} (choose one of {', '.join(BACKENDS)})")
    if backend == "auto":
        on_gpu = namespace(array) is not np if array is not None else str(device).startswith("cuda")
        backend = "nccl" if on_gpu else "shm"
    if backend == "shm":
        return ShmAllReduce(rank, world_size, group, timeout_s, bucket_mb)
    if world_size == 1:
        return Alone(backend, bucket_mb)
    return CollectiveAllReduce(rank, world_size, backend, group, timeout_s, bucket_mb)


class ReduceRank:
    """One rank of a group, to run as a Ray actor: what the tests and `distgraph bench allreduce` drive."""

    def __init__(self, rank, world_size, group, backend="shm", timeout_s=60.0):
        self.comm = make_allreduce(rank, world_size, backend, group, timeout_s)

    def reduce(self, arrays, op="sum"):
        """Copies of the reduced arrays (results may be views into the segment)."""
        return [np.array(a) for a in self.comm.allreduce([np.array(a) for a in arrays], op)]

    def halves(self, data, op="sum"):
        """The all-reduce's two halves on flat `data` (world × k long) → (this rank's block of the reduction,
        every rank's block of its `data` gathered)."""
        k = data.size // self.comm.world_size
        gathered = self.comm.all_gather(data[self.comm.rank * k : (self.comm.rank + 1) * k].copy())
        return self.comm.reduce_scatter(data.copy(), op).copy(), gathered

    def reduce_slot(self, data):
        """Reduce `data` through this rank's slot (the zero-copy buffer path)."""
        slot = self.comm.buffer(data.dtype, data.size, tag="slot")
        slot[:] = data
        return np.array(self.comm.allreduce(slot))

    def time_reduce(self, nbytes, iters, in_place=False, dtype="float32"):
        """Median seconds of `iters` all-reduces of one `nbytes` buffer, timed inside this rank.

        in_place: the buffer is this rank's slot of the segment (no packing copy, no copy back)."""
        count = nbytes // np.dtype(dtype).itemsize
        if in_place:
            buf = self.comm.buffer(dtype, count, tag="timed")
            buf[:] = 1
        else:
            buf = np.ones(count, dtype)
        self.comm.allreduce(buf)  # warm-up: creates the segment and maps its pages
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            self.comm.allreduce(buf)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def pid(self):
        return os.getpid()

    def close(self):
        self.comm.close()
