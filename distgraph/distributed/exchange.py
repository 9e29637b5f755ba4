"""How the ranks of the sharded parameter store (zero.py) meet: one node's segment, or a gloo group.

Each rank writes its gradient into `slot` and its model reads the parameters from `result`;
`reduce_range(lo, hi, chunk, spin)` sums the flat gradient's [lo, hi) over the ranks (one call per
bucket), and `chunk` (this rank's [self.lo, self.hi)) receives its part of it.

`SegmentExchange` (one node, `shared`): `slot` and `result` live in the shm all-reduce's segment; a
reduction is a barrier and a sum of this rank's chunk over every slot (ranks 0, 1, …, n−1); each rank
updates its chunk of `result` and `publish()` (a barrier) makes the update every rank's, since `result`
is one memory they all read. `any_rank` lets them agree on skipping a step.

`CollectiveExchange` (gloo, any number of nodes, not `shared`): `slot` and `result` are this process's
own arrays and a reduction is a gloo all-reduce of the bucket — gloo has no reduce-scatter (Ray's
emulates one with an all-reduce per rank) — so every rank ends up with the whole reduced gradient, the
same bits on every rank (for more than two ranks gloo's ring adds in another order than rank order).
The store then updates every parameter on every rank (zero.py, `replicated`), as DDP does, instead of
its chunk followed by an exchange of the chunks: measured in `distgraph bench scaling` (2 workers),
0.20–0.26 ms a step against 1.6–2.3 ms for chunk updates broadcast from each rank.
"""

import numpy as np

from distgraph.distributed.shm import Segment, chunk_bounds, segment_name


class SegmentExchange:
    shared = True  # `result` is one memory for all ranks

    def __init__(self, group, rank, world, dtype, count, timeout_s):
        self.segment = Segment(segment_name(group, "zero", dtype, count), rank, world, dtype, count, timeout_s)
        self.slot, self.result = self.segment.slot, self.segment.result
        self.lo, self.hi = self.segment.lo, self.segment.hi
        self.world, self.name, self.timeout_s = world, self.segment.name, timeout_s

    def reduce_range(self, lo, hi, chunk, spin=True):
        seg = self.segment
        seg.barrier(spin=spin)
        a, b = max(lo, self.lo), min(hi, self.hi)
        if a < b:
            seg._sum_into(chunk[a - self.lo : b - self.lo], [seg.slots[r, a:b] for r in range(self.world)], False)

    def publish(self):
        self.segment.barrier()

    def any_rank(self, flag):
        return self.segment.any_rank(flag)

    def barrier(self):
        self.segment.barrier()

    def close(self):
        self.slot = self.result = None
        self.segment.close()


class CollectiveExchange:
    shared = False  # every rank holds its own `result` and the whole reduced gradient: it updates all of it

    def __init__(self, comm, rank, world, dtype, count, timeout_s):
        self.collective, self.group = comm.collective, comm.group
        self.name, self.timeout_s = f"gloo group {comm.group!r}", timeout_s
        self.slot, self.result = np.empty(count, dtype), np.empty(count, dtype)
        self.lo, self.hi = chunk_bounds(count, world, rank)  # the chunk this rank reports (state_chunk)

    def reduce_range(self, lo, hi, chunk=None, spin=True):
        """The bucket [lo, hi) of `slot` summed over the ranks, in place: the store reads the whole
        reduced gradient from `slot` (`chunk` is not needed)."""
        self.collective.allreduce(self.slot[lo:hi], group_name=self.group)

    def barrier(self):
        self.collective.barrier(group_name=self.group)

    def close(self):
        self.slot = self.result = None  # the group itself is the worker's communicator's, closed with it
