"""Bugs the random-program fuzzer (test_program_fuzz.py) found over seeds 1500..4500, each pinned
against torch with the parity helper."""

import numpy as np
import pytest

import distgraph as dg
from tests.autograd.test_second_order_regressions import check_second_order
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((3, 4))


def _parity(fn, *arrays, **kw):
    return check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *arrays, **kw)


@pytest.mark.parametrize("grad", [True, False])
def test_contiguous_copy_is_row_major_so_a_reshape_of_it_is_a_view(grad):
    def fn(m, x):
        y = x.t().contiguous()
        y.reshape(-1).pow_(2)
        return y

    _parity(fn, X, grad=grad)


@pytest.mark.parametrize("grad", [True, False])
def test_clone_keeps_the_strides_so_a_reshape_of_it_copies(grad):
    def fn(m, x):
        y = x.t().clone()
        y.reshape(-1).mul_(2)
        return y

    _parity(fn, X, grad=grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_remainder_keeps_the_sign_of_a_zero_as_fmod_gives_it(dtype):
    a = np.array([-1.0, 1.0, -2.0, 2.0, -0.0, 0.0, -3.0, 3.0])
    b = np.array([1.0, -1.0, 1.0, 2.0, 3.0, -3.0, -1.5, 1.5])
    _parity(lambda m, x, y: 1 / m.remainder(x, y), a, b, grad=False, dtype=dtype)
    _parity(lambda m, x, y: 1 / (x % 1.0), a, b, grad=False, dtype=dtype)


@pytest.mark.parametrize("op", ["remainder", "fmod"])
def test_a_write_into_the_dividend_keeps_backward_when_the_divisor_needs_no_grad(op):
    def fn(m, x):
        y = x * 1
        r = getattr(m, op)(y, 0.75)
        y.mul_(3)
        return r

    _parity(fn, X)


def _outcome(m, fn):
    """(dtype name, values) of fn(m)."""
    out = fn(m)
    return str(out.dtype).split(".")[-1], out.tolist()


BOOLS = [True, False, True]


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: m.tensor(BOOLS) ** True,
        lambda m: m.tensor(BOOLS) ** False,
        lambda m: m.tensor(BOOLS) ** 2,
        lambda m: m.add(m.tensor(BOOLS), True, alpha=2),
        lambda m: m.add(m.tensor(BOOLS), False, alpha=2),
        lambda m: m.add(m.tensor(BOOLS), True, alpha=0),
        lambda m: m.add(m.tensor(BOOLS), 1, alpha=2),
        lambda m: 2 | m.tensor([1, 4, 6]),
        lambda m: True & m.tensor(BOOLS),
        lambda m: 3 ^ m.tensor([1, 4, 6]),
    ],
    ids=[
        "pow_true",
        "pow_false",
        "pow_2",
        "add_true_alpha",
        "add_false_alpha",
        "add_alpha_0",
        "add_int_alpha",
        "ror",
        "rand",
        "rxor",
    ],  # fmt: skip
)
def test_bool_and_reflected_bitwise_results_have_torchs_dtype(fn):
    assert _outcome(dg, fn) == _outcome(torch, fn)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: m.tensor([1.0, 2.0]).sub_(m.tensor([True, False])),
        lambda m: m.tensor([1.0, 2.0]) - m.tensor([True, False]),
        lambda m: m.tensor([True, False]) - m.tensor([1.0, 2.0]),
        lambda m: m.tensor([1.0, 2.0]) - True,
        lambda m: m.sub(m.tensor([1.0, 2.0]), m.tensor([True, False]), alpha=2),
        lambda m: m.sub(m.tensor([1, 2]), True, alpha=2),
        lambda m: m.tensor([True, False]) ** m.tensor([True, True]),
    ],
)
def test_subtraction_with_a_bool_and_bool_pow_of_bool_tensors_raise_as_torch(fn):
    with pytest.raises((RuntimeError, NotImplementedError)):
        fn(torch)
    with pytest.raises(TypeError, match="sub|pow"):
        fn(dg)


@pytest.mark.parametrize("op", ["scatter", "scatter_add"])
def test_scatter_into_a_0d_input_takes_the_first_element_of_a_1d_src(op):
    def fn(m, x, s):
        return getattr(x * 1, op)(0, m.tensor(0), s)

    x, s = np.array(0.5), np.arange(5.0) + 2
    _parity(fn, x, s, grad=False)  # torch's backward refuses the gradient of src here (its own bug):
    src = dg.tensor(s, requires_grad=True)  # it is that of src[0], the one element read
    t_src = torch.tensor(s, requires_grad=True)
    want = torch.autograd.grad(t_src[0] * 3, t_src)[0].numpy()
    np.testing.assert_array_equal(dg.autograd.grad(fn(dg, dg.tensor(x), src) * 3, src)[0].numpy(), want)


@pytest.mark.parametrize("op", ["scatter", "scatter_add"])
def test_scatter_refuses_a_src_with_another_number_of_dims(op):
    for src in (lambda m: m.ones(12), lambda m: m.tensor(2.0)):
        with pytest.raises((IndexError, RuntimeError)):
            getattr(torch.zeros(3, 4), op)(0, torch.zeros(3, 4, dtype=torch.int64), src(torch))
        with pytest.raises(ValueError, match="same number of dimensions"):
            getattr(dg.zeros(3, 4), op)(0, dg.zeros(3, 4, dtype=dg.int64), src(dg))


@pytest.mark.parametrize("op", ["min", "max"])
def test_a_nan_gradient_of_max_min_over_all_elements_reaches_only_the_extreme(op):
    # the gradient of the reduced value sums w·log(x), NaN where x < 0: torch fills it into the hits only
    _parity(lambda m, x: getattr(x, op)() * m.log(x), X)
    _parity(lambda m, x: getattr(m, op)(x) * m.log(x), np.array([1.0, np.nan, -2.0, np.nan]))


@pytest.mark.parametrize("offset", [0, 1, -1])
def test_diagonal_backward_and_diag_keep_a_nan_on_the_diagonal(offset):
    _parity(lambda m, x: m.sqrt(x.diagonal(offset)), X)  # sqrt of a negative: a NaN gradient
    _parity(lambda m, x: m.sqrt(x.reshape(2, 3, 2).diagonal(offset, 0, 2)), X)
    _parity(lambda m, x: m.diag(m.sqrt(x[0]), offset), X)


def test_atan2_has_a_zero_gradient_where_a_squared_plus_b_squared_is_zero():
    a = np.array([0.0, 1e-200, 0.0, -0.0, 1e-170, 1.0, -2.0])
    b = np.array([0.0, 1e-200, -0.0, 0.0, 0.0, 2.0, 0.5])
    _parity(lambda m, x, y: m.atan2(x, y), a, b)
    _parity(lambda m, x: m.atan2(x * 1, x * 1), a)
    check_second_order(lambda m, x, y: m.atan2(x, y), a, b)


@pytest.mark.parametrize("dim", [0, 1])
def test_a_nan_gradient_of_cumprod_reaches_only_the_factors_before_it(dim):
    _parity(lambda m, x: m.sqrt(x.cumprod(dim)), X)  # sqrt of a negative product: a NaN gradient


def test_scatter_backward_gives_an_exact_zero_to_overwritten_elements():
    index = np.array([[0, 0, 1], [2, 2, 2], [3, 1, 0]])
    _parity(lambda m, x: m.sqrt(x.scatter(-1, m.tensor(index), 1.5)), X)  # NaN gradient where x < 0
    _parity(lambda m, x, y: m.sqrt(x.scatter(-1, m.tensor(index), y)), X, X[:, :3])


@pytest.mark.parametrize("dim", [0, (0, 1), None])
def test_an_infinite_gradient_of_var_keeps_the_sign_of_each_centered_value(dim):
    _parity(lambda m, x: x.var(dim) / 0.0, X)  # torch's 2/dof·g·(x - mean), not NaN through mean
    _parity(lambda m, x: m.var_mean(x, dim, keepdim=True)[0] / 0.0, X)
    check_second_order(lambda m, x: x.var(dim, correction=0) * x.sum(), X)


def test_sign_of_nan_is_zero_and_so_is_abss_gradient_there():
    # seed 3269: torch's sign is (0 < x) - (x < 0), 0 at NaN (numpy's sign gives NaN)
    x = np.array([[np.nan, -1.5, 0.0, -0.0], [2.0, np.nan, -np.inf, np.inf]])
    _parity(lambda m, x: m.sign(x), x)
    _parity(lambda m, x: x.abs() * 3, x)
    assert dg.tensor(x.astype(np.float32)).sign().dtype == dg.float32
    for v in (np.nan, -2.0):
        _parity(lambda m, x: m.sign(x) * x, np.array(v))
        _parity(lambda m, x: x.abs(), np.array(v, np.float32), dtype=np.float32)


def test_lerp_uses_torchs_second_branch_from_weight_one_half():
    # seed 4415: end - (end - start)·(1 - w) for |w| >= 0.5, so an infinite start gives ±inf, not NaN
    start = np.array([0.0, -np.inf, -np.inf, np.inf, 1.0, np.nan])
    end = np.array([1.0, 2.0, 3.0, 1.0, np.inf, 2.0])
    weight = np.array([1.03, 0.9, 0.2, 0.5, 0.7, 0.6])
    _parity(lambda m, s, e, w: m.lerp(s, e, w), start, end, weight)
    _parity(lambda m, s, e: s.lerp(e, 0.75), start, end)
    check_second_order(lambda m, s, e, w: m.lerp(s, e, w) * s, X, X[::-1].copy(), np.abs(X))


def test_cat_counts_a_skipped_empty_tensors_dtype_and_gradient():
    # seed 3780: torch skips a 1-D empty tensor's shape but promotes its dtype and keeps it in the graph
    x = X.astype(np.float32)
    for m in (dg, torch):
        empty = m.tensor(np.zeros(0), requires_grad=True)
        out = m.cat([m.tensor(x), empty * 2], 1)
        out.sum().backward()
        assert str(out.dtype).split(".")[-1] == "float64" and out.requires_grad
        assert tuple(empty.grad.shape) == (0,)
    _parity(lambda m, a, e: m.cat([a, e, a * 2], 0), X, np.zeros(0))


def test_reshape_that_must_copy_does_not_share_the_inputs_version():
    # seed 4426: flattening an expanded tensor copies (torch too), so a write into the copy leaves the
    # leaf's version alone and remainder's saved leaf stays usable
    def fn(m, a, b):
        x, _ = m.broadcast_tensors(a, b)
        out = m.remainder(a, b)
        flat = x.reshape(-1)
        flat[0] = 5.0
        return out, flat

    _parity(fn, X, np.random.default_rng(1).standard_normal((2, 3, 4)))
    y = dg.tensor(X).t()
    assert y.reshape(-1)._base is None and y.reshape(4, 3)._base is y._base is not None


def test_gather_and_scatter_count_a_0d_input_or_index_as_1d():
    # seeds 3155, 3237, 3421, 3536, 4468: scatter_ of a 0-d tensor with a (1,) index, refused before
    def fn(m, x, v):
        s = x.sum()
        one, two = m.zeros(1, dtype=m.int64), m.tensor([0, 0])
        return (
            s.scatter(0, one, 3.0), s.gather(0, one), v.gather(0, m.tensor(2)), v.scatter(0, m.tensor(2), s),
            s.scatter_add(0, two, v[:2]), s.gather(0, m.tensor(0)), s.scatter(0, one, v[1:2]),
        )  # fmt: skip

    _parity(fn, X, np.array([1.0, -2.0, 3.0]))
    for m in (dg, torch):
        z = m.tensor(2.0)
        z.scatter_(0, m.zeros(1, dtype=m.int64), 3.0)
        assert z.item() == 3.0


@pytest.mark.parametrize("value", [1.2229981429843382, -3.7e5, 1e-300, 0.1])
def test_the_variance_of_a_constant_slice_is_exactly_zero(value):
    # seed 3888: sum/n missed the constant by an ulp, so var was 5e-32 and 0 ** -x finite, not torch's inf.
    # torch's Welford pass (several outputs) gives an exact 0; its full reductions run sum/n, whose
    # rounding (its own summation order) distgraph does not copy
    x = np.full((3, 4), value)
    for dim in (0, 1, -1):
        assert dg.tensor(x).var(dim, correction=0).eq(0).all().item()
        _parity(lambda m, x, y: x.var(dim, correction=0, keepdim=True) ** y, x, X, grad=False)
        _parity(lambda m, x: m.std(x, dim), x)


def test_lerp_saves_start_and_end_only_for_the_weights_gradient():
    # seeds 859, 1246 (after lerp became one op): a write into start or end after lerp, with a weight
    # that needs no gradient, leaves backward free, as torch's
    def fn(m, x, y):
        a, b = x * 1, y * 1
        out = m.lerp(a, b, m.tensor(np.full((3, 4), 0.3))) + m.lerp(a, b, 0.7)
        a.mul_(2)
        b.add_(1)
        return out, a, b

    _parity(fn, X, X[::-1].copy())


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
@pytest.mark.parametrize("fn", ["var", "std", "var_mean"])
def test_var_and_std_refuse_integer_and_bool_tensors(fn, dtype):
    # seed 551: a 0-d bool tensor's var over dim -1 (no degree of freedom) gave NaN; torch refuses
    for shape in ((), (3, 4)):
        for m in (dg, torch):
            with pytest.raises(RuntimeError if m is torch else dg.errors.DTypeError, match="floating point"):
                getattr(m, fn)(m.tensor(np.ones(shape, dtype)), -1)
