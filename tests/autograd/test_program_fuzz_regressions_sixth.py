"""Bugs the random-program fuzzer (test_program_fuzz.py) found over seeds 0..7000 in its sixth round, each
pinned against torch (float64, values and gradients, second-order gradients where the bug was there)."""

import numpy as np
import pytest

import distgraph as dg
from tests.autograd.test_second_order_regressions import check_second_order
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((3, 4))
ROW_6990 = np.array([0.7865904776604432, -1.1630266749940288, -1.3469742520575874, 0.16420158069987978])


def _parity(fn, *arrays, **kw):
    return check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *arrays, **kw)


# ---- softmax and kl_div round as torch's, so kl_div(log_softmax x, softmax x) is 0 where torch's is (6990) ---
def test_softmax_along_the_last_dim_rounds_as_torchs_kernel():
    """torch's last-dim kernel multiplies exp(x − max) by 1 / sum, its other kernel divides by the sum;
    dividing along the last dim left softmax an ulp off torch's, and log(softmax) an ulp off log_softmax
    where torch's agree: kl_div(x, x) 1e-17 where torch's is 0, and atan2 of it π off."""
    np.testing.assert_array_equal(dg.tensor(X).softmax(-1).numpy(), torch.tensor(X).softmax(-1).numpy())
    np.testing.assert_array_equal(dg.tensor(X.T).softmax(0).numpy(), torch.tensor(X.T).softmax(0).numpy())
    _parity(lambda m, x: x.softmax(-1), X)
    _parity(lambda m, x: x.softmax(0), X)


@pytest.mark.parametrize("x", [X, ROW_6990], ids=["3x4", "seed6990"])
def test_kl_div_of_a_distribution_against_itself_is_torchs_bit_for_bit(x):
    """torch's xlogy(t, t) − t · input rounds each product: where log t and input differ by an ulp the
    two products often still round alike, to 0; distgraph's t · (log t − input) kept the ulp (seed 6990:
    1e-17, whose reciprocal torch gives as inf)."""

    def kl(m, x):
        return m.nn.functional.kl_div(x.log_softmax(-1), x.softmax(-1), reduction="none")

    np.testing.assert_array_equal(kl(dg, dg.tensor(x)).numpy(), kl(torch, torch.tensor(x)).numpy())
    _parity(kl, x)


def test_kl_div_is_torchs_xlogy_formula_at_zero_and_negative_targets():
    """torch computes xlogy(target, target) − target · input: NaN at a negative target, and a NaN target
    gradient at a zero one (xlogy's other-gradient target / target); distgraph took log 1 there."""
    inp = np.array([0.3, -0.2, 0.5, 0.1, -1.5])
    target = np.array([0.0, -1.0, 0.5, 2.0, 0.25])
    for red in ("none", "sum", "batchmean"):
        _parity(lambda m, i, t: m.nn.functional.kl_div(i, t, reduction=red), inp, target)


# ---- norm's double backward at a zero norm is NaN, as torch's (seed 2088) ---------------------------------
@pytest.mark.parametrize("p", [2, "fro", 3, 1.5, 1])
def test_norm_second_order_through_its_incoming_gradient_is_nan_where_the_norm_is_zero(p):
    """torch's norm_backward masks g / ‖x‖^(p−1) (x / ‖x‖ for p = 2) to 0 where ‖x‖ = 0: the first-order
    gradient is 0 there, a second-order one 0 / 0, NaN. distgraph divided by a safe 1 and gave finite values."""
    x = np.concatenate([np.zeros((1, 4)), X[:2]])  # row 0 has a zero norm
    w = np.random.default_rng(1).standard_normal(3)
    check_second_order(lambda m, x, w: x.norm(p, dim=1) * w, x, w)
    check_second_order(lambda m, x, w: (x[0].norm(p) + x.sum()) * w, x, w)
    _parity(lambda m, x: x.norm(p, dim=1), x)
    _parity(lambda m, x: x.norm(p, dim=0, keepdim=True), x)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x, w: m.nn.functional.cosine_similarity(x, x, dim=-1) * w,  # seed 1479
        lambda m, x, w: m.nn.functional.cosine_similarity(x, x * 2, dim=-1) * w,
        lambda m, x, w: m.nn.functional.normalize(x.T, dim=0).sum(0) * w,  # seed 3444
    ],
)
def test_cosine_similarity_and_normalize_second_order_is_nan_at_a_zero_row(fn):
    """Both divide by a norm floored at eps in value only, so a zero row's norm still differentiates as
    torch's norm_backward: a NaN second-order gradient there."""
    x = np.concatenate([np.zeros((1, 4)), X[:2]])
    check_second_order(fn, x, np.random.default_rng(2).standard_normal(3))


# ---- huber and smooth_l1 are 0.5·d² of the signed difference: second derivative 1 at d = 0 (seed 618) ---
@pytest.mark.parametrize(
    "loss",
    [
        lambda F, a, b: F.huber_loss(a, b, reduction="none", delta=0.7),
        lambda F, a, b: F.smooth_l1_loss(a, b, reduction="none", beta=0.5),
        lambda F, a, b: F.huber_loss(a, b, reduction="sum", delta=2.0),
    ],
)
def test_huber_and_smooth_l1_second_order_where_input_equals_target_is_torchs(loss):
    """distgraph squared |input − target|, whose second derivative is 0 (abs's slope is 0 there) where
    input equals target, torch's 1 (1/β); the fuzzer reached it through clamp(x, y, y) against y."""
    y = np.concatenate([X[0], [0.5, 3.0]])
    x = y.copy()
    x[[1, 4, 5]] += [0.2, -2.5, 4.0]  # near, far below, far above; the rest tie
    check_second_order(lambda m, x, y: loss(m.nn.functional, x * 1, y * y), x, y)
    check_second_order(lambda m, x, y: loss(m.nn.functional, m.clamp(x, y, y), y), x, y)
    _parity(lambda m, x, y: loss(m.nn.functional, x, y), x, y)


@pytest.mark.parametrize("name", ["huber_loss", "smooth_l1_loss"])
@pytest.mark.parametrize("edge", [0.5, 2.0])
def test_huber_and_smooth_l1_are_linear_at_exactly_delta(name, edge):
    """torch's quadratic branch is |d| < δ (β): at |d| = δ the value and slope are the same either way, the
    second derivative is the linear branch's 0; distgraph took the quadratic one (1)."""
    x = np.array([2.0, -2.0, 0.5, -0.5, 1.0, 0.0])
    kw = {"delta" if name == "huber_loss" else "beta": edge}
    check_second_order(lambda m, x, y: getattr(m.nn.functional, name)(x, y, reduction="none", **kw), x, np.zeros(6))


# ---- clamp with Tensor bounds (seeds 7992, 7093) -------------------------------------------------------------
@pytest.mark.parametrize("hi", [-np.inf, np.inf])
def test_clamp_to_an_infinite_upper_bound_below_the_lower_is_that_bound_not_nan(hi):
    """Where hi < lo the value is hi with hi's gradient; distgraph built it as hi + (out − hi).detach(),
    NaN for an infinite hi (seed 7992: clamp(x, x, log of a bool mask))."""
    lo = X[0]
    his = np.array([hi, 0.5, hi, -3.0])
    _parity(lambda m, x, lo, h: m.clamp(x, lo, h), X, lo, his)
    _parity(lambda m, x, lo, h: m.clamp(x, lo - 10, h), X, lo, his)


@pytest.mark.parametrize("number", [True, 1, 0.25])
@pytest.mark.parametrize("which", ["min", "max"])
def test_clamp_takes_a_0d_bound_next_to_a_number_as_a_number(number, which):
    """torch's clamp(Tensor, Number, Number) takes a 0-d tensor that needs no grad as a number when the
    other bound is one (a bool included); distgraph went the Tensor-bounds way, which refused the bool
    (seed 7093) and promoted an integer input by the 0-d tensor's dtype."""
    other = np.float64(-0.3)

    def fn(m, x):
        bounds = {"min": m.tensor(other), "max": number} if which == "min" else {"min": number, "max": m.tensor(other)}
        return m.clamp(x, **bounds)

    _parity(fn, X)
    ints = np.array([[-2, 0, 1, 3]])
    d, t = fn(dg, dg.tensor(ints)), fn(torch, torch.tensor(ints))
    assert d.dtype.name == str(t.dtype).split(".")[-1]
    np.testing.assert_array_equal(d.numpy(), t.numpy())
