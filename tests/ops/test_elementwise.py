"""Elementwise ops (ops/elementwise.py, activation.py, compare.py) against torch float64: one row per
op, binary ops on plain, broadcast, size-1 and size-0 shapes; gradcheck; double backward."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import GT1, NONZERO, POS, UNIT, Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check

T = Table()
F = {dg: dg.nn.functional, torch: torch.nn.functional}

BROADCAST = [("", (3, 4), (4,)), ("-size1", (2, 1, 3), (1, 5, 1)), ("-size0", (0, 3), (1, 3)), ("-0d", (3, 2), ())]
NONLINEAR = ("mul", "div", "rdiv", "atan2", "pow")
for name, fn, domain in [
    ("add", lambda m, a, b: a + b, None),
    ("sub", lambda m, a, b: a - b, None),
    ("rsub", lambda m, a, b: 1.5 - a + b, None),
    ("mul", lambda m, a, b: a * b, None),
    ("div", lambda m, a, b: a / b, NONZERO),
    ("rdiv", lambda m, a, b: 2.0 / b + a, NONZERO),
    ("add_alpha", lambda m, a, b: m.add(a, b, alpha=2.5), None),
    ("sub_alpha", lambda m, a, b: m.sub(a, b, alpha=0.5), None),
    ("maximum", lambda m, a, b: m.maximum(a, b), None),
    ("minimum", lambda m, a, b: m.minimum(a, b), None),
    ("atan2", lambda m, a, b: m.atan2(a, b), NONZERO),
    ("lerp", lambda m, a, b: m.lerp(a, b, 0.3), None),
    ("pow", lambda m, a, b: m.pow(a.abs() + 0.5, b), None),
    ("where", lambda m, a, b: m.where(a > 0, a, b), None),
]:
    for suffix, sa, sb in BROADCAST:
        T.op(name + suffix, fn, sa, sb, domain=domain or "any", double=suffix == "" and name in NONLINEAR)
T.op("lerp-tensor-weight", lambda m, a, b, w: m.lerp(a, b, w), (3, 4), (4,), (3, 1))
T.op("pow-scalar", lambda m, a: a**2.5, (3, 4), domain=POS, double=True)
T.op("pow-int-exponent", lambda m, a: a**3, (3, 4), double=True)
T.op("pow-negative-base-int", lambda m, a: m.pow(a, 2), (2, 5))
T.op("rpow", lambda m, a: 2.0**a, (3, 4), double=True)
# zero base: d(a^0)/da is 0 (not 0·0^-1 = NaN) and d(0^b)/db is 0 for b >= 0, -inf·g for b < 0, as torch
T.op("pow-zero-exponent-at-zero", lambda m, a: (a * (a > 0)) ** 0, (3, 4), gradcheck=False)
T.op(
    "pow-zero-base-tensors",
    lambda m, a, b: m.pow(a * (a > 0), m.cat([b[:2] * 0, b[2:]])),
    (3, 4),
    (4,),
    gradcheck=False,
)
T.op("fmod", lambda m, a: m.fmod(a, 0.7), (3, 4))
T.op("fmod-tensor", lambda m, a, b: m.fmod(a, b), (3, 4), (4,), domain=POS)
T.op("remainder", lambda m, a: m.remainder(a, 0.7), (3, 4))
T.op("neg", lambda m, a: -a, (3, 4))
T.op("neg-size0", lambda m, a: -a, (0, 4))
T.op("where-scalar", lambda m, a: m.where(a > 0, a, 0.0), (3, 4))
T.op("clamp", lambda m, a: m.clamp(a, -0.5, 0.7), (3, 4))
T.op("clamp-min", lambda m, a: m.clamp(a, min=-0.2), (3, 4))
T.op("clamp-max", lambda m, a: a.clamp(max=0.1), (3, 4))
T.op("clamp-size0", lambda m, a: m.clamp(a, -0.5, 0.7), (2, 0))
# tensor bounds: where x equals a bound the input gets the whole gradient (maximum/minimum would split it)
T.op(
    "clamp-tensor-bounds-ties",
    lambda m, a, b: m.clamp(a, a.detach(), a.detach() + b.abs()),
    (3, 4),
    (4,),
    gradcheck=False,
)
T.op(
    "clamp-tensor-min-ties",
    lambda m, a, b: m.clamp(a, min=m.cat([a[:, :2].detach(), b], 1)),
    (3, 4),
    (3, 2),
    gradcheck=False,
)
T.op("clamp-tensor-max-bcast", lambda m, a, b: a.clamp(max=b), (3, 4), (4,))
T.op("clamp-tensor-min-above-max", lambda m, a, b: m.clamp(a, b.abs(), -b.abs()), (3, 4), (3, 1))

for name in ["exp", "sin", "cos", "tanh", "sigmoid", "atan", "sinh", "cosh", "asinh", "abs", "erf", "expm1", "exp2"]:
    T.op(name, lambda m, a, name=name: getattr(m, name)(a), (2, 3, 4), double=name in ("tanh", "sigmoid", "exp"))
    T.op(name + "-size0", lambda m, a, name=name: getattr(m, name)(a), (0, 2))
for name in ["log", "sqrt", "rsqrt", "log1p", "log2", "log10", "reciprocal"]:
    T.op(name, lambda m, a, name=name: getattr(m, name)(a), (3, 4), domain=POS, double=name in ("log", "sqrt"))
for name in ["asin", "acos", "atanh", "tan"]:
    T.op(name, lambda m, a, name=name: getattr(m, name)(a), (3, 4), domain=UNIT)
T.op("acosh", lambda m, a: m.acosh(a), (3, 4), domain=GT1)
T.op("square", lambda m, a: m.square(a), (3, 4), double=True)
for name in ["sign", "floor", "ceil", "round", "trunc", "frac"]:
    T.op(name, lambda m, a, name=name: getattr(m, name)(a * 3), (3, 4), gradcheck=False)
T.op("round-decimals", lambda m, a: m.round(a * 3, decimals=2), (3, 4), gradcheck=False)

for name, kw in [
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
    ("elu", {}),
    ("elu-alpha", {"alpha": 0.7}),
    ("gelu", {}),
    ("gelu-tanh", {"approximate": "tanh"}),
    ("silu", {}),
    ("softplus", {}),
    ("softplus-beta", {"beta": 2.0, "threshold": 1.0}),
    ("mish", {}),
    ("hardtanh", {"min_val": -0.5, "max_val": 0.5}),
    ("relu6", {}),
    ("logsigmoid", {}),
]:
    fname = name.split("-")[0]
    T.op(name, lambda m, a, f=fname, kw=kw: getattr(F[m], f)(a * 3, **kw), (3, 5), double=name in ("gelu", "elu"))
    T.op(name + "-size0", lambda m, a, f=fname, kw=kw: getattr(F[m], f)(a, **kw), (0, 5))
T.op("relu-method", lambda m, a: a.relu(), (3, 4))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


C = Table()
for name, fn in [
    ("eq", lambda m, a, b: a == b),
    ("ne", lambda m, a, b: a != b),
    ("lt", lambda m, a, b: a < b),
    ("le", lambda m, a, b: m.le(a, b)),
    ("gt", lambda m, a, b: m.gt(a, b)),
    ("ge", lambda m, a, b: a >= b),
    ("isclose", lambda m, a, b: m.isclose(a, a + b * 1e-9)),
    ("logical_and", lambda m, a, b: m.logical_and(a > 0, b > 0)),
    ("logical_or", lambda m, a, b: m.logical_or(a > 0, b > 0)),
    ("logical_xor", lambda m, a, b: m.logical_xor(a > 0, b > 0)),
]:
    C.op(name, fn, (3, 4), (4,), grad=False)
    C.op(name + "-size0", fn, (0, 4), (1, 4), grad=False)
C.op("logical_not", lambda m, a: m.logical_not(a > 0), (3, 4), grad=False)
C.op("isnan-isinf-isfinite", lambda m, a: (m.isnan(a.log()), m.isinf(1 / (a * 0)), m.isfinite(a.log())), (3, 4))


@pytest.mark.parametrize("row", C.rows())
def test_comparison_matches_torch_and_has_no_grad(row, device):
    run_parity(row, device)
    _, fn, shapes, *_ = row
    out = fn(dg, *(dg.randn(*s, requires_grad=True) for s in shapes))
    for o in out if isinstance(out, tuple) else (out,):
        assert o.dtype == dg.bool_ and not o.requires_grad


def test_clamp_of_an_integer_tensor_takes_torch_dtypes():
    i = [[1, 5], [3, -2]]
    for lo, hi in [(0.5, 2.5), (None, 2.5), (1, 4), (dg.tensor([0.5, 1.5]), None)]:
        got = dg.clamp(dg.tensor(i), lo, hi)
        want = torch.clamp(torch.tensor(i), torch.tensor(lo.tolist()) if isinstance(lo, dg.Tensor) else lo, hi)
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.tolist() == want.tolist()


def test_where_with_two_python_scalars_takes_torch_dtypes():
    cond = [[True, False], [False, True]]
    for a, b in [(1.0, 0.0), (1, 0), (2, 0.5), (True, False)]:
        got, want = dg.where(dg.tensor(cond), a, b), torch.where(torch.tensor(cond), a, b)
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.tolist() == want.tolist()


def test_sign_of_bool_and_integer_tensors_like_torch():
    for values in ([True, False], [3, 0, -2]):
        got, want = dg.sign(dg.tensor(values)), torch.sign(torch.tensor(values))
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.tolist() == want.tolist()


def test_integer_scalar_out_of_the_tensor_dtype_range_wraps_like_torch():
    """torch wraps a Python int into the tensor's dtype (uint8 + 300 adds 44); numpy raised OverflowError."""
    cases = [
        ("uint8", lambda x: x + 300),
        ("uint8", lambda x: x - (-1)),
        ("int8", lambda x: x * 1000),
        ("int8", lambda x: x % 300),
        ("uint8", lambda x: x // 300),
        ("uint8", lambda x: x > 300),
        ("int64", lambda x: x + 2**63),
    ]
    for dtype, fn in cases:
        got, want = fn(dg.tensor(np.array([1, 2], dtype=dtype))), fn(torch.tensor(np.array([1, 2], dtype=dtype)))
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.tolist() == want.tolist()


def test_integer_division_by_zero_raises_like_torch():
    for fn in (lambda a, b: a // b, lambda a, b: a % b, lambda a, b: a.fmod(b)):
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            fn(torch.tensor([1, 2]), torch.tensor([0, 1]))
        with pytest.raises(ZeroDivisionError):
            fn(dg.tensor([1, 2]), dg.tensor([0, 1]))
    assert (dg.tensor([1.0]) // dg.tensor([0.0])).tolist() == (torch.tensor([1.0]) // torch.tensor([0.0])).tolist()


def test_square_of_a_bool_tensor_is_int64_like_torch():
    got, want = dg.square(dg.tensor([True, False])), torch.square(torch.tensor([True, False]))
    assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.tolist() == want.tolist()


PIECEWISE_LINEAR = {
    "relu": lambda m, x: F[m].relu(x),
    "leaky_relu": lambda m, x: F[m].leaky_relu(x, 0.1),
    "hardtanh": lambda m, x: F[m].hardtanh(x, -0.5, 0.5),
    "relu6": lambda m, x: F[m].relu6(x * 4),
    "abs": lambda m, x: m.abs(x),
}


@pytest.mark.parametrize("name", PIECEWISE_LINEAR)
def test_piecewise_linear_gradient_stays_differentiable_under_create_graph(name):
    """torch's relu/leaky_relu/hardtanh gradients require grad under create_graph (their derivative is
    0, but the graph exists); distgraph's were built from bool masks and did not."""
    fn = PIECEWISE_LINEAR[name]
    a = np.array([-2.0, -0.3, 0.2, 0.7, 3.0])
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (g,) = dg.autograd.grad(fn(dg, x).sum(), x, create_graph=True)
    (gt,) = torch.autograd.grad(fn(torch, xt).sum(), xt, create_graph=True)
    assert g.requires_grad == gt.requires_grad
    np.testing.assert_array_equal(g.detach().numpy(), gt.detach().numpy())
    (gg,) = dg.autograd.grad((g * x).sum(), x)
    (ggt,) = torch.autograd.grad((gt * xt).sum(), xt)
    np.testing.assert_array_equal(gg.numpy(), ggt.numpy())


NAN = float("nan")


@pytest.mark.parametrize(
    "bounds",
    ["both", "min", "max"],
)
def test_clamp_with_tensor_bounds_gives_torch_gradients_at_nan_and_tied_bounds(bounds):
    """A NaN input passed its gradient through, and x < min == max gave it to min; torch gives 0 to all."""
    x = np.array([NAN, 1.0, 0.5, 2.0, -1.0, 0.5, 0.5, 0.3])
    lo = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 2.0, NAN, 0.0])
    hi = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, NAN])

    def fn(m):
        pick = {"both": lambda x, lo, hi: m.clamp(x, lo, hi), "min": lambda x, lo, hi: m.clamp(x, min=lo)}
        return pick.get(bounds, lambda x, lo, hi: m.clamp(x, max=hi))

    check(fn(dg), fn(torch), x, lo, hi)
