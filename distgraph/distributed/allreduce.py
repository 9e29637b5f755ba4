"""The all-reduce layer: one interface, backends `shm` (numpy, this module), `gloo` and `nccl`.

`shm` is distgraph's own reduce-scatter + all-gather through one persistent POSIX shared-memory
segment per group and dtype, laid out as

    [ flags: world × int64 ][ slot 0 | slot 1 | ... | slot n−1 ][ result ]

A call costs three passes over the data and no round trip through Ray: each rank packs its arrays
into its slot (the copy a flat buffer needs anyway), waits at a barrier, reduces its 1/n chunk
across the slots in rank order 0, 1, …, n−1 (fixed order: bit-identical results run to run and
equal to `step.combine_gradients`), writes it to the result region, waits at a second barrier and
returns views of the result. The barriers are sequence numbers in the flags, polled in place
(no messages). A rank that does not arrive within `timeout_s` raises DistributedError, never hangs.

`gloo` and `nccl` go through `ray.util.collective` (gloo needs torch; nccl needs cupy and GPUs).
"""

import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from distgraph.errors import DistributedError

_FLAG_BYTES = 8


class _Segment:
    """One shared segment for flat buffers of `count` elements of `dtype`, opened by every rank."""

    def __init__(self, name, rank, world, dtype, count, timeout_s):
        self.rank, self.world, self.dtype, self.count = rank, world, np.dtype(dtype), count
        head = -(-world * _FLAG_BYTES // 64) * 64
        size = head + (world + 1) * count * self.dtype.itemsize
        if rank == 0:
            self.shm = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
        else:
            self.shm = _attach(name, size, timeout_s)
        buf = self.shm.buf
        self.flags = np.ndarray((world,), np.int64, buf, 0)
        self.slots = np.ndarray((world, count), self.dtype, buf, head)
        self.result = np.ndarray((count,), self.dtype, buf, head + world * count * self.dtype.itemsize)
        self.lo, self.hi = _chunk(count, world, rank)
        self.seq = 0
        self.timeout_s = timeout_s  # (a new segment is zero-filled: never reset flags a peer may already have set)

    def barrier(self):
        self.seq += 1
        self.flags[self.rank] = self.seq
        deadline = time.monotonic() + self.timeout_s
        spins = 0
        while int(self.flags.min()) < self.seq:
            spins += 1
            if spins > 200:
                time.sleep(20e-6)
                if time.monotonic() > deadline:
                    late = [r for r in range(self.world) if self.flags[r] < self.seq]
                    raise DistributedError(
                        f"shm all-reduce: rank(s) {late} did not reach barrier {self.seq} within {self.timeout_s}s "
                        "(a peer died or stalled)"
                    )

    def allreduce_sum(self, arrays):
        slot = self.slots[self.rank]
        offset = 0
        for a in arrays:
            slot[offset : offset + a.size] = a.reshape(-1)
            offset += a.size
        self.reduce_slots()
        views, offset = [], 0
        for a in arrays:
            views.append(self.result[offset : offset + a.size].reshape(a.shape))
            offset += a.size
        return views

    def reduce_slots(self):
        """Reduce what every rank has put in its slot; the sum is in `self.result` afterwards."""
        self.barrier()
        lo, hi = self.lo, self.hi
        out = self.result[lo:hi]
        if self.world == 1:
            out[:] = self.slots[0, lo:hi]
        else:
            np.add(self.slots[0, lo:hi], self.slots[1, lo:hi], out=out)
            for r in range(2, self.world):
                out += self.slots[r, lo:hi]
        self.barrier()
        return self.result

    def close(self):
        self.flags = self.slots = self.result = None
        try:
            self.shm.close()
            if self.rank == 0:
                self.shm.unlink()
        except (FileNotFoundError, BufferError):
            pass


def _attach(name, size, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"shm all-reduce: segment {name!r} was not created by rank 0 within {timeout_s}s"
                ) from None
            time.sleep(0.005)
            continue
        # rank 0 owns the segment's lifetime; without this the tracker of an attaching process unlinks it
        resource_tracker.unregister(shm._name, "shared_memory")
        if shm.size < size:
            shm.close()
            raise DistributedError(f"shm all-reduce: segment {name!r} is {shm.size} bytes, this rank needs {size}")
        return shm


def _chunk(n, world, rank):
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class ShmAllReduce:
    """All-reduce of numpy arrays between the ranks of one group on one node."""

    backend = "shm"

    def __init__(self, rank, world_size, group="distgraph", timeout_s=60.0):
        if not 0 <= rank < world_size:
            raise DistributedError(f"shm all-reduce: rank {rank} is outside a group of {world_size}")
        self.rank, self.world, self.group, self.timeout_s = rank, world_size, group, timeout_s
        self.segments = {}

    def _segment(self, dtype, count):
        key = (np.dtype(dtype).str, count)
        if key not in self.segments:
            name = f"{self.group}_{np.dtype(dtype).char}{count}"
            self.segments[key] = _Segment(name, self.rank, self.world, dtype, count, self.timeout_s)
        return self.segments[key]

    def buffer(self, dtype, count):
        """This rank's slot as a flat array: data written here is reduced by `allreduce_buffer` without
        the packing copy (the buffer-as-bucket layout DDP calls gradient_as_bucket_view)."""
        return self._segment(dtype, count).slots[self.rank]

    def allreduce_buffer(self, dtype, count):
        """Sum of every rank's `buffer(dtype, count)`; a view valid until the next call."""
        return self._segment(dtype, count).reduce_slots()

    def allreduce(self, arrays, op="sum"):
        """Reduce a list of arrays across ranks; returns arrays of the same shapes (valid until the next call)."""
        if op not in ("sum", "mean"):
            raise DistributedError(f"shm all-reduce: op must be 'sum' or 'mean', got {op!r}")
        single = isinstance(arrays, np.ndarray)
        arrays = [arrays] if single else list(arrays)
        out = [None] * len(arrays)
        by_dtype = {}
        for i, a in enumerate(arrays):
            by_dtype.setdefault(np.dtype(a.dtype).str, []).append(i)
        for idx in by_dtype.values():
            group = [np.asarray(arrays[i]) for i in idx]
            seg = self._segment(group[0].dtype, sum(a.size for a in group))
            for i, r in zip(idx, seg.allreduce_sum(group)):
                out[i] = r / self.world if op == "mean" else r
        return out[0] if single else out

    def close(self):
        for seg in self.segments.values():
            seg.close()
        self.segments = {}


class RayCollectiveAllReduce:
    """gloo (cpu, needs torch) or nccl (cupy on GPUs) through `ray.util.collective`."""

    def __init__(self, rank, world_size, backend, group="distgraph"):
        from ray.util import collective

        self.collective, self.backend, self.group = collective, backend, group
        collective.init_collective_group(world_size, rank, backend=backend, group_name=group)

    def allreduce(self, arrays, op="sum"):
        single = not isinstance(arrays, list | tuple)
        arrays = [arrays] if single else list(arrays)
        for a in arrays:
            self.collective.allreduce(a, group_name=self.group)
            if op == "mean":
                a /= self.collective.get_collective_group_size(self.group)
        return arrays[0] if single else arrays

    def close(self):
        self.collective.destroy_collective_group(self.group)


def make_allreduce(rank, world_size, backend="auto", group="distgraph", timeout_s=60.0, bucket_mb=None, device="cpu"):
    """The all-reduce for this worker: "auto" is nccl on cuda and shm on cpu."""
    if backend == "auto":
        backend = "nccl" if str(device).startswith("cuda") else "shm"
    if backend == "shm":
        return ShmAllReduce(rank, world_size, group, timeout_s)
    if backend in ("gloo", "nccl"):
        return RayCollectiveAllReduce(rank, world_size, backend, group)
    raise DistributedError(f"unknown all-reduce backend {backend!r} (choose auto, shm, gloo or nccl)")


class ReduceRank:
    """A minimal actor around one rank's all-reduce: what tests and `distgraph bench allreduce` run."""

    def __init__(self, rank, world, group, backend="shm", timeout_s=30.0):
        self.comm = make_allreduce(rank, world, backend, group, timeout_s)

    def reduce(self, arrays, op="sum"):
        return [np.array(a, copy=True) for a in self.comm.allreduce(arrays, op)]

    def time_reduce(self, nbytes, iters, dtype="float32", in_place=False):
        """Seconds per all-reduce of one `nbytes` buffer (median of `iters`), measured inside the rank.

        in_place: the data already lives in this rank's shared slot (no packing copy)."""
        count = nbytes // np.dtype(dtype).itemsize
        buf = np.ones(count, dtype)
        if in_place:
            self.comm.buffer(dtype, count)[:] = 1
            call = lambda: self.comm.allreduce_buffer(dtype, count)  # noqa: E731
        else:
            call = lambda: self.comm.allreduce([buf])  # noqa: E731
        call()  # warm-up: creates the segment and touches its pages
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def close(self):
        self.comm.close()
