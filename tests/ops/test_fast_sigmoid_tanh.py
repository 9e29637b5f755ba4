"""sigmoid, tanh, softplus and mish computed with torch's CPU formulas (ops/kernels.py): sigmoid 1 / (1 + exp(-x))
and its backward g·(1 - y)·y, tanh's g·(1 - y·y), softplus's threshold and g·z / (z + 1), mish's
x·tanh(log1p(exp(x))) and mish_backward. Forward and gradients against torch at the tails (±100, ±1000, ±inf,
NaN) and on random values (1e-12 in float64, float32 rounding in float32), the fast mode's array rules
against the differentiable rules, double backward against torch, 0-d and float16 inputs, and a captured
graph (its fused writers) giving eager's bits."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner

torch = pytest.importorskip("torch")

_TAILS = [-1000.0, -100.0, -88.0, -20.0, -1e-3, -0.0, 0.0, 1e-3, 20.0, 25.0, 88.0, 100.0, 1000.0]
_SPECIAL = [*_TAILS, np.inf, -np.inf, np.nan]
_RNG = np.random.default_rng(0)

_ACTS = {
    "sigmoid": lambda lib, x: lib.sigmoid(x),
    "tanh": lambda lib, x: lib.tanh(x),
    "softplus": lambda lib, x: lib.nn.functional.softplus(x),
    "softplus_beta": lambda lib, x: lib.nn.functional.softplus(x, 2.0, 3.0),
    "mish": lambda lib, x: lib.nn.functional.mish(x),
}


def _run(lib, name, a, g):
    x = (dg if lib is dg else torch).tensor(a, requires_grad=True)
    y = _ACTS[name](lib, x)
    y.backward((dg if lib is dg else torch).tensor(g))
    return y.detach().numpy(), x.grad.numpy()


def _same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    same = (got == want) & (np.signbit(got) == np.signbit(want))
    assert same[~nan].all(), (got[~nan][~same[~nan]], want[~nan][~same[~nan]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_ACTS))
def test_tails_match_torch(name, dtype):
    """At ±100, ±1000, ±inf and NaN the results are torch's: float32 sigmoid(-100) is 0 (exp(100) overflows),
    softplus(-100) exp(-100) (a subnormal), mish's gradient NaN at ±inf; zeros and infinities exactly."""
    a = np.array(_SPECIAL, dtype=dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for got, want in zip(_run(dg, name, a, np.ones_like(a)), _run(torch, name, a, np.ones_like(a))):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=3e-45)
        exact = (want == 0) | ~np.isfinite(want)
        _same_bits(got[exact], want[exact])


@pytest.mark.parametrize("name", sorted(_ACTS))
def test_float64_matches_torch(name):
    a = np.concatenate([_SPECIAL, _RNG.standard_normal(3000) * 4, np.linspace(-40, 40, 801)])
    g = _RNG.standard_normal(a.shape)
    g[:3] = [np.inf, -np.inf, np.nan]
    for got, want in zip(_run(dg, name, a, g), _run(torch, name, a, g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(_ACTS))
def test_float32_within_float32_rounding(name):
    """Against torch's float32 (a vector library's exp/log1p/tanh there, numpy's here): float32 rounding of
    terms of size 1 + |x| (times |g| for the gradient: 1 - y and 1 - y·y cancel in the tails)."""
    a = np.concatenate([_TAILS, _RNG.standard_normal(5000) * 4]).astype(np.float32)
    g = _RNG.standard_normal(a.shape).astype(np.float32)
    scales = (1 + np.abs(a), np.abs(g) * (1 + np.abs(a)))
    for got, want, scale in zip(_run(dg, name, a, g), _run(torch, name, a, g), scales):
        assert got.dtype == np.float32
        assert (np.abs(got - want) <= 2e-6 * scale).all(), np.max(np.abs(got - want) / scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_ACTS))
def test_array_rule_matches_differentiable_rule(name, dtype):
    """sigmoid, tanh, softplus and mish: one kernel (or the same steps) in both modes, bit for bit."""
    a = (_RNG.standard_normal((7, 900)) * 6).astype(dtype)
    a[0, :5] = [np.inf, -np.inf, np.nan, 100.0, -100.0]
    seed = _RNG.standard_normal(a.shape).astype(dtype)
    grads = []
    for create_graph in (False, True):
        x = dg.tensor(a, requires_grad=True)
        (got,) = dg.autograd.grad(_ACTS[name](dg, x), [x], dg.tensor(seed), create_graph=create_graph)
        grads.append(got.detach().numpy())
    _same_bits(grads[0], grads[1])


@pytest.mark.parametrize("name", sorted(_ACTS))
def test_double_backward_matches_torch(name):
    a = _RNG.standard_normal((4, 5)) * 3
    a[0, :2] = [30.0, -30.0]
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (gx,) = dg.autograd.grad(_ACTS[name](dg, x).sum(), [x], create_graph=True)
    (gxt,) = torch.autograd.grad(_ACTS[name](torch, xt).sum(), [xt], create_graph=True)
    (ggx,) = dg.autograd.grad((gx * gx).sum(), [x])
    (ggxt,) = torch.autograd.grad((gxt * gxt).sum(), [xt])
    np.testing.assert_allclose(gx.detach().numpy(), gxt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ggx.numpy(), ggxt.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("name", sorted(_ACTS))
def test_zero_d_and_half_inputs(name, dtype):
    for a in (np.array(-1.25, dtype=dtype), np.array([0.5, -2.0, 3.0, -100.0], dtype=dtype)):
        g = np.ones_like(a)
        tol = 2e-3 if dtype == np.float16 else 1e-6
        for got, want in zip(_run(dg, name, a, g), _run(torch, name, a.astype(np.float64), g.astype(np.float64))):
            assert got.shape == a.shape and got.dtype == dtype
            np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_large_arrays_use_the_kernels_and_match_torch():
    """(256, 1024) float32: sigmoid/tanh's in-place backward and softplus's blend of x (kernels.select)."""
    a = (_RNG.standard_normal((256, 1024)) * 12).astype(np.float32)
    g = _RNG.standard_normal(a.shape).astype(np.float32)
    for name in _ACTS:
        for got, want in zip(_run(dg, name, a, g), _run(torch, name, a, g)):
            np.testing.assert_allclose(got, want, rtol=4e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_captured_graph_gives_eagers_bits(dtype):
    """dg.compile's fused writers (sigmoid, softplus) and a captured gradient graph: eager's bits."""
    a = (_RNG.standard_normal((64, 96)) * 8).astype(dtype)
    a[0, :5] = [np.inf, -np.inf, np.nan, 100.0, -100.0]

    def f(x):
        return (
            x.sigmoid() * 2.0
            + dg.nn.functional.softplus(x * 0.5)
            + dg.nn.functional.softplus(x, 2.0, 3.0)
            + (x.tanh() + 1.0) * dg.nn.functional.mish(x)
        )

    x = dg.tensor(a)
    _same_bits(dg.compile(f, (x,))(x).numpy(), f(x).numpy())

    w = dg.tensor(_RNG.standard_normal((96,)).astype(dtype), requires_grad=True)
    loss_fn = lambda x: (f(x * w) * 0.01).sum()  # noqa: E731
    clean = dg.tensor(np.nan_to_num(a, nan=0.5, posinf=3.0, neginf=-3.0))
    graph, params, _ = capture(loss_fn, [clean], grad_of=[w])
    outs = Runner(graph)(clean.array, *[p.array for p in params])
    loss = loss_fn(clean)
    loss.backward()
    _same_bits(outs[0], loss.array)
    _same_bits(outs[1], w.grad.array)
