"""The families added after the first twelve (Poisson, Binomial, Geometric, Dirichlet, StudentT, Cauchy,
Gumbel, HalfNormal, MixtureSameFamily, TransformedDistribution and its transforms) against
torch.distributions in float64: log_prob, cdf/icdf, entropy and moments with their parameter gradients,
rsample's reparameterization gradients, sample shapes and moments (numpy's streams, not torch's), seeded
repeatability, kl_divergence of every pair torch registers among them, and validation's ValueErrors."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.test_families import QUANTITIES, pos, real, unit
from tests.distributions.test_rsample_kl import KL_MAKERS as FIRST_KL_MAKERS
from tests.distributions.test_rsample_kl import _r
from tests.distributions.test_rsample_kl import (
    test_bad_parameters_raise_torchs_value_error as bad_parameters_like_torch,
)
from tests.distributions.test_rsample_kl import (
    test_values_outside_the_support_raise_torchs_value_error as outside_support_like_torch,
)
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions
RNG = np.random.default_rng(0)
N = 200_000


def counts(*shape):
    return np.random.default_rng(1).integers(0, 6, shape).astype(np.float64)


def _simplex(*shape):
    x = pos(*shape)
    return x / x.sum(-1, keepdims=True)


def _tanh_normal(D, a, b):
    T = D if D is DD else TD.transforms
    return D.TransformedDistribution(D.Normal(a, b), [T.AffineTransform(0.5, 0.8), T.TanhTransform()])


def _logit_normal(D, a, b):
    T = D if D is DD else TD.transforms
    return D.TransformedDistribution(D.Normal(a, b), [T.SigmoidTransform(), T.AffineTransform(1.0, -2.0)])


def _log_normal(D, a, b):
    return D.TransformedDistribution(D.Normal(a, b), (D if D is DD else TD.transforms).ExpTransform())


def _affine_batched(D, a, s, c):
    """An AffineTransform whose batched loc and scale broadcast a scalar base (c 0-d) up to their shape."""
    return D.TransformedDistribution(D.Gumbel(c, 1.0), (D if D is DD else TD.transforms).AffineTransform(a, s))


def _mixture(D, logits, locs, scales):
    return D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(locs, scales))


def _mixture_mvn(D, logits, locs, scales):
    return D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(locs, scales), 1))


# (id, make(D, *params), params, value, quantities): value in the support, broadcast against the batch
FAMILIES = [
    ("poisson", lambda D, r: D.Poisson(r), (pos(2, 3),), counts(2, 3), "lp mean mode var"),
    ("binomial-probs", lambda D, p: D.Binomial(5, probs=p), (unit(4),), counts(3, 4), "lp ent mean mode var"),
    ("binomial-logits", lambda D, lg: D.Binomial(5, logits=lg), (real(4),), counts(4), "lp ent mean var"),
    ("geometric-probs", lambda D, p: D.Geometric(probs=p), (unit(2, 3),), counts(2, 3), "lp ent mean mode var"),
    ("geometric-logits", lambda D, lg: D.Geometric(logits=lg), (real(3),), counts(3), "lp ent mean var"),
    ("dirichlet", lambda D, c: D.Dirichlet(c), (pos(2, 4) + 1,), _simplex(2, 4), "lp ent mean mode var"),
    ("studentt", lambda D, df, a, b: D.StudentT(df, a, b), (pos(5) + 2, real(5), pos(5)), real(5), "lp ent mean var"),
    ("studentt-low-df", lambda D, df: D.StudentT(df), (np.array([0.5, 1.5, 3.0]),), real(3), "lp ent mean var"),
    ("cauchy", lambda D, a, b: D.Cauchy(a, b), (real(2, 3), pos(3)), real(2, 3), "lp cdf icdf ent mean mode var"),
    ("gumbel", lambda D, a, b: D.Gumbel(a, b), (real(4), pos(4)), real(3, 4), "lp cdf icdf ent mean mode var std"),
    ("halfnormal", lambda D, s: D.HalfNormal(s), (pos(2, 3),), pos(2, 3), "lp cdf icdf ent mean mode var"),
    ("tanh-normal", _tanh_normal, (real(4) * 0.3, pos(4) * 0.3), unit(4) * 1.6 - 0.8, "lp cdf icdf"),
    ("logit-normal", _logit_normal, (real(4), pos(4)), unit(2, 4) * 2 - 1, "lp cdf icdf"),
    ("exp-normal", _log_normal, (real(3), pos(3)), pos(3), "lp cdf icdf"),
    ("affine-gumbel", _affine_batched, (real(3), pos(3), np.array(0.3)), real(3), "lp cdf icdf"),
    ("mixture-normal", _mixture, (real(2, 3), real(2, 3), pos(2, 3)), real(4, 2), "lp cdf mean var"),
    ("mixture-mvn", _mixture_mvn, (real(3), real(3, 2), pos(3, 2)), real(5, 2), "lp mean var"),
]
CASES = [
    pytest.param(make, params, value, q, id=f"{name}-{q}")
    for name, make, params, value, qs in FAMILIES
    for q in qs.split()
]


@pytest.mark.parametrize("make, params, value, q", CASES)
def test_matches_torch_values_and_gradients(make, params, value, q):
    if q == "icdf":
        value = unit(*make(DD, *(dg.tensor(p) for p in params)).batch_shape)
    check(
        lambda *ps: QUANTITIES[q](make(DD, *ps), dg.tensor(value)),
        lambda *ps: QUANTITIES[q](make(TD, *ps), torch.tensor(value)),
        *params,
        rtol=1e-7,
        atol=1e-12,
    )


@pytest.mark.parametrize("name", ["poisson", "binomial-logits", "geometric-probs", "dirichlet", "studentt", "gumbel"])
def test_log_prob_gradcheck(name):
    _, make, params, value, _ = next(f for f in FAMILIES if f[0] == name)
    v = dg.tensor(value)
    assert dg.autograd.gradcheck(
        lambda *ps: make(DD, *ps).log_prob(v).sum(), [dg.tensor(p, requires_grad=True) for p in params]
    )


def test_modes_and_edge_values_match_torch():
    conc = np.array([[0.5, 0.7, 0.2], [2.0, 3.0, 1.5], [0.5, 2.0, 0.3]])  # all below 1, above, mixed
    np.testing.assert_allclose(
        DD.Dirichlet(dg.tensor(conc)).mode.numpy(), TD.Dirichlet(torch.tensor(conc)).mode.numpy(), rtol=1e-12
    )
    p = np.array([1.0, 0.3])  # Geometric(1) puts all its mass on 0: log_prob(0) = 0, not nan
    v = np.array([0.0, 2.0])
    np.testing.assert_allclose(
        DD.Geometric(dg.tensor(p)).log_prob(dg.tensor(v)).numpy(),
        TD.Geometric(torch.tensor(p)).log_prob(torch.tensor(v)),
    )
    n, q = np.array([3.0, 4.0, 10.0]), np.array([0.5, 0.9, 0.25])
    np.testing.assert_array_equal(
        DD.Binomial(dg.tensor(n), dg.tensor(q)).mode.numpy(), TD.Binomial(torch.tensor(n), torch.tensor(q)).mode
    )
    with pytest.raises(NotImplementedError, match="Inhomogeneous total count not supported by `entropy`"):
        DD.Binomial(dg.tensor(n), dg.tensor(q)).entropy()


# ---- rsample -----------------------------------------------------------------------------------
def _t(x, grad=True):
    return dg.tensor(np.asarray(x, dtype=np.float64), requires_grad=grad)


@pytest.mark.parametrize(
    "make",
    [
        lambda a, b: DD.Cauchy(a, b),
        lambda a, b: DD.Gumbel(a, b),
        lambda a, b: DD.StudentT(3.0, a, b),
        lambda a, b: DD.HalfNormal(b),
    ],
    ids=["cauchy", "gumbel", "studentt", "halfnormal"],
)
def test_location_scale_rsample_gradients_are_pathwise(make):
    """x = loc + scale·ε with ε fixed by the draw: dx/dloc = 1 and dx/dscale = (x - loc)/scale, exactly
    (HalfNormal has no loc: x = scale·|ε|)."""
    loc0, scale0 = real(5), pos(5)
    dg.manual_seed(4)
    loc, scale = _t(loc0), _t(scale0)
    d = make(loc, scale)
    x = d.rsample((3,))
    seed = real(3, 5)
    (x * dg.tensor(seed)).sum().backward()
    has_loc = not isinstance(d, DD.HalfNormal)
    eps = (x.detach().numpy() - (loc0 if has_loc else 0)) / scale0
    if has_loc:
        np.testing.assert_allclose(loc.grad.numpy(), seed.sum(0), rtol=1e-12)
    np.testing.assert_allclose(scale.grad.numpy(), (seed * eps).sum(0), rtol=1e-9)


@pytest.mark.parametrize(
    "make, dmean, dsecond",
    [  # d/dθ of E[x] and E[x²] for θ the parameter, in closed form
        (  # StudentT(df, 0, 1): E[x] = 0, E[x²] = df/(df - 2)
            lambda df: DD.StudentT(df),
            lambda df: 0.0,
            lambda df: -2 / (df - 2) ** 2,
        ),
        (  # the first coordinate of Dirichlet([c, 2, 1]): E = c/(c+3), E[x²] = c(c+1)/((c+3)(c+4))
            lambda c: DD.Dirichlet(dg.stack([c, dg.tensor(2.0, dtype=dg.float64), dg.tensor(1.0, dtype=dg.float64)])),
            lambda c: 3 / (c + 3) ** 2,
            lambda c: ((2 * c + 1) * (c + 3) * (c + 4) - c * (c + 1) * (2 * c + 7)) / ((c + 3) * (c + 4)) ** 2,
        ),
    ],
    ids=["studentt-df", "dirichlet"],
)
def test_rsample_gradients_are_the_moments_derivatives(make, dmean, dsecond):
    """With the noise fixed, d/dθ mean(x(θ)) estimates dE[x]/dθ (and likewise x²): within a few standard
    errors of the closed forms, so the gamma draws' implicit gradient carries through."""
    theta0 = 6.0
    for power, expected in ((1, dmean(theta0)), (2, dsecond(theta0))):
        dg.manual_seed(3)
        theta = _t(theta0)
        x = make(theta).rsample((N,))
        x = x[..., 0] if x.ndim > 1 else x
        (x**power).mean().backward()
        assert theta.grad.item() == pytest.approx(expected, rel=0.05, abs=0.005), (power, theta.grad.item())


def test_transformed_rsample_gradient_is_the_transforms_chain_rule():
    """y = tanh(0.5 + 0.8·(loc + scale·ε)): dy/dloc = 0.8·(1 - y²), dy/dscale = that times ε."""
    loc0, scale0 = real(4) * 0.3, pos(4) * 0.3
    dg.manual_seed(5)
    loc, scale = _t(loc0), _t(scale0)
    y = _tanh_normal(DD, loc, scale).rsample((2,))
    y.sum().backward()
    yv = y.detach().numpy()
    eps = (np.arctanh(yv) - 0.5) / 0.8 - loc0
    eps /= scale0
    np.testing.assert_allclose(loc.grad.numpy(), (0.8 * (1 - yv**2)).sum(0), rtol=1e-9)
    np.testing.assert_allclose(scale.grad.numpy(), (0.8 * (1 - yv**2) * eps).sum(0), rtol=1e-7)


# ---- samples -----------------------------------------------------------------------------------
SAMPLED = [
    (lambda D, m: D.Poisson(m.ones(2, 3) * 3.5), (2, 3), ()),
    (lambda D, m: D.Binomial(m.ones(3) * 7, probs=m.ones(2, 1) * 0.3), (2, 3), ()),
    (lambda D, m: D.Geometric(m.ones(3) * 0.4), (3,), ()),
    (lambda D, m: D.Dirichlet(m.ones(2, 4) * 1.5), (2,), (4,)),
    (lambda D, m: D.StudentT(m.ones(3) * 5.0, 1.0, 2.0), (3,), ()),
    (lambda D, m: D.Cauchy(m.zeros(2), 1.0), (2,), ()),
    (lambda D, m: D.Gumbel(m.zeros(2, 1), m.ones(3)), (2, 3), ()),
    (lambda D, m: D.HalfNormal(m.ones(4) * 2.0), (4,), ()),
    (lambda D, m: _mixture(D, m.zeros(2, 3), m.arange(6.0).reshape(2, 3), m.ones(2, 3)), (2,), ()),
    (lambda D, m: _mixture_mvn(D, m.zeros(3), m.zeros(3, 2), m.ones(3, 2)), (), (2,)),
    (lambda D, m: _logit_normal(D, m.zeros(2), m.ones(2)), (2,), ()),
]


@pytest.mark.parametrize("make, batch, event", SAMPLED)
def test_sample_shapes_supports_and_expand_match_torch(make, batch, event):
    d, t = make(DD, dg), make(TD, torch)
    assert d.batch_shape == batch == tuple(t.batch_shape) and d.event_shape == event == tuple(t.event_shape)
    assert d.has_rsample == t.has_rsample
    for shape in ((), (5,), (2, 3)):
        s = d.sample(shape)
        assert tuple(s.shape) == tuple(t.sample(shape).shape) and not s.requires_grad
        assert bool(d.support.check(s).all())
    e, te = d.expand((7,) + batch), t.expand((7,) + batch)
    assert e.batch_shape == (7,) + batch and tuple(e.sample().shape) == (7,) + batch + event
    assert tuple(e.log_prob(e.sample()).shape) == tuple(te.log_prob(te.sample()).shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DD.Poisson(_t([0.7, 4.0], False)),
        lambda: DD.Binomial(_t([10.0, 3.0], False), _t([0.3, 0.8], False)),
        lambda: DD.Geometric(_t([0.2, 0.7], False)),
        lambda: DD.Dirichlet(_t([0.5, 2.0, 3.0], False)),
        lambda: DD.StudentT(_t([5.0, 9.0], False), 1.0, 0.5),
        lambda: DD.Gumbel(_t([-1.0, 2.0], False), 0.7),
        lambda: DD.HalfNormal(_t([0.5, 2.0], False)),
        lambda: _mixture(DD, _t([0.1, -0.3, 0.5], False), _t([-2.0, 0.0, 3.0], False), _t([0.5, 1.0, 0.7], False)),
        lambda: _logit_normal(DD, _t([0.0, 0.3], False), _t([1.0, 0.5], False)),
    ],
    ids=["poisson", "binomial", "geometric", "dirichlet", "studentt", "gumbel", "halfnormal", "mixture", "logit"],
)
def test_sample_moments_match_the_distribution(make):
    dg.manual_seed(0)
    d = make()
    x = d.sample((N,)).numpy()
    if isinstance(d, DD.TransformedDistribution):  # no closed-form moments: check the quantiles instead
        q = np.array([0.1, 0.5, 0.9])
        got = np.quantile(x, q, axis=0)
        np.testing.assert_allclose(got, d.icdf(dg.tensor(q[:, None])).numpy(), atol=0.01)
        return
    np.testing.assert_allclose(x.mean(0), d.mean.numpy(), rtol=0.02, atol=0.01)
    np.testing.assert_allclose(x.var(0), d.variance.numpy(), rtol=0.05, atol=0.002)


def test_cauchy_sample_quantiles_match_its_icdf():
    dg.manual_seed(0)
    d = DD.Cauchy(_t([0.5, -1.0], False), _t([1.0, 3.0], False))
    q = np.array([0.25, 0.5, 0.75])
    np.testing.assert_allclose(
        np.quantile(d.sample((N,)).numpy(), q, axis=0), d.icdf(dg.tensor(q[:, None])).numpy(), rtol=0.02, atol=0.02
    )


def test_manual_seed_replays_every_draw():
    makers = [m for m, _, _ in SAMPLED]
    draws = []
    for _ in range(2):
        dg.manual_seed(11)
        draws.append([make(DD, dg).sample((4,)).numpy() for make in makers])
    for a, b in zip(*draws):
        np.testing.assert_array_equal(a, b)


# ---- transforms --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, x",
    [
        (lambda T: T.ExpTransform(), real(2, 3)),
        (lambda T: T.AffineTransform(1.5, -0.5), real(2, 3)),
        (lambda T: T.SigmoidTransform(), real(2, 3) * 3),
        (lambda T: T.TanhTransform(), real(2, 3)),
        (lambda T: T.ComposeTransform([T.AffineTransform(0.3, 2.0), T.SigmoidTransform()]), real(2, 3)),
        (lambda T: T.ExpTransform().inv, pos(2, 3)),
    ],
    ids=["exp", "affine", "sigmoid", "tanh", "compose", "exp-inv"],
)
def test_transforms_match_torch(make, x):
    d, t = make(DD), make(TD.transforms)
    assert d.sign == t.sign and repr(d.codomain) == repr(t.codomain)
    check(lambda v: d(v), lambda v: t(v), x)
    check(lambda v: d.inv(d(v)), lambda v: t.inv(t(v)), x, rtol=1e-6)
    check(lambda v: d.log_abs_det_jacobian(v, d(v)), lambda v: t.log_abs_det_jacobian(v, t(v)), x)


# ---- kl_divergence -----------------------------------------------------------------------------
KL_MAKERS = {
    "Poisson": (lambda D, a: D.Poisson(a), 1),
    "Binomial": (lambda D, a: D.Binomial(4, logits=a - 1.4), 1),
    "Geometric": (lambda D, a: D.Geometric(probs=a / 2.5), 1),
    "Dirichlet": (lambda D, a: D.Dirichlet(a.reshape(2, 3)), 1),
    "Cauchy": (lambda D, a, b: D.Cauchy(a - 1.0, b), 2),
    "Gumbel": (lambda D, a, b: D.Gumbel(a - 1.4, b), 2),
    "HalfNormal": (lambda D, a: D.HalfNormal(a), 1),
    **FIRST_KL_MAKERS,
}
NEW = {"Poisson", "Binomial", "Geometric", "Dirichlet", "Cauchy", "Gumbel", "HalfNormal"}
PAIRS = [
    (p, q)
    for p in KL_MAKERS
    for q in KL_MAKERS
    if (p in NEW or q in NEW) and (getattr(TD, p), getattr(TD, q)) in TD.kl._KL_REGISTRY
]


@pytest.mark.parametrize("p_name, q_name", PAIRS, ids=[f"{p}-{q}" for p, q in PAIRS])
def test_kl_matches_torch(p_name, q_name):
    (mp, np_), (mq, nq) = KL_MAKERS[p_name], KL_MAKERS[q_name]
    arrays = [_r(6) * (1 + 0.1 * i) for i in range(np_ + nq)]

    def kl(D, m):
        return lambda *xs: m.kl_divergence(mp(D, *xs[:np_]), mq(D, *xs[np_:]))

    check(kl(DD, DD), kl(TD, TD.kl), *arrays, rtol=1e-7, atol=1e-10)


def test_every_torch_pair_among_distgraphs_families_is_registered():
    families = set(dir(DD))
    torch_pairs = {(p.__name__, q.__name__) for p, q in TD.kl._KL_REGISTRY}
    ours = {(p.__name__, q.__name__) for p, q in DD.kl._KL_REGISTRY}
    assert {pair for pair in torch_pairs if set(pair) <= families} - ours == set()


def test_kl_of_transformed_distributions_and_binomials_match_torch():
    a1, b1, a2, b2 = real(3), pos(3), real(3), pos(3)
    check(
        lambda *ps: DD.kl_divergence(_tanh_normal(DD, *ps[:2]), _tanh_normal(DD, *ps[2:])),
        lambda *ps: TD.kl_divergence(_tanh_normal(TD, *ps[:2]), _tanh_normal(TD, *ps[2:])),
        a1,
        b1,
        a2,
        b2,
    )
    with pytest.raises(NotImplementedError):
        DD.kl_divergence(_tanh_normal(DD, _t(a1), _t(b1)), _log_normal(DD, _t(a1), _t(b1)))
    n_p, n_q = np.array([4.0, 5.0]), np.array([4.0, 3.0])  # p has more trials than q: +inf, as torch
    out = DD.kl_divergence(DD.Binomial(dg.tensor(n_p), probs=0.3), DD.Binomial(dg.tensor(n_q), probs=0.4))
    ref = TD.kl_divergence(TD.Binomial(torch.tensor(n_p), probs=0.3), TD.Binomial(torch.tensor(n_q), probs=0.4))
    np.testing.assert_allclose(out.numpy(), ref.numpy())
    with pytest.raises(NotImplementedError, match="q.total_count > p.total_count"):
        DD.kl_divergence(DD.Binomial(dg.tensor(n_q), probs=0.3), DD.Binomial(dg.tensor(n_p), probs=0.4))


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda D, m: D.Poisson(m.tensor([1.0, -0.5])),
            r"Expected parameter rate \(Tensor of shape \(2,\)\) of distribution Poisson\(rate: .*\) "
            r"to satisfy the constraint GreaterThanEq\(lower_bound=0.0\), but found invalid values",
        ),
        (lambda D, m: D.Binomial(m.tensor([2.5]), m.tensor([0.5])), r"parameter total_count .* IntegerGreaterThan"),
        (lambda D, m: D.Binomial(3, m.tensor([1.5])), r"parameter probs .* Interval\(lower_bound=0.0"),
        (lambda D, m: D.Binomial(3), "Either `probs` or `logits` must be specified, but not both."),
        (lambda D, m: D.Geometric(m.tensor([0.0, 0.5])), r"Expected parameter probs .* to be positive"),
        (lambda D, m: D.Dirichlet(m.tensor([1.0, -1.0])), r"parameter concentration .* IndependentConstraint"),
        (lambda D, m: D.Dirichlet(m.tensor(1.0)), "`concentration` parameter must be at least one-dimensional."),
        (lambda D, m: D.StudentT(m.tensor([-1.0])), r"parameter df .* GreaterThan\(lower_bound=0.0\)"),
        (lambda D, m: D.Cauchy(0.0, m.tensor([0.0])), r"parameter scale .* of distribution Cauchy"),
        (lambda D, m: D.Gumbel(m.tensor([0.0]), -1.0), r"parameter scale .* of distribution Gumbel"),
        (lambda D, m: D.HalfNormal(m.tensor([-2.0])), r"parameter scale .* of distribution HalfNormal"),
        (
            lambda D, m: D.MixtureSameFamily(D.Categorical(m.ones(2)), D.Normal(m.zeros(3), 1.0)),
            r"`mixture_distribution component` \(2\) does not equal `component_distribution.batch_shape\[-1\]` \(3\)",
        ),
        (
            lambda D, m: D.MixtureSameFamily(D.Normal(0.0, 1.0), D.Normal(m.zeros(3), 1.0)),
            "The Mixture distribution needs to be an",
        ),
        (lambda D, m: D.TransformedDistribution(D.Normal(0.0, 1.0), "exp"), "transforms must be a Transform or list"),
    ],
)
def test_bad_parameters_raise_torchs_value_error(make, match):
    bad_parameters_like_torch(make, match)


@pytest.mark.parametrize(
    "make, value, match",
    [
        (lambda D: D.Poisson(2.0), [1.5], r"support \(IntegerGreaterThan\(lower_bound=0\)\)"),
        (lambda D: D.Binomial(3, probs=0.5), [4.0], r"support \(IntegerInterval\(lower_bound=0, upper_bound=3.0\)\)"),
        (lambda D: D.Geometric(0.5), [-1.0], "IntegerGreaterThan"),
        (lambda D: D.HalfNormal(1.0), [-0.5], r"support \(GreaterThanEq\(lower_bound=0.0\)\)"),
        (lambda D: D.Dirichlet((dg if D is DD else torch).ones(3)), [0.5, 0.6, 0.1], r"support \(Simplex\(\)\)"),
    ],
)
def test_values_outside_the_support_raise_torchs_value_error(make, value, match):
    outside_support_like_torch(make, value, match)


def test_validation_can_be_turned_off():
    assert DD.HalfNormal(-1.0, validate_args=False).scale.item() == -1.0
    assert DD.Geometric(dg.tensor([0.0]), validate_args=False).probs.item() == 0.0  # its positivity check too
    assert DD.Poisson(2.0, validate_args=False).log_prob(dg.tensor(-1.0)).item() == pytest.approx(
        TD.Poisson(2.0, validate_args=False).log_prob(torch.tensor(-1.0)).item()
    )
