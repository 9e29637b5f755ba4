"""nn.init: gains, fans, bounds and distributions against torch's formulas; default layer initialization."""

import math

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.nn import init

torch = pytest.importorskip("torch")
TI = torch.nn.init


def values(t):
    return t.detach().numpy().astype(np.float64).ravel()


@pytest.mark.parametrize(
    "name,param",
    [(n, None) for n in ("linear", "conv1d", "conv2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "selu")]
    + [("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("leaky_relu", 0)],
)
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(TI.calculate_gain(name, param), rel=1e-15)


def test_calculate_gain_rejects_unknown():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "0.1")


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3), (16, 3, 5, 5), (2, 3, 2, 2, 2)])
def test_fans_match_torch(shape):
    assert init._calculate_fan_in_and_fan_out(dg.empty(*shape)) == TI._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_fan_needs_two_dims():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(dg.empty(5))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(dg.empty(3, 3), mode="fan_avg")


SHAPE = (256, 128, 3)  # fan_in 384, fan_out 768; ~98k samples: moments to well under 1%
FAN_IN, FAN_OUT = 384, 768


@pytest.mark.parametrize(
    "fn,kwargs,bound",
    [
        (init.uniform_, {"a": -0.3, "b": 0.7}, (-0.3, 0.7)),
        (init.xavier_uniform_, {"gain": 2.0}, 2.0 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
        (init.kaiming_uniform_, {"a": math.sqrt(5)}, 1 / math.sqrt(FAN_IN)),  # Linear's default: U(±1/√fan_in)
        (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(6 / FAN_OUT)),
    ],
)
def test_uniform_family_bounds_and_variance(fn, kwargs, bound):
    lo, hi = bound if isinstance(bound, tuple) else (-bound, bound)
    v = values(fn(dg.empty(*SHAPE, dtype=dg.float64), **kwargs))
    assert v.min() >= lo and v.max() <= hi
    assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)
    assert v.mean() == pytest.approx((lo + hi) / 2, abs=0.01 * (hi - lo))
    assert v.std() == pytest.approx((hi - lo) / math.sqrt(12), rel=0.01)


@pytest.mark.parametrize(
    "fn,kwargs,mean,std",
    [
        (init.normal_, {"mean": 1.5, "std": 0.2}, 1.5, 0.2),
        (init.xavier_normal_, {"gain": 0.5}, 0.0, 0.5 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
        (init.kaiming_normal_, {"nonlinearity": "relu"}, 0.0, math.sqrt(2 / FAN_IN)),
        (init.kaiming_normal_, {"a": 0.1, "mode": "fan_out"}, 0.0, math.sqrt(2 / 1.01 / FAN_OUT)),
    ],
)
def test_normal_family_moments(fn, kwargs, mean, std):
    v = values(fn(dg.empty(*SHAPE, dtype=dg.float64), **kwargs))
    assert v.mean() == pytest.approx(mean, abs=0.02 * std)
    assert v.std() == pytest.approx(std, rel=0.01)


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.5, 2.0, -1.0, 1.5), (0.0, 1.0, 3.0, 4.0)])
def test_trunc_normal_matches_torch_moments(mean, std, a, b):
    """Including a far tail ([3σ, 4σ]) where rejection sampling would loop for ever."""
    v = values(init.trunc_normal_(dg.empty(200_000, dtype=dg.float64), mean, std, a, b))
    ref = TI.trunc_normal_(torch.empty(200_000, dtype=torch.float64), mean, std, a, b).numpy()
    assert v.min() >= a and v.max() <= b
    assert v.mean() == pytest.approx(ref.mean(), abs=0.01 * std)
    assert v.std() == pytest.approx(ref.std(), rel=0.02)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (8, 3, 2, 2)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    w = init.orthogonal_(dg.empty(*shape, dtype=dg.float64), gain=2.0).detach().numpy().reshape(shape[0], -1)
    small = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(small, 4.0 * np.eye(small.shape[0]), atol=1e-12)


def test_deterministic_initializers_equal_torch():
    for shape in [(3, 5), (5, 3)]:
        np.testing.assert_array_equal(init.eye_(dg.empty(*shape)).detach().numpy(), TI.eye_(torch.empty(shape)))
    for shape, groups in [((4, 2, 3), 1), ((6, 2, 3, 3), 2), ((4, 4, 1, 3, 3), 1)]:
        d = init.dirac_(dg.empty(*shape), groups).detach().numpy()
        np.testing.assert_array_equal(d, TI.dirac_(torch.empty(shape), groups).numpy())
    assert np.all(init.constant_(dg.empty(2, 3), 0.7).detach().numpy() == np.float32(0.7))
    assert np.all(init.ones_(dg.empty(4)).detach().numpy() == 1) and not init.zeros_(dg.ones(4)).detach().numpy().any()


def test_sparse_zeroes_a_fraction_of_each_column():
    w = init.sparse_(dg.empty(10, 6), sparsity=0.3, std=0.5).detach().numpy()
    assert all((w[:, c] == 0).sum() == 3 for c in range(6))


def test_initializers_are_seeded_and_do_not_track_grad():
    dg.manual_seed(7)
    a = nn.Linear(5, 4)
    dg.manual_seed(7)
    b = nn.Linear(5, 4)
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    p = nn.Parameter(dg.zeros(3, 3))
    init.kaiming_normal_(p)
    assert p.grad_fn is None and p.is_leaf
    gen = np.random.default_rng(3)
    x = values(init.uniform_(dg.empty(4, dtype=dg.float64), generator=gen))
    np.testing.assert_array_equal(x, np.random.default_rng(3).random(4))


def test_zero_element_kaiming_is_a_noop_with_warning():
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(dg.empty(0, 3))


@pytest.mark.parametrize(
    "make,name,low,high",
    [
        (lambda m: m.Linear(50, 20), "weight", -1 / math.sqrt(50), 1 / math.sqrt(50)),
        (lambda m: m.Linear(50, 20), "bias", -1 / math.sqrt(50), 1 / math.sqrt(50)),
        (lambda m: m.Bilinear(40, 7, 30), "weight", -1 / math.sqrt(40), 1 / math.sqrt(40)),
        (lambda m: m.Bilinear(40, 7, 30), "bias", -1 / math.sqrt(40), 1 / math.sqrt(40)),
    ],
)
def test_default_uniform_init_has_torchs_support(make, name, low, high):
    v = values(getattr(make(nn), name))
    assert tuple(getattr(make(nn), name).shape) == tuple(getattr(make(torch.nn), name).shape)
    assert low <= v.min() and v.max() <= high
    if v.size > 500:  # enough samples for the moment of U(low, high)
        assert v.std() == pytest.approx((high - low) / math.sqrt(12), rel=0.05)


def test_default_constant_and_normal_inits_match_torch():
    for make in (lambda m: m.LayerNorm(5), lambda m: m.BatchNorm1d(5), lambda m: m.PReLU(3, init=0.1)):
        d, t = make(nn), make(torch.nn)
        for (n, p), (_, q) in zip(d.state_dict().items(), t.state_dict().items()):
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    emb = nn.Embedding(500, 64, padding_idx=3).weight.detach().numpy()
    assert not emb[3].any() and abs(emb.std() - 1.0) < 0.02
