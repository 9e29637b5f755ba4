"""softmax / log_softmax, layer_norm, cross_entropy and embedding after their passes were cut (in-place
exp and scaling, layer_norm's array rule computing all three gradients from one x̂, embedding's sorted
scatter-add): values and gradients against torch (float64 to 1e-12, float32 to its rounding), double
backward where it was supported, and the edge cases the new code paths branch on."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.ops.registry import get_op

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RNG = np.random.default_rng(7)


def _tol(dtype):
    return dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def _run(fn_dg, fn_t, arrays, seed=None, grad_mask=None):
    """fn over dg and torch leaves; backward with a fixed seed gradient: (outs, grads) of each."""
    mask = grad_mask or [True] * len(arrays)
    xs = [dg.tensor(a, requires_grad=m) for a, m in zip(arrays, mask)]
    ts = [torch.tensor(a, requires_grad=m) for a, m in zip(arrays, mask)]
    out, tout = fn_dg(*xs), fn_t(*ts)
    if seed is None:
        seed = np.random.default_rng(1).standard_normal(tuple(tout.shape)).astype(arrays[0].dtype)
    out.backward(dg.tensor(seed))
    tout.backward(torch.tensor(seed))
    grads = [x.grad.numpy() if m else None for x, m in zip(xs, mask)]
    tgrads = [t.grad.numpy() if m else None for t, m in zip(ts, mask)]
    return out.detach().numpy(), tout.detach().numpy(), grads, tgrads


def _check(fn_dg, fn_t, arrays, **kw):
    out, tout, grads, tgrads = _run(fn_dg, fn_t, arrays, **kw)
    tol = _tol(arrays[0].dtype)
    assert out.dtype == tout.dtype
    np.testing.assert_allclose(out, tout, **tol)
    for g, tg in zip(grads, tgrads):
        if g is not None:
            assert g.dtype == tg.dtype
            np.testing.assert_allclose(g, tg, **tol)


def _second_order(fn_dg, fn_t, arrays):
    """d/dx Σ (∂⟨fn(x), s⟩/∂x)² through create_graph, against torch."""
    s = np.random.default_rng(2).standard_normal(fn_t(*[torch.tensor(a) for a in arrays]).shape)
    xs = [dg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    (gx,) = dg.autograd.grad((fn_dg(*xs) * dg.tensor(s)).sum(), [xs[0]], create_graph=True)
    (tgx,) = torch.autograd.grad((fn_t(*ts) * torch.tensor(s)).sum(), [ts[0]], create_graph=True)
    got = dg.autograd.grad((gx * gx).sum(), xs, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad((tgx * tgx).sum(), ts, allow_unused=True, materialize_grads=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-11)


# ---- softmax / log_softmax -----------------------------------------------------------------------------------
_SHAPES = [((6, 9), -1), ((6, 9), 0), ((2, 3, 5), 1), ((4,), 0), ((), 0), ((0, 3), -1)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("shape", "dim"), _SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_forward_and_gradient_match_torch(name, shape, dim, dtype):
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    _check(lambda a: getattr(F, name)(a, dim), lambda a: getattr(TF, name)(a, dim), [x])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_a_transposed_input_is_row_major_and_matches_torch(name):
    x = RNG.standard_normal((7, 5))
    out, tout, grads, tgrads = _run(lambda a: getattr(F, name)(a.t(), -1), lambda a: getattr(TF, name)(a.t(), -1), [x])
    np.testing.assert_allclose(out, tout, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads[0], tgrads[0], rtol=0, atol=1e-12)
    assert dg.tensor(x).t().softmax(-1).numpy().flags.c_contiguous


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_with_large_small_and_minus_inf_entries(name):
    x = RNG.standard_normal((5, 6)) * 1e3
    x[0, :3] = -np.inf  # some entries masked
    x[1] = 1e-300
    x[2, 0] = 1e300
    out, tout, grads, tgrads = _run(
        lambda a: getattr(F, name)(a, -1), lambda a: getattr(TF, name)(a, -1), [x], seed=np.ones((5, 6))
    )
    np.testing.assert_allclose(out, tout, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads[0], tgrads[0], rtol=0, atol=1e-12)


def test_softmax_of_an_all_minus_inf_row_is_nan_as_torchs():
    x = RNG.standard_normal((3, 4))
    x[1] = -np.inf
    got, want = F.softmax(dg.tensor(x), -1).numpy(), TF.softmax(torch.tensor(x), -1).numpy()
    assert np.isnan(got[1]).all() and np.isnan(want[1]).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [-1, 0])
def test_softmax_double_backward_matches_torch(name, dim):
    x = RNG.standard_normal((4, 5))
    _second_order(lambda a: getattr(F, name)(a, dim), lambda a: getattr(TF, name)(a, dim), [x])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_float16_keeps_its_dtype(name):
    x = RNG.standard_normal((4, 8)).astype(np.float16)
    xd = dg.tensor(x, requires_grad=True)
    out = getattr(F, name)(xd, -1)
    (out * 2.0).sum().backward()
    assert out.detach().numpy().dtype == xd.grad.numpy().dtype == np.float16
    ref = getattr(TF, name)(torch.tensor(x.astype(np.float64)), -1).numpy()
    np.testing.assert_allclose(out.detach().numpy().astype(np.float64), ref, rtol=0, atol=4e-3)


# ---- layer_norm ----------------------------------------------------------------------------------------------
def test_layer_norm_has_an_array_rule():
    assert get_op("layer_norm").array_backward is not None


# (the last two: rows of 128+ elements, which run with numpy's ufunc buffer cut to a row)
_LN = [
    ((8, 16), (16,)),
    ((2, 3, 4, 5), (4, 5)),
    ((7,), (7,)),
    ((0, 4), (4,)),
    ((6, 300), (300,)),
    ((3, 2, 16, 9), (16, 9)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("shape", "norm"), _LN)
@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
def test_layer_norm_forward_and_gradients_match_torch(shape, norm, affine, dtype):
    x = (RNG.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w, b = RNG.uniform(0.5, 2, norm).astype(dtype), RNG.standard_normal(norm).astype(dtype)
    arrays = [x] + ([w] if "w" in affine else []) + ([b] if "b" in affine else [])

    def fn(mod):
        def f(a, *wb):
            ww = wb[0] if "w" in affine else None
            bb = wb[-1] if "b" in affine else None
            return mod.layer_norm(a, norm, ww, bb, eps=1e-5)

        return f

    _check(fn(F), fn(TF), arrays)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_layer_norm_gradient_for_only_some_inputs(which):
    """ctx.next marks what needs a gradient: each of x, w, b alone."""
    arrays = [RNG.standard_normal((5, 6)), RNG.uniform(0.5, 2, (6,)), RNG.standard_normal((6,))]
    mask = [i == which for i in range(3)]
    _check(lambda a, w, b: F.layer_norm(a, (6,), w, b), lambda a, w, b: TF.layer_norm(a, (6,), w, b), arrays,
           grad_mask=mask)  # fmt: skip


def test_layer_norm_of_a_broadcast_gradient_and_large_offset():
    """sum's backward hands layer_norm a broadcast (stride-0) gradient; a large mean tests x̂'s centring."""
    x = RNG.standard_normal((4, 32)) + 1e4
    w, b = RNG.uniform(0.5, 2, (32,)), RNG.standard_normal((32,))
    xs = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    F.layer_norm(xs[0], (32,), xs[1], xs[2]).sum().backward()
    TF.layer_norm(ts[0], (32,), ts[1], ts[2]).sum().backward()
    for a, t in zip(xs, ts):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_array_rule_equals_tensor_rule(affine):
    arrays = [RNG.standard_normal((3, 4, 6))] + (
        [RNG.uniform(0.5, 2, (4, 6)), RNG.standard_normal((4, 6))] if affine else []
    )
    seed = RNG.standard_normal((3, 4, 6))

    def grads(create_graph):
        xs = [dg.tensor(a, requires_grad=True) for a in arrays]
        out = F.layer_norm(xs[0], (4, 6), *xs[1:])
        return [g.detach().numpy() for g in dg.autograd.grad(out, xs, dg.tensor(seed), create_graph=create_graph)]

    for fast, slow in zip(grads(False), grads(True)):
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_layer_norm_double_backward_matches_torch():
    x, w, b = RNG.standard_normal((3, 5)), RNG.uniform(0.5, 2, (5,)), RNG.standard_normal((5,))
    _second_order(lambda a, ww, bb: F.layer_norm(a, (5,), ww, bb), lambda a, ww, bb: TF.layer_norm(a, (5,), ww, bb),
                  [x, w, b])  # fmt: skip


# ---- cross_entropy -------------------------------------------------------------------------------------------
_TARGET = np.array([0, 3, 1, 1, 2, 4])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "kw",
    [{}, {"label_smoothing": 0.1}, {"ignore_index": 1}, {"weight": True}, {"weight": True, "label_smoothing": 0.2}],
    ids=["plain", "smooth", "ignore", "weight", "weight-smooth"],
)
def test_cross_entropy_matches_torch(kw, reduction, dtype):
    x = (RNG.standard_normal((6, 5)) * 3).astype(dtype)
    cw = RNG.uniform(0.5, 2, (5,)).astype(dtype)
    kw = dict(kw)
    use_w = kw.pop("weight", False)

    def fn(mod, lib):
        def f(a):
            weight = lib.tensor(cw) if use_w else None
            return mod.cross_entropy(a, lib.tensor(_TARGET), weight=weight, reduction=reduction, **kw)

        return f

    _check(fn(F, dg), fn(TF, torch), [x])


def test_cross_entropy_of_confident_rows_keeps_the_small_gradient():
    """p_t ≈ 1: the target's gradient (p_t − 1)·scale is formed before scaling, as torch's."""
    x = np.zeros((4, 6), np.float32)
    x[np.arange(4), _TARGET[:4]] = [12.0, 15.0, 9.0, 30.0]
    for reduction in ("mean", "sum", "none"):
        seed = np.float32(1.0) if reduction != "none" else np.ones(4, np.float32)
        out, tout, grads, tgrads = _run(
            lambda a: F.cross_entropy(a, dg.tensor(_TARGET[:4]), reduction=reduction),
            lambda a: TF.cross_entropy(a, torch.tensor(_TARGET[:4]), reduction=reduction),
            [x],
            seed=seed,
        )
        np.testing.assert_allclose(grads[0], tgrads[0], rtol=1e-5, atol=1e-12)


def test_cross_entropy_with_every_target_ignored():
    x = RNG.standard_normal((3, 4))
    out, tout, grads, tgrads = _run(
        lambda a: F.cross_entropy(a, dg.tensor(np.array([1, 1, 1])), ignore_index=1),
        lambda a: TF.cross_entropy(a, torch.tensor(np.array([1, 1, 1])), ignore_index=1),
        [x],
        seed=np.float64(1.0),
    )
    assert np.isnan(out) and np.isnan(tout)
    np.testing.assert_array_equal(grads[0], tgrads[0])


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.3}])
def test_cross_entropy_double_backward_matches_torch(kw):
    x = RNG.standard_normal((6, 5))
    _second_order(lambda a: F.cross_entropy(a, dg.tensor(_TARGET), **kw),
                  lambda a: TF.cross_entropy(a, torch.tensor(_TARGET), **kw), [x])  # fmt: skip


# ---- embedding -----------------------------------------------------------------------------------------------
_IDS = {
    "distinct": np.arange(12) * 7 % 40,
    "repeats": RNG.integers(0, 10, (5, 9)),
    "many-repeats": np.concatenate([np.full(40, 3), RNG.integers(0, 40, 30), np.full(25, 7)]),  # > 16 of one
    "single": np.array([5]),
    "empty": np.zeros((0,), np.int64),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ids", list(_IDS), ids=list(_IDS))
@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("scale", [False, True])
def test_embedding_matches_torch(ids, padding_idx, scale, dtype):
    idx = _IDS[ids]
    w = RNG.standard_normal((40, 6)).astype(dtype)

    def fn(mod, lib):
        return lambda a: mod.embedding(lib.tensor(idx), a, padding_idx=padding_idx, scale_grad_by_freq=scale)

    _check(fn(F, dg), fn(TF, torch), [w])


def _embedding_grad(g, idx, num_weights):
    """embedding's backward op on arrays: its rows added by row_scatter.add_at."""
    return get_op("embedding_backward").forward(np, g, idx, num_weights=num_weights)


@pytest.mark.parametrize("ids", ["repeats", "many-repeats", "distinct"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_backward_equals_add_at_bit_for_bit(ids, dtype):
    """Each index's rows summed in the order they occur, as np.add.at (float32 would show another order), and a
    −0.0 gradient made +0.0 as add.at makes it."""
    idx = _IDS[ids]
    g = (RNG.standard_normal((*idx.shape, 33)) * 10.0 ** RNG.integers(-3, 4, (*idx.shape, 1))).astype(dtype)
    g[RNG.random(g.shape) < 0.1] = -0.0
    want = np.zeros((40, 33), dtype)
    np.add.at(want, idx.reshape(-1), g.reshape(-1, 33))
    assert _embedding_grad(g, idx, 40).tobytes() == want.tobytes()


def test_embedding_backward_sums_negative_indices_with_their_positive_twins():
    idx = np.array([1, -39, 2, -1, 39, 1])
    g = RNG.standard_normal((6, 4))
    want = np.zeros((40, 4))
    np.add.at(want, idx, g)
    np.testing.assert_allclose(_embedding_grad(g, idx, 40), want, rtol=0, atol=1e-15)


def test_embedding_double_backward_matches_torch():
    idx = _IDS["repeats"]
    w = RNG.standard_normal((10, 4))

    def fn(mod, lib):
        return lambda a: mod.embedding(lib.tensor(idx), a, padding_idx=2) ** 2

    _second_order(fn(F, dg), fn(TF, torch), [w])


# ---- array rules and the rules a captured graph replays give the same bits ------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_array_rule_equals_the_differentiable_rule_bit_for_bit(name, dim, dtype):
    """Both sum as the sum op does (float16 accumulating in float32), so a captured backward replays eager's bits."""
    x = RNG.standard_normal((9, 7)).astype(dtype)
    seed = RNG.standard_normal((9, 7)).astype(dtype)

    def grad(create_graph):
        xd = dg.tensor(x, requires_grad=True)
        out = getattr(F, name)(xd, dim)
        return dg.autograd.grad(out, [xd], dg.tensor(seed), create_graph=create_graph)[0].detach().numpy()

    np.testing.assert_array_equal(grad(False), grad(True))


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_backward_ops_give_the_array_rules_bits(affine):
    """A captured graph runs layer_norm_backward / layer_norm_weight_grad / sum: eager's array rule must match them."""
    x = RNG.standard_normal((6, 2, 8)).astype(np.float32)
    w, b = RNG.uniform(0.5, 2, (8,)).astype(np.float32), RNG.standard_normal((8,)).astype(np.float32)
    seed = RNG.standard_normal((6, 2, 8)).astype(np.float32)
    xs = [dg.tensor(a, requires_grad=True) for a in ([x, w, b] if affine else [x])]
    F.layer_norm(xs[0], (8,), *xs[1:]).backward(dg.tensor(seed))
    extra = [w] if affine else []
    np.testing.assert_array_equal(
        xs[0].grad.numpy(), get_op("layer_norm_backward").forward(np, seed, x, *extra, k=1, eps=1e-5)
    )
    if affine:
        np.testing.assert_array_equal(
            xs[1].grad.numpy(), get_op("layer_norm_weight_grad").forward(np, seed, x, k=1, eps=1e-5)
        )
        np.testing.assert_array_equal(xs[2].grad.numpy(), seed.sum((0, 1)))


@pytest.mark.parametrize("ids", [[0, 1, 2], [0, 1, 1]])
def test_embedding_backward_turns_a_negative_zero_gradient_positive_as_add_at(ids):
    g = np.full((len(ids), 4), -0.0)
    got = _embedding_grad(g, np.array(ids), 3)
    want = np.zeros((3, 4))
    np.add.at(want, np.array(ids), g)
    assert np.array_equal(np.signbit(got), np.signbit(want)) and not np.signbit(got).any()
