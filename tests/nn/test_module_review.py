"""Module review fixes, each against torch: a Parameter assigned over a class attribute (a parametrized
weight) refused; state_dict's extension points (extra state, _save_to/_load_from_state_dict overrides,
_metadata versions, state-dict and load hooks, BatchNorm's num_batches_tracked by version); and the missing
API: orthogonal, BatchNorm fusion, skip_init, the legacy backward hook, type / bfloat16 / share_memory and
always-called forward hooks."""

from collections import OrderedDict

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError
from distgraph.nn.module_state import StateDictError

torch = pytest.importorskip("torch")
LIBS = pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])


def _parametrize(m):
    return m.nn.utils.parametrize


def _np(t):
    return t.detach().numpy()


# ---- 1. a Parameter over a class attribute ---------------------------------------------------------------
@LIBS
def test_assigning_a_parameter_over_a_parametrized_weight_raises(m):
    class Double(m.nn.Module):
        def forward(self, x):
            return 2 * x

    lin = m.nn.Linear(2, 2)
    _parametrize(m).register_parametrization(lin, "weight", Double())
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        lin.weight = m.nn.Parameter(m.ones(2, 2))
    assert "weight" not in lin._parameters  # the parametrization still gives weight
    np.testing.assert_allclose(_np(lin.weight), 2 * _np(lin.parametrizations.weight.original))


@LIBS
@pytest.mark.parametrize("how", ["setattr", "register_parameter", "register_buffer"])
def test_a_property_or_class_attribute_is_not_shadowed(m, how):
    class WithProperty(m.nn.Module):
        foo = 3

        @property
        def bar(self):
            return 1

    for name in ("foo", "bar"):
        mod = WithProperty()
        with pytest.raises(KeyError, match=f"attribute '{name}' already exists"):
            if how == "setattr":
                setattr(mod, name, m.nn.Parameter(m.ones(1)))
            else:
                getattr(mod, how)(name, m.nn.Parameter(m.ones(1)) if how == "register_parameter" else m.ones(1))


@LIBS
def test_an_instance_attribute_is_replaced_by_a_parameter_but_not_registered_over(m):
    mod = m.nn.Module()
    mod.x = 3
    mod.x = m.nn.Parameter(m.ones(1))
    assert list(mod._parameters) == ["x"] and "x" not in mod.__dict__
    mod.y = 3
    with pytest.raises(KeyError, match="attribute 'y' already exists"):
        mod.register_parameter("y", m.nn.Parameter(m.ones(1)))


# ---- 2. state_dict extension points ----------------------------------------------------------------------
def _with_extra_state(m):
    class Counter(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.count = m.nn.Linear(2, 2), 0

        def get_extra_state(self):
            return {"count": self.count}

        def set_extra_state(self, state):
            self.count = state["count"]

    return m.nn.Sequential(Counter())


@LIBS
def test_extra_state_is_saved_under_extra_state_and_restored(m):
    src, dst = _with_extra_state(m), _with_extra_state(m)
    src[0].count = 7
    sd = src.state_dict()
    assert list(sd) == ["0._extra_state", "0.lin.weight", "0.lin.bias"] and sd["0._extra_state"] == {"count": 7}
    assert tuple(dst.load_state_dict(sd)) == ([], [])
    assert dst[0].count == 7
    del sd["0._extra_state"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "0._extra_state"'):
        dst.load_state_dict(sd)
    plain = m.nn.Sequential(m.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "0._extra_state"'):
        plain.load_state_dict({**plain.state_dict(), "0._extra_state": 1})


@LIBS
def test_overridden_save_and_load_from_state_dict_are_called_per_module(m):
    calls = []

    class Scaled(m.nn.Linear):
        def _save_to_state_dict(self, destination, prefix, keep_vars):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            destination[prefix + "weight"] = destination[prefix + "weight"] * 10

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
            calls.append((prefix, local_metadata.get("version"), strict, sorted(state_dict)))
            state_dict[prefix + "weight"] = state_dict[prefix + "weight"] / 10
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    src, dst = m.nn.Sequential(Scaled(2, 2)), m.nn.Sequential(Scaled(2, 2))
    sd = src.state_dict()
    np.testing.assert_allclose(_np(sd["0.weight"]), 10 * _np(src[0].weight), rtol=1e-6)
    dst.load_state_dict(sd, strict=False)
    assert calls == [("0.", 1, True, ["0.bias", "0.weight"])]  # the child sees only its entries; strict: True
    np.testing.assert_allclose(_np(dst[0].weight), _np(src[0].weight), rtol=1e-6)


def _net(m):
    return m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Sequential(m.nn.BatchNorm1d(2)))


def test_state_dict_metadata_holds_each_modules_version_as_torchs():
    dsd, tsd = _net(dg).state_dict(), _net(torch).state_dict()
    assert (
        dsd._metadata
        == tsd._metadata
        == OrderedDict([("", {"version": 1}), ("0", {"version": 1}), ("1", {"version": 1}), ("1.0", {"version": 2})])
    )
    assert not hasattr(_net(dg).state_dict(destination={}), "_metadata")  # only a dict made by the call


@LIBS
def test_num_batches_tracked_missing_from_a_versioned_state_dict_is_missing(m):
    """A state dict that says BatchNorm version 2 must have the count; an older or unversioned one gets the
    module's own count, as torch's loader fills it in."""
    net = _net(m)
    net[1][0].num_batches_tracked.fill_(4)
    sd = net.state_dict()
    del sd["1.0.num_batches_tracked"]  # keeps _metadata: version 2
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1.0.num_batches_tracked"'):
        net.load_state_dict(sd)
    assert net.load_state_dict(sd, strict=False).missing_keys == ["1.0.num_batches_tracked"]
    sd._metadata["1.0"] = {"version": 1}  # written before the buffer existed
    assert tuple(net.load_state_dict(sd)) == ([], [])
    del sd._metadata  # no version at all: an old plain dict
    assert tuple(net.load_state_dict(sd)) == ([], [])
    assert int(net[1][0].num_batches_tracked) == 4


@LIBS
def test_unexpected_keys_are_found_module_by_module_in_torchs_order(m):
    net = _net(m)
    sd = {**net.state_dict(), "1.0.extra": m.zeros(1), "top": m.zeros(1), "2.w": m.zeros(1)}
    assert net.load_state_dict(sd, strict=False).unexpected_keys == ["top", "2.w", "1.0.extra"]


@LIBS
def test_state_dict_hooks_run_around_each_modules_state(m):
    net, log = _net(m), []
    net[1].register_state_dict_pre_hook(lambda mod, prefix, keep_vars: log.append(("pre", prefix, keep_vars)))

    def post(mod, sd, prefix, local_metadata):
        log.append(("post", prefix, local_metadata, sorted(k for k in sd if k.startswith(prefix))))
        sd[prefix + "note"] = 1

    net[1].register_state_dict_post_hook(post)
    sd = net.state_dict()
    assert log == [
        ("pre", "1.", False),
        ("post", "1.", {"version": 1}, ["1.0.bias", "1.0.num_batches_tracked", "1.0.running_mean",
                                        "1.0.running_var", "1.0.weight"]),
    ]  # fmt: skip
    assert sd["1.note"] == 1
    net[0].register_state_dict_post_hook(lambda *a: {})
    with pytest.raises(RuntimeError, match="state_dict post-hook must return None"):
        net.state_dict()


@LIBS
def test_the_private_state_dict_hook_may_replace_the_root_result(m):
    net = _net(m)
    net._register_state_dict_hook(lambda mod, sd, prefix, meta: OrderedDict(x=len(sd)))
    assert net.state_dict() == OrderedDict(x=7)


@LIBS
def test_load_state_dict_hooks_see_and_may_edit_the_entries_and_the_keys(m):
    net, log = _net(m), []
    sd = net.state_dict()

    def pre(mod, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        log.append(("pre", type(mod).__name__, prefix, local_metadata, strict))
        state_dict.pop(prefix + "weight", None)  # the copy the loader reads: the caller's dict keeps it

    def post(mod, incompatible):
        log.append(("post", list(incompatible.missing_keys)))
        incompatible.missing_keys.clear()

    net[0].register_load_state_dict_pre_hook(pre)
    net.register_load_state_dict_post_hook(post)
    assert tuple(net.load_state_dict(sd)) == ([], [])  # strict: the post-hook cleared what was missing
    assert "0.weight" in sd
    assert log == [("pre", "Linear", "0.", {"version": 1}, True), ("post", ["0.weight"])]


# ---- 4. orthogonal --------------------------------------------------------------------------------------
def _linear_pair(out_f, in_f, seed=0):
    w = np.random.default_rng(seed).standard_normal((out_f, in_f))
    d, t = dg.nn.Linear(in_f, out_f).double(), torch.nn.Linear(in_f, out_f).double()
    d.weight.array[...] = w
    with torch.no_grad():
        t.weight.copy_(torch.tensor(w))
        t.bias.copy_(torch.tensor(d.bias.detach().numpy()))
    return d, t


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
@pytest.mark.parametrize("use_trivialization", [True, False])
def test_orthogonal_matches_torch_forward_and_gradient(shape, orthogonal_map, use_trivialization):
    d, t = _linear_pair(*shape)
    kw = {"orthogonal_map": orthogonal_map, "use_trivialization": use_trivialization}
    dg.nn.utils.parametrizations.orthogonal(d, **kw)
    torch.nn.utils.parametrizations.orthogonal(t, **kw)
    assert list(d.state_dict()) == list(t.state_dict())
    d.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})  # a tall base is completed at random
    x = np.random.default_rng(1).standard_normal((4, shape[1]))
    yd, yt = d(dg.tensor(x)), t(torch.tensor(x))
    (yd**2).sum().backward()
    (yt**2).sum().backward()
    np.testing.assert_allclose(_np(yd), _np(yt), rtol=1e-10, atol=1e-12)
    grad_d, grad_t = d.parametrizations.weight.original.grad, t.parametrizations.weight.original.grad
    np.testing.assert_allclose(grad_d.numpy(), grad_t.numpy(), rtol=1e-8, atol=1e-10)
    q = _np(d.weight)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 4), (2, 5, 3), (2, 3, 5)])
@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_registration_keeps_the_qr_of_the_weight_as_torch(shape, orthogonal_map):
    w = np.random.default_rng(2).standard_normal(shape)
    dm, tm = dg.nn.Module(), torch.nn.Module()
    dm.weight, tm.weight = dg.nn.Parameter(dg.tensor(w)), torch.nn.Parameter(torch.tensor(w))
    square = shape[-1] == shape[-2]
    kw = {"orthogonal_map": orthogonal_map, "use_trivialization": square}  # a tall base would be random
    dg.nn.utils.parametrizations.orthogonal(dm, **kw)
    torch.nn.utils.parametrizations.orthogonal(tm, **kw)
    if square or orthogonal_map == "householder":
        np.testing.assert_allclose(_np(dm.weight), _np(tm.weight), atol=1e-12)
    np.testing.assert_allclose(
        _np(dm.parametrizations.weight.original), _np(tm.parametrizations.weight.original), atol=1e-12
    )


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_assigning_an_orthogonal_matrix_to_an_orthogonal_weight_keeps_it(orthogonal_map):
    lin = dg.nn.utils.parametrizations.orthogonal(dg.nn.Linear(3, 5).double(), orthogonal_map=orthogonal_map)
    q = np.linalg.qr(np.random.default_rng(3).standard_normal((5, 3)))[0]
    lin.weight = dg.tensor(q)
    np.testing.assert_allclose(_np(lin.weight), q, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(5, 3\). Got a tensor of shape \(3, 5\)"):
        lin.weight = dg.tensor(q.T.copy())


def test_orthogonal_refuses_what_torch_refuses():
    orth = dg.nn.utils.parametrizations.orthogonal
    with pytest.raises(ValueError, match="Expected a matrix or batch of matrices. Got a tensor of 1 dimensions"):
        orth(dg.nn.Linear(2, 2), "bias")
    with pytest.raises(ValueError, match='orthogonal_map has to be one of "matrix_exp", "cayley", "householder"'):
        orth(dg.nn.Linear(2, 2), orthogonal_map="qr")
    lin = orth(dg.nn.Linear(2, 2), orthogonal_map="cayley", use_trivialization=False)
    with pytest.raises(NotImplementedError, match="not possible to assign to the matrix exponential or the Cayley"):
        lin.weight = dg.eye(2)


# ---- 4. fusion, skip_init -------------------------------------------------------------------------------
def _trained_bn(m, bn, x):
    bn.train()
    bn(m.tensor(x))
    return bn.eval()


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fuse_conv_bn_eval_matches_torch_and_the_unfused_pair(transpose, bias):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 6))
    out = {}
    for m in (dg, torch):
        m.manual_seed(0)
        cls = m.nn.ConvTranspose2d if transpose else m.nn.Conv2d
        conv = cls(3, 4, 3, bias=bias).double().eval()
        bn = m.nn.BatchNorm2d(4).double()
        if m is torch:  # the same weights in both
            with torch.no_grad():
                conv.weight.copy_(torch.tensor(out["w"]))
                if bias:
                    conv.bias.copy_(torch.tensor(out["b"]))
        else:
            out["w"], out["b"] = _np(conv.weight), _np(conv.bias) if bias else None
        bn = _trained_bn(m, bn, _np(conv(m.tensor(x))) * 3 + 1)
        fused = m.nn.utils.fusion.fuse_conv_bn_eval(conv, bn, transpose=transpose)
        out[m.__name__] = (_np(fused(m.tensor(x))), _np(bn(conv(m.tensor(x)))), isinstance(fused.bias, m.nn.Parameter))
    (fd, ref_d, is_param), (ft, _, _) = out["distgraph"], out["torch"]
    assert is_param
    np.testing.assert_allclose(fd, ft, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fd, ref_d, rtol=1e-10, atol=1e-10)


def test_fuse_linear_bn_eval_matches_torch_and_refuses_training_mode():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    stats = rng.standard_normal((8, 2)) * 2 + 1
    res = []
    for m in (dg, torch):
        lin = m.nn.Linear(3, 2).double().eval()
        with m.no_grad():
            lin.weight.copy_(m.tensor(w))
            lin.bias.copy_(m.tensor(b))
        bn = _trained_bn(m, m.nn.BatchNorm1d(2).double(), stats)
        res.append(_np(m.nn.utils.fusion.fuse_linear_bn_eval(lin, bn)(m.tensor(x))))
        res.append(_np(bn(lin(m.tensor(x)))))
        with pytest.raises(AssertionError, match="Fusion only for eval!"):
            m.nn.utils.fusion.fuse_linear_bn_eval(lin.train(), bn)
    np.testing.assert_allclose(res[0], res[2], rtol=1e-10)
    np.testing.assert_allclose(res[0], res[1], rtol=1e-10)


@LIBS
def test_skip_init_builds_the_module_without_drawing_random_numbers(m):
    m.manual_seed(0)
    expected = m.rand(3)
    m.manual_seed(0)
    lin = m.nn.utils.skip_init(m.nn.Linear, 4, out_features=2, bias=True, dtype=m.float64)
    assert type(lin) is m.nn.Linear and tuple(lin.weight.shape) == (2, 4) and lin.weight.dtype == m.float64
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(_np(m.rand(3)), _np(expected))  # nothing drawn
    with pytest.raises(RuntimeError, match="Module must support a 'device' arg to skip initialization"):
        m.nn.utils.skip_init(m.nn.ReLU)
    with pytest.raises(RuntimeError, match="Expected a Module"):
        m.nn.utils.skip_init(int)


# ---- 4. legacy backward hook, type / bfloat16 / share_memory, always_call ---------------------------------
@LIBS
def test_register_backward_hook_on_a_one_op_module_sees_its_gradients(m):
    act, log = m.nn.Tanh(), []
    act.register_backward_hook(lambda mod, gi, go: log.append((_np(gi[0]), _np(go[0]))) or (gi[0] * 2,))
    x = m.tensor([0.5, -1.0, 2.0], requires_grad=True)
    (act(x) * m.tensor([1.0, 2.0, 3.0])).sum().backward()
    (gi, go), = log  # fmt: skip
    np.testing.assert_allclose(go, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(gi, [1.0, 2.0, 3.0] * (1 - np.tanh([0.5, -1.0, 2.0]) ** 2), rtol=1e-6)
    np.testing.assert_allclose(_np(x.grad), 2 * gi, rtol=1e-6)
    with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full backward hooks"):
        act.register_full_backward_hook(lambda *a: None)
    other = m.nn.ReLU()
    other.register_full_backward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full backward hooks"):
        other.register_backward_hook(lambda *a: None)


@LIBS
def test_module_type_casts_every_tensor_as_torch(m):
    bn = m.nn.BatchNorm1d(2).type(m.float64)
    assert bn.weight.dtype == bn.running_mean.dtype == bn.num_batches_tracked.dtype == m.float64
    assert m.nn.Linear(2, 2).type("torch.DoubleTensor").weight.dtype == m.float64
    with pytest.raises(RuntimeError if m is torch else DTypeError, match="must be floating point or complex"):
        m.nn.Linear(2, 2).type(m.int32)


def test_bfloat16_says_distgraph_has_none_and_share_memory_returns_the_module():
    lin = dg.nn.Linear(2, 2)
    with pytest.raises(DTypeError, match="Linear.bfloat16\\(\\): .* no bfloat16 dtype"):
        lin.bfloat16()
    w = lin.weight
    assert lin.share_memory() is lin and lin.weight is w and torch.nn.Linear(2, 2).share_memory() is not None


@LIBS
def test_an_always_call_forward_hook_runs_when_forward_raises(m):
    class Boom(m.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    mod, log = Boom(), []
    mod.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
    mod.register_forward_hook(
        lambda mod, args, out: log.append(("always", _np(args[0]).tolist(), out)), always_call=True
    )
    mod.register_forward_hook(lambda mod, args, out: log.append("plain"))
    mod.register_forward_hook(lambda mod, a, kw, out: log.append(("kwargs", kw)), with_kwargs=True, always_call=True)

    def failing(mod, args, out):
        raise KeyError("inner")

    mod.register_forward_hook(failing, always_call=True)
    with pytest.warns(UserWarning, match="always_call=True.* raised an exception that was silenced.*'inner'"):
        with pytest.raises(ValueError, match="boom"):
            mod(m.ones(1))
    assert log == [("always", [2.0], None), ("kwargs", {})]
    log.clear()
    handle = mod.register_forward_hook(lambda *a: log.append("removed"), always_call=True)
    handle.remove()
    with pytest.warns(UserWarning), pytest.raises(ValueError):
        mod(m.ones(1))
    assert "removed" not in log


@pytest.mark.parametrize("assign", [False, True])
def test_a_load_that_raises_leaves_the_module_as_it_was(assign):
    """torch copies as it goes and leaves half a model behind a failed load; distgraph puts it back."""
    model = dg.nn.Sequential(dg.nn.Linear(3, 4), dg.nn.BatchNorm1d(4), dg.nn.Linear(4, 2))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    bad = {k: dg.zeros(*v.shape) + 7 for k, v in model.state_dict().items()}
    bad["2.weight"] = dg.zeros(5, 5)  # a size mismatch after the first layers were written
    with pytest.raises(StateDictError, match="size mismatch"):
        model.load_state_dict(bad, assign=assign)
    after = model.state_dict(keep_vars=True)
    for k, v in after.items():
        assert v is tensors[k], k  # the same tensors (an optimizer built before still holds them)
        np.testing.assert_array_equal(v.numpy() if not v.requires_grad else v.detach().numpy(), before[k], err_msg=k)
    del bad["2.weight"]
    with pytest.raises(StateDictError, match="Missing key"):  # strict: a missing key after the others loaded
        model.load_state_dict(bad, assign=assign)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), before["0.weight"])
