"""lp_pool, max_unpool, channel_shuffle, rrelu, Softmax2d, the `*_with_indices` names and the in-place
functional activations against torch: float64 values and gradients, modules' reprs, errors."""

import random

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import AutogradError, IndexOutOfRangeError, ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
TF, TN = torch.nn.functional, torch.nn
rng = np.random.default_rng(0)
INF = float("inf")


# ---- lp_pool ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [1, 2, 3, 1.5, INF, -INF])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_lp_pool_matches_torch(norm_type, ceil_mode):
    x = rng.standard_normal((2, 3, 7, 6))
    if norm_type == 1.5:  # a fractional power of a negative value is NaN (with a NaN gradient) in both
        x = np.abs(x)
    check(lambda a: F.lp_pool2d(a, norm_type, 2, ceil_mode=ceil_mode),
          lambda a: TF.lp_pool2d(a, norm_type, 2, ceil_mode=ceil_mode), x)  # fmt: skip
    check(lambda a: F.lp_pool2d(a, norm_type, (3, 2), (2, 1), ceil_mode),
          lambda a: TF.lp_pool2d(a, norm_type, (3, 2), (2, 1), ceil_mode), x[0])  # fmt: skip
    check(lambda a: F.lp_pool1d(a, norm_type, 3, 2, ceil_mode),
          lambda a: TF.lp_pool1d(a, norm_type, 3, 2, ceil_mode), x[:, :, 0])  # fmt: skip


def test_lp_pool_zero_windows_have_zero_gradient():
    x = rng.standard_normal((1, 2, 6))
    x[0, 0, :2] = 0  # a window whose powers sum to 0: torch's gradient is 0 there, not NaN
    for p in (2, 3, 1.5):
        check(lambda a: F.lp_pool1d(a, p, 2), lambda a: TF.lp_pool1d(a, p, 2), np.abs(x))
    assert dg.autograd.gradcheck(lambda a: F.lp_pool2d(a, 2, 2), [dg.tensor(rng.standard_normal((1, 4, 4)),
                                 requires_grad=True)])  # fmt: skip
    check(lambda a: F.lp_pool2d(a, 2, 2), lambda a: TF.lp_pool2d(a, 2, 2), rng.standard_normal((1, 4, 4)),
          dtype=np.float32, rtol=1e-5, atol=1e-6)  # fmt: skip


# ---- max_unpool --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_max_unpool2d_inverts_max_pool2d_as_torch(kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 8))
    _, idx = TF.max_pool2d(torch.tensor(x), kernel, stride, padding, return_indices=True)
    pooled = TF.max_pool2d(torch.tensor(x), kernel, stride, padding).numpy()
    i = idx.numpy()
    size = [2, 3, 7, 8]  # padding: the default size (no border) would be too small for these indices
    check(lambda a: F.max_unpool2d(a, dg.tensor(i), kernel, stride, padding, size),
          lambda a: TF.max_unpool2d(a, torch.tensor(i), kernel, stride, padding, size), pooled)  # fmt: skip
    check(lambda a: F.max_unpool2d(a, dg.tensor(i[0]), kernel, stride, padding, output_size=(7, 8)),  # unbatched
          lambda a: TF.max_unpool2d(a, torch.tensor(i[0]), kernel, stride, padding, output_size=(7, 8)), pooled[0])  # fmt: skip
    d_out, d_idx = F.max_pool2d_with_indices(dg.tensor(x), kernel, stride, padding)
    np.testing.assert_array_equal(d_idx.numpy(), i)
    np.testing.assert_array_equal(d_out.numpy(), pooled)


def test_max_unpool1d_and_errors():
    x = rng.standard_normal((2, 3, 9))
    _, idx = TF.max_pool1d(torch.tensor(x), 3, 2, return_indices=True)
    pooled = TF.max_pool1d(torch.tensor(x), 3, 2).numpy()
    i = idx.numpy()
    for size in (None, [9], [2, 3, 10]):
        check(lambda a: F.max_unpool1d(a, dg.tensor(i), 3, 2, output_size=size),
              lambda a: TF.max_unpool1d(a, torch.tensor(i), 3, 2, output_size=size), pooled)  # fmt: skip
    check(lambda a: F.max_unpool1d(a, dg.tensor(i), 3, 2), lambda a: TF.max_unpool1d(a, torch.tensor(i), 3, 2),
          pooled, dtype=np.float32)  # fmt: skip
    d_out, d_idx = F.max_pool1d_with_indices(dg.tensor(x), 3, 2)
    np.testing.assert_array_equal(d_idx.numpy(), i)
    with pytest.raises(
        ValueError, match=r'max_unpool1d: invalid output_size "\[12\]" \(dim 0 must be between 7 and 11\)'
    ):
        F.max_unpool1d(dg.tensor(pooled), dg.tensor(i), 3, 2, output_size=[12])
    with pytest.raises(IndexOutOfRangeError, match=r"invalid max index 9 \(output volumes are of size 9\)"):
        F.max_unpool1d(dg.tensor(pooled), dg.tensor(np.full(i.shape, 9)), 3, 2)
    with pytest.raises(ShapeError, match=r"indices \(2, 3\) must have the input's shape \(2, 3, 4\)"):
        F.max_unpool1d(dg.tensor(pooled), dg.tensor(i[:, :, 0]), 3, 2)


def test_adaptive_max_pool_with_indices_names():
    x = rng.standard_normal((2, 3, 7, 5))
    for d, t in ((F.adaptive_max_pool2d_with_indices(dg.tensor(x), 3), TF.adaptive_max_pool2d_with_indices(
            torch.tensor(x), 3)), (F.adaptive_max_pool1d_with_indices(dg.tensor(x[0]), 2),
                                   TF.adaptive_max_pool1d_with_indices(torch.tensor(x[0]), 2))):  # fmt: skip
        np.testing.assert_array_equal(d[0].numpy(), t[0].numpy())
        np.testing.assert_array_equal(d[1].numpy(), t[1].numpy())


# ---- channel_shuffle, Softmax2d -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, groups", [((2, 6, 3), 2), ((1, 6, 2, 2), 3), ((2, 4, 1, 2, 2), 4), ((1, 5, 2), 1)])
def test_channel_shuffle_matches_torch(shape, groups):
    check(lambda a: F.channel_shuffle(a, groups), lambda a: TF.channel_shuffle(a, groups), rng.standard_normal(shape))
    ints = rng.integers(0, 9, shape)
    np.testing.assert_array_equal(F.channel_shuffle(dg.tensor(ints), groups).numpy(),
                                  TF.channel_shuffle(torch.tensor(ints), groups).numpy())  # fmt: skip
    with pytest.raises(ShapeError, match=r"divisible by groups, got \d channels and 7 groups"):
        F.channel_shuffle(dg.ones(*shape), 7)
    with pytest.raises(ShapeError, match=r"at least 3 dims \(N, C, \*\), got \(2, 4\)"):
        F.channel_shuffle(dg.ones(2, 4), 2)


def test_softmax2d_matches_torch():
    for shape in ((3, 4, 5), (2, 3, 4, 5)):
        check(nn.Softmax2d(), TN.Softmax2d(), rng.standard_normal(shape))
    with pytest.raises(ShapeError, match="Softmax2d: expected input to be 3D or 4D, got 2D instead"):
        nn.Softmax2d()(dg.ones(2, 3))


# ---- rrelu and the in-place functional forms -----------------------------------------------------------------
@pytest.mark.parametrize("lower, upper", [(1 / 8, 1 / 3), (0.1, 0.1), (0.0, 0.9)])
def test_rrelu_eval_is_leaky_relu_with_mean_slope(lower, upper):
    x = np.round(rng.standard_normal((3, 4)) * 2) / 2
    check(lambda a: F.rrelu(a, lower, upper), lambda a: TF.rrelu(a, lower, upper), x)
    check(nn.RReLU(lower, upper).eval(), TN.RReLU(lower, upper).eval(), x)


def test_rrelu_training_slopes_are_uniform_in_bounds_and_are_the_gradient():
    dg.manual_seed(0)
    x = dg.tensor(-np.abs(rng.standard_normal(20000)) - 0.1, requires_grad=True)
    y = F.rrelu(x, 0.2, 0.6, training=True)
    slope = (y / x).detach().numpy()
    assert slope.min() >= 0.2 and slope.max() <= 0.6
    assert abs(slope.mean() - 0.4) < 0.01 and abs(slope.var() - 0.4**2 / 12) < 0.002  # U(0.2, 0.6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slope, rtol=1e-12)
    pos = dg.tensor(np.abs(rng.standard_normal(50)))
    np.testing.assert_array_equal(F.rrelu(pos, training=True).numpy(), pos.numpy())
    dg.manual_seed(3)
    a = F.rrelu(x.detach(), training=True).numpy()
    dg.manual_seed(3)
    np.testing.assert_array_equal(F.rrelu(x.detach(), training=True).numpy(), a)
    with pytest.raises(ValueError, match=r"rrelu: lower bound \(0.5\) should be less than or equal"):
        F.rrelu(x, 0.5, 0.1)


@pytest.mark.parametrize(
    "name, args",
    [("relu_", ()), ("elu_", (0.5,)), ("leaky_relu_", (0.2,)), ("hardtanh_", (-0.5, 0.7)), ("celu_", (2.0,)),
     ("selu_", ()), ("threshold_", (0.3, -1.0)), ("rrelu_", (0.1, 0.3))],
)  # fmt: skip
def test_inplace_functional_forms_write_their_input(name, args):
    x = rng.standard_normal((3, 4))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd, yt = xd * 2.0, xt * 2.0
    od, ot = getattr(F, name)(yd, *args), getattr(TF, name)(yt, *args)
    assert od is yd and ot is yt
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-12)
    seed = rng.standard_normal((3, 4))
    od.backward(dg.tensor(seed)), ot.backward(torch.tensor(seed))
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-12)
    with pytest.raises(AutogradError, match="leaf Variable that requires grad"):
        getattr(F, name)(dg.tensor(x, requires_grad=True), *args)


# ---- modules against torch's over drawn options ---------------------------------------------------------------
def _x(r, shape):
    return np.random.default_rng(r.randint(0, 2**31)).standard_normal(shape)


def lp_pool_case(r, dims):
    a = dict(norm_type=r.choice([1, 2, 3, 2.0, INF]), kernel_size=r.randint(1, 3) if dims == 1 or r.random() < 0.5
             else (r.randint(1, 3), r.randint(1, 3)), stride=r.choice([None, 1, 2]), ceil_mode=r.random() < 0.5)  # fmt: skip
    shape = (r.randint(1, 2), r.randint(1, 3)) + tuple(r.randint(3, 6) for _ in range(dims))
    x = _x(r, shape)
    x = np.abs(x) if a["norm_type"] in (2, 2.0) and r.random() < 0.5 else x
    name = f"LPPool{dims}d"
    module_parity(getattr(nn, name)(**a), getattr(TN, name)(**a), [x])


def unpool_case(r, dims):
    k, s, p = r.randint(2, 3), r.choice([None, 1, 2]), r.randint(0, 1)
    # an input the size the module infers back: (out − 1)·stride + kernel − 2·padding
    shape = (r.randint(1, 2), r.randint(1, 3)) + tuple(
        (r.randint(2, 4) - 1) * (s or k) + k - 2 * p for _ in range(dims)
    )
    pooled, idx = getattr(TF, f"max_pool{dims}d")(torch.tensor(_x(r, shape)), k, s, p, return_indices=True)
    name = f"MaxUnpool{dims}d"
    module_parity(getattr(nn, name)(k, s, p), getattr(TN, name)(k, s, p), [pooled.numpy(), idx.numpy()])


def shuffle_case(r):
    g = r.randint(1, 3)
    shape = (r.randint(1, 3), g * r.randint(1, 3)) + tuple(r.randint(1, 3) for _ in range(r.randint(1, 3)))
    module_parity(nn.ChannelShuffle(g), TN.ChannelShuffle(g), [_x(r, shape)])


def rrelu_case(r):
    a = dict(lower=r.choice([1 / 8, 0.0, 0.3]), upper=r.choice([1 / 3, 0.5]))
    module_parity(nn.RReLU(**a), TN.RReLU(**a), [_x(r, (r.randint(1, 4), r.randint(1, 4)))], train=False)


FAMILIES = {
    **{f"LPPool{d}d": (lambda r, d=d: lp_pool_case(r, d)) for d in (1, 2)},
    **{f"MaxUnpool{d}d": (lambda r, d=d: unpool_case(r, d)) for d in (1, 2)},
    "ChannelShuffle": shuffle_case,
    "RReLU": rrelu_case,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_module_options_match_torch(family):
    for i in range(15):
        r = random.Random(f"{family}-{i}")
        try:
            FAMILIES[family](r)
        except AssertionError as e:
            raise AssertionError(f"{family} draw {i} (random.Random('{family}-{i}')): {e}") from None


# ---- gumbel_softmax ------------------------------------------------------------------------------------------
def test_gumbel_softmax_samples_follow_the_softmax_and_differentiate_as_it():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    dg.manual_seed(0)
    x = dg.tensor(np.tile(logits, (20000, 1)), requires_grad=True)
    y = F.gumbel_softmax(x, tau=0.5)
    np.testing.assert_allclose(y.detach().numpy().sum(-1), 1.0, rtol=1e-12)
    freq = np.bincount(y.detach().numpy().argmax(-1), minlength=4) / 20000  # the Gumbel-max trick
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    w = rng.standard_normal((20000, 4))
    (y * dg.tensor(w)).sum().backward()
    yv = y.detach().numpy()  # softmax(z / τ)'s gradient: y · (w − Σ w·y) / τ
    np.testing.assert_allclose(x.grad.numpy(), yv * (w - (w * yv).sum(-1, keepdims=True)) / 0.5, rtol=1e-9, atol=1e-12)


def test_gumbel_softmax_hard_is_one_hot_with_the_soft_gradient():
    x = dg.tensor(rng.standard_normal((5, 3, 4)), requires_grad=True)
    dg.manual_seed(1)
    soft = F.gumbel_softmax(x, dim=1)
    dg.manual_seed(1)
    hard = F.gumbel_softmax(x, hard=True, dim=1)
    h = hard.detach().numpy()
    assert set(np.unique(h)) <= {0.0, 1.0} and (h.sum(1) == 1).all()
    np.testing.assert_array_equal(h.argmax(1), soft.detach().numpy().argmax(1))
    w = dg.tensor(rng.standard_normal((5, 3, 4)))
    (g_soft,) = dg.autograd.grad((soft * w).sum(), [x])
    (g_hard,) = dg.autograd.grad((hard * w).sum(), [x])
    np.testing.assert_allclose(g_hard.numpy(), g_soft.numpy(), rtol=1e-12)
    with pytest.warns(UserWarning, match="`eps` parameter is deprecated"):
        F.gumbel_softmax(x, eps=1e-3)


def test_compiled_rrelu_and_gumbel_softmax_draw_anew_each_run():
    x = dg.tensor(-np.ones((3, 4)))
    for fn in (lambda t: F.rrelu(t, training=True), lambda t: F.gumbel_softmax(t)):
        g = dg.compile(fn, [x])
        assert not np.array_equal(g(x).numpy(), g(x).numpy())  # the noise is an op, not a frozen constant
