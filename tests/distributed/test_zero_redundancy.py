"""torch's ZeroRedundancyOptimizer: alone it is the optimizer it wraps, bit for bit (steps, schedulers,
state dicts); on 2 real Ray ranks beside DistributedDataParallel each rank holds only its share of the state
(torch's split), and training and the consolidated state dict equal one process on the global batches."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph import optim
from distgraph.errors import ConfigError


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dg.float64)


def _data(step, rows=8):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((rows, 5))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _groups(model):
    first, second = model[0], model[2]
    return [{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.02}]


def _train(model, opt, steps, rank=0, world=1, scheduler=None):
    for step in range(steps):
        x, y = _data(step, 8 * world)
        mine = slice(8 * rank, 8 * rank + 8) if world > 1 else slice(None)
        opt.zero_grad()
        F.cross_entropy(model(dg.tensor(x[mine])), dg.tensor(y[mine])).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _state_arrays(sd):
    return {i: {k: np.asarray(v) for k, v in entries.items()} for i, entries in sd["state"].items()}


def test_alone_it_is_the_wrapped_optimizer_bit_for_bit_with_its_state_dicts():
    plain_model, zero_model = _model(), _model()
    plain = optim.Adam(_groups(plain_model), lr=0.01)
    zero = dist.optim.ZeroRedundancyOptimizer(_groups(zero_model), optim.Adam, lr=0.01)
    plain_sched = optim.lr_scheduler.StepLR(plain, 2, gamma=0.5)
    zero_sched = optim.lr_scheduler.StepLR(zero, 2, gamma=0.5)
    _train(plain_model, plain, 5, scheduler=plain_sched)
    _train(zero_model, zero, 5, scheduler=zero_sched)
    for p, q in zip(plain_model.parameters(), zero_model.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
    with pytest.raises(
        ConfigError, match=r"has not been consolidated on this rank. Please call `consolidate_state_dict\(to=0\)`"
    ):
        zero.state_dict()
    with pytest.raises(ConfigError, match="consolidate_state_dict: to=1 is not a rank of 1"):
        zero.consolidate_state_dict(to=1)
    zero.consolidate_state_dict()
    saved, expected = zero.state_dict(), plain.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    got, want = _state_arrays(saved), _state_arrays(expected)
    assert got.keys() == want.keys()
    for i in want:
        for k in want[i]:
            np.testing.assert_array_equal(got[i][k], want[i][k])
    resumed_model = _model()  # a fresh run from the saved state goes on as the plain one does
    with dg.no_grad():
        for p, q in zip(resumed_model.parameters(), zero_model.parameters()):
            p.copy_(q)
    resumed = dist.optim.ZeroRedundancyOptimizer(_groups(resumed_model), optim.Adam, lr=0.01)
    resumed.load_state_dict(saved)
    _train(resumed_model, resumed, 2)
    _train(plain_model, plain, 2)
    for p, q in zip(plain_model.parameters(), resumed_model.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_bad_arguments_are_named():
    params = _model().parameters()
    with pytest.raises(ConfigError, match="overlap_with_ddp=True is not supported"):
        dist.optim.ZeroRedundancyOptimizer(params, optim.SGD, lr=0.1, overlap_with_ddp=True)
    with pytest.raises(ConfigError, match="optimizer_class must be a distgraph optimizer class"):
        dist.optim.ZeroRedundancyOptimizer(params, "SGD", lr=0.1)
    with pytest.raises(ConfigError, match="ZeroRedundancyOptimizer: group must be the launch's"):
        dist.optim.ZeroRedundancyOptimizer(params, optim.SGD, process_group=object(), lr=0.1)
    with pytest.raises(ConfigError, match="unknown option 'betas'"):
        dist.optim.ZeroRedundancyOptimizer(_model().parameters(), optim.SGD, lr=0.1, betas=(0.9, 0.99))


def _on_each_rank(pairs=False):
    """With `pairs`, ranks 0-1 and 2-3 train two models, DDP and ZeRO each over its pair (a new_group)."""
    group = [dist.new_group(r) for r in ([0, 1], [2, 3])][dist.rank() // 2] if pairs else None
    model = dist.DistributedDataParallel(_model(), process_group=group)
    opt = dist.optim.ZeroRedundancyOptimizer(_groups(model.module), optim.Adam, process_group=group, lr=0.01)
    _train(model, opt, 5, dist.get_rank(group), 2)
    opt.consolidate_state_dict(to=0)
    shapes = [tuple(p.shape) for g in opt.optim.param_groups for p in g["params"]]
    held = sorted(tuple(p.shape) for p in opt.optim.state)
    saved = opt.state_dict() if dist.get_rank(group) == 0 else None
    return [p.detach().numpy() for p in model.parameters()], shapes, held, saved


@pytest.mark.ray
@pytest.mark.parametrize("pairs", [False, True], ids=["2 ranks", "a pair of 4 ranks each"])
def test_two_ranks_hold_a_share_each_and_train_as_one_process(ray_session, pairs):
    ranks = dist.launch(_on_each_rank, workers=4 if pairs else 2, cpus_per_worker=0.5, args=(pairs,), timeout_s=60)
    for pair in (ranks[:2], ranks[2:]) if pairs else (ranks,):
        _assert_a_share_each_trained_as_one_process(*pair)


def _assert_a_share_each_trained_as_one_process(rank0, rank1):
    (p0, shapes0, held0, saved), (p1, shapes1, held1, none) = rank0, rank1
    assert none is None
    # torch's split per group, largest first to the emptier rank: (6, 5) 30 → 0, (6,) → 1; then (3, 6) → 1, (3,) → 1
    assert shapes0 == [(6, 5)] and shapes1 == [(6,), (3, 6), (3,)]
    assert held0 == [(6, 5)] and held1 == sorted([(6,), (3, 6), (3,)])  # each rank's state: its share only
    alone_model = _model()
    alone = optim.Adam(_groups(alone_model), lr=0.01)
    for step in range(5):  # one process on the global batches (both ranks' rows)
        x, y = _data(step, 16)
        alone.zero_grad()
        F.cross_entropy(alone_model(dg.tensor(x)), dg.tensor(y)).backward()
        alone.step()
    for a, b, c in zip(alone_model.parameters(), p0, p1):
        np.testing.assert_array_equal(b, c)  # the replicas agree bit for bit
        np.testing.assert_allclose(b, a.detach().numpy(), rtol=0, atol=1e-12)
    want = _state_arrays(alone.state_dict())
    got = _state_arrays(saved)
    assert got.keys() == want.keys() and saved["param_groups"] == alone.state_dict()["param_groups"]
    for i in want:
        for k in want[i]:
            np.testing.assert_allclose(got[i][k], want[i][k], rtol=0, atol=1e-12)


def _uneven(steps_per_rank):
    """Rank r has steps_per_rank[r] batches. The same run twice: DDP with a plain Adam under Join([model]),
    and DDP with ZeroRedundancyOptimizer(Adam) under Join([model, zero]) → both models' parameters."""
    from distgraph.distributed.algorithms import Join

    out = []
    for use_zero in (False, True):
        model = dist.DistributedDataParallel(_model())
        if use_zero:
            opt = dist.optim.ZeroRedundancyOptimizer(_groups(model.module), optim.Adam, lr=0.01)
        else:
            opt = optim.Adam(_groups(model.module), lr=0.01)
        with Join([model, opt] if use_zero else [model]):
            _train(model, opt, steps_per_rank[dist.rank()], dist.rank(), 2)
        out.append([p.detach().numpy() for p in model.parameters()])
    return out


@pytest.mark.ray
def test_with_uneven_batches_under_join_zero_ends_as_a_plain_optimizer(ray_session):
    """Rank 1 joins after 2 of rank 0's 5 steps; its share still steps in rank 0's 3 others — with the mean
    gradients DDP's join hook leaves it (torch's leaves its own last ones, and the shares would drift)."""
    ranks = dist.launch(_uneven, workers=2, cpus_per_worker=0.5, args=((5, 2),), timeout_s=60)
    for plain, zero in ranks:
        for a, b in zip(plain, zero):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    for a, b in zip(ranks[0][1], ranks[1][1]):
        np.testing.assert_array_equal(a, b)  # the last joiner's parameters on every rank
    assert not all(np.array_equal(a, p.detach().numpy()) for a, p in zip(ranks[0][0], _model().parameters()))  # trained


def _named_shares():
    model = _model()
    opt = dist.optim.ZeroRedundancyOptimizer(model.named_parameters(), optim.SGD, lr=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    local = opt.optim.param_groups[0]
    return local["param_names"], [names[id(p)] for p in local["params"]], opt.param_groups[0]["param_names"]


@pytest.mark.ray
def test_named_parameters_give_each_rank_the_names_of_its_own_share(ray_session):
    for local_names, local_params, whole in dist.launch(_named_shares, workers=2, cpus_per_worker=0.5, timeout_s=60):
        assert local_names == local_params  # (each rank's optimizer held the whole group's names)
        assert whole == ["0.weight", "0.bias", "2.weight", "2.bias"]
