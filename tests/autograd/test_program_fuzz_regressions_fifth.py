"""Bugs the random-program fuzzer (test_program_fuzz.py) found over seeds 4500..7000, each pinned
against torch (float64, values and gradients; refusals where torch refuses)."""

import numpy as np
import pytest

import distgraph as dg
from tests.autograd.test_second_order_regressions import check_second_order
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((3, 4))


def _parity(fn, *arrays, **kw):
    return check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *arrays, **kw)


# ---- writes into an int/bool view that one of several views an op returned (seeds 6099, 6695) ----------
def _raises(m, write, dtype):
    """Whether writing `write(m, view, g)` (g a float64 tensor that requires grad) into output 0 of
    unbind of an int/bool tensor raises."""
    g = m.tensor(X, requires_grad=True)
    view = m.zeros(3, 4, dtype=getattr(m, dtype)).unbind(0)[0]
    try:
        write(m, view, g)
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, distgraph its AutogradError
        return True
    return False


WRITES = {  # torch's setitem copies a same-shaped or broadcast value (copy_), fills with a 0-d one (fill_)
    "copy_": lambda m, v, g: v.copy_(g[0]),
    "copy_0d": lambda m, v, g: v.copy_(g.sum()),
    "setitem_same_shape": lambda m, v, g: v.__setitem__(slice(None), g[0]),
    "setitem_broadcast": lambda m, v, g: v.__setitem__(slice(0, 2), g[0, :1]),
    "setitem_0d_into_0d": lambda m, v, g: v.__setitem__(0, g.sum()),
    "setitem_0d_into_slice": lambda m, v, g: v.__setitem__((Ellipsis, slice(0, 1)), g.sum()),
    "setitem_0d_everywhere": lambda m, v, g: v.__setitem__(Ellipsis, g.sum()),
    "setitem_0d_through_mask": lambda m, v, g: v.__setitem__(m.tensor([True, False, True, False]), g.sum()),
    "setitem_through_index": lambda m, v, g: v.__setitem__(m.tensor([0, 1]), g[0, :2]),
    "fill_": lambda m, v, g: v.fill_(g.sum()),
}


@pytest.mark.parametrize("dtype", ["int64", "bool"])
@pytest.mark.parametrize("write", list(WRITES))
def test_a_grad_value_written_into_an_int_multi_output_view_is_refused_where_torch_refuses_it(write, dtype):
    """torch's copy_ leaves out a src's grad where the destination's dtype cannot carry one; fill_,
    masked_fill_ and index_put_ (which setitem uses for a 0-d value into a larger target, a mask, an
    index tensor) count it, and refuse the write into a view one of several views of an op."""
    assert _raises(dg, WRITES[write], dtype) == _raises(torch, WRITES[write], dtype)


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_copy_of_a_grad_value_into_an_int_unbind_view_writes_it(dtype):
    def fn(m, x):
        y = m.zeros(3, 4, dtype=getattr(m, dtype))
        y.unbind(0)[1].copy_(x[0] * 3)
        y.split(1)[2].copy_(x[1:2] - 0.5)
        return x * y

    _parity(fn, X)


# ---- std's backward is torch's std_backward, to second order (seed 6444) -------------------------------
def _constant_column():
    x = X.copy()
    x[:, 3] = -3.6
    return x


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x, y: x.std(0) * y,
        lambda m, x, y: x.std(0, correction=0, keepdim=True) * y,
        lambda m, x, y: m.std_mean(x, 0)[0] * y,
        lambda m, x, y: m.lerp(x.std(0), y, x.std(0)),
        lambda m, x, y: x[:, 3:].std() * y,
    ],
)
def test_std_second_order_through_its_incoming_gradient_is_nan_where_std_is_zero(fn):
    """torch's std_backward masks g / (2 std) to 0 where std is 0: the first-order gradient is 0 there,
    and a second-order one through g is 0 / 0, NaN."""
    check_second_order(fn, _constant_column(), np.random.default_rng(1).standard_normal((2, 3, 4)))


def test_std_values_and_gradients_still_match_torch():
    x = _constant_column()
    _parity(lambda m, x: x.std(1), x)
    _parity(lambda m, x: x.std((0, 1), keepdim=True), x)
    _parity(lambda m, x: x.std(0, correction=2), x)
    _parity(lambda m, x: x.float().std(0).double(), x, rtol=1e-5)


# ---- Tensor.unfold is a view, as torch's (extra menu, seeds 0..250) ----------------------------------
@pytest.mark.parametrize("grad", [True, False])
def test_a_write_through_unfold_reaches_its_base(grad):
    def fn(m, x):
        y = x * 1
        y.unfold(1, 1, 2).mul_(3)  # windows one element wide, two apart: no overlap
        y[1:].unfold(0, 2, 1).fill_(-0.5)  # overlapping windows take a number
        return y

    _parity(fn, X, grad=grad)


@pytest.mark.parametrize("args", [(1, 3, 1), (0, 2, 1), (1, 2, 2), (-1, 1, 3), (1, 4, 1), (1, 0, 1), (0, 3, 5)])
def test_unfold_values_and_gradients_overlapping_windows_adding_up(args):
    _parity(lambda m, x: x.unfold(*args) * 2, X)
    check_second_order(lambda m, x: x.unfold(*args).exp(), X)


def test_unfold_of_a_0d_tensor_is_its_one_window():
    _parity(lambda m, x: x.unfold(0, 1, 2) * 3, np.array(1.5))
    _parity(lambda m, x: x.unfold(-1, 0, 1), np.array(1.5))


@pytest.mark.parametrize("args", [(1, 5, 1), (1, 2, 0), (1, -1, 1), (2, 1, 1)])
def test_unfold_refuses_what_torch_refuses(args):
    with pytest.raises((RuntimeError, IndexError)):
        torch.tensor(X).unfold(*args)
    with pytest.raises(ValueError, match="unfold"):
        dg.tensor(X).unfold(*args)


# ---- losses: broadcasting and dtypes as torch's (extra menu, seeds 0..250) ---------------------------
def _loss(name, **kw):
    return lambda m, x, y: getattr(m.nn.functional, name)(x, y, **kw)


@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize("target", [(), (4,), (3, 1)])
def test_regression_losses_broadcast_first_so_a_0d_target_promotes_as_torch(name, target):
    """torch broadcasts input and target before the loss, so a float64 0-d target makes a float32
    input's loss float64 (elementwise promotion alone would keep float32); huber_loss excepted (below)."""
    y = np.random.default_rng(2).standard_normal(target)

    def fn(m, x, y):
        out = _loss(name, reduction="none")(m, x.float(), y)
        assert out.dtype == (m.float32 if name == "huber_loss" else m.float64)
        return out.double()

    _parity(fn, X, y, rtol=1e-6, atol=1e-6, grad=name != "huber_loss")  # torch's huber backward refuses them


@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("float64", "float32")])
def test_huber_loss_is_in_the_inputs_dtype_and_bce_with_logits_in_the_targets(dtypes):
    """torch writes huber_loss into a tensor like the input, and binary_cross_entropy_with_logits in
    place into 1 - target: each takes that operand's dtype, not the promoted one."""
    a, b = dtypes

    def fn(m, x, y):
        x, y = x.to(getattr(m, a)), y.to(getattr(m, b))
        hub = m.nn.functional.huber_loss(x, y, reduction="none", delta=0.7)
        bce = m.nn.functional.binary_cross_entropy_with_logits(x, y.sigmoid())
        assert (hub.dtype, bce.dtype) == (getattr(m, a), getattr(m, b))
        return hub.double(), bce.double()

    _parity(fn, X, X[::-1].copy(), grad=False, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:reduction. 'mean'")
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "none"])
@pytest.mark.parametrize("target", [(), (4,), (3, 1), (2, 3, 4)])
def test_kl_div_broadcasts_input_and_target(reduction, target):
    y = np.random.default_rng(3).standard_normal(target)
    _parity(lambda m, x, y: m.nn.functional.kl_div(x.log_softmax(-1), y.softmax(-1), reduction=reduction), X, y)


# ---- F.pad's non-constant modes take the dims torch takes (extra menu, seeds 0..250) -------------------
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [2, 4, 6])
def test_pad_non_constant_modes_refuse_the_dims_torch_refuses(mode, ndim, size):
    x = np.random.default_rng(4).standard_normal((3,) * ndim)
    fn = lambda m, x: m.nn.functional.pad(x, (1,) * size, mode=mode)  # noqa: E731
    try:
        fn(torch, torch.tensor(x))
    except (RuntimeError, NotImplementedError):
        with pytest.raises(ValueError, match="pad"):
            fn(dg, dg.tensor(x))
    else:
        _parity(fn, x)


# ---- piecewise activations choose their zero gradient, as torch's kernels (extra menu, seeds 79 105) -----
ACT_X = np.array([np.nan, np.inf, -np.inf, -5, -3, -1, 0, 1, 3, 5, 7, -0.2, 0.2, 0.5, -0.5])
PIECEWISE = {
    "relu6": lambda F, x: F.relu6(x),
    "hardtanh": lambda F, x: F.hardtanh(x, -0.5, 0.8),
    "hardsigmoid": lambda F, x: F.hardsigmoid(x),
    "hardswish": lambda F, x: F.hardswish(x),
    "threshold": lambda F, x: F.threshold(x, 0.1, -1.0),
    "hardshrink": lambda F, x: F.hardshrink(x, 0.5),  # extra menu, seed 435
    "softshrink": lambda F, x: F.softshrink(x, 0.5),
}


@pytest.mark.parametrize("g", [np.inf, np.nan, -2.0])
@pytest.mark.parametrize("name", list(PIECEWISE))
def test_piecewise_activation_gradient_is_zero_outside_even_for_an_inf_or_nan_gradient(name, g):
    """torch's backward kernels pick 0 where the activation is flat (g times 0 would be NaN for an
    inf g), and record that gradient as a function of x, so it requires grad under create_graph."""
    got = []
    for m in (dg, torch):
        x = m.tensor(ACT_X, requires_grad=True)
        (gx,) = m.autograd.grad(PIECEWISE[name](m.nn.functional, x), x, m.tensor(np.full(15, g)), create_graph=True)
        got.append((np.asarray(gx.detach().numpy()), gx.requires_grad))
    if name == "hardswish":  # at a NaN x torch's kernel gives NaN on an AVX2 host, g on an AVX-512 one (both seen)
        assert np.isnan(got[1][0][0]) or got[1][0][0] == g or np.isnan(g)
        got[1][0][0] = got[0][0][0]
    np.testing.assert_array_equal(got[0][0], got[1][0])  # to the bit: hardsigmoid's 1/6 is float32's, as torch's
    assert got[0][1] == got[1][1]


@pytest.mark.parametrize("name", list(PIECEWISE))
def test_piecewise_activation_second_order_matches_torch(name):
    if name == "hardsigmoid":  # torch has no derivative of hardsigmoid_backward
        pytest.skip("torch: derivative for aten::hardsigmoid_backward is not implemented")
    check_second_order(lambda m, x: PIECEWISE[name](m.nn.functional, x * 4), X)


def test_a_write_through_overlapping_unfold_windows_backwards_as_torch():
    """torch refuses the backward of a write only where the view has a zero stride (expand); overlapping
    unfold windows backward, the value's gradient reading each location once per window element
    (extra menu, seed 203)."""

    def fn(m, x, v):
        y = x * 2
        y[1].unfold(-1, 3, 1).fill_(v.sum())
        y.unfold(1, 2, 2).mul_(v.sum())
        return y

    _parity(fn, X, np.array([0.7, -0.2]))


SMOOTH = {
    "silu": lambda F, x: F.silu(x),
    "gelu": lambda F, x: F.gelu(x),
    "gelu_tanh": lambda F, x: F.gelu(x, approximate="tanh"),
    "mish": lambda F, x: F.mish(x),
}


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_activation_gradient_of_an_inf_gradient_is_inf_as_torch(name):
    """torch's silu/gelu/mish backward multiply g by one derivative; through the product rule of a
    composition an inf g gave inf - inf = NaN (extra menu, seed 306)."""
    got = []
    for m in (dg, torch):
        x = m.tensor(ACT_X, requires_grad=True)
        (gx,) = m.autograd.grad(SMOOTH[name](m.nn.functional, x), x, m.tensor(np.full(15, np.inf)))
        got.append(np.asarray(gx.numpy()))
    np.testing.assert_array_equal(got[0], got[1])
    _parity(lambda m, x: SMOOTH[name](m.nn.functional, x), X * 3)
    check_second_order(lambda m, x: SMOOTH[name](m.nn.functional, x), X * 3)


# ---- in-place logical ops, stacking, flips and addmm as torch's (extra menu, seeds 0..1000) -------------
def test_in_place_logical_ops_record_nothing_so_views_and_leaves_take_them():
    def fn(m, x):
        y = x * 1
        y.unbind(0)[0].logical_not_()
        y.split(1)[1].logical_and_(y[2])
        return y * 2

    _parity(fn, X)
    for m in (dg, torch):
        leaf = m.tensor(X, requires_grad=True)
        leaf.logical_or_(leaf)
        assert leaf.requires_grad


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: m.hstack([x[0, 0], x[1, 1]]),
        lambda m, x: m.hstack([x[0], x[1, 1]]),
        lambda m, x: m.vstack([x[0, 0], x[1, 1]]),
        lambda m, x: m.vstack([x[:, :1], x[1, 1]]),
        lambda m, x: m.addmm(x[:, :1], x, x.T @ x, beta=0.5),
        lambda m, x: m.addmm(x[0, 0], x, x.T @ x),
    ],
)
def test_stacks_of_0d_tensors_and_addmm_broadcasting_match_torch(fn):
    _parity(fn, X)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: m.flipud(x[0, 0]),
        lambda m, x: m.fliplr(x[0]),
        lambda m, x: m.addmm(x[0, :3], x, x.T @ x),
        lambda m, x: m.addmm(x[:, :1].T, x, x.T @ x),
        lambda m, x: m.addmm(x.expand(2, 3, 4), x, x.T @ x),
        lambda m, x: m.addmm(x, x.expand(2, 3, 4), x.T @ x),  # torch's mats must be matrices (seed 5202)
        lambda m, x: m.addmm(x[:, :1], x, x[0]),
    ],
)
def test_flips_and_addmm_refuse_what_torch_refuses(fn):
    with pytest.raises(RuntimeError):
        fn(torch, torch.tensor(X))
    with pytest.raises(ValueError):
        fn(dg, dg.tensor(X))


@pytest.mark.parametrize("name", ["elu", "celu", "selu"])
def test_elu_saves_its_input_so_a_later_write_into_its_output_keeps_backward(name):
    """torch's F.elu saves x, not its output (extra menu, seed 552)."""

    def fn(m, x):
        y = getattr(m.nn.functional, name)(x * 1)
        z = y * 3
        y.detach().mul_(2)
        return z

    _parity(fn, X)
    check_second_order(lambda m, x: getattr(m.nn.functional, name)(x), X)
    # torch's double backward masks with x < 0 where its backward takes x <= 0: at 0 the slope is constant
    check_second_order(lambda m, x: getattr(m.nn.functional, name)(x), np.array([0.0, -0.0, -1.0, 1.0, np.nan]))


@pytest.mark.parametrize("name", ["elu", "celu", "selu"])
def test_elu_second_order_through_an_infinite_or_nan_gradient_is_nan_at_x_at_least_0_as_torch(name):
    """torch's elu_double_backward is elu_backward(gg·g) times the mask x < 0, a product: an inf or NaN
    incoming gradient gives NaN where x >= 0 (0 · inf), where a slope chosen by where gave 0."""
    x = np.array([-1.0, -0.0, 0.0, 0.5, 2.0, 1.0, -2.0])
    g = np.array([np.inf, np.inf, np.nan, -np.inf, np.nan, 3.0, np.nan])
    check_second_order(lambda m, x: getattr(m.nn.functional, name)(x) * m.tensor(g), x)


@pytest.mark.parametrize("name", ["huber_loss", "smooth_l1_loss"])
def test_huber_and_smooth_l1_gradient_at_an_infinite_difference_is_the_linear_branchs(name):
    """torch's backward picks one branch per element; the unselected quadratic branch of the composition
    sent inf · 0 = NaN (extra menu, seed 398)."""
    y = np.array([np.inf, -np.inf, 0.3, 5.0, np.nan, -0.1])
    _parity(lambda m, x, y: getattr(m.nn.functional, name)(x, y, reduction="none"), np.linspace(-1, 1, 6), y)


def test_softshrink_zero_keeps_the_sign_of_x_as_torchs_x_times_0():
    """torch's softshrink writes x · 0 inside [-lambda, lambda]: -0.0 for a negative x, which a later
    1 / y or floor division shows (extra menu, seed 1360)."""
    x = np.array([-0.3, 0.3, -0.0, 0.0, np.nan, 0.7, -2.0])
    _parity(lambda m, x: 1 / m.nn.functional.softshrink(x, 0.5), x, grad=False)
    _parity(lambda m, x: 1 / m.nn.functional.hardshrink(x, 0.5), x, grad=False)


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_places_nans_as_torchs_binary_search(right):
    """torch's comparisons are false at a NaN: a NaN value lands at the end, a NaN in the sequence reads
    as below a value; numpy's NaN-last order placed both otherwise (extra menu, seed 6038)."""
    seqs = [[0.1, 0.5, 0.9, np.nan], [0.1, np.nan, 0.5, 0.9], [np.nan], [], [0.5, 0.5, 0.5]]
    v = np.array([[0.3, np.nan, 2.0, 0.5], [-1.0, 0.1, 0.9, np.inf]])
    for seq in seqs:
        got = dg.searchsorted(dg.tensor(np.array(seq)), dg.tensor(v), right=right)
        want = torch.searchsorted(torch.tensor(np.array(seq, dtype=np.float64)), torch.tensor(v), right=right)
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("p", [float("inf"), float("-inf")])
def test_inf_norm_gradient_counts_a_nan_element_as_the_hit_as_torch(p):
    """torch's norm(p=±inf) backward counts NaN elements as hits (amax's does not): the other elements of
    a slice holding a NaN get 0, not g / 0 · 0 = NaN (seed 1693)."""
    x = np.array([[np.nan, 0.3, -0.2, -0.1], [1.0, -2.0, 2.0, 0.5]])
    _parity(lambda m, x: x.norm(p, dim=1), x)
    _parity(lambda m, x: x.norm(p, dim=1, keepdim=True) * x, x)


def test_a_number_divided_by_a_tensor_is_its_reciprocal_times_the_number_as_torch():
    """torch's number / t is t.reciprocal() * number, which saves 1/t: a later write into t leaves its
    backward alone (seed 4543); its dtype and rounding are reciprocal's."""

    def fn(m, x):
        y = x * 1
        q = 2 / y
        y.abs_()
        return q + 0.75 / y + True / (y > 0)

    _parity(fn, X)


@pytest.mark.parametrize("dim", [0, 1, -2, 5])
def test_cat_of_only_legacy_empty_tensors_takes_any_dim_as_torch(dim):
    """torch skips 1-D empty tensors in cat, dim check included: with nothing else, any dim gives an
    empty tensor (seed 3780)."""

    def fn(m, x):
        e = x[x > 10]  # shape (0,)
        return m.cat([e, e * 2], dim=dim)

    _parity(fn, X)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_border_pad_gradient_is_a_function_of_the_input_under_create_graph_as_torch(mode):
    """torch's reflection/replication pad backward takes the input (derivative 0 there): the gradient
    requires grad even for a constant incoming gradient, so a double backward runs (seeds 465 3732 4149)."""
    x = np.random.default_rng(5).standard_normal((2, 5))
    check_second_order(lambda m, x: m.nn.functional.pad(x, (2, 1), mode=mode) ** 2, x)
    for m in (dg, torch):
        t = m.tensor(x, requires_grad=True)
        y = m.nn.functional.pad(t, (2, 1), mode=mode)
        (g,) = m.autograd.grad(y, t, m.ones_like(y), create_graph=True)
        assert g.requires_grad == (mode != "circular")
