"""Each family against torch.distributions in float64: log_prob, cdf, icdf, entropy and the moments, values
and gradients in every parameter (tests.parity.check), central-difference gradchecks, and the shapes of
samples, supports and enumerations."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions
RNG = np.random.default_rng(0)


def pos(*shape):
    return RNG.uniform(0.5, 2.5, shape)


def real(*shape):
    return RNG.standard_normal(shape)


def unit(*shape):
    return RNG.uniform(0.05, 0.95, shape)


def _spd(n, batch=()):
    a = RNG.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


# (id, make(D, *params), params, value, quantities): value an array in the support (batch-broadcast)
FAMILIES = [
    ("normal", lambda D, a, b: D.Normal(a, b), (real(3, 4), pos(4)), real(3, 4), "lp cdf icdf ent mean mode var std"),
    ("uniform", lambda D, a, b: D.Uniform(a, a + b), (real(3), pos(3)), None, "lp cdf icdf ent mean var std"),
    ("exponential", lambda D, r: D.Exponential(r), (pos(2, 3),), pos(2, 3), "lp cdf icdf ent mean mode var std"),
    ("laplace", lambda D, a, b: D.Laplace(a, b), (real(4), pos(4)), real(2, 4), "lp cdf icdf ent mean mode var std"),
    ("lognormal", lambda D, a, b: D.LogNormal(a, b), (real(4), pos(4)), pos(4), "lp cdf icdf ent mean mode var std"),
    ("gamma", lambda D, c, r: D.Gamma(c, r), (pos(5) + 1, pos(5)), pos(5), "lp ent mean mode var std"),
    ("beta", lambda D, a, b: D.Beta(a, b), (pos(5) + 1, pos(5) + 1), unit(5), "lp ent mean mode var std"),
    ("bernoulli-probs", lambda D, p: D.Bernoulli(probs=p), (unit(4),), np.array([0.0, 1, 1, 0]), "lp ent mean var"),
    ("bernoulli-logits", lambda D, lg: D.Bernoulli(logits=lg), (real(4),), np.array([1.0, 1, 0, 0]), "lp ent mean"),
    ("categorical-probs", lambda D, p: D.Categorical(probs=p), (pos(3, 5),), np.array([0, 4, 2]), "lp ent"),
    ("categorical-logits", lambda D, lg: D.Categorical(logits=lg), (real(3, 5),), np.array([1, 3, 0]), "lp ent"),
    (
        "onehot",
        lambda D, lg: D.OneHotCategorical(logits=lg),
        (real(2, 4),),
        np.eye(4)[[1, 3]],
        "lp ent mean var",
    ),
    (
        "mvn-covariance",
        lambda D, m, c: D.MultivariateNormal(m, covariance_matrix=c),
        (real(2, 3), _spd(3)),
        real(2, 3),
        "lp ent mean var",
    ),
    (
        "mvn-precision",
        lambda D, m, p: D.MultivariateNormal(m, precision_matrix=p),
        (real(3), _spd(3, (2,))),
        real(2, 3),
        "lp ent var",
    ),
    (
        "mvn-scale_tril",
        lambda D, m, L: D.MultivariateNormal(m, scale_tril=L),
        (real(3), np.linalg.cholesky(_spd(3))),
        real(4, 1, 3),
        "lp ent mean var",
    ),
    (
        "independent-normal",
        lambda D, a, b: D.Independent(D.Normal(a, b), 1),
        (real(2, 3), pos(2, 3)),
        real(2, 3),
        "lp ent mean var",
    ),
]

QUANTITIES = {
    "lp": lambda d, v: d.log_prob(v),
    "cdf": lambda d, v: d.cdf(v),
    "icdf": lambda d, v: d.icdf(v),
    "ent": lambda d, v: d.entropy(),
    "mean": lambda d, v: d.mean,
    "mode": lambda d, v: d.mode,
    "var": lambda d, v: d.variance,
    "std": lambda d, v: d.stddev,
}
CASES = [
    pytest.param(make, params, value, q, id=f"{name}-{q}")
    for name, make, params, value, qs in FAMILIES
    for q in qs.split()
]


def _value(make, params, value, q):
    if q == "icdf":
        return unit(*make(DD, *(dg.tensor(p) for p in params)).batch_shape)
    if value is None:  # inside Uniform(a, a + b): a + b·u
        return params[0] + params[1] * unit(*params[0].shape)
    return value


@pytest.mark.parametrize("make, params, value, q", CASES)
def test_matches_torch_values_and_gradients(make, params, value, q):
    v = _value(make, params, value, q)
    check(
        lambda *ps: QUANTITIES[q](make(DD, *ps), dg.tensor(v)),
        lambda *ps: QUANTITIES[q](make(TD, *ps), torch.tensor(v)),
        *params,
        rtol=1e-7,
        atol=1e-12,
    )


GRADCHECK = ["normal", "laplace", "gamma", "beta", "bernoulli-logits", "categorical-logits"]


@pytest.mark.parametrize("name", GRADCHECK)
def test_log_prob_and_entropy_gradcheck(name):
    _, make, params, value, _ = next(f for f in FAMILIES if f[0] == name)
    xs = [dg.tensor(p, requires_grad=True) for p in params]
    v = dg.tensor(value)

    def fn(*ps):
        d = make(DD, *ps)
        return d.log_prob(v).sum() + d.entropy().sum()

    assert dg.autograd.gradcheck(fn, xs)


def test_mvn_covariance_gradcheck_through_a_symmetric_matrix():
    """A covariance perturbed in one entry is no longer symmetric: gradcheck it as A·Aᵀ + 3I."""
    v = dg.tensor(real(2, 3))

    def fn(loc, a):
        d = DD.MultivariateNormal(loc, covariance_matrix=a @ a.T + 3 * dg.eye(3, dtype=dg.float64))
        return d.log_prob(v).sum() + d.entropy()

    assert dg.autograd.gradcheck(
        fn, [dg.tensor(real(3), requires_grad=True), dg.tensor(real(3, 3), requires_grad=True)]
    )


def test_modes_without_gradient_match_torch():
    probs = unit(2, 5)
    assert np.array_equal(DD.Categorical(dg.tensor(probs)).mode.numpy(), TD.Categorical(torch.tensor(probs)).mode)
    p = np.array([0.2, 0.5, 0.7])
    np.testing.assert_array_equal(
        DD.Bernoulli(dg.tensor(p)).mode.numpy(), TD.Bernoulli(torch.tensor(p)).mode.numpy()
    )  # NaN at exactly 0.5, as torch
    oh = DD.OneHotCategorical(dg.tensor(probs)).mode.numpy()
    np.testing.assert_array_equal(oh, TD.OneHotCategorical(torch.tensor(probs)).mode.numpy())


@pytest.mark.parametrize(
    "make, batch, event",
    [
        (lambda D, m: D.Normal(m.zeros(2, 3), 1.0), (2, 3), ()),
        (lambda D, m: D.Gamma(m.ones(3), m.ones(2, 1)), (2, 3), ()),
        (lambda D, m: D.Beta(m.ones(3), 2.0), (3,), ()),
        (lambda D, m: D.Bernoulli(m.ones(4) / 2), (4,), ()),
        (lambda D, m: D.Categorical(m.ones(2, 5)), (2,), ()),
        (lambda D, m: D.OneHotCategorical(m.ones(2, 5)), (2,), (5,)),
        (lambda D, m: D.MultivariateNormal(m.zeros(4, 3), m.eye(3)), (4,), (3,)),
        (lambda D, m: D.Independent(D.Normal(m.zeros(2, 3, 4), 1.0), 2), (2,), (3, 4)),
    ],
)
def test_shapes_and_samples_match_torch(make, batch, event):
    d, t = make(DD, dg), make(TD, torch)
    assert d.batch_shape == batch == tuple(t.batch_shape) and d.event_shape == event == tuple(t.event_shape)
    for shape in ((), (5,), (2, 3)):
        s = d.sample(shape)
        assert tuple(s.shape) == tuple(t.sample(shape).shape) and not s.requires_grad
        assert bool(d.support.check(s).all())
    e = d.expand((7,) + batch)
    assert e.batch_shape == (7,) + batch and tuple(e.sample().shape) == (7,) + batch + event
    np.testing.assert_allclose(
        e.log_prob(e.sample()).numpy().shape, t.expand((7,) + batch).log_prob(t.expand((7,) + batch).sample()).shape
    )


@pytest.mark.parametrize(
    "make", [lambda D, m: D.Bernoulli(m.tensor([0.3, 0.6])), lambda D, m: D.Categorical(m.ones(2, 3))]
)
def test_enumerate_support_like_torch(make):
    d, t = make(DD, dg), make(TD, torch)
    for expand in (True, False):
        np.testing.assert_array_equal(d.enumerate_support(expand).numpy(), t.enumerate_support(expand).numpy())
    assert d.has_enumerate_support and not d.has_rsample


def test_one_hot_enumerate_support_like_torch():
    d, t = DD.OneHotCategorical(dg.ones(2, 3)), TD.OneHotCategorical(torch.ones(2, 3))
    np.testing.assert_array_equal(d.enumerate_support().numpy(), t.enumerate_support().numpy())


def test_has_rsample_flags_are_torchs():
    for name in ("Normal", "Uniform", "Exponential", "Laplace", "LogNormal", "Gamma", "Beta", "MultivariateNormal"):
        assert getattr(DD, name).has_rsample is getattr(TD, name).has_rsample is True
    for name in ("Bernoulli", "Categorical", "OneHotCategorical"):
        assert getattr(DD, name).has_rsample is getattr(TD, name).has_rsample is False
        with pytest.raises(NotImplementedError, match="rsample"):
            getattr(DD, name)(dg.ones(3) / 3).rsample()


def test_mvn_matrices_are_consistent_like_torch():
    cov = _spd(3)
    d = DD.MultivariateNormal(dg.zeros(3, dtype=dg.float64), covariance_matrix=dg.tensor(cov))
    t = TD.MultivariateNormal(torch.zeros(3, dtype=torch.float64), covariance_matrix=torch.tensor(cov))
    for name in ("scale_tril", "covariance_matrix", "precision_matrix"):
        np.testing.assert_allclose(getattr(d, name).numpy(), getattr(t, name).numpy(), rtol=1e-10, atol=1e-12)


def test_gamma_cdf_matches_torch_and_has_no_concentration_gradient():
    c, r, v = pos(4) + 1, pos(4), pos(4)
    check(
        lambda rate: DD.Gamma(dg.tensor(c), rate).cdf(dg.tensor(v)),
        lambda rate: TD.Gamma(torch.tensor(c), rate).cdf(torch.tensor(v)),
        r,
        rtol=1e-9,
    )
    g = DD.Gamma(dg.tensor(c, requires_grad=True), dg.tensor(r)).cdf(dg.tensor(v))
    with pytest.raises(NotImplementedError, match="igamma: input"):
        g.sum().backward()
