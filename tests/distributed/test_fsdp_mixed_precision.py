"""FullyShardedDataParallel's mixed precision (distributed/fsdp_mixed.py, torch's MixedPrecision).

The reference is torch's recipe done by hand in one process: float32 parameters and Adam; for each rank, a
float16 copy of the parameters runs the forward and backward of its rows (micro-batches accumulating their
gradients in float16, as no_sync's unsharded gradient does); the ranks' gradients are averaged in reduce_dtype
— each divided before the sum and the sum after, as torch's (`divide_factors`: by 2 and by 1 on 2 ranks), summed in
the order the communicator sums in — and cast to float32 for the step. FSDP runs the same ops on the
same arrays, so it must equal the recipe bit for bit (tolerance 0), through FULL_SHARD, SHARD_GRAD_OP, NO_SHARD,
use_orig_params, no_sync, clip_grad_norm_ and the state dicts. Against torch's own FSDP MixedPrecision (gloo: one
rank in this process, and FULL_SHARD on the 2 ranks; one SGD step) the tolerance is float16's: numpy's and
torch's float16 kernels may round a result to neighbouring float16 values (2**-11 relative), and the backward
compounds a few such roundings — gradients seen to differ by 1.6e-3 of their largest are asked to agree to 5e-3
of it; an SGD step of lr 0.1 makes that 1e-4 in the parameters (seen: 2.5e-5). (Computing in float32, or casting
back nothing, fails it on the dtypes.)"""

import contextlib
import importlib.util

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed import loop
from distgraph.distributed.fsdp import FSDP, MixedPrecision, ModuleWrapPolicy, ShardingStrategy, StateDictType
from distgraph.distributed.fsdp_flat import divide_factors
from distgraph.errors import ConfigError
from distgraph.nn.utils.clip_grad import clip_grads_with_norm_, get_total_norm

STEPS, ROWS, LR = 3, 8, 0.01  # rows per rank
F16 = MixedPrecision(param_dtype=dg.float16)


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3))  # float32


def _batch(step, rows):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((rows, 5)).astype(np.float32)
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


def _micro_batches(step, rank):
    """This rank's rows of the step's global batch; the last step's in two micro-batches (the first under no_sync)."""
    lo, hi = ROWS * rank, ROWS * (rank + 1)
    return [slice(lo, hi)] if step < STEPS else [slice(lo, lo + ROWS // 2), slice(lo + ROWS // 2, hi)]


def _clip(params, max_norm=0.5):
    """torch's clip_grad_norm_, the norm summed in float64 (as FSDP.clip_grad_norm_ sums the shards') → the norm."""
    params = list(params)
    norm = get_total_norm([dg.tensor(p.grad.numpy().astype(np.float64)) for p in params])
    clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def _recipe(world, reduce_dtype=np.float16, optimizer="Adam", grad_dtype=np.float32):
    """The plain float32 model trained as the module doc says on `world` ranks → (model, optimizer, clip norm).
    (`grad_dtype` float16: keep_low_precision_grads, the optimizer and the clip given float16 gradients.)"""
    plain = _model()
    opt = getattr(dg.optim, optimizer)(plain.parameters(), lr=LR)
    norm = None
    for step in range(STEPS + 1):
        x, y = _batch(step, ROWS * world)
        per_rank = []
        for rank in range(world):
            low = _model().to(dg.float16)
            low.load_state_dict(plain.state_dict())  # (cast to float16 on the way in)
            for s in _micro_batches(step, rank):
                F.cross_entropy(low(x[s].to(dg.float16)), y[s]).backward()
            per_rank.append([p.grad.numpy().astype(reduce_dtype) for p in low.parameters()])
        opt.zero_grad()
        for p, grads in zip(plain.parameters(), zip(*per_rank)):
            pre, post = divide_factors(world)  # (torch's: divided before the ranks' sum and after it)
            parts = [g / g.dtype.type(pre) for g in grads]
            mean = sum(parts[1:], parts[0]) / parts[0].dtype.type(post)
            p._grad = dg.tensor(mean.astype(np.float32).astype(grad_dtype))
        if step == STEPS:
            norm = _clip(plain.parameters())
        opt.step()
    return plain, opt, norm


WRAP = {"auto_wrap_policy": ModuleWrapPolicy({nn.Linear})}


def _fsdp_run(strategy, orig, mp, optimizer="Adam"):
    """The same training through FSDP on this rank → what the tests compare (dtypes seen on the way)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=orig, mixed_precision=mp,
                 **WRAP)  # fmt: skip
    opt = getattr(dg.optim, optimizer)(model.parameters(), lr=LR)
    inside = []  # (the weight's dtype, the input's) in the last Linear's forward
    model.module[4].module.register_forward_hook(lambda m, i, o: inside.append((m.weight.dtype.name, i[0].dtype.name)))
    norm = None
    with _spying_on_collectives(world) as moved:
        for step in range(STEPS + 1):
            x, y = _batch(step, ROWS * world)
            opt.zero_grad()
            first, *rest = _micro_batches(step, rank)
            with model.no_sync() if rest else contextlib.nullcontext():
                F.cross_entropy(model(x[first]), y[first]).backward()
            for s in rest:
                F.cross_entropy(model(x[s]), y[s]).backward()
            if step == STEPS:
                norm = float(model.clip_grad_norm_(0.5))
            grads = {p.grad.dtype.name for p in model.parameters() if p.grad is not None}
            opt.step()
    return {
        "moved": set(moved),
        "state": {k: v.numpy() for k, v in model.state_dict().items()},
        "osd": FSDP.optim_state_dict(model, opt),
        "norm": norm,
        "inside": set(inside),
        "at_rest": {p.dtype.name for p in model.parameters()},
        "grads": grads,
    }


@contextlib.contextmanager
def _spying_on_collectives(world):
    """→ a list that gets (collective, dtype) for each array the communicator moves inside (on 2 ranks)."""
    moved = []
    comm = loop.communicator() if world > 1 else None
    names = ("all_gather", "reduce_scatter", "allreduce") if comm is not None else ()
    for name in names:

        def spy(arrays, *args, _real=getattr(comm, name), _name=name, **kwargs):
            moved.extend((_name, str(a.dtype)) for a in (arrays if isinstance(arrays, (list, tuple)) else [arrays]))
            return _real(arrays, *args, **kwargs)

        setattr(comm, name, spy)
    try:
        yield moved
    finally:
        for name in names:
            delattr(comm, name)  # (the class's methods again)


def _assert_as_recipe(got, plain, plain_opt, norm, what):
    want = plain.state_dict()
    assert list(got["state"]) == list(want), what
    for k, v in want.items():
        assert got["state"][k].dtype == np.float32, (what, k)  # full precision, as torch's FULL_STATE_DICT
        np.testing.assert_array_equal(got["state"][k], v.numpy(), err_msg=f"{what} {k}")
    assert got["norm"] == pytest.approx(norm, rel=1e-12, abs=0), what
    assert got["inside"] == {("float16", "float16")}, what  # gathered and computed in float16
    assert got["at_rest"] == {"float32"}, what  # the shards the optimizer steps
    want_osd = plain_opt.state_dict()["state"]
    for i, (name, _) in enumerate(plain.named_parameters()):
        for key, value in want_osd[i].items():
            if key != "step":
                np.testing.assert_array_equal(got["osd"]["state"][name][key], value, err_msg=f"{what} {name} {key}")


RUNS = [("FULL_SHARD", False), ("SHARD_GRAD_OP", True), ("NO_SHARD", False), ("FULL_SHARD", True)]


def test_alone_mixed_precision_trains_as_torchs_float16_recipe_bit_for_bit():
    plain, plain_opt, norm = _recipe(1)
    for strategy, orig in RUNS:
        got = _fsdp_run(strategy, orig, F16)
        _assert_as_recipe(got, plain, plain_opt, norm, f"{strategy} orig={orig}")
        assert got["grads"] == {"float32"}
    # (the recipe is not the float32 model's training: a test that ran in float32 would fail here)
    full = _fsdp_run("FULL_SHARD", False, None)
    assert not np.array_equal(full["state"]["0.weight"], plain.state_dict()["0.weight"].numpy())


def _two_ranks(with_torch):
    """Every configuration in one launch, then (torch being there) one step beside torch's FSDP."""
    runs = [*((s, o, F16) for s, o in RUNS), ("FULL_SHARD", False, MixedPrecision(dg.float16, reduce_dtype=dg.float32))]
    out = [_fsdp_run(strategy, orig, mp) for strategy, orig, mp in runs]
    if not with_torch:
        return out, None
    port = loop.broadcast_object(_free_port() if dist.get_rank() == 0 else None, 0)
    return out, _one_step_beside_torch(f"tcp://127.0.0.1:{port}")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_mixed_precision_on_two_ranks_trains_as_torchs_float16_recipe_bit_for_bit(ray_session):
    plain, plain_opt, norm = _recipe(2)
    plain32, plain32_opt, norm32 = _recipe(2, reduce_dtype=np.float32)
    with_torch = importlib.util.find_spec("torch") is not None
    ranks = dist.launch(_two_ranks, workers=2, cpus_per_worker=0.5, args=(with_torch,), timeout_s=180)
    for r, beside_torch in ranks:
        if with_torch:  # torch's FULL_SHARD reduce-scatters in float16 through gloo (its orig params' pieces are
            _assert_as_torchs(beside_torch, with_grads=False)  # cut with alignment padding: the states compared)
        for (strategy, orig), got in zip(RUNS, r):
            _assert_as_recipe(got, plain, plain_opt, norm, f"{strategy} orig={orig}")
            # while training, the gathers and the gradients' reduces (NO_SHARD: all-reduces) move float16 only
            # (beside them: the int64 all-reduce counting the ranks each unit's gradients came from, the clip's
            # float64 norm)
            moved = got["moved"]
            if strategy == "NO_SHARD":
                assert ("allreduce", "float16") in moved and not any(op == "all_gather" for op, _ in moved)
            else:
                assert {d for op, d in moved if op in ("all_gather", "reduce_scatter")} == {"float16"}, strategy
            assert ("allreduce", "float32") not in moved, strategy
        _assert_as_recipe(r[-1], plain32, plain32_opt, norm32, "reduce_dtype=float32")
        assert {d for op, d in r[-1]["moved"] if op == "all_gather"} == {"float16"}
        assert {d for op, d in r[-1]["moved"] if op == "reduce_scatter"} == {"float32"}
    # (the two recipes differ: reducing in float32 is seen)
    assert not np.array_equal(plain.state_dict()["0.weight"].numpy(), plain32.state_dict()["0.weight"].numpy())


def test_alone_keep_low_precision_grads_keeps_float16_gradients_as_torchs():
    """flat.grad (or each orig parameter's .grad) in param_dtype, the shard in float32; SGD steps with it."""
    plain, *_ = _recipe(1, optimizer="SGD", grad_dtype=np.float16)
    mp = MixedPrecision(param_dtype=dg.float16, keep_low_precision_grads=True)
    for strategy, orig in RUNS:
        got = _fsdp_run(strategy, orig, mp, optimizer="SGD")
        assert got["grads"] == {"float16"} and got["at_rest"] == {"float32"}, strategy
        for k, v in plain.state_dict().items():
            np.testing.assert_array_equal(got["state"][k], v.numpy(), err_msg=f"{strategy} {orig} {k}")


class _Scaled(nn.Module):
    """A Linear whose output is scaled by a floating buffer, counted by an integer one."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.register_buffer("scale", dg.full((n_out,), 1.25))
        self.register_buffer("calls", dg.zeros((), dtype=dg.int64))

    def forward(self, x):
        self.calls.add_(1)
        return self.linear(x) * self.scale


def _scaled_model():
    dg.manual_seed(0)
    return nn.Sequential(_Scaled(5, 8), nn.Tanh(), _Scaled(8, 3), nn.BatchNorm1d(3))


def test_alone_buffers_are_cast_at_the_first_forward_and_saved_in_full_precision_as_torchs():
    mp = MixedPrecision(param_dtype=dg.float16, buffer_dtype=dg.float16)
    model = FSDP(_scaled_model(), mixed_precision=mp, auto_wrap_policy=ModuleWrapPolicy({_Scaled}))
    scaled, norm = model.module[0].module, model.module[3]
    assert scaled.scale.dtype is dg.float32  # until the root's first forward
    x, _ = _batch(0, ROWS)
    model(x).sum().backward()
    assert scaled.scale.dtype is dg.float16 and scaled.calls.dtype is dg.int64  # floating buffers only
    state = model.state_dict()
    assert state["0.scale"].dtype is dg.float32 and state["0.scale"].tolist() == [1.25] * 8
    assert state["0.calls"].dtype is dg.int64 and state["0.calls"].item() == 1
    # torch's _module_classes_to_ignore: the batch norm is a unit of its own without mixed precision
    assert isinstance(norm, FSDP) and norm._mixed_precision is None and norm.module.running_mean.dtype is dg.float32
    assert model.module[0]._mixed_precision.param_dtype is dg.float16
    model.load_state_dict(state)  # (into float16 buffers, float32 shards)
    assert scaled.scale.dtype is dg.float16 and model.state_dict()["0.scale"].dtype is dg.float32
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):  # (torch's: full precision there too)
        sharded = model.state_dict()
    assert sharded["0.scale"].dtype is dg.float32 and sharded["0.linear.weight"].dtype is dg.float32


def test_alone_forward_inputs_are_cast_by_the_root_and_where_cast_forward_inputs_says_as_torchs():
    seen = []

    def run(mp, child_mp=None):
        seen.clear()
        model = _model()
        model[2] = FSDP(model[2], mixed_precision=child_mp or mp)
        model = FSDP(model, mixed_precision=mp)
        model.module[0].register_forward_hook(lambda m, i, o: seen.append(("0", i[0].dtype.name)))
        model.module[2].module.register_forward_hook(lambda m, i, o: seen.append(("2", i[0].dtype.name)))
        model(_batch(0, ROWS)[0])
        return list(seen)

    assert run(F16) == [("0", "float16"), ("2", "float16")]  # the root casts; float16 flows on
    # not at the root: the float32 input meets float16 weights, which torch's Linear refuses (so does
    # distgraph's); a child casts its inputs only with cast_forward_inputs
    no_root = MixedPrecision(param_dtype=dg.float16, cast_root_forward_inputs=False)
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype, but got Float and Half"):
        run(no_root)
    child = MixedPrecision(param_dtype=dg.float16, cast_forward_inputs=True)
    with pytest.raises(RuntimeError, match="Half and Float"):  # its float16 output meets the last float32 Linear
        run(MixedPrecision(), child)
    assert seen == [("0", "float32"), ("2", "float16")]
    # integer inputs stay as they are
    emb = FSDP(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)), mixed_precision=F16)
    assert emb(dg.tensor([[1, 2]])).dtype is dg.float16


def test_alone_summon_full_params_gives_full_precision_and_a_later_backward_float16_again():
    x, y = _batch(0, ROWS)
    model = FSDP(_model(), sharding_strategy=ShardingStrategy.SHARD_GRAD_OP, mixed_precision=F16)
    plain = _model()
    loss = F.cross_entropy(model(x), y)  # SHARD_GRAD_OP keeps the float16 gathered for the backward
    with FSDP.summon_full_params(model):
        assert model.module[0].weight.dtype is dg.float32
        np.testing.assert_array_equal(model.module[0].weight.detach().numpy(), plain[0].weight.detach().numpy())
    seen = []
    model.module[0].weight.register_hook(lambda g: seen.append(g.dtype.name))
    loss.backward()
    assert seen == ["float16"] and model._flat_param.grad.dtype is dg.float32


def test_mixed_precision_dtypes_numpy_lacks_and_other_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"param_dtype='bfloat16' is not supported \(numpy and cupy have no "):
        FSDP(_model(), mixed_precision=MixedPrecision(param_dtype="bfloat16"))
    with pytest.raises(ConfigError, match=r"reduce_dtype=distgraph.int32 is not supported.*float16, float32"):
        FSDP(_model(), mixed_precision=MixedPrecision(reduce_dtype=dg.int32))
    with pytest.raises(ConfigError, match="mixed_precision must be a MixedPrecision, got dict"):
        FSDP(_model(), mixed_precision={"param_dtype": dg.float16})
    torch = pytest.importorskip("torch")
    model = FSDP(_model(), mixed_precision=MixedPrecision(param_dtype=torch.float16, buffer_dtype=np.float16))
    assert model._mixed_precision.param_dtype is dg.float16 is model._mixed_precision.buffer_dtype
    with pytest.raises(ConfigError, match=r"buffer_dtype=torch.bfloat16 is not supported \(numpy and cupy"):
        FSDP(_model(), mixed_precision=MixedPrecision(buffer_dtype=torch.bfloat16))


def test_alone_gradients_accumulate_over_synced_backwards_in_full_precision_as_torchs():
    """Two backwards, no zero_grad between: each reduced float16 gradient is cast to float32, then added (with
    use_orig_params the piece set aside was added in float16)."""
    plain = _model()
    low = _model().to(dg.float16)
    low.load_state_dict(plain.state_dict())
    want = []
    for step in (0, 1):
        x, y = _batch(step, ROWS)
        low.zero_grad()
        F.cross_entropy(low(x.to(dg.float16)), y).backward()
        want.append([p.grad.numpy().astype(np.float32) for p in low.parameters()])
    want = np.concatenate([(a + b).ravel() for a, b in zip(*want)])
    for strategy, orig in RUNS:
        model = FSDP(_model(), sharding_strategy=ShardingStrategy[strategy], use_orig_params=orig,
                     mixed_precision=F16, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip
        for step in (0, 1):
            x, y = _batch(step, ROWS)
            F.cross_entropy(model(x), y).backward()
        got = np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])  # (alone: whole, in order)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"{strategy} orig={orig}")


def _one_step_beside_torch(init_method):
    """torch's FSDP and distgraph's on this rank (torch's over gloo, its group met at `init_method`), the same
    float32 weights, MixedPrecision(float16 params and buffers), use_orig_params, a unit per _Scaled: one SGD
    step on this rank's rows → the outputs, the gradients (names as the plain model's), the full state dicts."""
    import torch
    import torch.distributed as tdist
    from torch.distributed.fsdp import FullyShardedDataParallel as TorchFSDP
    from torch.distributed.fsdp import MixedPrecision as TorchMixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy as TorchModuleWrapPolicy

    class TorchScaled(torch.nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.linear = torch.nn.Linear(n_in, n_out)
            self.register_buffer("scale", torch.full((n_out,), 1.25))
            self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

        def forward(self, x):
            self.calls.add_(1)
            return self.linear(x) * self.scale

    rank, world = dist.get_rank(), dist.get_world_size()
    mine = nn.Sequential(_Scaled(5, 8), nn.Tanh(), _Scaled(8, 3))
    theirs = torch.nn.Sequential(TorchScaled(5, 8), torch.nn.Tanh(), TorchScaled(8, 3))
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in mine.state_dict().items()})
    x, y = _batch(0, ROWS * world)
    x, y = x[ROWS * rank : ROWS * (rank + 1)], y[ROWS * rank : ROWS * (rank + 1)]
    tdist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        theirs = TorchFSDP(theirs, auto_wrap_policy=TorchModuleWrapPolicy({TorchScaled}), device_id=torch.device("cpu"),
                           use_orig_params=True, mixed_precision=TorchMixedPrecision(torch.float16, buffer_dtype=torch.float16))  # fmt: skip
        out_theirs = theirs(torch.from_numpy(x.numpy()))
        torch.nn.functional.cross_entropy(out_theirs, torch.from_numpy(y.numpy())).backward()
        grads_theirs = {
            n.replace("_fsdp_wrapped_module.", ""): None if p.grad is None else p.grad.numpy().copy()
            for n, p in theirs.named_parameters()
        }
        torch.optim.SGD(theirs.parameters(), lr=0.1).step()
        state_theirs = {k: v.numpy() for k, v in theirs.state_dict().items()}
    finally:
        tdist.destroy_process_group()
    model = FSDP(mine, auto_wrap_policy=ModuleWrapPolicy({_Scaled}), use_orig_params=True,
                 mixed_precision=MixedPrecision(dg.float16, buffer_dtype=dg.float16))  # fmt: skip
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {
        n: None if p.grad is None else p.grad.numpy().copy() for n, p in model.named_parameters()
    }  # (on 2 ranks: pieces)
    dg.optim.SGD(model.parameters(), lr=0.1).step()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return {"out": (out.detach().numpy(), out_theirs.detach().numpy()), "grads": (grads, grads_theirs),
            "state": (state, state_theirs)}  # fmt: skip


def _assert_as_torchs(got, with_grads=True):
    (out, out_theirs), (grads, grads_theirs), (state, state_theirs) = got["out"], got["grads"], got["state"]
    assert out.dtype == out_theirs.dtype == np.float16
    np.testing.assert_allclose(out, out_theirs, rtol=2e-3, atol=2e-3)
    if with_grads:  # (alone: whole; on 2 ranks each rank's pieces, cut alike only where torch's and ours agree)
        assert list(grads) == list(grads_theirs)
        for n, g in grads_theirs.items():
            assert grads[n].dtype == g.dtype == np.float32, n
            np.testing.assert_allclose(grads[n].reshape(g.shape), g, rtol=0, atol=5e-3 * np.abs(g).max(), err_msg=n)
    assert sorted(state) == sorted(state_theirs)
    for k, v in state_theirs.items():
        assert state[k].dtype == v.dtype, k  # full precision (the buffers too), the counter an int64
        np.testing.assert_allclose(state[k], v, rtol=0, atol=1e-4, err_msg=k)


def test_alone_one_step_matches_torchs_fsdp_mixed_precision(tmp_path):
    """(module doc: the tolerances.) Computing in float32, or casting back nothing, fails it on the dtypes."""
    pytest.importorskip("torch")
    _assert_as_torchs(_one_step_beside_torch(f"file://{tmp_path / 'rendezvous'}"))
