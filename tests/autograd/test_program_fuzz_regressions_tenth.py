"""Bugs the random-program fuzzer found in the ops of the API round (test_program_fuzz_new_ops.py, fourth hunt),
each pinned against torch (float64 values and gradients; errors where torch refuses)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")


# ---- abs of a bool tensor (seed 4388) ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["abs", "abs_", "absolute", "__abs__"])
def test_abs_refuses_a_bool_tensor(name):
    """torch has no abs kernel for bool ('"abs_cpu" not implemented for 'Bool''); distgraph's took it."""
    with pytest.raises(RuntimeError, match="not implemented for 'Bool'"):
        getattr(torch.tensor([True, False]), name)()
    with pytest.raises(dg.errors.DTypeError, match=r"abs: not implemented for this dtype \(a bool tensor"):
        getattr(dg.tensor([True, False]), name)()


def test_refused_abs_leaves_a_saved_where_condition_unwritten():
    """`c.abs_().add_(0.5)` on where's bool condition: distgraph's abs_ wrote c (its version moved) before add_
    refused, so where's backward found its saved condition modified; torch refuses at abs_ and writes nothing."""
    c = np.array([[True, False], [False, True]])
    grads = []
    for m in (dg, torch):
        cond, x = m.tensor(c), m.tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
        y = m.where(cond, x, x * 3)
        with pytest.raises(Exception, match="not implemented"):
            cond.abs_()
        assert cond._version == 0
        grads.append(np.asarray(m.autograd.grad(y.sum(), [x])[0].detach()))
    np.testing.assert_array_equal(grads[0], grads[1])


def test_abs_of_integer_and_float_tensors_is_unchanged():
    for values in ([-2, 0, 3], [-1.5, 0.0, 2.0]):
        got, want = dg.tensor(values).abs(), torch.tensor(values).abs()
        assert got.dtype.name == str(want.dtype).split(".")[-1]
        np.testing.assert_array_equal(got.array, want.numpy())


# ---- the other ops torch has no bool or integer kernel for (a sweep of Tensor methods after seed 4388) ---------
_NO_KERNEL = {
    "argmax": (lambda t: t.argmax(), "does not support bool"),
    "argmin_dim": (lambda t: t.argmin(0), "does not support bool"),
    "topk": (lambda t: t.topk(1), "does not support bool"),
    "kthvalue": (lambda t: t.kthvalue(1), "not implemented for"),
}


@pytest.mark.parametrize("name", list(_NO_KERNEL))
def test_selection_refuses_a_bool_tensor(name):
    fn, match = _NO_KERNEL[name]
    for m in (torch, dg):
        with pytest.raises((RuntimeError, TypeError), match=match):
            fn(m.tensor([[True, False, True], [False, False, True]]))


def test_bool_max_along_a_dim_and_0d_kthvalue_still_work():
    """max/min along a dim of a bool tensor share argmax's kernel in distgraph; torch takes both, and a 0-d
    bool tensor's kthvalue(1)."""
    b = [[True, False, True], [False, False, True]]
    for dim in (0, 1):
        got, want = dg.tensor(b).max(dim), torch.tensor(b).max(dim)
        np.testing.assert_array_equal(got.values.array, want.values.numpy())
        np.testing.assert_array_equal(got.indices.array, want.indices.numpy())
    assert dg.tensor(True).kthvalue(1).values.item() is True


@pytest.mark.parametrize("dtype", ["int64", "bool"])
@pytest.mark.parametrize("name", ["uniform_", "normal_", "bernoulli"])
def test_random_fill_refuses_a_non_float_tensor(name, dtype):
    """torch's uniform_/normal_ kernels and bernoulli's of its probabilities are floating only; bernoulli_ and
    bernoulli(t, p) write any dtype."""
    for m in (torch, dg):
        with pytest.raises((RuntimeError, TypeError), match="not implemented for"):
            getattr(m.zeros(3, dtype=getattr(m, dtype)), name)()
        assert m.zeros(3, dtype=getattr(m, dtype)).bernoulli_(0.5).dtype == getattr(m, dtype)
        assert m.bernoulli(m.zeros(3, dtype=getattr(m, dtype)), 0.5).dtype == getattr(m, dtype)


# ---- var/std into one output element: two passes, as torch's std_var_all_cpu (seed 6507) -------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, value", [(3, 0.8099399745251025), (5, 0.8099), (7, 1.1), (4, 0.3)])
def test_var_of_a_constant_into_one_output_is_torchs_two_pass_value(dtype, n, value):
    """torch's var/std with one output element take mean() and sum the squared deviations in float64, so a
    constant's variance is 1e-32 where mean() misses it by an ulp (std 1.4e-16, and std ** -x finite); distgraph's
    corrected mean gave an exact 0 (an inf). Along a dim with more outputs, and var_mean, torch's Welford pass
    gives 0 still."""
    a = np.full(n, value, dtype)
    for fn in (
        lambda m, x: m.var(x),
        lambda m, x: m.std(x, correction=0),
        lambda m, x: x.reshape(1, n).var(1),
        lambda m, x: m.std(x) ** -1.0,
        lambda m, x: x.reshape(n, 1).expand(n, 2).var(0),
        lambda m, x: m.var_mean(x)[0],
        lambda m, x: m.std_mean(x.reshape(1, n), 1)[0],
    ):
        got, want = fn(dg, dg.tensor(a)), fn(torch, torch.tensor(a))
        assert got.dtype.name == str(want.dtype).split(".")[-1]
        np.testing.assert_array_equal(got.array, want.numpy())


def test_var_into_one_output_keeps_its_gradient():
    r = np.random.default_rng(3)
    for x in (r.standard_normal((3, 4)), np.full((2, 3), 0.8099)):
        check(lambda t: dg.var(t) + dg.std(t.reshape(1, -1), 1).sum(),
              lambda t: torch.var(t) + torch.std(t.reshape(1, -1), 1).sum(), x)  # fmt: skip


# ---- hypot's saved operands (seed 6979) --------------------------------------------------------------------------
def test_hypot_operand_written_in_place_where_it_needs_no_gradient():
    """hypot's gradient for x reads x (g·x / out), for y y: torch saves an operand only when its own gradient is
    needed, so writing one that needs none after hypot leaves the other's backward free; distgraph refused."""
    grads = []
    for m in (dg, torch):
        x, y = m.tensor(np.full((2, 2), 2.0)), m.tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
        h = m.hypot(x, y * 1)
        x.mul_(3)
        grads.append(np.asarray(m.autograd.grad(h.sum(), [y])[0].detach()))
        x = m.tensor(np.full((2, 2), 2.0), requires_grad=True)
        a = x * 1
        h = m.hypot(a, y * 1)
        a.mul_(3)
        with pytest.raises(Exception, match="modified by an inplace operation"):
            m.autograd.grad(h.sum(), [y])
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


# ---- xlogy's gradient for x is xlogy(g, y) (seed 6628) -----------------------------------------------------------
_SPECIAL_XY = (
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 0.0, 1.0, -0.0],
    [2.0, -1.0, np.nan, 0.0, 2.0, -1.0, np.nan, 0.0, np.inf, np.inf, 0.0, -np.inf, -np.inf, -0.0],
)


@pytest.mark.parametrize("g", [0.0, 1.0, -1.0, np.nan, np.inf])
def test_xlogy_gradient_is_xlogy_of_the_output_gradient(g):
    """torch's x-gradient is xlogy(g, y), zeroed where x == 0 and y <= 0: a zero g (floor_divide's gradient
    reaching it) gives 0 where log y is NaN or -inf, and x == 0 with y > 0 gives g·log y; distgraph's
    g·xlogy(x != 0, y) gave 0·NaN = NaN and 0."""
    grads = []
    for m in (dg, torch):
        x, y = (m.tensor(v, dtype=m.float64, requires_grad=True) for v in _SPECIAL_XY)
        grads.append([np.asarray(t.detach()) for t in m.autograd.grad(m.xlogy(x, y), [x, y], m.full((14,), g))])
    for got, want in zip(*grads):
        np.testing.assert_array_equal(got, want)
        real = ~np.isnan(want)  # (a NaN's sign bit is the CPU's SIMD kernels' to choose: it differs on AVX-512)
        np.testing.assert_array_equal(np.signbit(got)[real], np.signbit(want)[real])


def test_xlogy_of_a_negative_then_floor_divided_has_a_zero_gradient():
    """The program of seed 6628: xlogy(x, y) with y < 0 (NaN), written by a floor division, whose gradient is 0."""
    r = np.random.default_rng(0)
    for m in (dg, torch):
        x, y = m.tensor(r.standard_normal((3, 1)), requires_grad=True), m.tensor(-np.abs(r.standard_normal((3, 4))))
        z = m.xlogy(x, y)
        z.div_(2.0, rounding_mode="floor")
        assert np.array_equal(np.asarray(m.autograd.grad(z.sum(), [x])[0].detach()), np.zeros((3, 1)))


def test_xlogy_second_order_matches_torch():
    r = np.random.default_rng(1)
    x, y = r.standard_normal((3, 4)), np.abs(r.standard_normal((3, 4))) + 0.3
    x[0, :2] = 0.0
    check(lambda a, b: dg.autograd.grad(dg.xlogy(a, b).sum() * 1, [a], create_graph=True)[0] * a,
          lambda a, b: torch.autograd.grad(torch.xlogy(a, b).sum() * 1, [a], create_graph=True)[0] * a, x, y)  # fmt: skip


# ---- quantile with a tensor q: torch's layout (seed 8756) --------------------------------------------------------
@pytest.mark.parametrize("dim, keepdim", [(0, False), (1, True), (-1, False), (None, True)])
@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
def test_quantile_of_a_q_tensor_is_laid_out_as_torchs(name, dim, keepdim):
    """torch's quantile_compute fills (*out, Q) and moves Q to the front, so along a dim of a matrix its result
    is not contiguous and view(-1) of it refuses; distgraph's was contiguous and viewed."""
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    for m in (torch, dg):
        out = getattr(m, name)(m.tensor(x), m.tensor([0.1, 0.5, 0.9], dtype=m.float64), dim=dim, keepdim=keepdim)
        want = getattr(torch, name)(
            torch.tensor(x), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=dim, keepdim=keepdim
        )
        np.testing.assert_allclose(np.asarray(out.detach()), want.numpy(), rtol=1e-14)
        assert out.is_contiguous() == want.is_contiguous()
        assert [s for s, n in zip(out.stride(), out.shape) if n > 1] == [
            s for s, n in zip(want.stride(), want.shape) if n > 1
        ]


def test_view_of_quantile_along_a_dim_refuses_as_torch():
    for m in (torch, dg):
        out = m.tensor(np.arange(12.0).reshape(3, 4)).quantile(m.tensor([0.2, 0.6, 0.7], dtype=m.float64), dim=0)
        with pytest.raises((RuntimeError, ValueError), match=r"[Uu]se \.reshape"):
            out.view(-1)
        assert out.reshape(-1).shape == (12,)


def test_quantile_of_a_q_tensor_keeps_its_gradient():
    x, q = np.random.default_rng(4).standard_normal((3, 4)), np.array([0.25, 0.5, 0.8])
    check(lambda a, b: dg.quantile(a, b, dim=1), lambda a, b: torch.quantile(a, b, dim=1), x, q)


# ---- piecewise activations' double backward: torch's zeros_like(grad) (seed 8382) -------------------------------
_PIECEWISE = {
    "leaky_relu": lambda m, t: m.nn.functional.leaky_relu(t, 0.1),
    "hardtanh": lambda m, t: m.nn.functional.hardtanh(t),
    "relu6": lambda m, t: m.nn.functional.relu6(t),
    "hardswish": lambda m, t: m.nn.functional.hardswish(t),
    "threshold": lambda m, t: m.nn.functional.threshold(t, 0.5, -1.0),
    "softshrink": lambda m, t: m.nn.functional.softshrink(t),
    "hardshrink": lambda m, t: m.nn.functional.hardshrink(t),
}


@pytest.mark.parametrize("name", list(_PIECEWISE))
def test_piecewise_activation_double_backward_of_a_nan_gradient(name):
    """The derivative of a piecewise-linear backward (its 0/1 mask) w.r.t. the input is torch's zeros_like(grad): 0
    where the incoming second-order gradient is NaN or inf, where distgraph's g·0 was NaN. Seed 8382: hardswish of
    a NaN loss, whose first-order gradient (through pow of a negative base) carries NaNs to every entry."""
    x = np.array([-4.0, -3.0, -1.0, -0.2, 0.0, 0.3, 1.0, 3.0, 5.0])
    v = np.array([np.nan, np.inf, 1.0, np.nan, -np.inf, np.nan, 2.0, np.nan, np.inf])
    grads = []
    for m in (dg, torch):
        t, w = m.tensor(x, requires_grad=True), m.tensor(np.linspace(0.5, 1.5, 9), requires_grad=True)
        (g,) = m.autograd.grad((_PIECEWISE[name](m, t) * w).sum(), [t], create_graph=True)
        grads.append([np.asarray(a.detach()) for a in m.autograd.grad((g * m.tensor(v)).sum(), [t, w])])
    for got, want in zip(*grads):
        np.testing.assert_array_equal(got, want)


# ---- sinc's gradient as torch's sinc_backward (seed 8118) ---------------------------------------------------------
@pytest.mark.parametrize("dtype, xs", [
    (np.float32, [0.0, -0.0, 1e-23, -3e-20, 2.0558812e-04, 0.3, 1e-30, 7.0]),
    (np.float64, [0.0, 1e-170, 1e-200, 2e-4, 0.3, 5.0]),
])  # fmt: skip
@pytest.mark.parametrize("g", [1.0, np.nan, np.inf])
def test_sinc_gradient_is_zero_where_x_squared_is(dtype, xs, g):
    """torch's g·((πx·cos πx - sin πx) / (x·x·π)), 0 chosen where x·x·π is 0: an x whose square underflows (1e-23 in
    float32) has gradient 0, not 0 / 0, and a NaN or inf g gives 0 at x = 0; the same bits elsewhere."""
    grads = []
    for m in (dg, torch):
        x = m.tensor(np.array(xs, dtype), requires_grad=True)
        grads.append(np.asarray(m.autograd.grad(m.sinc(x), [x], m.tensor(np.full(len(xs), g, dtype)))[0].detach()))
    np.testing.assert_array_equal(grads[0], grads[1])
