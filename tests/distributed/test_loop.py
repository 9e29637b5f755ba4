"""A training loop of one's own across Ray workers (Horovod's way): `dg.distributed.launch` and, inside,
all_reduce / broadcast / DistributedOptimizer / broadcast_parameters — on a real local Ray."""

import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.errors import ConfigError, DistributedError, DTypeError, ShapeError

pytestmark = pytest.mark.ray
SIZES, STEPS, BATCH, LR = (6, 16, 3), 20, 32, 0.1


def _collectives():
    r, n = dist.rank(), dist.world_size()
    a = dg.tensor(np.arange(4, dtype=np.float32) + 10 * r)
    b = dg.tensor(np.full((2, 3), r + 1.0, dtype=np.float64))
    dist.all_reduce([a, b])
    m = dg.tensor(np.array([2.0 * r], dtype=np.float32))
    dist.all_reduce(m, op="mean")
    c = dg.tensor(np.array([r + 100], dtype=np.int64))
    dist.broadcast(c, src=1)
    dist.barrier()
    return r, n, a.numpy().tolist(), b.numpy().tolist(), m.item(), c.item()


def test_collectives_reduce_and_broadcast_in_place_on_every_rank(ray_session):
    out = dist.launch(_collectives, workers=2, cpus_per_worker=0.5, timeout_s=60)
    for r, (rank, world, a, b, m, c) in enumerate(out):
        assert (rank, world) == (r, 2)
        assert a == [10.0, 12.0, 14.0, 16.0] and b == [[3.0] * 3] * 2
        assert m == 1.0 and c == 101


def _model(seed):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.Tanh(), nn.Linear(SIZES[1], SIZES[2]))


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, SIZES[0])).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _train_own_loop(x, y):
    """The loop a user writes: a different seed per rank, rank 0's parameters broadcast, each rank on its
    half of every global batch, gradients averaged by the wrapped optimizer."""
    r, n = dist.rank(), dist.world_size()
    model = _model(seed=r)
    dist.broadcast_parameters(model)
    opt = dist.DistributedOptimizer(dg.optim.SGD(model.parameters(), lr=LR, momentum=0.9))
    per = BATCH // n
    for t in range(STEPS):
        sel = slice(t * BATCH + r * per, t * BATCH + (r + 1) * per)
        loss = F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().numpy() for p in model.parameters()]


def test_distributed_optimizer_trains_as_one_process_on_the_whole_batches(ray_session):
    x, y = _data()
    ranks = dist.launch(_train_own_loop, workers=2, args=(x, y), cpus_per_worker=0.5, timeout_s=60)
    model = _model(seed=0)  # rank 0's start, which the broadcast gave every rank
    opt = dg.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for t in range(STEPS):
        sel = slice(t * BATCH, (t + 1) * BATCH)
        loss = F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for mine, theirs in zip(ranks[0], ranks[1]):
        np.testing.assert_array_equal(mine, theirs)  # the replicas never drift apart
    diff = max(float(np.max(np.abs(a - p.detach().numpy()))) for a, p in zip(ranks[0], model.parameters()))
    assert diff <= 1e-6, diff


def _fail_on_rank_1(kind):
    if dist.rank() == 1:
        raise ShapeError("rank 1's batch does not fit") if kind == "shape" else RuntimeError("boom")
    dist.barrier()  # rank 0 would wait here for rank 1 until the timeout
    return "unreachable"


def test_a_failing_rank_ends_the_launch_at_once_with_its_error(ray_session):
    """A timeout far above what two launches' worker starts take on a loaded host: the time tells them apart."""
    started = time.monotonic()
    with pytest.raises(ShapeError, match="rank 1's batch does not fit") as shape:
        dist.launch(_fail_on_rank_1, workers=2, args=("shape",), cpus_per_worker=0.5, timeout_s=300)
    # where it came from, as Ray's WorkerGroupError says: the rank, and the frame that raised (a note)
    (note,) = shape.value.__notes__
    assert note.startswith("raised on rank 1 of the launch") and "in _fail_on_rank_1" in note, note
    with pytest.raises(DistributedError, match=r"_fail_on_rank_1 failed on rank 1: RuntimeError\('boom'\)") as other:
        dist.launch(_fail_on_rank_1, workers=2, args=("other",), cpus_per_worker=0.5, timeout_s=300)
    assert "in _fail_on_rank_1" in other.value.__notes__[0] and "\n" not in str(other.value)
    assert time.monotonic() - started < 200  # not after rank 0's 300 s barrier timeout


def test_the_rank_named_is_the_rank_whose_error_is_shown(ray_session):
    """Both ranks' calls failed, and rank 1's error came back first: the lowest failed rank is named, and
    with its own error (it was once named beside rank 1's)."""
    from distgraph.distributed.loop import _failed_rank

    ray = ray_session

    @ray.remote(num_cpus=0)
    def fail(rank):
        raise RuntimeError(f"rank {rank}'s own error")

    refs = [fail.remote(0), fail.remote(1)]
    ray.wait(refs, num_returns=2, timeout=60)
    with pytest.raises(ray.exceptions.RayTaskError) as first:
        ray.get(refs[1])
    rank, error = _failed_rank(refs, ray.exceptions.RayTaskError, first.value)
    assert rank == 0 and "rank 0's own error" in str(error.cause)


def _reduce_other_tensors(case):
    r = dist.rank()
    dist.all_reduce(dg.ones(4))  # one call alike first: the mismatch is the second call with the tag
    if case == "sizes":
        dist.all_reduce(dg.ones(3 + r))
    elif case == "dtypes":
        dist.all_reduce(dg.ones(3, dtype=dg.float32 if r == 0 else dg.float64))
    else:  # a few numbers on one rank (the one-barrier path), many on the other (another segment kind)
        dist.all_reduce(dg.ones(10 if r == 0 else 100_000))


@pytest.mark.parametrize(
    "case, error, said",
    [
        ("sizes", ShapeError, "rank 0: an all-reduce of 3 float32 elements, rank 1: an all-reduce of 4 float32"),
        ("dtypes", DTypeError, "rank 0: an all-reduce of 3 float32 elements, rank 1: an all-reduce of 3 float64"),
        ("paths", ShapeError, "rank 0: an all-reduce of 10 float32 elements, rank 1: an all-reduce of 100000"),
    ],
)
def test_ranks_reducing_tensors_of_other_shapes_fail_at_once_naming_each_ranks_call(ray_session, case, error, said):
    """The sum path exchanges no shapes (that would cost a round trip per call), and ranks whose tensors
    differ wait in segments of their own: each posts its call where its peers read it while they wait
    (call_board.py), so both fail within a liveness check, naming every rank's call, not at the timeout."""
    started = time.monotonic()
    with pytest.raises(error, match=f"the ranks' call 2 with tag 0 differs \\({said}"):
        dist.launch(_reduce_other_tensors, workers=2, args=(case,), cpus_per_worker=0.5, timeout_s=120)
    assert time.monotonic() - started < 60  # not after the 120 s timeout


def test_outside_a_launch_the_same_code_runs_as_rank_0_of_1():
    x, y = _data()
    params = _train_own_loop(x, y)
    assert dist.rank() == 0 and dist.world_size() == 1 and all(np.isfinite(p).all() for p in params)


def test_bad_launch_arguments():
    with pytest.raises(ConfigError, match="workers must be a positive int, got 0"):
        dist.launch(_collectives, workers=0)
    with pytest.raises(ConfigError, match="fn must be callable"):
        dist.launch("train.py", workers=2)
    with pytest.raises(ConfigError, match="launch: args must be a tuple and kwargs a dict, got int and NoneType"):
        dist.launch(_collectives, workers=2, args=5)


@pytest.mark.ray
@pytest.mark.parametrize("cpus", [-1, 0, True, "1"])
def test_a_cpus_per_worker_ray_cannot_place_is_refused_before_ray_sees_it(ray_session, cpus):
    """A negative bundle made Ray's raylet die as the placement group was removed (later launches then timed out)."""
    with pytest.raises(ConfigError, match=rf"cpus_per_worker must be a positive number of CPUs .*got {cpus!r}"):
        dist.launch(_my_share, workers=2, args=(4,), cpus_per_worker=cpus, timeout_s=30)
    assert dist.launch(_my_share, workers=2, args=(4,), cpus_per_worker=0.5, timeout_s=60) == [[0, 2], [1, 3]]
    with pytest.raises(ConfigError, match="all_reduce: op must be one of 'sum', 'mean', 'max'.* got 'median'"):
        dist.all_reduce(dg.ones(2), op="median")


def _my_share(n):
    return list(dg.data.DistributedSampler(range(n), shuffle=False))


def test_a_distributed_sampler_in_a_launch_takes_its_rank_and_world_from_it(ray_session):
    shares = dist.launch(_my_share, workers=2, args=(5,), cpus_per_worker=0.5, timeout_s=60)
    assert shares == [[0, 2, 4], [1, 3, 0]]  # 0: rank 1's padding, from the order's head


def _resume_on_rank_0():
    model = _model(seed=0)
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    if dist.get_rank() == 0:  # only rank 0 "read the checkpoint": its optimizer has taken two steps
        for _ in range(2):
            F.cross_entropy(model(dg.ones(4, SIZES[0])), dg.tensor([0, 1, 2, 0])).backward()
            opt.step()
    dist.broadcast_optimizer_state(opt, root_rank=0)
    total = dg.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total, op=dist.ReduceOp.AVG)
    state = opt.state_dict()["state"]
    return (
        dist.get_world_size(),
        float(total.item()),
        {k: {n: np.asarray(v) for n, v in s.items()} for k, s in state.items()},
    )


def test_broadcast_optimizer_state_and_torchs_names(ray_session):
    (w0, avg0, s0), (w1, avg1, s1) = dist.launch(_resume_on_rank_0, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert (w0, w1, avg0, avg1) == (2, 2, 1.5, 1.5)
    assert s0 and s0.keys() == s1.keys()
    for k in s0:
        for name in s0[k]:
            np.testing.assert_array_equal(s0[k][name], s1[k][name])


def test_node_rank_numbers_nodes_in_order_of_their_first_rank_whatever_their_sizes():
    """Ray Train's get_node_rank and torchrun's NODE_RANK for nodes [A, B, B]: rank 2 is on node 1 (Horovod's
    cross_rank, which get_node_rank used, said 0: it counts ranks with the same local rank)."""
    from distgraph.distributed import loop, train

    saved = dict(loop._context)
    try:
        loop._context.update(world=3, nodes=["A", "B", "B"])
        got = []
        for r in range(3):
            loop._context.update(rank=r)
            got.append((loop.node_rank(), train.get_context().get_node_rank()))
        assert got == [(0, 0), (1, 1), (1, 1)]
    finally:
        loop._context.clear()
        loop._context.update(saved)


def _one_rank_returns_early():
    if dist.get_rank() == 0:
        dist.all_reduce(dg.ones(1))  # rank 1 never makes it: it returns
    return dist.get_rank()


@pytest.mark.ray
def test_a_rank_that_returns_early_fails_its_waiting_peer_at_once_naming_the_call(ray_session):
    """Before, rank 0 waited out the launch's timeout, then guessed that rank 1 "may be hung"."""
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank\(s\) \[1\] returned from the launched function while rank 0 "
                       r"waits in its call 1 with tag 0, an all-reduce of 1 float32 elements"):  # fmt: skip
        dist.launch(_one_rank_returns_early, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert time.monotonic() - start < 30  # not the 60 s timeout
