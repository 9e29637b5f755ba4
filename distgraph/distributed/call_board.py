"""What each rank is reducing, posted where its peers can read it: ranks that call one collective with tensors
of other sizes or dtypes fail at once, naming every rank's call, instead of each waiting out its timeout.

The shm all-reduce names a segment by its dtype and element count, so two ranks reducing different shapes never
meet: each waits in a segment the other never opens, and before this each raised only at its timeout (120 s
in a launch) with a guess at the cause. torch's gloo and NCCL hang there too, unless TORCH_DISTRIBUTED_DEBUG
adds a round trip to every collective. Here every rank posts, before each reduction, what it is about to reduce
into a small segment of its group (its row of `SLOTS` records): the tag, the how-many-th call with that tag this
is, the kind of collective, the dtype and the element count — five stores, no round trip. A rank whose wait
outlasts a liveness check (`shm_mappings._LIVENESS_EVERY_S`) reads its peers' rows: a peer's record of the same call of
the same tag that differs is a mismatch, certain and not a guess, since the n-th call with a tag is the same
collective on every rank of a correct program.

Records are written by one thread each (a tag belongs to one thread: the loop's own, or the gradient bucket
thread's) into the row's slot of their tag's hash. A record that another tag overwrote only hides a mismatch
until the timeout, and a record read while its rank rewrites it (odd version: the seqlock below) is skipped, so
a mismatch is never invented. Rank 0 creates the board with its communicator; the others attach the first time
they look and find it.
"""

import threading
import zlib

import numpy as np

from distgraph.distributed.shm import Segment
from distgraph.errors import DistributedError, DTypeError, PeerReturnedError, ShapeError

SLOTS = 8  # records per rank: tags in flight at once (the loop's, a few buckets') rarely share one
FIELDS = 6  # version, tag hash, call number, kind, dtype char, element count
ROW = SLOTS * FIELDS + 1  # a rank's row: its records, then its state: 1 gave up (`give_up`), 2 returned (`finish`)
STATE = ROW - 1
GAVE_UP, RETURNED = 1, 2
_KINDS = ("all-reduce", "all-gather", "reduce-scatter")


class CallBoard:
    """This rank's view of its group's board, the segment `name` of `world` rows."""

    def __init__(self, name, rank, world, timeout_s):
        self.name, self.rank, self.world, self.timeout_s = name, rank, world, timeout_s
        self._segment = None
        self._calls, self._keys = {}, {}  # tag → calls posted so far, its hash
        self._records = {}  # slot → this rank's record there (a memoryview of the board: a store is ~50 ns)
        self._mine = threading.local()  # the call this thread is in (what its waits compare)
        if rank == 0:
            self._open()

    def _open(self):
        """The board's segment, or None while rank 0 has not made it (attaching never waits here)."""
        if self._segment is None:
            self._segment = Segment.attach_if_there(self.name, self.rank, self.world, np.int64, ROW, self.timeout_s)
        return self._segment

    def post(self, tag, kind, dtype, count):
        """Say, before waiting for the peers, that this rank now makes its next `kind` call with `tag` (~1 µs:
        SyncBatchNorm's small sums make dozens of calls a step)."""
        tag = str(tag)  # (the slot path knows a segment's tag as the string its key holds)
        n = self._calls[tag] = self._calls.get(tag, 0) + 1
        key = self._keys.get(tag)
        if key is None:
            key = self._keys[tag] = zlib.crc32(tag.encode())  # (Python's hash() differs between processes)
        mine = (key, n, _KINDS.index(kind), ord(np.dtype(dtype).char), count)
        self._mine.call = (tag, mine)
        record = self._records.get(key % SLOTS)
        if record is None:
            seg = self._open()
            if seg is None:
                return
            at = (key % SLOTS) * FIELDS
            record = self._records[key % SLOTS] = memoryview(seg.slots[self.rank, at : at + FIELDS])  # (int stores)
        version = record[0]
        record[0] = version + 1  # odd: being written
        record[1], record[2], record[3], record[4], record[5] = mine
        record[0] = version + 2

    def give_up(self):
        """This rank's step raised: say so on the board, which every rank opens with its first wait, so a peer
        waiting in a segment this rank never opened (its first bucket, its first gather) stops at its next
        liveness check instead of at the timeout (`check`)."""
        seg = self._open()
        if seg is not None:
            seg.slots[self.rank, STATE] = GAVE_UP

    def finish(self):
        """This rank's launched function returned: a peer still waiting in a collective for it stops at its next
        liveness check, naming its call, instead of waiting out its timeout with a guess (`check`)."""
        seg = self._open()
        if seg is not None and not seg.slots[self.rank, STATE]:
            seg.slots[self.rank, STATE] = RETURNED

    def check(self):
        """Raise DistributedError when a peer gave up (`give_up`), PeerReturnedError when one returned (`finish`);
        ShapeError (DTypeError where the dtypes differ) when a peer's record of the call this thread waits in
        differs from this rank's; otherwise nothing (no record yet, another call, a record in flux)."""
        tag, mine = getattr(self._mine, "call", (None, None))
        seg = self._open()
        if seg is None:
            return
        state = {r: int(seg.slots[r, STATE]) for r in range(self.world) if r != self.rank}
        gave_up = [r for r, s in state.items() if s == GAVE_UP]
        if gave_up:
            raise DistributedError(
                f"shm all-reduce: rank(s) {gave_up} stopped: their step raised (their error is the one to read)"
            )
        returned = [r for r, s in state.items() if s == RETURNED]
        if returned:  # (a barrier the peer reached before it returned is complete: Segment.barrier looks again)
            waits = f"its call {mine[1]} with tag {tag}, {_words(mine)}" if mine else "a collective"
            raise PeerReturnedError(
                f"shm all-reduce: rank(s) {returned} returned from the launched function while rank {self.rank} "
                f"waits in {waits}: every rank must make the same collectives, in the same order"
            )
        if mine is None:
            return
        at = (mine[0] % SLOTS) * FIELDS
        calls = {self.rank: mine}
        for r in range(self.world):
            if r != self.rank:
                record = seg.slots[r, at : at + FIELDS]
                before, theirs, after = int(record[0]), tuple(int(v) for v in record[1:]), int(record[0])
                if before == after and before > 0 and before % 2 == 0 and theirs[:2] == mine[:2]:
                    calls[r] = theirs
        if len({c[2:] for c in calls.values()}) > 1:
            said = ", ".join(f"rank {r}: {_words(calls[r])}" for r in sorted(calls))
            error = DTypeError if len({c[3] for c in calls.values()}) > 1 else ShapeError
            raise error(
                f"shm all-reduce: the ranks' call {mine[1]} with tag {tag} differs ({said}): every rank must "
                "make the same collectives with tensors of the same shapes and dtypes, in the same order"
            )

    def close(self):
        for record in self._records.values():
            record.release()  # (the mapping cannot close while a memoryview holds it)
        self._records = {}
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def _words(call):
    """'an all-reduce of 20 float32 elements'"""
    _, _, kind, dtype, count = call
    return f"{'an' if _KINDS[kind][0] == 'a' else 'a'} {_KINDS[kind]} of {count} {np.dtype(chr(dtype))} elements"
