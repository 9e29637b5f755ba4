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

Collectives as the user called them (`post_collective`: the torch API's all_reduce, barrier, broadcast, ...)
get records of their own, a ring of two per rank: the call's number, which collective, which reduce op. A
barrier or a broadcast is an all-reduce inside, and SUM and AVG reduce alike, so the records above cannot tell
`dist.barrier()` from `dist.all_reduce(one_element)`, nor SUM from AVG: those completed, each rank with its own
reading of the result. After its collective returns, each rank compares its record with its peers' record of
the same call (`verify_collective`: a peer overwrites that slot only two calls later, which needs this rank):
every rank raises, naming every rank's call. A rank waiting in one (an all_reduce with op MAX gathers, a SUM
reduces: they wait in different segments) compares them at its liveness checks, so it raises at once instead
of at its timeout.

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
USER = SLOTS * FIELDS  # then the user's collectives' ring: (version, call number, collective, op, 0, 0) × 2
ROW = USER + 2 * FIELDS + 1  # a rank's row: its records, then its state: 1 gave up (`give_up`), 2 returned (`finish`)
STATE = ROW - 1
GAVE_UP, RETURNED = 1, 2
_KINDS = ("all-reduce", "all-gather", "reduce-scatter")
_OPS = (None, "sum", "mean", "max", "min", "product", "band", "bor", "bxor")  # a collective's reduce op, by code


class CallBoard:
    """This rank's view of its group's board, the segment `name` of `world` rows."""

    def __init__(self, name, rank, world, timeout_s):
        self.name, self.rank, self.world, self.timeout_s = name, rank, world, timeout_s
        self._segment = None
        self._calls, self._keys = {}, {}  # tag → calls posted so far, its hash
        self._records = {}  # slot → this rank's record there (a memoryview of the board: a store is ~50 ns)
        self._mine = threading.local()  # the call this thread is in (what its waits compare)
        self._collectives = 0  # the user's collectives posted so far (`post_collective`)
        self._collective = None  # (call number, collective code, op code, the names) of the latest
        self._ring_views = None  # every rank's collective records (`_rings`)
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

    def post_collective(self, name, names, op=None):
        """Say that this rank now runs its next collective as the user called it: `name`, one of `names` (the
        API's collectives, the same list on every rank), with reduce op `op` (None where it takes none)."""
        n = self._collectives = self._collectives + 1
        code = _OPS.index(op) if op in _OPS else len(_OPS) + zlib.crc32(str(op).encode())
        self._collective = n, names.index(name), code, names
        rings = self._rings()
        if rings is None:
            return
        record = rings[self.rank][n % 2]
        version = record[0]
        record[0] = version + 1  # odd: being written
        record[1], record[2], record[3] = self._collective[:3]
        record[0] = version + 2

    def verify_collective(self):
        """Raise DistributedError when a peer's record of this rank's latest collective (`post_collective`) names
        another collective or reduce op; nothing where they agree or a peer's record is not there yet."""
        if self._collective is None:
            return
        n, kind, op, names = self._collective
        rings = self._rings()
        if rings is None:
            return
        for r, ring in enumerate(rings):  # the common case first, allocating nothing: every posted record agrees
            record = ring[n % 2]
            if r != self.rank and record[1] == n and (record[2] != kind or record[3] != op):
                break
        else:
            return
        calls = {self.rank: (kind, op)}
        for r, ring in enumerate(rings):
            if r != self.rank:
                record = ring[n % 2]
                before, theirs, after = record[0], (record[1], record[2], record[3]), record[0]
                if before == after and before > 0 and before % 2 == 0 and theirs[0] == n:
                    calls[r] = theirs[1:]
        if len(calls) > 1 and len(set(calls.values())) > 1:

            def words(kind, op):
                return names[kind] + ("" if not op else f"(op={_OPS[op] if op < len(_OPS) else 'another'})")

            said = ", ".join(f"rank {r}: {words(*calls[r])}" for r in sorted(calls))
            raise DistributedError(
                f"the ranks' collective call {n} differs ({said}): every rank must make the same collectives, with "
                "the same reduce op, in the same order"
            )

    def _rings(self):
        """Every rank's two collective records (memoryviews of the board: a load or store is ~50 ns, where numpy's
        indexing costs µs), or None while the board is not there."""
        if self._ring_views is None:
            seg = self._open()
            if seg is None:
                return None
            self._ring_views = [
                [memoryview(seg.slots[r, USER + k * FIELDS : USER + (k + 1) * FIELDS]) for k in range(2)]
                for r in range(self.world)
            ]
        return self._ring_views

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
        self.verify_collective()  # (a rank waiting in another collective than its peer's: different segments)
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
        for record in [*self._records.values(), *(v for ring in self._ring_views or () for v in ring)]:
            record.release()  # (the mapping cannot close while a memoryview holds it)
        self._records, self._ring_views = {}, None
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def _words(call):
    """'an all-reduce of 20 float32 elements'"""
    _, _, kind, dtype, count = call
    return f"{'an' if _KINDS[kind][0] == 'a' else 'a'} {_KINDS[kind]} of {count} {np.dtype(chr(dtype))} elements"
