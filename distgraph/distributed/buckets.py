"""Gradient buckets: reduce gradients while backward is still producing them.

Backward yields gradients roughly in reverse parameter order, so parameters are packed into flat
buckets (default 25 MB) walking the parameter list backwards, one dtype per bucket: the first bucket
holds the last parameters, which are ready first. The layout is a pure function of the parameters'
shapes, dtypes and the bucket size, so every rank computes the same one without talking.

`GradBucketer.ready(i, grad)` records a final gradient; when every member of a bucket has arrived,
the bucket's all-reduce (one collective over its gradients, in place) is handed to a background
thread (one per bucketer) while backward goes on. Buckets are launched strictly in bucket order (a
complete bucket waits for the ones before it), so every rank issues the same collectives in the same
order and no two ranks can wait on different buckets. `wait()` joins the reductions.

The bucket is not copied into a staging buffer first: the shm backend packs only the (n−1)/n of
the bucket that peers reduce and writes results straight back into the gradients, which moves less
memory than staging the whole bucket and unpacking it again (measured: this machine's all-reduce is
bound by memory bandwidth, see `distgraph bench allreduce`).
"""

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from distgraph.backend import namespace
from distgraph.distributed.shm import sleep_while_waiting
from distgraph.errors import DistributedError, ShapeError

DEFAULT_BUCKET_MB = 25


@dataclass
class Bucket:
    """Parameters `members` (indices, in the order they are packed) of one dtype and their flat offsets."""

    dtype: np.dtype
    members: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    count: int = 0

    @property
    def nbytes(self):
        return self.count * self.dtype.itemsize


def plan_buckets(specs, bucket_mb=DEFAULT_BUCKET_MB):
    """Buckets for parameters given as (shape, dtype) pairs in parameter order.

    Walks the parameters from last to first; a bucket is closed once it holds ≥ bucket_mb MB (a parameter
    larger than that joins the open bucket and closes it, as in torch's DDP). Buckets are numbered by the
    position of their first member."""
    cap = bucket_mb * 2**20
    buckets, open_by_dtype = [], {}
    for i in reversed(range(len(specs))):
        shape, dtype = specs[i]
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        b = open_by_dtype.get(dtype)
        if b is None:
            b = open_by_dtype[dtype] = Bucket(dtype)
            buckets.append(b)
        b.members.append(i)
        b.offsets.append(b.count)
        b.count += size
        if b.nbytes >= cap:
            del open_by_dtype[dtype]
    return buckets


class GradBucketer:
    """Collects gradients as they are produced and all-reduces each complete bucket in the background.

    One bucketer per worker and model; reusable step after step (`ready` … `ready`, `wait`). The
    gradient arrays are reduced in place, so a caller must not touch one between `ready` and `wait`."""

    def __init__(self, comm, params, bucket_mb=None, op="sum", name="grads", reduce=None):
        """params: the parameters' arrays (numpy or cupy) in parameter order;
        bucket_mb: None takes the communicator's `bucket_mb` (the Trainer's setting), else 25;
        reduce: `reduce(k, arrays) -> arrays` reduces bucket k (DDP's comm hooks), else the communicator's
        all-reduce with `op`."""
        self.comm, self.op, self.name = comm, op, name
        self.reduce = reduce or (lambda k, arrays: comm.allreduce(arrays, op, f"{name}{k}"))
        if bucket_mb is None:
            bucket_mb = getattr(comm, "bucket_mb", None) or DEFAULT_BUCKET_MB
        self.specs = [(tuple(p.shape), np.dtype(p.dtype)) for p in params]
        self.xp = namespace(params[0]) if params else np
        self.buckets = plan_buckets(self.specs, bucket_mb)
        self.bucket_of = {i: k for k, b in enumerate(self.buckets) for i in b.members}
        self.pool = ThreadPoolExecutor(1, f"dg-allreduce-{name}", initializer=sleep_while_waiting)
        self._reset()

    def _reset(self):
        self.grads = [None] * len(self.specs)
        self.missing = [len(b.members) for b in self.buckets]
        self.futures = [None] * len(self.buckets)
        self.next_launch = 0

    def ready(self, index, grad):
        """Gradient of parameter `index` is final: launch every bucket that is now complete."""
        if self.grads[index] is not None:
            raise DistributedError(f"GradBucketer {self.name!r}: gradient of parameter {index} was given twice")
        shape, dtype = self.specs[index]
        if tuple(grad.shape) != shape:
            raise ShapeError(f"GradBucketer {self.name!r}: parameter {index} has shape {shape}, gradient {grad.shape}")
        self.grads[index] = grad if grad.dtype == dtype else grad.astype(dtype)
        k = self.bucket_of[index]
        self.missing[k] -= 1
        self._launch_complete()

    def _launch_complete(self):
        while self.next_launch < len(self.buckets) and self.missing[self.next_launch] == 0:
            k = self.next_launch
            members = [self.grads[i] for i in self.buckets[k].members]
            self.futures[k] = self.pool.submit(self.reduce, k, members)
            self.next_launch += 1

    @property
    def launched(self):
        """How many buckets have been handed to the background thread this step."""
        return self.next_launch

    def wait(self, timeout_s=None):
        """Reduced gradients in parameter order: the arrays given to `ready`, reduced in place (fresh
        arrays for read-only ones). A parameter that got no gradient this step counts as zeros, so every
        rank still reduces every bucket and a rank with an unused parameter cannot stall the others."""
        for i, g in enumerate(self.grads):
            if g is None:
                shape, dtype = self.specs[i]
                self.grads[i] = self.xp.zeros(shape, dtype)
                self.missing[self.bucket_of[i]] -= 1
        self._launch_complete()
        out = [None] * len(self.specs)
        try:
            for k, b in enumerate(self.buckets):
                try:
                    reduced = self.futures[k].result(timeout=timeout_s)
                except FutureTimeout:
                    raise DistributedError(
                        f"GradBucketer {self.name!r}: bucket {k} ({b.nbytes / 2**20:.1f} MB) not reduced "
                        f"within {timeout_s}s"
                    ) from None
                for i, g in zip(b.members, reduced):
                    out[i] = g
        finally:
            self._reset()
        return out

    def close(self):
        """Stop the background thread (the communicator, which owns the segments, is closed by its owner)."""
        self.pool.shutdown(wait=True)
