"""layer_norm with its backward formed from x − mean
(no x̂ array), and safe_softmax's in-place exp under scaled_dot_product_attention: values and gradients
against torch (float64 to 1e-12, float32 to its rounding), the plain path (float16, non-contiguous input),
and the bits the ops of a captured graph give against eager's array rule."""

import zlib

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.ops import fused_norm
from distgraph.ops.registry import get_op

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RNG = np.random.default_rng(11)


def _tol(dtype):
    return dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _both(fn_dg, fn_t, arrays, seed):
    xs = [dg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, tout = fn_dg(*xs), fn_t(*ts)
    out.backward(dg.tensor(seed))
    tout.backward(torch.tensor(seed))
    return out, tout, [x.grad.numpy() for x in xs], [t.grad.numpy() for t in ts]


# ---- layer_norm against torch ----------------------------------------------------------------------------------
_SHAPES = [((256, 1024), (1024,)), ((4, 6, 40), (6, 40)), ((3, 5), (5,)), ((2, 5, 3), (3,)), ((0, 4), (4,))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("shape", "norm"), _SHAPES)
@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
@pytest.mark.parametrize("offset", [0.0, 1e2])
def test_layer_norm_matches_torch(shape, norm, affine, offset, dtype):
    if dtype == np.float32 and offset and np.prod(norm) < 8:
        pytest.skip("torch's own float32 gradients lose most digits to the offset over so few elements")
    rng = np.random.default_rng(zlib.crc32(f"{shape}{affine}{offset}".encode()))  # the same data in any order
    x = (rng.standard_normal(shape) * 3 + offset).astype(dtype)
    w, b = rng.uniform(0.5, 2, norm).astype(dtype), rng.standard_normal(norm).astype(dtype)
    arrays = [x] + ([w] if "w" in affine else []) + ([b] if "b" in affine else [])
    seed = rng.standard_normal(shape).astype(dtype)

    def fn(mod):
        def f(a, *wb):
            return mod.layer_norm(a, norm, wb[0] if "w" in affine else None, wb[-1] if "b" in affine else None)

        return f

    out, tout, grads, tgrads = _both(fn(F), fn(TF), arrays, seed)
    assert out.detach().numpy().dtype == dtype
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), **_tol(dtype))
    for g, t in zip(grads, tgrads):  # gradients scaled by their size (w's sums over up to 256 rows)
        scale = max(1.0, float(np.abs(t).max(initial=0)))
        np.testing.assert_allclose(g / scale, t / scale, **_tol(dtype))


def test_layer_norm_of_a_non_contiguous_input_and_float16():
    x = RNG.standard_normal((16, 12))
    w, b = RNG.uniform(0.5, 2, (16,)), RNG.standard_normal((16,))
    seed = RNG.standard_normal((12, 16))
    fn_dg = lambda a, ww, bb: F.layer_norm(a.T, (16,), ww, bb)  # noqa: E731
    fn_t = lambda a, ww, bb: TF.layer_norm(a.T, (16,), ww, bb)  # noqa: E731
    out, tout, grads, tgrads = _both(fn_dg, fn_t, [x, w, b], seed)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=0, atol=1e-12)
    for g, t in zip(grads, tgrads):
        np.testing.assert_allclose(g, t, rtol=0, atol=1e-12)
    h = [a.astype(np.float16) for a in (x, w, b)]
    out, tout, grads, tgrads = _both(fn_dg, fn_t, h, seed.astype(np.float16))
    assert out.detach().numpy().dtype == np.float16 and all(g.dtype == np.float16 for g in grads)
    np.testing.assert_allclose(out.detach().numpy().astype(float), tout.detach().numpy().astype(float), atol=1e-2)
    for g, t in zip(grads, tgrads):
        np.testing.assert_allclose(g.astype(float), t.astype(float), rtol=2e-2, atol=5e-2)


def test_layer_norm_double_backward_matches_torch():
    x, w, b = RNG.standard_normal((6, 9)), RNG.uniform(0.5, 2, (9,)), RNG.standard_normal((9,))
    s = RNG.standard_normal((6, 9))
    res = []
    for mod, lib in ((F, dg), (TF, torch)):
        xs = [lib.tensor(a, requires_grad=True) for a in (x, w, b)]
        out = mod.layer_norm(xs[0], (9,), xs[1], xs[2])
        gs = lib.autograd.grad((out * lib.tensor(s)).sum(), xs, create_graph=True)
        sum(((g**2).sum() for g in gs[:2]), start=gs[2].sum() * 0).backward()
        res.append([t.grad.detach().numpy() for t in xs[:2]])
    for a, t in zip(*res):
        np.testing.assert_allclose(a, t, rtol=0, atol=1e-10)


# ---- eager's array rule and a captured graph's ops give the same bits -----------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_backward_ops_give_the_array_rules_bits(dtype):
    x = (RNG.standard_normal((3, 64, 32)) + 5).astype(dtype)
    w, b = RNG.uniform(0.5, 2, (64, 32)).astype(dtype), RNG.standard_normal((64, 32)).astype(dtype)
    seed = RNG.standard_normal(x.shape).astype(dtype)
    xs = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    F.layer_norm(xs[0], (64, 32), xs[1], xs[2]).backward(dg.tensor(seed))
    gx = get_op("layer_norm_backward").forward(np, seed, x, w, k=2, eps=1e-5)
    gw = get_op("layer_norm_weight_grad").forward(np, seed, x, k=2, eps=1e-5)
    np.testing.assert_array_equal(xs[0].grad.numpy(), gx)
    np.testing.assert_array_equal(xs[1].grad.numpy(), gw)


def test_each_layer_norm_gradient_has_the_same_bits_whichever_others_are_asked_for():
    x, g = RNG.standard_normal((20, 48)).astype(np.float32), RNG.standard_normal((20, 48)).astype(np.float32)
    w = RNG.uniform(0.5, 2, (48,)).astype(np.float32)
    gx, gw = fused_norm.layer_norm_grads(np, g, x, w, 1, 1e-5, True, True)
    np.testing.assert_array_equal(fused_norm.layer_norm_grads(np, g, x, w, 1, 1e-5, True, False)[0], gx)
    np.testing.assert_array_equal(fused_norm.layer_norm_grads(np, g, x, None, 1, 1e-5, False, True)[1], gw)


# ---- scaled_dot_product_attention (safe_softmax's in-place exp) ---------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mask", [None, "bool", "float", "causal"])
@pytest.mark.parametrize("scale", [None, 0.25])
def test_sdpa_matches_torch(mask, scale, dtype):
    q, k, v = (RNG.standard_normal((2, 3, 16, 8)).astype(dtype) for _ in range(3))
    seed = RNG.standard_normal((2, 3, 16, 8)).astype(dtype)
    kw = {"scale": scale, "is_causal": mask == "causal"}
    m = None
    if mask == "bool":
        m = RNG.random((16, 16)) > 0.3
        m[4] = False  # a fully masked query row: 0 output and 0 gradient, as torch's
    elif mask == "float":
        m = RNG.standard_normal((16, 16)).astype(dtype)

    def fn(mod, lib):
        return lambda a, b, c: mod.scaled_dot_product_attention(
            a, b, c, attn_mask=None if m is None else lib.tensor(m), **kw
        )

    out, tout, grads, tgrads = _both(fn(F, dg), fn(TF, torch), [q, k, v], seed)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), **_tol(dtype))
    for g, t in zip(grads, tgrads):
        np.testing.assert_allclose(g, t, **_tol(dtype))


def test_safe_softmax_of_minus_inf_rows_and_a_transposed_input():
    x = RNG.standard_normal((5, 6))
    x[1] = -np.inf
    x[3, :4] = -np.inf
    for a in (x, x.T.copy().T):
        got = dg.ops.linalg.safe_softmax(dg.tensor(a), -1).numpy()
        np.testing.assert_allclose(got, torch._safe_softmax(torch.tensor(a), -1).numpy(), rtol=0, atol=1e-15)
    got = dg.ops.linalg.safe_softmax(dg.tensor(x.T), 0).numpy()
    np.testing.assert_allclose(got, torch._safe_softmax(torch.tensor(x.T), 0).numpy(), rtol=0, atol=1e-15)
