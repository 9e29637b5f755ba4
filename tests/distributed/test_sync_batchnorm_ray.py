"""nn.SyncBatchNorm on real Ray workers: two data-parallel ranks train as one process on the global batch
(the Trainer's sharded store over shm, a gloo group, and a `launch` loop of one's own), where plain
BatchNorm does not; a rank's error reaches the peer waiting in a statistics sum at once."""

import sys
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F

pytestmark = pytest.mark.ray


def data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 6)) * [1, 2, 3, 0.5, 1, 4] + [0, 1, -2, 0, 3, 0]).astype(np.float32)
    return x, ((x[:, 0] > 0).astype(np.int64) + (x[:, 2] > -2).astype(np.int64))


def model(norm=nn.SyncBatchNorm, dtype=None):
    dg.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), norm(12, momentum=0.2), nn.ReLU(), nn.Linear(12, 3))
    return net.to(dtype) if dtype is not None else net


class TwoNorms(nn.Module):
    """Two SyncBatchNorm layers with a tripwire between them: a sample whose last feature is over 1e6 makes the
    forward raise after the first layer's sum (one rank's error, the peer going on to the second's)."""

    def __init__(self):
        super().__init__()
        dg.manual_seed(0)
        self.first = nn.Sequential(nn.Linear(6, 12), nn.SyncBatchNorm(12), nn.ReLU())
        self.second = nn.Sequential(nn.Linear(12, 12), nn.SyncBatchNorm(12), nn.ReLU(), nn.Linear(12, 3))

    def forward(self, x):
        h = self.first(x)
        if len(x) and float(x[:, 5].abs().max()) > 1e6:
            raise ValueError("a tripwire between two SyncBatchNorm layers")
        return self.second(h)


def fit(net, backend, workers, allreduce="auto", samples=192, epochs=2, cpus_per_worker=1):
    opt = dg.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with dg.Trainer(
        net, F.cross_entropy, opt, workers=workers, backend=backend, allreduce=allreduce, progress=False, timeout_s=60,
        cpus_per_worker=cpus_per_worker,
    ) as t:  # fmt: skip
        t.fit(data(samples), epochs=epochs, batch_size=32)  # 192 samples: 12 steps
    return {k: v.numpy().copy() for k, v in net.state_dict().items()}


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


@pytest.fixture(scope="module")
def one_process():
    return fit(model(), "local", 1)


@pytest.mark.parametrize("allreduce", ["auto", "gloo"])
def test_two_ray_workers_with_sync_batch_norm_train_as_one_process_on_the_global_batch(
    ray_session, one_process, allreduce
):
    if allreduce == "gloo":
        pytest.importorskip("torch")
    state = fit(model(), "ray", 2, allreduce)
    assert set(state) == set(one_process)
    assert max_diff(state, one_process) <= 1e-6  # float32, two shard sums against one (12 SGD steps)
    assert int(state["1.num_batches_tracked"]) == 12


def test_plain_batch_norm_on_two_ray_workers_does_not(ray_session, one_process):
    """What SyncBatchNorm changes: per-shard statistics give another model (the test above could fail)."""
    state = fit(model(nn.BatchNorm1d), "ray", 2)
    assert max_diff(state, one_process) > 1e-3


def test_the_local_trainer_runs_sync_batch_norm_shards_as_one(one_process):
    state = fit(model(), "local", 2)
    assert all(np.array_equal(state[k], one_process[k]) for k in state)


def test_a_rank_left_without_samples_by_the_last_batch_still_joins_the_sums(ray_session):
    """66 samples in batches of 32: the last batch's 2 samples leave rank 2 of 3 none. It takes part in
    the statistics sums all the same (it returned at once, and its peers waited there until the timeout)."""
    state = fit(model(), "ray", 3, samples=66, epochs=1, cpus_per_worker=0.5)
    assert max_diff(state, fit(model(), "local", 1, samples=66, epochs=1)) <= 1e-6


def test_a_last_batch_of_one_sample_raises_batch_norms_error_at_once_as_alone(ray_session):
    """33 samples: the last batch holds one, so the global batch has one value per channel. The error is
    the user's, raised on the driver as one process raises it, not three worker restarts and a timeout."""
    with pytest.raises(ValueError, match="expected more than 1 value per channel") as alone:
        fit(model(), "local", 1, samples=33, epochs=1)
    started = time.monotonic()
    with pytest.raises(ValueError, match="expected more than 1 value per channel") as ranks:
        fit(model(), "ray", 2, samples=33, epochs=1)
    assert time.monotonic() - started < 50  # the workers' start included; a peer waiting out its timeout takes 60 s
    assert "over the 2 ranks" in str(ranks.value) and "over the 2 ranks" not in str(alone.value)


def _own_loop(x, y, steps, batch):
    net = model(dtype=dg.float64)
    dist.broadcast_parameters(net)
    opt = dist.DistributedOptimizer(dg.optim.SGD(net.parameters(), lr=0.1))
    per, r = batch // dist.world_size(), dist.rank()
    for t in range(steps):
        sel = slice(t * batch + r * per, t * batch + (r + 1) * per)
        opt.zero_grad()
        # the loss of the global batch: each rank's mean over its half, halved (the optimizer averages)
        F.cross_entropy(net(dg.tensor(x[sel])), dg.tensor(y[sel])).backward()
        opt.step()
    return {k: v.numpy() for k, v in net.state_dict().items()}


def _one_process(x, y, steps, batch):
    """The same SGD steps in one process on the whole batches → the final state dict (the ranks' reference)."""
    net = model(dtype=dg.float64)
    opt = dg.optim.SGD(net.parameters(), lr=0.1)
    for t in range(steps):
        opt.zero_grad()
        F.cross_entropy(
            net(dg.tensor(x[t * batch : (t + 1) * batch])), dg.tensor(y[t * batch : (t + 1) * batch])
        ).backward()
        opt.step()
    return {k: v.numpy() for k, v in net.state_dict().items()}


def test_sync_batch_norm_in_a_launched_loop_of_ones_own(ray_session):
    x, y = data()
    x = x.astype(np.float64)
    ranks = dist.launch(_own_loop, workers=2, args=(x, y, 5, 32), cpus_per_worker=0.5, timeout_s=60)
    alone = _one_process(x, y, 5, 32)
    for rank in ranks:
        assert max_diff(rank, alone) <= 1e-12


def _ddp_loop(x, y, steps, batch):
    """SyncBatchNorm inside DDP: the bucket thread all-reduces gradients while backward's statistic sums run."""
    from distgraph.distributed.loop import _context

    net = dist.DistributedDataParallel(model(dtype=dg.float64), bucket_cap_mb=0.0001)  # a bucket per parameter
    opt = dg.optim.SGD(net.parameters(), lr=0.1)
    per, r = batch // dist.world_size(), dist.rank()
    for t in range(steps):
        sel = slice(t * batch + r * per, t * batch + (r + 1) * per)
        opt.zero_grad()
        F.cross_entropy(net(dg.tensor(x[sel])), dg.tensor(y[sel])).backward()
        opt.step()
    sums = _context["sync"]._communicator()  # SyncBatchNorm's: its own group apart from the launch's on gloo
    return {k.removeprefix("module."): v.numpy() for k, v in net.state_dict().items()}, getattr(sums, "group", None)


@pytest.mark.parametrize("allreduce", ["auto", "gloo"])
def test_sync_batch_norm_inside_ddp_in_a_launch_sums_apart_from_the_gradient_buckets(ray_session, allreduce):
    if allreduce == "gloo":
        pytest.importorskip("torch")
    x, y = data()
    x = x.astype(np.float64)
    ranks = dist.launch(_ddp_loop, workers=2, args=(x, y, 5, 32), cpus_per_worker=0.5, timeout_s=60,
                        allreduce=allreduce)  # fmt: skip
    alone = _one_process(x, y, 5, 32)
    for state, group in ranks:
        assert max_diff(state, alone) <= 1e-12
        assert (group or "").endswith("-sync") == (allreduce == "gloo")


FAULTS = {
    "nan": (dg.errors.NonFiniteError, "NaN/Inf"),
    "label": (IndexError, "out of bounds"),
    "forward": (ValueError, "tripwire"),
}


@pytest.mark.parametrize("allreduce", ["auto", "gloo"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_ranks_error_does_not_leave_its_peer_in_a_statistics_sum(ray_session, allreduce, fault):
    """Rank 1 raises on a NaN in its shard before its forward (rank 0 waits in SyncBatchNorm's first sum),
    in its forward between two SyncBatchNorm layers (rank 0 waits in the second's sum), or on a label out of
    range after it (rank 0 goes on to the backward sums). On shm the abort reaches the peer; gloo cannot be
    woken, so rank 1 takes part in the sums left with nothing before it fails (it used to join the gradient
    reductions only while rank 0 waited in a sum: both stalled, three restarts, "giving up"). The fit ends
    with rank 1's error long before the 60 s timeout, and the next fit trains."""
    if allreduce == "gloo":
        pytest.importorskip("torch")
    x, y = data()
    bad_x, bad_y = x.copy(), y.copy()
    if fault == "nan":
        bad_x[40, 1] = np.nan  # batch 1's sample 8: rank 1's shard of 16
    elif fault == "forward":
        bad_x[40, 5] = 1e9
    else:
        bad_y[40] = 7  # 3 classes
    if fault == "forward":
        ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # TwoNorms lives here
    net = TwoNorms() if fault == "forward" else model()
    opt = dg.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with dg.Trainer(
        net, F.cross_entropy, opt, workers=2, backend="ray", allreduce=allreduce, progress=False, timeout_s=60
    ) as t:  # fmt: skip
        started = time.monotonic()
        error, match = FAULTS[fault]
        with pytest.raises(error, match=match):
            t.fit((bad_x, bad_y), epochs=1, batch_size=32)
        assert time.monotonic() - started < 50  # the workers' start included; not the 60 s timeout
        t.fit((x, y), epochs=1, batch_size=32)
        assert np.isfinite(t.evaluate((x, y))["loss"])
