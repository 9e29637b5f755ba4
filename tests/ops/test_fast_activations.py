"""pow's special exponents and the activations computed as torch's CPU kernels compute them (ops/kernels.py):
pow bit for bit against torch; gelu (erf and tanh), silu, sigmoid, tanh, softplus and mish forward and gradients
against torch at the tails (±0, ±1e-30, ±100, ±1000, ±1e30, ±inf, NaN) and on random values (1e-12 in float64,
float32 rounding in float32), the fast mode's array rules against the differentiable rules bit for bit, double
backward against torch, 0-d and float16 inputs, and captured graphs (their fused writers) giving eager's bits."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner

torch = pytest.importorskip("torch")

_SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 1e30, -1e30, 1.0, -1.0, 2.5, -2.5, 1e-3, -7.0]
_RNG = np.random.default_rng(0)


def _bases(dtype, n=40):
    """Special values and random ones, negative and positive (under 64 elements: for a large array torch's
    sqrt, and so its pow(x, 0.5), goes through a vector library that is not correctly rounded)."""
    return np.concatenate([_SPECIAL, _RNG.standard_normal(n) * 3]).astype(dtype)


def _same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    same = (got == want) & (np.signbit(got) == np.signbit(want))
    assert same[~nan].all(), (got[~nan][~same[~nan]], want[~nan][~same[~nan]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [2, 3, -2, 0.5, -0.5, -1, 0, 1, 2.0, 3.0, -2.0, -1.0, 0.0, 1.0])
def test_pow_special_exponents_bits_equal_torch(dtype, exponent):
    a = _bases(dtype)
    got, got_fn = (dg.tensor(a) ** exponent).numpy(), dg.pow(dg.tensor(a), exponent).numpy()
    want = (torch.tensor(a) ** exponent).numpy()
    _same_bits(got_fn, got)
    if exponent == 0.5:
        # torch's sqrt: the correctly rounded one where its vector kernel is (AVX-512 Xeons), within 1 ulp of it
        # on AVX2 (an AMD EPYC host: 20 % of the elements of an array of 55 off by 1 ulp, float32 and float64)
        _same_bits(got, np.sqrt(a))
        finite = np.isfinite(want)
        np.testing.assert_array_max_ulp(got[finite], want[finite], maxulp=1)
    else:
        _same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [2, 3, -2, -0.5, -1])
def test_pow_special_exponents_large_array_bits_equal_torch(dtype, exponent):
    a = (_RNG.standard_normal(5000) * 3).astype(dtype)
    _same_bits((dg.tensor(a) ** exponent).numpy(), (torch.tensor(a) ** exponent).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1, 1, 0])
def test_pow_special_exponents_gradient_bits_equal_torch(dtype, exponent):
    """torch's pow_backward: g · (b · a^(b - 1)), a^(b - 1) a special exponent again for these b."""
    a = _bases(dtype)
    g = (_RNG.standard_normal(a.shape)).astype(dtype)
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (x**exponent).backward(dg.tensor(g))
    (xt**exponent).backward(torch.tensor(g))
    _same_bits(x.grad.numpy(), xt.grad.numpy())


def test_pow_zero_d_base_and_other_dtypes():
    assert (dg.tensor(np.float32(-3.0)) ** 3).item() == -27.0
    assert (dg.tensor(np.float64(-0.0)) ** 0.5).numpy().tolist() == 0.0
    assert np.signbit((dg.tensor(np.float64(-0.0)) ** 0.5).numpy())
    assert (dg.tensor(np.float64(4.0)) ** -0.5).item() == 0.5
    h = np.array([1.5, -2.0, 0.25], dtype=np.float16)
    np.testing.assert_array_equal((dg.tensor(h) ** 2).numpy(), (torch.tensor(h) ** 2).numpy())
    np.testing.assert_array_equal((dg.tensor([1, -2, 3]) ** 3).numpy(), [1, -8, 27])


# ---- the activations: one table, every check over all of them --------------------------------------------------
_ACTS = {
    "gelu": lambda lib, x: lib.nn.functional.gelu(x),
    "gelu_tanh": lambda lib, x: lib.nn.functional.gelu(x, approximate="tanh"),
    "silu": lambda lib, x: lib.nn.functional.silu(x),
    "sigmoid": lambda lib, x: lib.sigmoid(x),
    "tanh": lambda lib, x: lib.tanh(x),
    "softplus": lambda lib, x: lib.nn.functional.softplus(x),
    "softplus_beta": lambda lib, x: lib.nn.functional.softplus(x, 2.0, 3.0),
    "mish": lambda lib, x: lib.nn.functional.mish(x),
}
# around softplus/sigmoid thresholds and exp overflow
_TAILS = [-1000.0, -100.0, -88.0, -20.0, -1e-3, 20.0, 25.0, 88.0, 100.0, 1000.0]
_ACT_SPECIAL = [*_SPECIAL, *_TAILS]
_ACT_FINITE = [v for v in _ACT_SPECIAL if np.isfinite(v) and abs(v) < 1e20]


def _run(lib, name, a, g):
    x = (dg if lib is dg else torch).tensor(a, requires_grad=True)
    y = _ACTS[name](lib, x)
    y.backward((dg if lib is dg else torch).tensor(g))
    return y.detach().numpy(), x.grad.numpy()


# (not gelu's in float32: torch's vectorized float32 gelu gives NaN at ±inf, and its gradient cancels near -2.5)
@pytest.mark.parametrize(
    "name, dtype",
    [(n, np.float64) for n in sorted(_ACTS)] + [(n, np.float32) for n in sorted(_ACTS) if not n.startswith("gelu")],
)
def test_special_values_match_torch(name, dtype):
    """At ±0, ±1e-30, ±100, ±1000, ±1e30, ±inf and NaN the results are torch's: gelu(inf) = inf, silu(-inf) = -0,
    float32 sigmoid(-100) 0 (exp(100) overflows), softplus(-100) exp(-100) (a subnormal), mish's gradient NaN at
    ±inf; zeros, infinities and NaNs exactly (tanh's float64 gradient 1 - y·y to 1e-15: it cancels at -7)."""
    a = np.array(_ACT_SPECIAL, dtype=dtype)
    tol, atol = (1e-12, 0) if dtype == np.float64 else (2e-6, 3e-45)
    for k, (got, want) in enumerate(zip(_run(dg, name, a, np.ones_like(a)), _run(torch, name, a, np.ones_like(a)))):
        assert got.dtype == dtype
        cancels = k == 1 and name == "tanh" and dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=tol, atol=1e-15 if cancels else atol)
        exact = (want == 0) | ~np.isfinite(want)
        _same_bits(got[exact], want[exact])


@pytest.mark.parametrize("name", sorted(_ACTS))
def test_float64_matches_torch(name):
    a = np.concatenate([_ACT_SPECIAL, _RNG.standard_normal(3000) * 4, np.linspace(-40, 40, 801)])
    g = _RNG.standard_normal(a.shape)
    g[:3] = [np.inf, -np.inf, np.nan]
    for got, want in zip(_run(dg, name, a, g), _run(torch, name, a, g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(_ACTS))
def test_float32_within_float32_rounding(name):
    """Against torch in float64 (the truth) and torch's float32 (a vector library's exp/log1p/tanh there,
    numpy's here), to float32 rounding: a few units of 1e-7 times the terms' size (1 + |x|, times |g| for the
    gradient: 1 + tanh(·), 1 + erf(·), 1 - y and 1 - y·y cancel in the tails, in torch's kernels as in these)."""
    a = np.concatenate([_ACT_FINITE, _RNG.standard_normal(5000) * 4]).astype(np.float32)
    g = _RNG.standard_normal(a.shape).astype(np.float32)
    truth = _run(torch, name, a.astype(np.float64), g.astype(np.float64))
    scales = (1 + np.abs(a), np.abs(g) * (1 + np.abs(a)))
    for got, t32, want, scale in zip(_run(dg, name, a, g), _run(torch, name, a, g), truth, scales):
        assert got.dtype == np.float32
        assert (np.abs(got - want) <= 1e-6 * scale).all(), np.max(np.abs(got - want) / scale)
        assert (np.abs(got - t32) <= 2e-6 * scale).all(), np.max(np.abs(got - t32) / scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_ACTS))
def test_array_rule_matches_differentiable_rule(name, dtype):
    """One kernel (or the same steps) in both modes, bit for bit: random values of scale 3 and 6, ±inf, NaN, ±100."""
    a = (_RNG.standard_normal((7, 900)) * np.repeat([3.0, 6.0], 450)).astype(dtype)
    a[0, :5] = [np.inf, -np.inf, np.nan, 100.0, -100.0]
    seed = _RNG.standard_normal(a.shape).astype(dtype)
    grads = []
    for create_graph in (False, True):
        x = dg.tensor(a, requires_grad=True)
        (got,) = dg.autograd.grad(_ACTS[name](dg, x), [x], dg.tensor(seed), create_graph=create_graph)
        grads.append(got.detach().numpy())
    assert grads[0].dtype == grads[1].dtype == dtype
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


@pytest.mark.parametrize("name", [n for n in sorted(_ACTS) if not n.startswith("gelu")])
def test_large_arrays_match_torch(name):
    """(256, 1024) float32: the in-place backward kernels and softplus's blend of x (kernels.select). (gelu's
    gradient cancels in the negative tail beyond this tolerance: the float32 rounding test above scales it.)"""
    a = (_RNG.standard_normal((256, 1024)) * 12).astype(np.float32)
    g = _RNG.standard_normal(a.shape).astype(np.float32)
    for got, want in zip(_run(dg, name, a, g), _run(torch, name, a, g)):
        np.testing.assert_allclose(got, want, rtol=4e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "fn", [lambda lib, x: lib.nn.functional.elu(x, 0.7), lambda lib, x: lib.nn.functional.leaky_relu(x, 0.2)]
)
def test_elu_leaky_relu_large_arrays_match_torch(fn, dtype):
    """The branch-free blend (kernels.select, from 4096 elements) against torch: forward and gradient, with
    ±0, ±inf and NaN in x and in g; the fast mode's array rule against the differentiable rule, bit for bit."""
    # (no NaN x: torch's vectorized elu_backward gives NaN there, its scalar one, and distgraph's, g; no -0:
    # torch's elu(-0.0) is -0.0, distgraph's +0.0, in its forward and in the writer of compiled graphs alike)
    special = [v for v in _SPECIAL if not np.isnan(v) and not (v == 0 and np.signbit(v))]
    a = np.concatenate([special, _RNG.standard_normal(6000) * 3]).astype(dtype)
    g = _RNG.standard_normal(a.shape).astype(dtype)
    g[-4:] = [np.inf, -np.inf, np.nan, -0.0]
    grads = []
    for create_graph in (False, True):
        x = dg.tensor(a, requires_grad=True)
        y = fn(dg, x)
        (got,) = dg.autograd.grad(y, [x], dg.tensor(g), create_graph=create_graph)
        grads.append(got.detach().numpy())
    _same_bits(grads[0], grads[1])
    xt = torch.tensor(a, requires_grad=True)
    yt = fn(torch, xt)
    yt.backward(torch.tensor(g))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for got, want in ((y.detach().numpy(), yt.detach().numpy()), (grads[0], xt.grad.numpy())):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        exact = (want == 0) | ~np.isfinite(want)
        _same_bits(got[exact], want[exact])


def test_a_captured_graph_keeps_eagers_bits_for_the_special_exponents():
    """The fused writer of pow (graph/passes/fusion.py) takes torch's special cases too: x**3 as x·x·x in both."""

    def f(x):
        return ((x**3 + x**2) * 0.5 - x**-2 + x**0.5).sum()

    rng = np.random.default_rng(0)
    for _ in range(12):
        x = dg.tensor(np.abs(rng.standard_normal((64, 64))).astype(np.float32) + 0.01)
        assert dg.compile(f, (x,))(x).item() == f(x).item()


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


def _softplus_head(x, g, beta, threshold):
    """softplus and its gradient as kernels.py computed them before skipping x·1, z / 1 and an empty select."""
    beta, threshold = x.dtype.type(beta), x.dtype.type(threshold)
    bx = x * beta
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.log1p(np.exp(bx)) / beta
        z = np.exp(bx)
        d = z + x.dtype.type(1)
        z *= g
        z /= d
    return np.where(bx > threshold, x, y), np.where(bx > threshold, g, z)


@pytest.mark.parametrize("over", [False, True], ids=["none-over-threshold", "some-over"])
@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_bits_with_and_without_values_over_the_threshold(dtype, beta, over):
    a = np.clip(_RNG.standard_normal(6000) * 4, -9, 9).astype(dtype)
    a[:4] = [0.0, -0.0, -np.inf, np.nan]
    if over:
        a[10:20] = [12.0, 100.0, np.inf, 30.0, 21.0, 25.0, 1e30, 11.0, 10.5, 50.0]
    g = _RNG.standard_normal(a.shape).astype(dtype)
    g[:3] = [np.inf, -np.inf, np.nan]
    x = dg.tensor(a, requires_grad=True)
    y = dg.nn.functional.softplus(x, beta, 20.0)
    y.backward(dg.tensor(g))
    want_y, want_g = _softplus_head(a, g, beta, 20.0)
    _same_bits(y.detach().numpy(), want_y)
    _same_bits(x.grad.numpy(), want_g)
