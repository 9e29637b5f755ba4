"""distgraph.special against torch.special float64: every function's values, its gradient (parity,
central differences, double backward) where torch has one, torch's refusals where it has none, the
values at 0, ±inf and NaN, dtypes, and the aliases being distgraph's own ops."""

import math

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import GT1, POS, UNIT, Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check

T = Table()
for name, domain, double in [
    ("erfcx", "any", True),
    ("entr", POS, True),
    ("ndtr", "any", True),
    ("log_ndtr", "any", True),
    ("i0e", "any", True),
    ("i1", "any", True),
    ("i1e", "any", True),
    ("psi", POS, False),
    ("gammaln", POS, False),
    ("expit", "any", False),
    ("erf", "any", False),
    ("erfc", "any", False),
    ("erfinv", UNIT, False),
    ("exp2", "any", False),
    ("expm1", "any", False),
    ("log1p", POS, False),
    ("i0", "any", False),
    ("sinc", "any", False),
]:
    T.op(name, lambda m, a, n=name: getattr(m.special, n)(a), (3, 4), domain=domain, double=double)
T.op("ndtri", lambda m, a: m.special.ndtri(m.special.expit(a)), (3, 4), double=True)
T.op("log_ndtr-far-tail", lambda m, a: m.special.log_ndtr(a - 30), (3, 4))
T.op("erfcx-large", lambda m, a: m.special.erfcx(a * 50), (3, 4), domain=POS)
T.op("digamma", lambda m, a: m.special.digamma(a), (5,), domain=POS)
T.op("polygamma", lambda m, a: m.special.polygamma(2, a), (5,), domain=POS)
T.op("multigammaln", lambda m, a: m.special.multigammaln(a, 3), (5,), domain=GT1)
T.op("logit", lambda m, a: m.special.logit(m.special.expit(a), eps=1e-3), (5,))
T.op("round", lambda m, a: m.special.round(a * 10, decimals=1), (5,), gradcheck=False)
T.op("softmax", lambda m, a: m.special.softmax(a, 1), (3, 4))
T.op("log_softmax", lambda m, a: m.special.log_softmax(a, 0, dtype=m.float64), (3, 4))
T.op("logsumexp", lambda m, a: m.special.logsumexp(a, 1, keepdim=True), (3, 4))
T.op("xlogy", lambda m, a, b: m.special.xlogy(a, b), (3, 4), (4,), domain=POS)
T.op("xlog1py", lambda m, a, b: m.special.xlog1py(a, b), (3, 4), (4,), domain=POS, double=True)
T.op("xlog1py-scalar-x", lambda m, b: m.special.xlog1py(2.0, b), (3, 4), domain=POS)
T.op("xlog1py-zero-x", lambda m, a, b: m.special.xlog1py(a * (a > 0), b.abs() - 0.5), (3, 4), (4,))
A = [[1.5, 2.0, 3.5, 7.0]]  # the argument torch has no derivative for, a constant


def _const(m):
    return m.tensor(A, dtype=m.float64)


T.op("zeta-q", lambda m, q: m.special.zeta(_const(m), q), (3, 4), domain=POS, double=True)
T.op("zeta-scalar-x", lambda m, q: m.special.zeta(3.0, q), (3, 4), domain=POS)
T.op("gammainc-x", lambda m, x: m.special.gammainc(_const(m), x), (3, 4), domain=POS, double=True)
T.op("gammaincc-x", lambda m, x: m.special.gammaincc(_const(m), x), (3, 4), domain=POS, double=True)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


INF, NAN = math.inf, math.nan
EDGES = np.array([0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, 30.0, -30.0, INF, -INF, NAN])


@pytest.mark.parametrize(
    "name, fn",
    [
        ("erfcx", lambda m, a: m.special.erfcx(a)),
        ("entr", lambda m, a: m.special.entr(a)),
        ("ndtr", lambda m, a: m.special.ndtr(a)),
        ("log_ndtr", lambda m, a: m.special.log_ndtr(a)),
        ("i0e", lambda m, a: m.special.i0e(a)),
        ("i1e", lambda m, a: m.special.i1e(a)),  # its gradient's limit 0.5 at and near 0
        ("i1", lambda m, a: m.special.i1(a)),
        ("ndtri", lambda m, a: m.special.ndtri(a.detach().clamp(0, 1))),
        ("xlog1py", lambda m, a: m.special.xlog1py(a, a.flip(0))),
    ],
)
def test_zeros_infinities_and_nans_like_torch(name, fn):
    check(lambda a: fn(dg, a), lambda a: fn(torch, a), EDGES.copy())


def test_ndtri_gradient_at_its_ends_like_torch():
    check(lambda p: dg.special.ndtri(p), lambda p: torch.special.ndtri(p), np.array([0.0, 1e-300, 0.5, 1.0, 1.5]))


# ---- no gradient in torch -----------------------------------------------------------------------
NONDIFF = [
    "airy_ai",
    "bessel_j0",
    "bessel_j1",
    "bessel_y0",
    "bessel_y1",
    "modified_bessel_i0",
    "modified_bessel_i1",
    "modified_bessel_k0",
    "modified_bessel_k1",
    "scaled_modified_bessel_k0",
    "scaled_modified_bessel_k1",
    "spherical_bessel_j0",
]
GRID = np.concatenate([np.linspace(-30, 30, 241), [0.0, 1e-8, -1e-8, 1e3, INF, -INF, NAN]])


@pytest.mark.parametrize("name", NONDIFF)
def test_bessel_and_airy_values_match_torch_and_need_no_grad(name):
    """Values as torch's (its Cephes ports of j0/j1/y0/y1/Ai are good to ~1e-6 absolute in float64; the
    rest agree to rounding), NaN and infinities in the same places; the output does not require grad and a
    backward through it raises torch's error."""
    x = dg.tensor(GRID, requires_grad=True)
    out = getattr(dg.special, name)(x)
    ref = getattr(torch.special, name)(torch.tensor(GRID, requires_grad=True))
    assert out.dtype == dg.float64 and not out.requires_grad and not ref.requires_grad
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=3e-6, equal_nan=True)
    assert np.array_equal(np.isinf(out.numpy()), np.isinf(ref.numpy()))
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        out.sum().backward()


@pytest.mark.parametrize(
    "name, mp",
    [
        ("airy_ai", lambda m, x: m.airyai(x)),
        ("bessel_j0", lambda m, x: m.besselj(0, x)),
        ("bessel_j1", lambda m, x: m.besselj(1, x)),
        ("bessel_y0", lambda m, x: m.bessely(0, x)),
        ("bessel_y1", lambda m, x: m.bessely(1, x)),
        ("modified_bessel_k1", lambda m, x: m.besselk(1, x)),
        ("spherical_bessel_j0", lambda m, x: m.sin(x) / x),
    ],
)
def test_bessel_and_airy_values_are_accurate(name, mp):
    """Against mpmath at 30 digits: scipy's values, which distgraph uses, hold to ~1e-14 where torch's
    are off by up to ~1e-6 (j0 at 13: torch 0.20692610237545, true 0.20692610237707)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    xs = [0.3, 1.7, 2.7, 4.4, 13.0, 25.5]
    out = getattr(dg.special, name)(dg.tensor(xs, dtype=dg.float64)).numpy()
    np.testing.assert_allclose(out, [float(mp(mpmath, mpmath.mpf(x))) for x in xs], rtol=1e-13, atol=1e-15)


def test_bessel_on_integers_and_float32_takes_torchs_dtype():
    for name in ("bessel_j0", "modified_bessel_k0", "spherical_bessel_j0"):
        for x in (torch.tensor([1, 2]), torch.tensor([True, False]), torch.tensor([0.5, 2.0])):
            out = getattr(dg.special, name)(dg.tensor(x.numpy()))
            ref = getattr(torch.special, name)(x)
            assert str(out.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
            np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


# ---- torch's refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, what",
    [("zeta", "zeta"), ("gammainc", "igamma: input"), ("gammaincc", "igammac: input")],
)
def test_derivative_torch_lacks_raises_its_error(name, what):
    a = dg.tensor([1.5, 2.5], dtype=dg.float64, requires_grad=True)
    x = dg.tensor([0.5, 3.0], dtype=dg.float64, requires_grad=True)
    out = getattr(dg.special, name)(a, x)
    assert out.requires_grad
    with pytest.raises(NotImplementedError, match=f"the derivative for '{what}' is not implemented"):
        out.sum().backward()
    ta, tx = torch.tensor([1.5, 2.5], requires_grad=True), torch.tensor([0.5, 3.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match=f"the derivative for '{what}' is not implemented"):
        getattr(torch.special, name)(ta, tx).sum().backward()


def test_incomplete_gamma_takes_float_tensors_only_as_torch():
    with pytest.raises(dg.errors.DTypeError, match="gammainc: not implemented for int64"):
        dg.special.gammainc(dg.tensor([1, 2]), dg.tensor([1, 2]))
    with pytest.raises(dg.errors.DTypeError, match="gammaincc.*two Tensors"):
        dg.special.gammaincc(dg.tensor([1.0]), 2.0)


def test_integer_operands_become_float_as_torch():
    i = np.array([1, 2])
    for name in ("zeta", "xlog1py", "entr"):
        args = (i,) if name == "entr" else (i, i)
        out = getattr(dg.special, name)(*(dg.tensor(a) for a in args))
        ref = getattr(torch.special, name)(*(torch.tensor(a) for a in args))
        assert out.dtype == dg.float32 and ref.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6)


def test_zeta_below_one_and_at_poles_like_torch():
    x = np.array([0.5, 1.0, 2.0, 2.0, 3.0, -1.0])
    q = np.array([1.0, 1.0, 0.0, -1.0, -1.5, 2.0])
    out = dg.special.zeta(dg.tensor(x), dg.tensor(q)).numpy()
    np.testing.assert_allclose(out, torch.special.zeta(torch.tensor(x), torch.tensor(q)).numpy(), equal_nan=True)


# ---- the namespace ------------------------------------------------------------------------------
def test_every_real_torch_special_function_exists():
    skip = {"Tensor", "torch", "common_args", "multi_dim_common"}
    names = [n for n in dir(torch.special) if not n.startswith("_") and n not in skip]
    assert [n for n in names if not callable(getattr(dg.special, n, None))] == []


@pytest.mark.parametrize(
    "alias, op",
    [
        ("erf", "erf"),
        ("digamma", "digamma"),
        ("psi", "digamma"),
        ("gammaln", "lgamma"),
        ("multigammaln", "mvlgamma"),
        ("expit", "sigmoid"),
        ("xlogy", "xlogy"),
        ("logsumexp", "logsumexp"),
        ("round", "round"),
        ("sinc", "sinc"),
    ],
)
def test_aliases_are_distgraphs_own_ops(alias, op):
    assert getattr(dg.special, alias) is getattr(dg, op)


def test_softmax_needs_a_dim_as_torch_special():
    x = dg.tensor([[1.0, 2.0]])
    with pytest.raises(TypeError):
        dg.special.softmax(x)
    assert dg.special.log_softmax(x, 1, dtype=dg.float64).dtype == dg.float64


def test_special_ops_capture_into_a_compiled_graph():
    def fn(a, b):
        return dg.special.erfcx(a) + dg.special.xlog1py(a, b) * dg.special.i1e(b) + dg.special.bessel_j0(a)

    x, y = dg.rand(3, 4) + 0.5, dg.rand(3, 4) + 0.5
    compiled = dg.compile(fn, [x, y])
    np.testing.assert_allclose(compiled(x, y).numpy(), fn(x, y).numpy(), rtol=1e-6)
