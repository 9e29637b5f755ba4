"""dist.DistributedDataParallel in launched loops on real Ray: two ranks train as one process on the
global batches (also accumulating under no_sync), a parameter some rank did not use gets the mean with
zeros, one no rank used keeps .grad None; alone it changes nothing."""

import contextlib

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from distgraph.errors import ConfigError

pytestmark = pytest.mark.ray

STEPS, BATCH = 6, 16


def _data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS * BATCH, 5))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _model(seed):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).to(dg.float64)


def _ddp_loop(x, y, accumulate, bucket_cap_mb=None, pairs=False):
    """With `pairs`, ranks 0-1 and 2-3 are two models, each DDP over its pair (process_group=new_group)."""
    group = [dist.new_group(r) for r in ([0, 1], [2, 3])][dist.rank() // 2] if pairs else None
    # the other rank starts elsewhere: its group's first rank's wins
    model = dist.DistributedDataParallel(_model(seed=dist.rank()), bucket_cap_mb=bucket_cap_mb, process_group=group)
    opt = dg.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    per, r = BATCH // dist.get_world_size(group), dist.get_rank(group)
    for t in range(STEPS):
        xs, ys = x[t * BATCH + r * per : t * BATCH + (r + 1) * per], y[t * BATCH + r * per : t * BATCH + (r + 1) * per]
        opt.zero_grad()
        if accumulate:  # two halves, the first without the all-reduce
            with model.no_sync():
                (F.cross_entropy(model(dg.tensor(xs[: per // 2])), dg.tensor(ys[: per // 2])) / 2).backward()
            (F.cross_entropy(model(dg.tensor(xs[per // 2 :])), dg.tensor(ys[per // 2 :])) / 2).backward()
        else:
            F.cross_entropy(model(dg.tensor(xs)), dg.tensor(ys)).backward()
        opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "accumulate, bucket_cap_mb",
    [(False, None), (True, None), (False, 1e-5)],  # 1e-5 MB: a bucket per parameter, reduced as backward goes
)
def test_two_ranks_train_as_one_process_on_the_global_batches(ray_session, accumulate, bucket_cap_mb):
    x, y = _data()
    args = (x, y, accumulate, bucket_cap_mb)
    ranks = dist.launch(_ddp_loop, workers=2, args=args, cpus_per_worker=0.5, timeout_s=60)
    _assert_trained_as_one_process(ranks, _one_process(x, y, accumulate, seed=0))


def test_two_models_each_over_a_pair_of_four_ranks_train_as_one_process_each(ray_session):
    """process_group=new_group([0, 1]) / ([2, 3]): each pair starts from its first rank's parameters (seeds 0 and
    2) and averages over itself alone."""
    x, y = _data()
    ranks = dist.launch(_ddp_loop, workers=4, args=(x, y, False, 1e-5, True), cpus_per_worker=0.5, timeout_s=60)
    _assert_trained_as_one_process(ranks[:2], _one_process(x, y, False, seed=0))
    _assert_trained_as_one_process(ranks[2:], _one_process(x, y, False, seed=2))


def _one_process(x, y, accumulate, seed):
    model = _model(seed=seed)
    opt = dg.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for t in range(STEPS):
        opt.zero_grad()
        if accumulate:  # the same four quarters, each a quarter of the loss: the batch norms see quarters
            for q in range(4):
                sel = slice(t * BATCH + q * BATCH // 4, t * BATCH + (q + 1) * BATCH // 4)
                (F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel])) / 4).backward()
        else:  # plain BatchNorm: each rank normalizes its half
            for h in range(2):
                sel = slice(t * BATCH + h * BATCH // 2, t * BATCH + (h + 1) * BATCH // 2)
                (F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel])) / 2).backward()
        opt.step()
    return {f"module.{k}": v.numpy() for k, v in model.state_dict().items()}


def _assert_trained_as_one_process(ranks, alone):
    assert set(ranks[0]) == set(alone)  # torch's keys: "module." first
    for k in alone:
        if "running" in k or "num_batches" in k:
            continue  # buffers: rank 0's, broadcast before each forward (it saw its own shards only)
        np.testing.assert_allclose(ranks[0][k], alone[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k])


def _launched_before_backward_ends():
    """How many gradient buckets were reducing when the first layer's gradient (the last one) came in."""
    dg.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(6, 6) for _ in range(4)])
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1e-5)
    seen = []
    model[0].weight.register_post_accumulate_grad_hook(lambda p: seen.append(ddp._bucketer.launched))
    ddp(dg.randn(4, 6)).sum().backward()
    return seen[0], len(ddp._bucketer.buckets)


def test_gradient_buckets_start_reducing_while_backward_runs(ray_session):
    for launched, buckets in dist.launch(_launched_before_backward_ends, workers=2, cpus_per_worker=0.5, timeout_s=60):
        assert buckets == 8 and launched >= 6  # every bucket of the later layers was already handed over


def _a_backward_that_fails_midway():
    """Both ranks' backward raises in a hook after some buckets were handed over; the next one is refused."""
    dg.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(6, 6) for _ in range(4)])
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1e-5)
    failed = []

    def fail_once(p):
        if not failed:
            failed.append(True)
            raise RuntimeError("a hook failed")

    model[0].weight.register_post_accumulate_grad_hook(fail_once)
    with pytest.raises(RuntimeError, match="a hook failed"):
        ddp(dg.randn(4, 6)).sum().backward()
    with pytest.raises(dg.errors.DistributedError, match="a backward failed after its gradient buckets started") as e:
        ddp(dg.randn(4, 6)).sum().backward()
    return str(e.value)


def test_a_backward_that_failed_after_its_buckets_started_refuses_the_next(ray_session):
    for message in dist.launch(_a_backward_that_fails_midway, workers=2, cpus_per_worker=0.5, timeout_s=60):
        assert "out of step" in message


def _heads():
    dg.manual_seed(3)
    heads = nn.ModuleList([nn.Linear(4, 2).to(dg.float64) for _ in range(3)])
    dist.DistributedDataParallel(heads)
    x = dg.tensor(np.full((2, 4), 1.0 + dist.rank()))
    heads[dist.rank()](x).sum().backward()  # rank 0 uses head 0, rank 1 head 1; head 2 nobody
    local = np.full((2, 4), 2 * (1.0 + dist.rank()))  # this rank's own d(sum of outputs)/dW: its x's 2 rows summed
    return [None if h.weight.grad is None else h.weight.grad.numpy() for h in heads], local


def test_a_parameter_some_rank_did_not_use_gets_the_mean_and_one_nobody_used_keeps_none(ray_session):
    (g0, local0), (g1, local1) = dist.launch(_heads, workers=2, cpus_per_worker=0.5, timeout_s=60)
    np.testing.assert_array_equal(g0[0], local0 / 2)  # rank 0's gradient and rank 1's zeros, averaged
    np.testing.assert_array_equal(g0[1], local1 / 2)
    np.testing.assert_array_equal(g0[0], g1[0])
    np.testing.assert_array_equal(g0[1], g1[1])
    assert g0[2] is None and g1[2] is None


def _accumulated_heads():
    """Rank 0 reaches all three heads under no_sync, then head 0 alone in the synced backward; rank 1 reaches
    head 1 both times. x is 1 on rank 0 and 2 on rank 1, so each backward adds 2·x to a head's weight grad."""
    dg.manual_seed(3)
    heads = nn.ModuleList([nn.Linear(4, 2).to(dg.float64) for _ in range(3)])
    ddp = dist.DistributedDataParallel(heads)
    x = dg.tensor(np.full((2, 4), 1.0 + dist.rank()))
    first, then = ([0, 1, 2], [0]) if dist.rank() == 0 else ([1], [1])
    with ddp.no_sync():
        sum(heads[h](x).sum() for h in first).backward()
    sum(heads[h](x).sum() for h in then).backward()
    return [None if h.weight.grad is None else float(h.weight.grad.numpy()[0, 0]) for h in heads]


def test_gradients_accumulated_under_no_sync_go_into_the_mean_even_where_the_synced_backward_did_not_reach():
    """torch's reducer puts a parameter's defined .grad into its bucket and counts a parameter used in a no_sync
    backward as used: head 1 is rank 0's 2 (no_sync) and rank 1's 4 + 4, averaged; head 2, reached by rank 0
    under no_sync only, is its 2 and rank 1's nothing. Before, rank 0 sent zeros for head 1 (its own 2 lost) and
    kept head 2 unreduced while rank 1 had none."""
    ranks = dist.launch(_accumulated_heads, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert ranks[0] == ranks[1] == [(4 + 0) / 2, (2 + 8) / 2, (2 + 0) / 2]


class _Scaled(nn.Module):
    """x times a buffer no forward changes: what a broadcast of the buffers did is what it holds after."""

    def __init__(self):
        super().__init__()
        self.register_buffer("s", dg.tensor(np.ones(1)))

    def forward(self, x):
        return x * self.s


def _sync_decisions():
    """What each rank sees: a backward whose forward ran under no_sync, one whose forward ran outside it, and
    rank 1's buffer after forwards in training (broadcast when the forward before had grad on outside no_sync)
    and in eval mode (never: one rank evaluating alone would wait for the others)."""
    dg.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2), _Scaled()).to(dg.float64)
    ddp = dist.DistributedDataParallel(model)
    x = dg.tensor(np.random.default_rng(dist.rank()).standard_normal((4, 4)))
    weights, beta = dg.tensor(np.full((4, 2), 1.0 + dist.rank())), model[1].bias  # beta.grad: 4 (rank 0), 8
    with ddp.no_sync():
        out = ddp(x)
    (out * weights).sum().backward()  # its forward ran under no_sync: not reduced (torch decides at the forward)
    kept = float(beta.grad.numpy()[0])
    beta.grad = None
    out = ddp(x)
    with ddp.no_sync():
        (out * weights).sum().backward()  # its forward ran outside: reduced
    reduced = float(beta.grad.numpy()[0])
    seen, s = [], model[2].s
    for phase in ("synced", "no_sync", "after no_sync", "eval"):
        s.array[:] = 10.0 + dist.rank()
        if phase == "eval":
            ddp.eval()
        with ddp.no_sync() if phase == "no_sync" else contextlib.nullcontext():
            ddp(x)
        seen.append(float(s.numpy()[0]))
    return kept, reduced, seen


def test_the_forward_decides_whether_its_backward_reduces_and_the_next_forward_broadcasts_buffers(ray_session):
    """torch's DDP: prepare_for_backward runs in the forward only with grad on outside no_sync, and
    require_forward_param_sync (set there) gates the next forward's buffer broadcast: once per accumulation
    cycle. Before, the backward's own context decided, and buffers were broadcast before every forward in
    training. (In eval mode none is, unlike torch's, whose broadcast hangs a rank-0-only evaluation.)"""
    (k0, r0, seen0), (k1, r1, seen1) = dist.launch(_sync_decisions, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert (k0, k1) == (4.0, 8.0) and r0 == r1 == 6.0  # each rank its own gradient, then the mean
    assert seen0 == [10.0] * 4 and seen1 == [10.0, 10.0, 11.0, 11.0]


def test_alone_it_wraps_without_changing_a_gradient():
    model = _model(seed=0)
    wrapped = dist.DistributedDataParallel(model)
    x, y = _data()
    F.cross_entropy(wrapped(dg.tensor(x[:8])), dg.tensor(y[:8])).backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(dg.tensor(x[:8])), dg.tensor(y[:8])).backward()
    for a, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(a, p.grad.numpy())
    assert list(wrapped.state_dict())[0].startswith("module.")
    with pytest.raises(dg.errors.ConfigError, match="module must be a distgraph.nn.Module"):
        dist.DistributedDataParallel(lambda v: v)


def _refusals():
    """What a DDP over a new_group's ranks does not do, said by name → the messages."""
    alone = dist.new_group([0])
    if dist.rank() == 1:
        with pytest.raises(ConfigError, match=r"this rank \(1\) is not in process_group \[0\]"):
            dist.DistributedDataParallel(_model(seed=0), process_group=alone)
        return "outside"
    model = dist.DistributedDataParallel(_model(seed=0), process_group=alone)
    with pytest.raises(ConfigError, match="over a new_group's ranks takes no comm hook"):
        model.register_comm_hook(None, allreduce_hook)
    with pytest.raises(ConfigError, match="cannot join"):
        model.join()
    return "refused"


def test_a_ddp_over_a_group_refuses_a_rank_outside_it_a_comm_hook_and_join_by_name(ray_session):
    assert dist.launch(_refusals, workers=2, cpus_per_worker=0.5, timeout_s=60) == ["refused", "outside"]
