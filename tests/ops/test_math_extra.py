"""math_extra's ops and math_names' aliases against torch float64: forward and gradient on random inputs
(op table: parity, gradcheck, double backward), at inf/NaN/0, for integer/bool/float32 dtypes, in
place, as namespace functions, and the errors torch raises."""

import math

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops import math_names
from tests.ops._table import GT1, NONZERO, POS, UNIT, Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check

T = Table()
for name, domain in [("erfc", "any"), ("erfinv", UNIT), ("lgamma", POS), ("digamma", POS), ("i0", "any")]:
    T.op(name, lambda m, a, n=name: getattr(m, n)(a), (3, 4), domain=domain, double=True)
    T.op(name + "-size0", lambda m, a, n=name: getattr(m, n)(a), (0, 4), domain=domain)
T.op("lgamma-negative", lambda m, a: m.lgamma(-a), (3, 4), domain=GT1)  # between the poles, sign flips
T.op("i0-method-near-zero", lambda m, a: (a * 1e-3).i0(), (3, 4), double=True)
for n in (1, 2, 3):
    T.op(f"polygamma-{n}", lambda m, a, n=n: m.polygamma(n, a), (3, 4), domain=POS, double=n == 2)
T.op("polygamma-0-method", lambda m, a: a.polygamma(0), (3, 4), domain=POS)
T.op("sinc", lambda m, a: m.sinc(a * 2), (3, 4), double=True)
T.op("logit", lambda m, a: m.logit(m.sigmoid(a * 2)), (3, 4), double=True)
T.op("logit-eps", lambda m, a: m.logit(m.sigmoid(a * 3), eps=0.1), (3, 4), double=True)
T.op("nan_to_num", lambda m, a: m.nan_to_num(a * 3, nan=1.5, posinf=2.0, neginf=-3.0), (3, 4))
T.op("deg2rad", lambda m, a: m.deg2rad(a), (3, 4))
T.op("rad2deg", lambda m, a: a.rad2deg(), (3, 4))
T.op("float_power-scalar", lambda m, a: m.float_power(a, 3), (3, 4), double=True)
T.op("float_power-rscalar", lambda m, a: m.float_power(2.5, a), (3, 4))
T.op("xlogy-scalar-x", lambda m, b: m.xlogy(2.0, b), (3, 4), domain=POS)
T.op("xlogy-scalar-y", lambda m, a: m.xlogy(a, 3.0), (3, 4))
T.op("xlogy-zero-x", lambda m, a, b: m.xlogy(a * (a > 0), b.abs() + 0.5), (3, 4), (4,))
T.op("copysign-scalar", lambda m, a: m.copysign(a, -1.0), (3, 4))
T.op("clamp_min", lambda m, a: m.clamp_min(a, -0.2), (3, 4))
T.op("clamp_max", lambda m, a: a.clamp_max(0.3), (3, 4))
T.op("addcmul", lambda m, a, b, c: m.addcmul(a, b, c, value=0.5), (3, 4), (4,), (3, 1), double=True)
T.op("addcmul-default", lambda m, a, b, c: a.addcmul(b, c), (3, 4), (3, 4), (1,))
T.op("addcdiv", lambda m, a, b, c: m.addcdiv(a, b, c.abs() + 0.5, value=-2), (3, 4), (4,), (3, 1), double=True)
T.op("ldexp", lambda m, a, b: m.ldexp(a, b), (3, 4), (4,), double=True)
T.op("frexp", lambda m, a: m.frexp(a * 5)[0], (3, 4))
T.op("sgn-fix-positive", lambda m, a: m.sgn(a) + m.fix(a * 3) + m.positive(a), (3, 4), gradcheck=False)

BROADCAST = [("", (3, 4), (4,)), ("-size1", (2, 1, 3), (1, 5, 1)), ("-size0", (0, 3), (1, 3)), ("-0d", (3, 2), ())]
for name, fn, domain in [
    ("xlogy", lambda m, a, b: m.xlogy(a, b), POS),
    ("logaddexp", lambda m, a, b: m.logaddexp(a, b), "any"),
    ("logaddexp2", lambda m, a, b: a.logaddexp2(b), "any"),
    ("hypot", lambda m, a, b: m.hypot(a, b), NONZERO),
    ("copysign", lambda m, a, b: m.copysign(a, b), NONZERO),
    ("fmax", lambda m, a, b: m.fmax(a, b), "any"),
    ("fmin", lambda m, a, b: a.fmin(b), "any"),
    ("nextafter", lambda m, a, b: m.nextafter(a, b), "any"),
    ("float_power", lambda m, a, b: m.float_power(a, b), POS),
    ("arctan2", lambda m, a, b: m.arctan2(a, b), NONZERO),
]:
    for suffix, sa, sb in BROADCAST:
        T.op(
            name + suffix, fn, sa, sb, domain=domain, double=suffix == "" and name not in ("nextafter", "fmax", "fmin")
        )


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
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, INF, -INF, NAN, 2.5, -3.0])


@pytest.mark.parametrize(
    "name, fn",
    [
        ("erfc", lambda m, a: m.erfc(a)),
        ("erfinv", lambda m, a: m.erfinv(a)),
        ("lgamma", lambda m, a: m.lgamma(a + 0.5)),  # not at the poles (torch's own digamma differs there)
        ("lgamma-poles", lambda m, a: m.lgamma(a.detach())),
        ("digamma", lambda m, a: m.digamma(a + 0.5)),
        ("digamma-zero-inf", lambda m, a: m.digamma(m.cat([a[:2].detach(), a[4:7]]))),
        ("polygamma", lambda m, a: m.polygamma(2, m.nan_to_num(a.abs(), posinf=4.0) + 0.5)),
        ("i0", lambda m, a: m.i0(a)),
        ("sinc", lambda m, a: m.sinc(a)),
        # not at -0.0, whose gradient 1/(x(1-x)) torch gives as -inf on an AVX2 host and inf on an AVX-512
        # one, nor (with eps) at NaN, whose gradient torch gives as 0 on the first and NaN on the second
        ("logit", lambda m, a: m.logit(a[[0, 2, 3, 4, 5, 6, 7, 8]])),
        ("logit-eps", lambda m, a: m.logit(a[[0, 2, 3, 4, 5, 7, 8]], eps=0.25)),
        ("nan_to_num", lambda m, a: m.nan_to_num(a)),
        ("nan_to_num-args", lambda m, a: a.nan_to_num(nan=1.5, posinf=2.0, neginf=-3.0)),
        ("xlogy", lambda m, a: m.xlogy(a, a.flip(0))),
        ("logaddexp", lambda m, a: m.logaddexp(a, a.flip(0))),
        ("logaddexp-same", lambda m, a: m.logaddexp2(a, a)),
        ("hypot", lambda m, a: m.hypot(a, a.flip(0))),
        ("copysign", lambda m, a: m.copysign(a, a.flip(0))),
        ("fmax", lambda m, a: m.fmax(a, a.flip(0))),
        ("fmin-ties", lambda m, a: m.fmin(a, a)),
        ("frexp", lambda m, a: m.frexp(a)),
        ("float_power", lambda m, a: m.float_power(a, a.flip(0))),
        ("predicates", lambda m, a: (m.signbit(a), m.isposinf(a), m.isneginf(a), m.isreal(a))),
        ("deg2rad", lambda m, a: m.deg2rad(a)),
    ],
)
def test_infinities_nans_and_zeros_like_torch(name, fn):
    """Values and gradients at ±0, ±1, ±inf and NaN (poles, branch points, the 0·log 0 convention)."""
    check(lambda a: fn(dg, a), lambda a: fn(torch, a), SPECIAL.copy())


def test_float32_keeps_its_dtype_and_matches_torch():
    x = np.random.default_rng(0).uniform(0.1, 0.9, (5,)).astype(np.float32)
    for fn in (
        lambda m, a: m.erfinv(a),
        lambda m, a: m.lgamma(a),
        lambda m, a: m.digamma(a),
        lambda m, a: m.polygamma(2, a),
        lambda m, a: m.i0(a),
        lambda m, a: m.sinc(a),
        lambda m, a: m.logit(a),
        lambda m, a: m.xlogy(a, a),
        lambda m, a: m.hypot(a, a),
        lambda m, a: m.logaddexp(a, a),
        lambda m, a: m.nan_to_num(m.where(a > 0.5, a * math.inf, a)),
        lambda m, a: m.frexp(a)[1],
        lambda m, a: m.float_power(a, 2),
    ):
        check(lambda a: fn(dg, a), lambda a: fn(torch, a), x, dtype=np.float32, rtol=1e-6, atol=1e-6)
        assert str(fn(dg, dg.tensor(x)).dtype.name) == str(fn(torch, torch.tensor(x)).dtype).removeprefix("torch.")


INTS = np.array([[4, -6, 0], [9, 3, -2]])
BOOLS = np.array([[True, False, True], [False, False, True]])


def _same_or_both_raise(fn, *arrays):
    """fn on dg and torch tensors of `arrays`: equal dtype and values, or both raise."""
    try:
        want = fn(torch, *(torch.tensor(a) for a in arrays))
    except (RuntimeError, TypeError, NotImplementedError):
        with pytest.raises((TypeError, ValueError)):
            fn(dg, *(dg.tensor(a) for a in arrays))
        return
    got = fn(dg, *(dg.tensor(a) for a in arrays))
    for g, w in zip(*((got, want) if isinstance(got, tuple) else ((got,), (want,)))):
        assert g.dtype.name == str(w.dtype).removeprefix("torch."), (g.dtype, w.dtype)
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("values", [INTS, BOOLS, INTS.astype(np.uint8), INTS.astype(np.int32)], ids=str)
@pytest.mark.parametrize(
    "fn",
    [
        lambda m, a: m.erfc(a),
        lambda m, a: m.lgamma(a),
        lambda m, a: m.polygamma(1, a * a + 1),
        lambda m, a: m.i0(a),
        lambda m, a: m.sinc(a),
        lambda m, a: m.logit(a),
        lambda m, a: m.nan_to_num(a),
        lambda m, a: m.deg2rad(a),
        lambda m, a: m.signbit(a),
        lambda m, a: m.isposinf(a),
        lambda m, a: m.isreal(a),
        lambda m, a: m.sgn(a),
        lambda m, a: m.fix(a),
        lambda m, a: m.positive(a),
        lambda m, a: m.xlogy(a, a),
        lambda m, a: m.xlogy(a, 2.5),
        lambda m, a: m.copysign(a, -1),
        lambda m, a: m.fmax(a, a.flip(0)),
        lambda m, a: m.logaddexp(a, a),
        lambda m, a: m.hypot(a, a),
        lambda m, a: m.gcd(a, a.flip(0)),
        lambda m, a: m.lcm(a, a.flip(0)),
        lambda m, a: m.bitwise_and(a, a.flip(0)),
        lambda m, a: m.bitwise_or(a, 3),
        lambda m, a: m.bitwise_xor(a, a.flip(1)),
        lambda m, a: m.bitwise_not(a),
        lambda m, a: m.bitwise_left_shift(a, 2),
        lambda m, a: m.bitwise_right_shift(a, a.flip(0).abs()),
        lambda m, a: m.ldexp(a, a.flip(0)),
        lambda m, a: m.float_power(a, 2),
        lambda m, a: m.addcmul(a, a, a, value=2),
        lambda m, a: m.addcdiv(a, a, a),
        lambda m, a: m.heaviside(a, a.flip(0)),
        lambda m, a: m.clamp_min(a, 1),
        lambda m, a: m.frexp(a),
        lambda m, a: m.nextafter(a, a),
    ],
)
def test_integer_and_bool_inputs_take_torch_dtypes_or_raise(fn, values):
    _same_or_both_raise(fn, values)


def test_float_bitwise_ops_raise_naming_the_op():
    x = dg.tensor([1.5, 2.0])
    for fn, name in [
        (lambda: dg.bitwise_and(x, 1), "bitwise_and"),
        (lambda: x.bitwise_not(), "bitwise_not"),
        (lambda: dg.gcd(x, x), "gcd"),
        (lambda: dg.bitwise_left_shift(x, 1), "bitwise_left_shift"),
    ]:
        with pytest.raises(dg.errors.DTypeError, match=name):
            fn()


def test_errors_name_the_op_and_operands():
    i, f = dg.tensor([1, 2]), dg.tensor([1.0, 2.0])
    with pytest.raises(dg.errors.DTypeError, match=r"logaddexp: not implemented for int64 .*int64 \(2,\)"):
        dg.logaddexp(i, i)
    with pytest.raises(dg.errors.DTypeError, match="hypot.*two Tensors"):
        dg.hypot(f, 1.0)
    with pytest.raises(dg.errors.DTypeError, match="heaviside.*different dtypes"):
        dg.heaviside(f, i)
    with pytest.raises(dg.errors.DTypeError, match="addcdiv: Integer division"):
        dg.addcdiv(f, i, i)
    with pytest.raises(ValueError, match="polygamma.*non-negative"):
        dg.polygamma(-1, f)
    with pytest.raises(dg.errors.DTypeError, match="frexp"):
        dg.frexp(i)
    with pytest.raises(dg.errors.DTypeError, match="float_power_.*float32"):
        f.float_power_(2)
    with pytest.raises(ValueError, match="more than one value"):
        dg.is_nonzero(f)


def test_heaviside_output_requires_grad_but_backward_raises_like_torch():
    x = dg.tensor([1.0, 0.0, -2.0], requires_grad=True)
    out = dg.heaviside(x, dg.tensor([0.5, 0.5, 0.5]))
    assert out.requires_grad and out.tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(dg.errors.AutogradError, match="heaviside"):
        out.sum().backward()


def test_i1_double_backward_at_zero_uses_the_limit():
    """i0'' at 0 goes through i1's derivative, whose value at 0 (0.5) needs the eps branch."""
    x = dg.tensor(np.array([0.0, 1e-20, 2.0]), requires_grad=True)
    t = torch.tensor([0.0, 1e-20, 2.0], dtype=torch.float64, requires_grad=True)
    (g,) = dg.autograd.grad(dg.i0(x).sum(), x, create_graph=True)
    (gt,) = torch.autograd.grad(torch.i0(t).sum(), t, create_graph=True)
    g.sum().backward()
    gt.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


INPLACE = [
    ("addcmul_", lambda a, b: ((b, b), {"value": 0.5})),
    ("addcdiv_", lambda a, b: ((b, b.abs() + 1), {})),
    ("xlogy_", lambda a, b: ((b.abs() + 1,), {})),
    ("hypot_", lambda a, b: ((b,), {})),
    ("copysign_", lambda a, b: ((b,), {})),
    ("sinc_", lambda a, b: ((), {})),
    ("logit_", lambda a, b: ((0.1,), {})),
    ("nan_to_num_", lambda a, b: ((), {"nan": 2.0})),
    ("deg2rad_", lambda a, b: ((), {})),
    ("erfc_", lambda a, b: ((), {})),
    ("lgamma_", lambda a, b: ((), {})),
    ("polygamma_", lambda a, b: ((1,), {})),
    ("i0_", lambda a, b: ((), {})),
    ("fix_", lambda a, b: ((), {})),
    ("ldexp_", lambda a, b: ((b,), {})),
    ("clamp_min_", lambda a, b: ((0.1,), {})),
    ("clamp_max_", lambda a, b: ((0.1,), {})),
    ("arctan2_", lambda a, b: ((b,), {})),
    ("arcsinh_", lambda a, b: ((), {})),
    ("atanh_", lambda a, b: ((), {})),
    ("log2_", lambda a, b: ((), {})),
    ("absolute_", lambda a, b: ((), {})),
    ("negative_", lambda a, b: ((), {})),
    ("divide_", lambda a, b: ((b.abs() + 1,), {})),
    ("multiply_", lambda a, b: ((b,), {})),
    ("subtract_", lambda a, b: ((b,), {"alpha": 2})),
    ("true_divide_", lambda a, b: ((b.abs() + 1,), {})),
]


@pytest.mark.parametrize("name, args", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_methods_match_torch(name, args):
    """`(a·1).name(...)` on a non-leaf: values and the gradients through the rebased graph."""

    def run(a, b):
        pos, kw = args(a, b)
        return getattr(a * 1, name)(*pos, **kw)

    a = np.random.default_rng(3).uniform(0.1, 0.8, (3, 4))
    grad = name not in ("arcsinh_", "atanh_")  # torch has no derivative for these two in place
    check(run, run, a, np.random.default_rng(4).standard_normal(4), grad=grad)


@pytest.mark.parametrize(
    "name", [n for n in math_names.NAMESPACE if n.endswith("_") and n not in ("index_put_", "addmv_")]
)
def test_namespace_inplace_functions_are_torchs(name):
    """dg.<name>_(t) is t.<name>_(), for each torch function of that name (argument-free or one number)."""
    args = {"clamp_": (0.2, 0.5), "clip_": (0.2, 0.5), "clamp_max_": (0.5,), "clamp_min_": (0.2,), "fill_": (3.0,)}
    args.update({"ldexp_": (torch.tensor(2.0),), "xlogy_": (0.5,), "logit_": (0.1,)})
    values = np.array([1.25, 1.5, 1.75]) if "cosh" in name else np.array([0.25, 0.5, 0.75])
    if name in ("gcd_", "lcm_"):
        values, args[name] = np.array([4, 6, 9]), (np.array([6, 4, 3]),)
    extra = [dg.tensor(v) if isinstance(v, np.ndarray | torch.Tensor) else v for v in args.get(name, ())]
    textra = [torch.tensor(v) if isinstance(v, np.ndarray) else v for v in args.get(name, ())]
    got, want = dg.tensor(values), torch.tensor(values)
    assert getattr(dg, name)(got, *extra) is got
    getattr(torch, name)(want, *textra)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, equal_nan=True)


def test_namespace_names_exist_in_torch():
    assert all(hasattr(torch, n) for n in math_names.NAMESPACE)
    assert all(hasattr(torch.Tensor, n) for n in math_names.METHODS)
    assert all(hasattr(torch.Tensor, n + "_") for n in math_names.INPLACE)


def test_tensor_predicates_and_ravel_like_torch():
    x = np.arange(6.0).reshape(2, 3)
    for fn in (
        lambda m, a: m.is_complex(a),
        lambda m, a: m.is_signed(a),
        lambda m, a: m.is_signed(a.to(m.uint8)),
        lambda m, a: m.is_same_size(a, a.t()),
        lambda m, a: m.is_same_size(a, a + 1),
        lambda m, a: m.is_nonzero(a[0, :1]),
        lambda m, a: m.is_nonzero(a[1, 2]),
        lambda m, a: m.is_floating_point(a),
        lambda m, a: m.numel(a),
        lambda m, a: a.is_nonzero() if a.numel() == 1 else a.is_same_size(a),
    ):
        assert fn(dg, dg.tensor(x)) == fn(torch, torch.tensor(x))
    check(lambda a: dg.ravel(a.t()) * 2, lambda a: torch.ravel(a.t()) * 2, x)
    check(lambda a: dg.clone(a).swapaxes(0, 1), lambda a: torch.clone(a).swapaxes(0, 1), x)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("greater", lambda m, a, b: (m.greater(a, b), a.greater_equal(b), m.less(a, b), a.less_equal(b))),
        ("not_equal", lambda m, a, b: m.not_equal(a, b)),
        ("arith", lambda m, a, b: m.divide(m.multiply(a, b), m.subtract(b, 3)) + m.true_divide(m.negative(a), 2)),
        ("arc", lambda m, a, b: m.arcsin(a.tanh()) + m.arccos(b.tanh()) + m.arctan(a) + m.arcsinh(b)),
        ("arc-h", lambda m, a, b: m.arccosh(a.abs() + 2) + m.arctanh(b.tanh() * 0.5) + m.absolute(a)),
        ("swap", lambda m, a, b: m.swapaxes(a, 0, 1) + m.swapdims(b, 1, 0)),
    ],
)
def test_namespace_aliases_match_torch(name, fn):
    rng = np.random.default_rng(5)
    check(lambda a, b: fn(dg, a, b), lambda a, b: fn(torch, a, b), rng.standard_normal((3, 3)), rng.random((3, 3)))


def test_new_ops_capture_into_a_compiled_graph():
    def fn(a, b):
        return dg.xlogy(a, b) + dg.logaddexp(a, b) * dg.hypot(a, b) + dg.lgamma(b) + dg.addcmul(a, a, b, value=2)

    x, y = dg.rand(3, 4) + 0.5, dg.rand(3, 4) + 0.5
    compiled = dg.compile(fn, [x, y])
    np.testing.assert_allclose(compiled(x, y).numpy(), fn(x, y).numpy(), rtol=1e-6)


M = Table()
M.op("mvlgamma", lambda m, a: m.mvlgamma(a, 3), (3, 4), domain="gt1", double=True)
M.op("mvlgamma-method-p1", lambda m, a: a.mvlgamma(1), (5,), domain="pos")


@pytest.mark.parametrize("row", M.rows())
def test_mvlgamma_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", M.gradcheck_rows())
def test_mvlgamma_gradcheck(row):
    run_gradcheck(row)


def test_mvlgamma_at_and_below_its_poles_like_torch():
    """torch 2.13 no longer refuses x <= (p-1)/2: lgamma's poles give inf, digamma's -inf or NaN."""
    check(lambda a: dg.mvlgamma(a, 3), lambda a: torch.mvlgamma(a, 3), np.array([0.5, 2.0, -1.0, 1.0, 1.25]))
    with pytest.raises(ValueError, match="p has to be greater than or equal to 1"):
        dg.mvlgamma(dg.tensor([2.0]), 0)


@pytest.mark.parametrize("name", sorted(math_names.COMPARISONS))
def test_inplace_comparisons_write_ones_and_zeros_with_a_zero_gradient_like_torch(name):
    def run(a, b):
        return getattr(a * 1, name + "_")(b.round())

    rng = np.random.default_rng(6)
    check(run, run, rng.standard_normal((3, 4)).round(), rng.standard_normal(4), seed_grad=False)
    got, want = dg.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    getattr(got, name + "_")(2)
    getattr(want, name + "_")(2)
    assert got.tolist() == want.tolist() and got.dtype.name == "int64"


def test_logical_xor_inplace_records_nothing_like_torch():
    """torch's logical_xor_ keeps self's graph (MulBackward here): the gradient is the one before it."""
    rng = np.random.default_rng(7)

    def run(a, m):
        out = a * 2
        out.logical_xor_(m > 0)
        return out

    check(run, run, rng.standard_normal((3, 4)), rng.standard_normal(4), seed_grad=False)


def test_float16_sinc_rounds_once_like_torch():
    x = np.array([0.1, 0.5, 0.9, 2.3], dtype=np.float16)
    got, want = dg.sinc(dg.tensor(x)), torch.sinc(torch.tensor(x))
    assert got.dtype.name == "float16" and got.numpy().tolist() == want.numpy().tolist()
