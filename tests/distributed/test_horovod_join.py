"""hvd.join() (horovod_join.py): ranks with fewer batches join early and serve the others' all-reduces with
zeros, the average staying over every rank (Horovod's); allgather / broadcast / alltoall / reducescatter
refused while a rank has joined; join() → the last rank to join. Alone, and on 3 real Ray ranks."""

import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.horovod as hvd
from distgraph.distributed.horovod_join import decide
from distgraph.errors import DistributedError


@pytest.fixture(autouse=True)
def _fresh():
    hvd.shutdown()
    yield
    hvd.shutdown()


# ---- the decision every rank takes from the same requests ------------------------------------------------------
def test_decide_serves_the_working_ranks_allreduce_and_refuses_what_horovod_refuses():
    allreduce = {"what": "allreduce", "args": (), "kwargs": {}, "differentiable": False}
    assert decide([allreduce, None, allreduce]) == ("run", allreduce)
    assert decide([None, {"what": "allgather", "refused": "allgather"}]) == (
        "refuse", "allgather: Allgather is not supported with Join at this time. (rank(s) [0] have joined)",
    )  # fmt: skip
    for kind, words in (("broadcast", "Broadcast"), ("alltoall", "Alltoall"), ("reducescatter", "Reducescatter")):
        action, message = decide([{"what": f"{kind}_op", "refused": kind}, None, None])
        assert action == "refuse" and message == f"{kind}_op: {words} is not supported with Join at this time. (rank(s) [1, 2] have joined)"  # fmt: skip
    action, message = decide([None, {**allreduce, "differentiable": True}])
    assert action == "refuse" and message.startswith("allreduce: a differentiable allreduce is not supported with Join")
    action, message = decide([allreduce, None, {"what": "allgather", "refused": "allgather"}])
    assert action == "refuse" and "rank 0: allreduce, rank 2: allgather" in message and "rank(s) [1]" in message


def test_join_alone_returns_this_rank_at_once():
    hvd.init()
    assert hvd.join() == 0 and hvd.join(device=0) == 0
    assert hvd.allreduce(dg.tensor(np.array([3.0])), op=hvd.Sum).tolist() == [3.0]  # (no rounds alone)


# ---- on 3 ranks -----------------------------------------------------------------------------------------------
BATCHES = [5, 3, 4]  # rank 1 joins after 3 steps, rank 2 after 4, rank 0 (last) after 5


def _error(fn):
    try:
        fn()
    except DistributedError as exc:
        return str(exc)
    return None


def _uneven(r):
    """Each step: Sum and Average of (r + 1) * (step + 1) and a DistributedOptimizer step on that gradient;
    where ranks have joined, the refused ops' errors. Then join()."""
    w = dg.zeros(2, requires_grad=True)
    opt = hvd.DistributedOptimizer(dg.optim.SGD([w], lr=1.0))
    steps, refusals = [], {}
    for step in range(BATCHES[r]):
        x = dg.tensor(np.full(2, (r + 1) * (step + 1), np.float32))
        opt.zero_grad()
        w.grad = dg.tensor(x.numpy().copy())  # (synchronize averages it in place)
        opt.step()
        summed, averaged = hvd.allreduce(x, op=hvd.Sum), hvd.allreduce(x)
        h = hvd.grouped_allreduce_async([x, x * 2], op=hvd.Sum)
        steps.append((summed.tolist(), averaged.tolist(), w.grad.tolist(), [t.tolist() for t in hvd.synchronize(h)]))
        if step == 3 and r != 1:  # rank 1 has joined: ranks 0 and 2 both try the ops Horovod refuses
            refusals["reducescatter"] = _error(lambda: hvd.reducescatter(dg.tensor(np.arange(4.0))))
            refusals["allgather_object"] = _error(lambda: hvd.allgather_object(r))
            refusals["mixed"] = _error(lambda: hvd.allreduce(x) if r == 0 else hvd.allgather(x))
        if step == 4:  # rank 0 alone works
            refusals["broadcast"] = _error(lambda: hvd.broadcast(x, root_rank=0))
            refusals["alltoall"] = _error(lambda: hvd.alltoall(x))
            refusals["differentiable"] = _error(lambda: hvd.allreduce(dg.ones(2, requires_grad=True)))
    return steps, refusals, hvd.join()


def _on_each_rank():
    hvd.init()
    r = hvd.rank()
    out = {"uneven": _uneven(r)}
    out["after"] = hvd.allgather(dg.tensor(np.array([float(r)]))).tolist()  # everyone working again: served
    for _ in range(2):  # equal data: all join in one round → the highest rank
        hvd.allreduce(dg.tensor(np.ones(1)))
    out["equal"] = hvd.join()
    for _ in range([0, 3, 1][r]):  # rank 1 has the most
        hvd.barrier()
    out["rank 1 last"] = hvd.join()
    return out


@pytest.fixture(scope="module")
def three_ranks(ray_session):
    return dist.launch(_on_each_rank, workers=3, cpus_per_worker=0.5, timeout_s=60)


@pytest.mark.ray
def test_joined_ranks_add_zeros_and_the_average_divides_by_every_rank(three_ranks):
    for r, got in enumerate(three_ranks):
        steps, _, _ = got["uneven"]
        assert len(steps) == BATCHES[r]
        for step, (summed, averaged, grad, grouped) in enumerate(steps):
            working = [q for q in range(3) if step < BATCHES[q]]
            total = sum((q + 1) * (step + 1) for q in working)  # the joined ranks' zeros add nothing
            assert summed == [total] * 2 and grouped == [[total] * 2, [2 * total] * 2]
            assert averaged == pytest.approx([total / 3] * 2)  # Horovod's: over the set's size, not the working ranks
            assert grad == pytest.approx([total / 3] * 2)  # DistributedOptimizer's average alike


@pytest.mark.ray
def test_join_returns_the_last_rank_to_join_on_every_rank(three_ranks):
    assert [got["uneven"][2] for got in three_ranks] == [0, 0, 0]
    assert [got["equal"] for got in three_ranks] == [2, 2, 2]  # one round: the highest, as Horovod's coordinator
    assert [got["rank 1 last"] for got in three_ranks] == [1, 1, 1]
    assert all(got["after"] == [0.0, 1.0, 2.0] for got in three_ranks)  # after join, every op again


@pytest.mark.ray
def test_ops_horovod_refuses_with_joined_ranks_raise_its_words_on_every_working_rank(three_ranks):
    for r in (0, 2):
        refusals = three_ranks[r]["uneven"][1]
        assert refusals["reducescatter"] == "reducescatter: Reducescatter is not supported with Join at this time. (rank(s) [1] have joined)"  # fmt: skip
        assert refusals["allgather_object"] == "allgather_object: Allgather is not supported with Join at this time. (rank(s) [1] have joined)"  # fmt: skip
        assert refusals["mixed"] == "join: the working ranks run different collectives (rank 0: allreduce, rank 2: allgather) while rank(s) [1] have joined"  # fmt: skip
    refusals = three_ranks[0]["uneven"][1]
    assert refusals["broadcast"] == "broadcast: Broadcast is not supported with Join at this time. (rank(s) [1, 2] have joined)"  # fmt: skip
    assert refusals["alltoall"] == "alltoall: Alltoall is not supported with Join at this time. (rank(s) [1, 2] have joined)"  # fmt: skip
    assert refusals["differentiable"].startswith("allreduce: a differentiable allreduce is not supported with Join")
    assert three_ranks[1]["uneven"][1] == {}


def _joins_while_rank_0_never_comes():
    hvd.init()
    if hvd.rank() == 0:
        time.sleep(8)  # neither a collective nor join(): rank 1 waits out the launch's timeout
        return None
    return hvd.join()


@pytest.mark.ray
def test_a_joined_rank_waiting_for_a_peer_that_never_comes_times_out_naming_join(ray_session):
    with pytest.raises(DistributedError, match=r"join \(rank 1 joined; waiting for the other ranks' next collective or join\(\)\)"):  # fmt: skip
        dist.launch(_joins_while_rank_0_never_comes, workers=2, cpus_per_worker=0.5, timeout_s=3)
