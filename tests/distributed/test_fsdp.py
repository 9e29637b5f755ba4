"""torch's FullyShardedDataParallel (distributed/fsdp.py): on 2 real Ray ranks each rank holds half of every
unit's parameters at rest, and training (Adam, a no_sync accumulation, clip_grad_norm_) equals one process on
the global batches in float64 for FULL_SHARD, SHARD_GRAD_OP and NO_SHARD; the full state dict has the plain
model's names and values. Alone it is the plain model (bit for bit but for the clip's norm, summed over the
flat shards in another order)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.fsdp import (  # noqa: I001
    FSDP,
    CPUOffload,
    FullOptimStateDictConfig,
    FullStateDictConfig,
    ModuleWrapPolicy,
    ShardingStrategy,
    StateDictType,
    size_based_auto_wrap_policy,
)  # fmt: skip
from distgraph.errors import ConfigError
from distgraph.nn.module import StateDictError

STEPS, ROWS = 4, 8  # rows per rank


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3)).to(dg.float64)


def _batch(step, rows):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((rows, 5))
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


WRAPS = {  # strategy → how the model is cut into units
    "FULL_SHARD": lambda: {"auto_wrap_policy": ModuleWrapPolicy({nn.Linear})},  # 3 units (+ an empty root)
    "SHARD_GRAD_OP": lambda: {},  # one unit
    "NO_SHARD": lambda: {"auto_wrap_policy": lambda **kw: size_based_auto_wrap_policy(**kw, min_num_params=50)},
}


def _train(model, opt, steps, world, me=slice(None)):
    """`steps` plain steps, each on rows `me` (this rank's, or all) of the global batch of `world` ranks."""
    for step in range(steps):
        x, y = _batch(step, ROWS * world)
        opt.zero_grad()
        F.cross_entropy(model(x[me]), y[me]).backward()
        opt.step()


def _steps(model, opt, rank, world, clip):
    """STEPS steps on this rank's rows of each global batch, then one accumulated over two micro-batches (the
    first under no_sync) and clipped → the clip's total norm."""
    me = slice(ROWS * rank, ROWS * (rank + 1))
    _train(model, opt, STEPS, world, me)
    x, y = _batch(STEPS, ROWS * world)
    opt.zero_grad()
    half = ROWS // 2
    first, second = slice(me.start, me.start + half), slice(me.start + half, me.stop)
    with model.no_sync() if world > 1 else _nothing():
        F.cross_entropy(model(x[first]), y[first]).backward()
    F.cross_entropy(model(x[second]), y[second]).backward()
    norm = clip(model)
    opt.step()
    return float(norm)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _on_each_rank(strategy):
    model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], **WRAPS[strategy]())
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    at_rest = sum(p.numel() for p in model.parameters())
    emptied = model.module[0].module.weight.numel() if strategy == "FULL_SHARD" else model.module[0].weight.numel()
    norm = _steps(model, opt, dist.get_rank(), dist.get_world_size(), lambda m: m.clip_grad_norm_(0.5))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with FSDP.summon_full_params(model):
        inside = tuple((model.module[0].module if strategy == "FULL_SHARD" else model.module[0]).weight.shape)
    osd = FSDP.optim_state_dict(model, opt)
    # torch's checkpoint idiom (rank 0 holds the full dicts, on the CPU), a resume from them on fresh objects,
    # then one more step of each: the same numbers
    configs = (StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
               FullOptimStateDictConfig(rank0_only=True))  # fmt: skip
    with FSDP.state_dict_type(model, *configs):
        saved, saved_osd = model.state_dict(), FSDP.optim_state_dict(model, opt)
    only_on_0 = (len(saved) > 0, len(saved_osd) > 0)
    again = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], **WRAPS[strategy]())
    again_opt = dg.optim.Adam(again.parameters(), lr=0.01)
    with FSDP.state_dict_type(again, *configs):
        again.load_state_dict(saved)
        again_opt.load_state_dict(FSDP.optim_state_dict_to_load(again, again_opt, saved_osd))
    x, y = _batch(STEPS + 1, ROWS)
    for m, o in ((model, opt), (again, again_opt)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    resumed = all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )
    return {"state": state, "at_rest": at_rest, "emptied": emptied, "norm": norm, "inside": inside, "osd": osd,
            "resumed": resumed, "only_on_0": only_on_0}  # fmt: skip


def _one_process(world=2):
    """The plain model on the global batches of `world` ranks: each rank's mean loss is over its rows, the ranks'
    gradients averaged — the mean over all rows; the accumulated step sums two micro-batch means per rank."""
    model = _model()
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    _train(model, opt, STEPS, world)
    x, y = _batch(STEPS, world * ROWS)
    opt.zero_grad()
    q = ROWS // 2
    parts = range(2 * world)
    loss = sum(F.cross_entropy(model(x[i * q : (i + 1) * q]), y[i * q : (i + 1) * q]) for i in parts) / world
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    return model, opt, float(norm)


@pytest.mark.ray
def test_fsdp_on_two_ranks_trains_as_one_process_holding_half_the_parameters(ray_session):
    plain, plain_opt, plain_norm = _one_process()
    want = {k: v.numpy() for k, v in plain.state_dict().items()}
    names = [n for n, _ in plain.named_parameters()]
    plain_osd = plain_opt.state_dict()
    sizes = [p.numel() for p in _model().parameters()]  # 40 8 56 7 21 3: units of 48, 63, 24 parameters
    # the shared-memory segment's reduce-scatter / all-gather, and gloo's (an all-reduce of padded blocks)
    runs = [(s, "auto") for s in WRAPS] + ([("FULL_SHARD", "gloo")] if dist.is_gloo_available() else [])
    for strategy, allreduce in runs:
        ranks = dist.launch(
            _on_each_rank, workers=2, cpus_per_worker=0.5, args=(strategy,), allreduce=allreduce, timeout_s=60
        )
        for r in ranks:
            assert list(r["state"]) == list(want)  # the plain model's names, in its order
            for k in want:
                np.testing.assert_allclose(r["state"][k], want[k], rtol=0, atol=1e-12, err_msg=f"{strategy} {k}")
            assert r["norm"] == pytest.approx(plain_norm, rel=1e-12, abs=0)
            assert r["emptied"] == 0 and r["inside"] == (8, 5)  # at rest the module's weight holds nothing
            # the optimizer's state by parameter name, as the plain optimizer's; a resume from it steps alike
            # (in the flat parameters' order: NO_SHARD's root unit holds 0.* and 4.*, the unit of 2 comes after)
            assert sorted(r["osd"]["state"]) == sorted(names) == sorted(r["osd"]["param_groups"][0]["params"])
            assert r["osd"]["param_groups"][0]["lr"] == 0.01
            for i, n in enumerate(names):
                assert r["osd"]["state"][n]["step"] == plain_osd["state"][i]["step"] == STEPS + 1
                for k in ("exp_avg", "exp_avg_sq"):
                    np.testing.assert_allclose(r["osd"]["state"][n][k], plain_osd["state"][i][k], rtol=0, atol=1e-12)
            assert r["resumed"], strategy
        assert [r["only_on_0"] for r in ranks] == [(True, True), (False, False)]  # rank0_only: rank 1 got {}
        whole = sum(sizes)
        at_rest = {"FULL_SHARD": 24 + 32 + 12, "SHARD_GRAD_OP": -(-whole // 2), "NO_SHARD": whole}[strategy]
        assert [r["at_rest"] for r in ranks] == [at_rest, at_rest], strategy


def test_alone_fsdp_is_the_plain_model():
    plain = _model()
    opt = dg.optim.Adam(plain.parameters(), lr=0.01)
    plain_norm = _steps(plain, opt, 0, 1, lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.5))
    for strategy in WRAPS:
        model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], **WRAPS[strategy]())
        norm = _steps(model, dg.optim.Adam(model.parameters(), lr=0.01), 0, 1, lambda m: m.clip_grad_norm_(0.5))
        assert norm == pytest.approx(plain_norm, rel=1e-15, abs=0)
        got, want = model.state_dict(), plain.state_dict()
        assert list(got) == list(want)
        for k in want:
            np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-15, err_msg=f"{strategy} {k}")


def test_the_full_state_dict_loads_back_and_summon_full_params_writes_back():
    model = FSDP(_model(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    other = _model()
    with dg.no_grad():
        for p in other.parameters():
            p.mul_(2.0)
    model.load_state_dict(other.state_dict())
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy())
    with FSDP.summon_full_params(model), dg.no_grad():
        model.module[4].module.bias.fill_(7.0)
    assert model.state_dict()["4.bias"].tolist() == [7.0, 7.0, 7.0]
    with FSDP.summon_full_params(model, writeback=False), dg.no_grad():
        model.module[4].module.bias.fill_(1.0)
    assert model.state_dict()["4.bias"].tolist() == [7.0, 7.0, 7.0]
    bad = dict(other.state_dict(), **{"0.weight": dg.zeros(2, 2, dtype=dg.float64)})
    with pytest.raises(
        StateDictError, match=r"size mismatch for 0.weight: copying a param with shape torch.Size\(\[2, 2\]\)"
    ):
        model.load_state_dict(bad)
    with pytest.raises(StateDictError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        model.load_state_dict(dict(other.state_dict(), extra=dg.ones(1)))
    np.testing.assert_array_equal(model.state_dict()["0.weight"].numpy(), other.state_dict()["0.weight"].numpy())
    loose = model.load_state_dict(dict(other.state_dict(), extra=dg.ones(1)), strict=False)  # torch's namedtuple
    assert loose.missing_keys == [] and loose.unexpected_keys == ["extra"]
    # torch's: inside, the original parameters are the registered ones, and a write through parameters() is kept
    with FSDP.summon_full_params(model), dg.no_grad():
        names = [n for n, _ in model.named_parameters()]
        for p in model.parameters():
            p.fill_(3.0)
    assert "4.bias" in names and not any("_flat_param" in n for n in names), names
    assert model.state_dict()["4.bias"].tolist() == [3.0, 3.0, 3.0]
    assert all("_flat_param" in n for n, _ in model.named_parameters())  # (after: the flat shards again)
    with (
        pytest.raises(ConfigError, match="writeback=True and rank0_only=True"),
        FSDP.summon_full_params(model, rank0_only=True),
    ):
        pass


def test_what_fsdp_does_not_do_is_refused_by_name():
    # a cpu model's shards are in host memory already: offloading them changes nothing (a GPU model's is refused)
    offloaded = FSDP(_model(), cpu_offload=CPUOffload(offload_params=True))
    assert list(offloaded.state_dict()) == list(_model().state_dict())
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Tanh(), nn.Linear(4, 10, bias=False))
    tied[2].weight = tied[0].weight  # in one unit: fine; the embedding a unit of its own: refused, named
    assert tuple(FSDP(tied)(dg.tensor([[1, 2]])).shape) == (1, 2, 10)
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Tanh(), nn.Linear(4, 10, bias=False))
    tied[2].weight = tied[0].weight
    with pytest.raises(ConfigError, match=r"parameter 2.weight \(shape \(10, 4\)\) is shared with a unit below"):
        FSDP(tied, auto_wrap_policy=ModuleWrapPolicy({nn.Embedding}))
    with pytest.raises(ConfigError, match="LOCAL_STATE_DICT is not supported"):
        FSDP.set_state_dict_type(FSDP(_model()), StateDictType.LOCAL_STATE_DICT)


def test_alone_the_optimizer_state_dict_is_the_plain_optimizers_by_name():
    model, plain = FSDP(_model(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear})), _model()
    opt, plain_opt = dg.optim.Adam(model.parameters(), lr=0.01), dg.optim.Adam(plain.parameters(), lr=0.01)
    x, y = _batch(0, ROWS)
    for m, o in ((model, opt), (plain, plain_opt)):
        F.cross_entropy(m(x), y).backward()
        o.step()
    osd, want = FSDP.optim_state_dict(model, opt), plain_opt.state_dict()
    for i, (name, _) in enumerate(plain.named_parameters()):
        assert osd["state"][name]["step"] == 1
        np.testing.assert_array_equal(osd["state"][name]["exp_avg_sq"], want["state"][i]["exp_avg_sq"])
    with pytest.raises(ConfigError, match=r"holds a parameter of shape \(3,\) that is no parameter of this FSDP model"):
        FSDP.optim_state_dict(model, dg.optim.Adam([*model.parameters(), dg.zeros(3, requires_grad=True)]))
    del osd["state"]["2.bias"]
    with pytest.raises(ConfigError, match=r"no state for \['2.bias'\], though there is for others of their unit"):
        FSDP.optim_state_dict_to_load(model, opt, osd)


def _flat_grads(model):
    """The gradients as one array in the plain model's parameter order (alone, each unit's flat is whole)."""
    units = [u for u in model.modules() if isinstance(u, FSDP) and u._handle is not None]
    return np.concatenate([u._flat_param.grad.numpy()[: sum(u._handle.sizes)] for u in units])


def test_alone_a_second_backward_through_a_retained_graph_is_reduced_as_torchs():
    x, y = _batch(0, ROWS)
    plain = _model()
    loss = F.cross_entropy(plain(x), y)
    loss.backward(retain_graph=True)
    loss.backward()
    want = np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()])
    for strategy in WRAPS:
        model = FSDP(
            _model(), sharding_strategy=ShardingStrategy[strategy], auto_wrap_policy=ModuleWrapPolicy({nn.Linear})
        )
        loss = F.cross_entropy(model(x), y)
        loss.backward(retain_graph=True)
        loss.backward()
        np.testing.assert_allclose(_flat_grads(model), want, rtol=0, atol=1e-15, err_msg=strategy)
        assert not any(u._handle.unsharded for u in model.modules() if isinstance(u, FSDP) and u._handle), strategy


def test_alone_frozen_units_stay_frozen_and_a_half_frozen_unit_is_refused_as_torchs():
    x, y = _batch(0, ROWS)
    plain, model = _model(), _model()
    plain[0].requires_grad_(False)
    model[0].requires_grad_(False)
    model = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    assert [p.requires_grad for p in model.parameters()] == [False, True, True]
    for m in (plain, model):
        opt = dg.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5)
        F.cross_entropy(m(x), y).backward()
        opt.step()
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=k)
    half = _model()
    half[0].weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="Must flatten tensors with uniform `requires_grad`"):
        FSDP(half)


def test_alone_a_unit_returning_a_dataclass_is_gathered_again_for_backward():
    from dataclasses import dataclass

    @dataclass
    class Out:
        y: object

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x):
            return Out(self.net(x))

    x, y = _batch(0, ROWS)
    plain = _model()
    F.cross_entropy(plain(x), y).backward()
    model = FSDP(nn.Sequential(Block()), auto_wrap_policy=ModuleWrapPolicy({Block}))
    F.cross_entropy(model(x).y, y).backward()
    want = np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()])
    np.testing.assert_allclose(_flat_grads(model), want, rtol=0, atol=1e-15)


def test_alone_a_state_dict_loads_into_a_unit_gathered_by_a_forward_before_its_backward():
    x, _ = _batch(0, ROWS)
    model = FSDP(_model(), sharding_strategy=ShardingStrategy.SHARD_GRAD_OP)
    model(x)  # (a validation loss outside no_grad: SHARD_GRAD_OP keeps the gathered parameters)
    other = _model()
    with dg.no_grad():
        for p in other.parameters():
            p.mul_(2.0)
    model.load_state_dict(other.state_dict())
    model(x).sum().backward()  # the gathered parameters freed: only the shards are left
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy())


def test_alone_a_unit_outside_this_steps_loss_is_not_stepped_as_torchs():
    """Its output in no loss: no gradient (None after zero_grad), so Adam skips it, as the plain model's."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            h = self.body(x)
            return self.a(h), self.b(h)

    def make():
        dg.manual_seed(0)
        return TwoHeads().to(dg.float64)

    plain, model = make(), FSDP(make(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    for m in (plain, model):
        opt = dg.optim.Adam(m.parameters(), lr=0.1)
        for step in range(2):
            x, y = _batch(step, ROWS)
            opt.zero_grad()
            ya, yb = m(x)
            (F.cross_entropy(ya, y) + (F.cross_entropy(yb, y) if step == 0 else 0.0)).backward()
            opt.step()
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=k)


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        dg.manual_seed(1)
        self.body, self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = self.body(x).tanh()
        return self.a(h), self.b(h)


def _branch_by_rank(steps):
    """Every rank runs both heads (a unit's forward gathers: a collective every rank must call), but rank r's
    loss takes head r's output only: each head's gradients come from one rank. SHARD_GRAD_OP: FULL_SHARD gathers
    again where backward reaches a unit, a collective too, so there every rank's loss must reach the same units."""
    model = FSDP(_TwoHeads().to(dg.float64), sharding_strategy=ShardingStrategy.SHARD_GRAD_OP,
                 auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        x, y = _batch(step, 2 * ROWS)
        me = slice(ROWS * dist.get_rank(), ROWS * (dist.get_rank() + 1))
        opt.zero_grad()
        F.cross_entropy(model(x[me])[dist.get_rank()], y[me]).backward()
        opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.ray
def test_units_only_some_ranks_losses_reach_are_reduced_with_the_others_zeros(ray_session):
    ranks = dist.launch(_branch_by_rank, workers=2, cpus_per_worker=0.5, args=(3,), timeout_s=60)
    plain = _TwoHeads().to(dg.float64)
    opt = dg.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):  # the ranks' mean loss: head a on rank 0's rows, head b on rank 1's
        x, y = _batch(step, 2 * ROWS)
        opt.zero_grad()
        halves = [F.cross_entropy(plain(x[r * ROWS : (r + 1) * ROWS])[r], y[r * ROWS : (r + 1) * ROWS]) for r in (0, 1)]
        ((halves[0] + halves[1]) / 2).backward()
        opt.step()
    for k, want in plain.state_dict().items():
        for r in ranks:
            np.testing.assert_allclose(r[k], want.numpy(), rtol=0, atol=1e-12, err_msg=k)


def test_alone_zero_grad_clears_what_no_sync_accumulated_as_torchs():
    """no_sync's gradients live in flat.grad, so the optimizer's zero_grad clears them (torch's); without it
    they join the next synced backward's."""
    for zero_between, orig in [(True, False), (False, False), (True, True), (False, True)]:
        model = FSDP(_model(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}), use_orig_params=orig)
        plain = _model()
        opt, plain_opt = dg.optim.SGD(model.parameters(), lr=0.1), dg.optim.SGD(plain.parameters(), lr=0.1)
        (x, y), (x2, y2) = _batch(0, ROWS), _batch(1, ROWS)
        with model.no_sync():
            F.cross_entropy(model(x), y).backward()
        F.cross_entropy(plain(x), y).backward()
        if zero_between:
            opt.zero_grad()
            plain_opt.zero_grad()
        F.cross_entropy(model(x2), y2).backward()
        F.cross_entropy(plain(x2), y2).backward()
        opt.step()
        plain_opt.step()
        got, want = model.state_dict(), plain.state_dict()
        for k in want:
            np.testing.assert_allclose(
                got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-15, err_msg=f"{zero_between} {k}"
            )


def _decay_groups(model):
    """AdamW's usual rule by name: weight decay on the weights, none on the biases (what use_orig_params is for)."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")], "weight_decay": 0.1},
            {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]  # fmt: skip


def _in_group_order(names):
    return [n for n in names if n.endswith("weight")] + [n for n in names if n.endswith("bias")]


def _orig_params_run(strategy, steps=3):
    """use_orig_params=True: the optimizer built on the module's own parameters by name → (names, parameter
    numbers held at rest, clip norm, full state dict, optimizer state dict, a resume stepping alike)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    make = lambda: FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=True,  # noqa: E731
                        auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
    model = make()
    opt = dg.optim.AdamW(_decay_groups(model), lr=0.01)
    names = [n for n, _ in model.named_parameters()]
    held = sum(p.numel() for p in model.parameters())
    me = slice(ROWS * rank, ROWS * (rank + 1))
    _train(model, opt, steps, world, me)
    x, y = _batch(steps, ROWS * world)
    opt.zero_grad()
    F.cross_entropy(model(x[me]), y[me]).backward()
    norm = float(model.clip_grad_norm_(0.5))
    opt.step()
    osd, state = FSDP.optim_state_dict(model, opt), {k: v.numpy() for k, v in model.state_dict().items()}
    again = make()
    again_opt = dg.optim.AdamW(_decay_groups(again), lr=0.01)
    again.load_state_dict(model.state_dict())
    again_opt.load_state_dict(FSDP.optim_state_dict_to_load(again, again_opt, osd))
    x, y = _batch(steps + 1, ROWS * world)
    for m, o in ((model, opt), (again, again_opt)):
        o.zero_grad()
        F.cross_entropy(m(x[me]), y[me]).backward()
        o.step()
    resumed = all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )
    return names, held, norm, state, osd, resumed


def _plain_orig_reference(world, steps=3):
    model = _model()
    opt = dg.optim.AdamW(_decay_groups(model), lr=0.01)
    _train(model, opt, steps, world)
    x, y = _batch(steps, ROWS * world)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    norm = float(nn.utils.clip_grad_norm_(model.parameters(), 0.5))
    opt.step()
    return model, opt, norm


def test_alone_use_orig_params_takes_param_groups_by_name_as_the_plain_model():
    plain, plain_opt, plain_norm = _plain_orig_reference(1)
    for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        names, held, norm, state, osd, resumed = _orig_params_run(strategy)
        assert names == [n for n, _ in plain.named_parameters()] and held == 135
        assert norm == pytest.approx(plain_norm, rel=1e-15, abs=0) and resumed
        for k, v in plain.state_dict().items():
            np.testing.assert_allclose(state[k], v.numpy(), rtol=0, atol=1e-15, err_msg=f"{strategy} {k}")
        want = plain_opt.state_dict()
        for i, n in enumerate(_in_group_order(names)):  # (the optimizer numbers its groups' parameters in turn)
            np.testing.assert_allclose(osd["state"][n]["exp_avg"], want["state"][i]["exp_avg"], rtol=0, atol=1e-15)


@pytest.mark.ray
def test_use_orig_params_on_two_ranks_trains_as_one_process_with_param_groups_by_name(ray_session):
    plain, plain_opt, plain_norm = _plain_orig_reference(2)
    want, want_osd = plain.state_dict(), plain_opt.state_dict()
    names = [n for n, _ in plain.named_parameters()]
    for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        ranks = dist.launch(_orig_params_run, workers=2, cpus_per_worker=0.5, args=(strategy,), timeout_s=60)
        for got_names, _, norm, state, osd, resumed in ranks:
            assert got_names == names and resumed, strategy
            assert norm == pytest.approx(plain_norm, rel=1e-12, abs=0)
            for k, v in want.items():
                np.testing.assert_allclose(state[k], v.numpy(), rtol=0, atol=1e-12, err_msg=f"{strategy} {k}")
            for i, n in enumerate(_in_group_order(names)):
                for key in ("exp_avg", "exp_avg_sq"):
                    np.testing.assert_allclose(osd["state"][n][key], want_osd["state"][i][key], rtol=0, atol=1e-12)
            assert osd["param_groups"][1]["params"] == [n for n in names if n.endswith("bias")]
        # each rank's pieces, half of each unit: units of 48, 63, 24 split 24+32+12 | 24+31+12 (and a pad)
        assert [held for _, held, *_ in ranks] == [68, 67]


def test_alone_orig_params_accumulate_reduced_gradients_over_synced_backwards_as_the_plain_model():
    """Two synced backwards with no zero_grad between: the second forward sets the first's reduced pieces
    aside while backward accumulates the full gradient, and adds them back after its reduce."""
    for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=True,
                     auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
        plain = _model()
        for m in (model, plain):
            for step in (0, 1):
                x, y = _batch(step, ROWS)
                F.cross_entropy(m(x), y).backward()
        for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy().reshape(-1), rtol=0, atol=1e-15, err_msg=n)


def test_alone_zero_grad_clears_orig_params_reduced_pieces_after_a_forward_or_a_no_sync_backward_as_torchs():
    """A reduced piece in .grad stays where zero_grad finds it through a forward whose backward never comes (a
    validation loss outside no_grad), and joins the full gradient of a no_sync backward (it leaked into the next
    step when set aside there)."""
    import contextlib

    def run(m, opt, zero_after_no_sync):
        for step in range(3):
            x, y = _batch(step, ROWS)
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
            m(x)  # the validation forward: no backward
        F.cross_entropy(m(x), y).backward()
        with m.no_sync() if isinstance(m, FSDP) else contextlib.nullcontext():
            F.cross_entropy(m(x), y).backward()
        if zero_after_no_sync:
            opt.zero_grad()
        F.cross_entropy(m(_batch(5, ROWS)[0]), _batch(5, ROWS)[1]).backward()
        opt.step()

    for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        for zero_after_no_sync in (True, False):
            model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=True,
                         auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
            plain = _model()
            for m in (model, plain):
                run(m, dg.optim.SGD(m.parameters(), lr=0.1), zero_after_no_sync)
            for k, v in plain.state_dict().items():
                np.testing.assert_allclose(
                    model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=f"{strategy} {k}"
                )


def test_alone_orig_params_optimizer_state_dicts_leave_out_a_frozen_parameter_of_a_trained_unit_as_torchs():
    """A frozen parameter beside trained ones in a unit has no optimizer state (it had zeros and a step), so a
    plain model's optimizer state, keyed by names, loads and steps as the plain model's."""
    plain, model = _model(), _model()
    for m in (plain, model):
        m[0].bias.requires_grad_(False)
    model = FSDP(model, use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    opts = [dg.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.1) for m in (plain, model)]
    x, y = _batch(0, ROWS)
    for m, opt in zip((plain, model), opts):
        F.cross_entropy(m(x), y).backward()
        opt.step()
    names = [n for n, p in plain.named_parameters() if p.requires_grad]
    osd = FSDP.optim_state_dict(model, opts[1])
    assert sorted(osd["state"]) == sorted(names)
    saved = opts[0].state_dict()
    by_name = {"state": {names[i]: s for i, s in saved["state"].items()},
               "param_groups": [dict(saved["param_groups"][0], params=names)]}  # fmt: skip
    again = dg.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    again.load_state_dict(FSDP.optim_state_dict_to_load(model, again, by_name))
    x, y = _batch(1, ROWS)
    for m, opt in ((plain, opts[0]), (model, again)):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=k)


def test_alone_zero_grad_keeping_tensors_clears_a_reduced_block_accumulated_into_no_sync_as_torchs():
    """A synced backward, a no_sync one, zero_grad(set_to_none=False), a synced one: only the last's gradient
    is stepped (the first's reduced block, kept beside no_sync's, was not zeroed and joined it)."""
    import contextlib

    for strategy in ("FULL_SHARD", "NO_SHARD"):
        for orig in (False, True):
            model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=orig,
                         auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
            plain = _model()
            for m in (model, plain):
                opt = dg.optim.SGD(m.parameters(), lr=0.1)
                x, y = _batch(0, ROWS)
                F.cross_entropy(m(x), y).backward()
                with m.no_sync() if m is model else contextlib.nullcontext():
                    F.cross_entropy(m(x), y).backward()
                opt.zero_grad(set_to_none=False)
                x, y = _batch(1, ROWS)
                F.cross_entropy(m(x), y).backward()
                opt.step()
            for k, v in plain.state_dict().items():
                np.testing.assert_allclose(
                    model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=f"{strategy} {orig} {k}"
                )


def test_alone_orig_params_are_their_pieces_after_a_forward_that_keeps_them_gathered_as_torchs():
    """SHARD_GRAD_OP / NO_SHARD keep a forward's gathered parameters for its backward; a loss logged between
    backward and step is such a forward: the parameters are their pieces meanwhile (torch's post-forward), so the
    step steps them (they stayed full-size views and it failed on the pieces' gradients)."""
    for strategy in ("SHARD_GRAD_OP", "NO_SHARD"):
        model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=True,
                     auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
        plain = _model()
        x, y = _batch(0, ROWS)
        for m in (model, plain):
            opt = dg.optim.SGD(m.parameters(), lr=0.1)
            F.cross_entropy(m(x), y).backward()
            F.cross_entropy(m(x), y)  # logged, no backward
            opt.step()
        for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy().ravel(), rtol=0, atol=1e-15, err_msg=n)


def test_alone_a_forward_whose_backward_never_came_does_not_leave_stale_parameters():
    """A loss logged with grad enabled keeps SHARD_GRAD_OP / NO_SHARD units gathered for a backward that never
    comes; the next forward, after an optimizer step, gathers anew (torch's SHARD_GRAD_OP reads the old copy)."""
    for strategy, orig in [("SHARD_GRAD_OP", False), ("NO_SHARD", False), ("SHARD_GRAD_OP", True), ("NO_SHARD", True)]:
        model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=orig,
                     auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
        plain = _model()
        for m in (model, plain):
            opt = dg.optim.SGD(m.parameters(), lr=0.1)
            for step in range(3):
                x, y = _batch(step, ROWS)
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                m(x).sum()  # logged between backward and step, never backpropagated
                opt.step()
        got, want = model.state_dict(), plain.state_dict()
        for k in want:
            np.testing.assert_allclose(
                got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-15, err_msg=f"{strategy} {orig} {k}"
            )
