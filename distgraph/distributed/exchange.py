"""How the ranks of the sharded parameter store (zero.py) meet: one node's segment, or a gloo group.

Each rank writes its gradient into `slot` and its model reads the parameters from one of `results`;
`reduce_range(lo, hi, chunk, spin, own, flags)` sums the flat gradient's [lo, hi) over the ranks (one call
per bucket), and `chunk` (this rank's [self.lo, self.hi)) receives its part of it; `flags` marks the
step's last bucket, which the flags of `mark` ride on. `copies_own` says
whether the rank's own chunk must be in its slot too; where it need not, `own(a, b)` hands the
rank's gradient for flat [a, b) of its chunk straight from backward's arrays.

`SegmentExchange` (one node, `shared`): `slot` and the two `results` live in the shm all-reduce's
segment; a reduction is a barrier and a sum of this rank's chunk over the peers' slots and its own
gradient (ranks 0, 1, …, n−1) — only what the peers read is copied into the slot (half for 2 ranks);
each rank writes its updated chunk into the result buffer the model does not read now, and
`publish(current)` (a barrier) makes that buffer every rank's — they all read one memory — and records
it in the segment for an observer (`read_result`). `any_rank` lets them agree on skipping a step, and
`mark(flags)` then `marked_by_all()` on which parameters no rank used (their flags ride on the last
bucket's barrier: no extra meeting).

Why two buffers: a rank updating its chunk in place writes cache lines its peer read a moment ago
(backward reads most weights again), and each write first takes the line back from the peer's core.
Measured on the workers of `distgraph bench scaling` (2 workers, MLP 256-512-512-10, SGD): in place,
rank 1's update of its piece of the 512×512 weight (194 k values) took 0.49 ms inside the step, 0.05
ms when repeated alone, and reading the piece first took 0.04 ms — the writes were the cost; rank 0,
whose chunk is mostly the first layer's weight (read only in forward), took 0.17 ms for its chunk,
so every step waited for rank 1. Into the other buffer, last read a step ago: 0.07 ms for that piece,
and the whole update (copy included) 0.13–0.33 ms on both ranks. The price is one more copy of the
parameters per node (not per worker), in the segment.

`CollectiveExchange` (gloo, any number of nodes, not `shared`): `slot` and its one result buffer are
this process's own arrays and a reduction is a gloo all-reduce of the bucket — gloo has no
reduce-scatter (Ray's emulates one with an all-reduce per rank) — so every rank ends up with the
whole reduced gradient, the same bits on every rank (for more than two ranks gloo's ring adds in
another order than rank order). The store then updates every parameter on every rank (zero.py,
`replicated`), as DDP does, instead of its chunk followed by an exchange of the chunks: measured in
`distgraph bench scaling` (2 workers), 0.20–0.26 ms a step against 1.6–2.3 ms for chunk updates
broadcast from each rank. Its flags (`mark`) lie just before the slot in one array and ride on the
all-reduce of the step's last bucket (the one at the slot's start): no call of their own. (They rode on
every bucket starting at flat 0 — after a zero-size first parameter, two — one of them reduced during
backward, before this step's `mark`, in the background thread.)
"""

import numpy as np

from distgraph.distributed.shm import Segment, chunk_bounds, segment_name
from distgraph.errors import DistributedError


class SegmentExchange:
    shared = True  # `results` are one memory for all ranks
    copies_own = False  # the peers never read this rank's own chunk of its slot

    def __init__(self, group, rank, world, dtype, count, timeout_s, marks=0):
        name = segment_name(group, "zero", dtype, count)
        self.segment = Segment(name, rank, world, dtype, count, timeout_s, 1 if world == 1 else 2, marks)
        self.slot, self.results = self.segment.slot, self.segment.results
        self.lo, self.hi = self.segment.lo, self.segment.hi
        self.world, self.name, self.timeout_s = world, self.segment.name, timeout_s

    def reduce_range(self, lo, hi, chunk, spin, own, flags=False):
        """`own(a, b)`: (flat start, 1-D array) pieces of this rank's gradient covering [a, b); the flags
        live in the segment and are read after the last barrier (`flags` is not needed)."""
        seg = self.segment
        seg.barrier(spin=spin)
        for f, mine in own(max(lo, self.lo), min(hi, self.hi)):
            n, out = mine.size, chunk[f - self.lo : f - self.lo + mine.size]
            seg._sum_into(out, [mine if r == seg.rank else seg.slots[r, f : f + n] for r in range(self.world)], False)

    def publish(self, current):
        """Wait until every rank has written its chunk of result buffer `current`, the parameters from now on."""
        self.segment.barrier()
        self.segment.current[0] = current

    def any_rank(self, flag):
        return self.segment.any_rank(flag)

    def mark(self, flags):
        """This rank's flags (bools), before the barrier of the step's last `reduce_range`."""
        self.segment.mark(flags)

    def marked_by_all(self):
        """The flags every rank set; call after the last `reduce_range`, before `publish`."""
        return self.segment.marked_by_all()

    def barrier(self):
        self.segment.barrier()

    def abort(self):
        """This rank's step raised: the peers waiting for it raise too, at once (`Segment.abort`)."""
        self.segment.abort()

    def close(self):
        self.slot = self.results = None
        self.segment.close()


class CollectiveExchange:
    shared = False  # every rank holds its own parameters and the whole reduced gradient: it updates all of it
    copies_own = True  # gloo reduces the whole slot

    def __init__(self, comm, rank, world, dtype, count, timeout_s, marks=0):
        self.collective, self.group = comm.collective, comm.group
        self.name, self.timeout_s, self.rank = f"gloo group {comm.group!r}", timeout_s, rank
        self.head = world + marks  # the flags before the slot, summed over the ranks with the bucket at its start
        flags_and_slot = np.zeros(self.head + count, dtype)
        # 1 at a rank whose step raised (`void`); 1 where this rank did not set the flag (`mark`)
        self.void_flags, self.unmarked = flags_and_slot[:world], flags_and_slot[world : self.head]
        self.slot = flags_and_slot[self.head :]
        self.results = [np.empty(count, dtype)]  # one buffer, updated in place
        self.gave_up = False
        self.lo, self.hi = chunk_bounds(count, world, rank)  # the chunk this rank reports (state_chunk)

    def reduce_range(self, lo, hi, chunk=None, spin=True, own=None, flags=False):
        """The bucket [lo, hi) of `slot` summed over the ranks, in place: the store reads the whole
        reduced gradient from `slot` (`chunk` and `own` are not needed). With `flags` (the step's last
        bucket, at the slot's start) the flags before it go along."""
        self._refuse_after_abort()
        head = self.head
        self.collective.allreduce(self.slot.base[0 if flags else head + lo : head + hi], group_name=self.group)

    def barrier(self):
        self._refuse_after_abort()
        self.collective.barrier(group_name=self.group)

    def _refuse_after_abort(self):
        """After `abort`, no collective again: a call queued behind the failed one would pair its
        all-reduce with the peer's still waiting one, of another step."""
        if self.gave_up:
            raise DistributedError(f"{self.name}: this rank gave up after a failed step; the group must be restarted")

    def mark(self, flags):
        """This rank's flags, before the reduction of the bucket at the slot's start (and no void mark:
        the last reduction left the sum there)."""
        self.unmarked[:] = ~np.asarray(flags, bool)
        self.void_flags[:] = 0

    def marked_by_all(self):
        """After that reduction: a flag every rank set has summed to zero."""
        return self.unmarked == 0

    def void(self):
        """This rank's step raised: it joins the rest of the step's reductions (gloo cannot wake a peer
        waiting in one) with this flag set, and after the last one every rank sees the step is void."""
        self.void_flags[:] = 0
        self.void_flags[self.rank] = 1

    def voided_by(self):
        """After the step's last reduction: the ranks that marked it void (none: [])."""
        return [int(r) for r in np.flatnonzero(self.void_flags)]

    def publish(self, current):
        """Every rank has its own parameters in its one buffer: meeting the others is all there is to it."""
        self.barrier()

    def abort(self):
        """This rank stops taking part (after joining a void step's last reductions: `void`)."""
        self.gave_up = True

    def close(self):
        self.slot = self.results = None  # the group itself is the worker's communicator's, closed with it
