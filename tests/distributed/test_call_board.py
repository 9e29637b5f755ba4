"""The call board (distributed/call_board.py): ranks reducing tensors of other shapes or dtypes fail within a
liveness check, naming each rank's call; ranks making the same calls never see an error, whatever the sizes,
paths and tags; a record read while its rank rewrites it is skipped. Two ranks as threads of this process."""

import threading
import time
import uuid

import numpy as np
import pytest

from distgraph.distributed.allreduce import ShmAllReduce
from distgraph.distributed.call_board import FIELDS, SLOTS
from distgraph.distributed.shm_mappings import leaked
from distgraph.errors import DTypeError, ShapeError


def _ranks(calls, timeout_s=30.0):
    """Run `calls(comm)` on ranks 0 and 1 (threads) → ({rank: result}, {rank: error}, seconds)."""
    group = f"dgcb{uuid.uuid4().hex[:8]}"
    comms = [ShmAllReduce(r, 2, group, timeout_s=timeout_s) for r in range(2)]
    results, errors = {}, {}

    def run(r):
        try:
            results[r] = calls(comms[r])
        except Exception as exc:  # noqa: BLE001  (each rank's error is what the test reads)
            errors[r] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 10)
    elapsed = time.monotonic() - started
    for c in comms:
        c.close()
    assert leaked(group) == []  # the board goes with the group's segments
    return results, errors, elapsed


def test_ranks_making_the_same_calls_reduce_as_always():
    def calls(comm):
        out = []
        for size in (3, 5000, 3, 7, 5000):  # the one-barrier path and the two-barrier one, alternating
            out.append(comm.allreduce([np.full(size, comm.rank + 1.0, np.float32)])[0].sum())
            out.append(comm.allreduce([np.ones(2, np.float64)], tag="other")[0].sum())
        out.append(comm.all_gather(np.full(2, comm.rank, np.int64)).tolist())
        return out

    results, errors, _ = _ranks(calls)
    assert errors == {}
    assert results[0] == results[1]
    assert results[0][:4] == [9.0, 4.0, 15000.0, 4.0] and results[0][-1] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "mine, error, said",
    [
        (lambda r: np.ones(3 + r, np.float32), ShapeError, "rank 0: an all-reduce of 3 float32 elements, rank 1: an all-reduce of 4 float32"),
        (lambda r: np.ones(3, [np.float32, np.int64][r]), DTypeError, "rank 0: an all-reduce of 3 float32 elements, rank 1: an all-reduce of 3 int64"),
    ],
)  # fmt: skip
def test_ranks_reducing_other_tensors_both_fail_at_once_naming_both_calls(mine, error, said):
    def calls(comm):
        comm.allreduce([np.ones(4, np.float32)])  # alike
        comm.allreduce([mine(comm.rank)])

    _, errors, elapsed = _ranks(calls, timeout_s=30.0)
    assert set(errors) == {0, 1}
    for e in errors.values():
        assert isinstance(e, error) and f"the ranks' call 2 with tag 0 differs ({said}" in str(e)
    assert elapsed < 10  # a liveness check or two, not the 30 s timeout


def test_one_rank_gathering_while_the_other_reduces_is_named():
    def calls(comm):
        if comm.rank == 0:
            comm.all_gather(np.ones(3, np.float32))
        else:
            comm.allreduce([np.ones(6, np.float32)])

    _, errors, elapsed = _ranks(calls, timeout_s=30.0)
    assert "rank 0: an all-gather of 3 float32 elements, rank 1: an all-reduce of 6 float32" in str(errors[0])
    assert elapsed < 10


def test_a_record_being_rewritten_is_not_read():
    group = f"dgcb{uuid.uuid4().hex[:8]}"
    comms = [ShmAllReduce(r, 2, group, timeout_s=5.0) for r in range(2)]
    try:
        for c, size in zip(comms, (3, 4)):
            c.board.post(0, "all-reduce", np.float32, size)
        row = comms[1].board._open().slots[1]
        record = next(row[i * FIELDS : (i + 1) * FIELDS] for i in range(SLOTS) if row[i * FIELDS])
        record[0] += 1  # odd: rank 1 is in the middle of writing it
        comms[0].board.check()  # nothing to conclude from a record in flux
        record[0] += 1
        with pytest.raises(ShapeError, match="rank 1: an all-reduce of 4 float32 elements"):
            comms[0].board.check()
    finally:
        for c in comms:
            c.close()


@pytest.mark.parametrize("failing", [0, 1])  # the segment's creator; a rank that would attach to it
def test_a_rank_that_gave_up_before_opening_a_segment_stops_its_peer_within_a_liveness_check(failing):
    """A rank whose first step raised before any reduction (a NaN in its shard) had no segment to mark: its peer
    waited in a new segment for the whole timeout (rank 0 at its barrier; another rank for rank 0 to create it)
    and then blamed the shapes. The board every rank opens says it now."""

    def calls(comm):
        if comm.rank == failing:
            comm.abort()  # what a failed step does (worker._one_step)
            raise RuntimeError("this rank's step raised")
        return comm.allreduce([np.ones(4, np.float32)], tag="grads0")

    results, errors, elapsed = _ranks(calls, timeout_s=20.0)
    peer = 1 - failing
    assert "stopped: their step raised" in str(errors[peer]) and elapsed < 10, (errors, elapsed)


def test_a_rank_that_gave_up_opens_no_segment_again():
    group = f"dgcb{uuid.uuid4().hex[:8]}"
    comm = ShmAllReduce(0, 2, group, timeout_s=5.0)
    comm.abort()
    with pytest.raises(Exception, match="gave up after a failed step"):
        comm.allreduce([np.ones(3)])
    comm.close()
    assert leaked(group) == []
