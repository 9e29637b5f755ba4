"""rsample's gradients (reparameterization identities and sample moments: torch's draws cannot be
reproduced), the Gamma draw's implicit gradient against torch's `_standard_gamma_grad`, kl_divergence for
every registered pair against torch (values and gradients), and validation's errors in torch's words."""

import math

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions
N = 200_000


def _t(x, grad=True):
    return dg.tensor(np.asarray(x, dtype=np.float64), requires_grad=grad)


# ---- rsample -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, dmean, dvar",
    [  # d/dθ of E[x] and E[x²] for θ the distribution's parameters, in closed form
        (lambda a, b: DD.Normal(a, b), lambda a, b: (1, 0), lambda a, b: (2 * a, 2 * b)),
        (lambda a, b: DD.Uniform(a, a + b), lambda a, b: (1, 0.5), lambda a, b: (2 * a + b, a + 2 * b / 3)),
        (lambda a, b: DD.Laplace(a, b), lambda a, b: (1, 0), lambda a, b: (2 * a, 4 * b)),
        (
            lambda a, b: DD.LogNormal(a, b),
            lambda a, b: (math.exp(a + b * b / 2), b * math.exp(a + b * b / 2)),
            lambda a, b: (2 * math.exp(2 * a + 2 * b * b), 4 * b * math.exp(2 * a + 2 * b * b)),
        ),
        (
            lambda a, b: DD.Gamma(a, b),
            lambda a, b: (1 / b, -a / b**2),
            lambda a, b: ((2 * a + 1) / b**2, -2 * a * (a + 1) / b**3),
        ),
        (
            lambda a, b: DD.Beta(a, b),
            lambda a, b: (b / (a + b) ** 2, -a / (a + b) ** 2),
            lambda a, b: (  # E[x²] = a(a+1) / (s(s+1)), s = a + b
                (2 * a + 1) / ((a + b) * (a + b + 1))
                - a * (a + 1) * (2 * a + 2 * b + 1) / ((a + b) * (a + b + 1)) ** 2,
                -a * (a + 1) * (2 * a + 2 * b + 1) / ((a + b) * (a + b + 1)) ** 2,
            ),
        ),
    ],
    ids=["normal", "uniform", "laplace", "lognormal", "gamma", "beta"],
)
def test_rsample_gradients_are_the_moments_derivatives(make, dmean, dvar):
    """With ε fixed, d/dθ mean(x(θ, ε)) estimates dE[x]/dθ, and likewise for x²: both within a few
    standard errors of the closed forms, so the gradient is the reparameterization one."""
    a0, b0 = 1.3, 0.7
    for power, expected in ((1, dmean(a0, b0)), (2, dvar(a0, b0))):
        dg.manual_seed(3)
        a, b = _t(a0), _t(b0)
        x = make(a, b).rsample((N,))
        (x**power).mean().backward()
        for got, want in zip((a.grad.item(), b.grad.item()), expected):
            assert got == pytest.approx(want, rel=0.03, abs=0.01), (power, got, want)


def test_rsample_moments_match_the_distribution():
    dg.manual_seed(0)
    for d in (
        DD.Normal(_t(0.5, False), 2.0),
        DD.Exponential(_t(1.5, False)),
        DD.Gamma(_t(0.3, False), 2.0),
        DD.Beta(_t(0.5, False), 3.0),
        DD.Laplace(_t(-1.0, False), 0.5),
    ):
        x = d.rsample((N,))
        assert x.mean().item() == pytest.approx(d.mean.item(), rel=0.02, abs=0.01)
        assert x.var().item() == pytest.approx(d.variance.item(), rel=0.04)


def test_mvn_rsample_gradient_reaches_loc_and_scale_tril():
    """x = loc + L·ε: d/dL of E[x xᵀ]'s trace is 2L (E[εεᵀ] = I), d/dloc of E[x] is 1."""
    dg.manual_seed(1)
    L0 = np.array([[1.0, 0.0], [0.5, 0.8]])
    loc, L = _t([0.3, -0.2]), _t(L0)
    x = DD.MultivariateNormal(loc, scale_tril=L).rsample((N,))
    (x.pow(2).sum(-1).mean() + x.sum(-1).mean()).backward()
    np.testing.assert_allclose(L.grad.numpy(), 2 * L0, atol=0.03)
    np.testing.assert_allclose(loc.grad.numpy(), 2 * loc.detach().numpy() + 1, atol=0.03)
    np.testing.assert_allclose(np.cov(x.detach().numpy().T), L0 @ L0.T, atol=0.02)


def test_standard_gamma_gradient_matches_torch():
    """The implicit dz/dα at the same (α, z) as torch's _standard_gamma_grad (which is itself approximate
    to ~1e-4; distgraph's is good to ~1e-9, checked against mpmath in the ops tests)."""
    import scipy.special

    from distgraph.ops.gamma_sample import standard_gamma_grad

    alpha = np.array([0.05, 0.3, 1.0, 2.5, 10.0, 150.0])
    for q in (0.05, 0.5, 0.95):
        z = scipy.special.gammaincinv(alpha, q)
        ref = torch._standard_gamma_grad(torch.tensor(alpha), torch.tensor(z)).numpy()
        np.testing.assert_allclose(standard_gamma_grad(np, alpha, z), ref, rtol=5e-4)


def test_standard_gamma_gradient_is_accurate():
    mpmath = pytest.importorskip("mpmath")
    from distgraph.ops.gamma_sample import standard_gamma_grad

    mpmath.mp.dps = 30
    for a, z in ((0.2, 0.01), (1.5, 2.0), (40.0, 35.0)):
        dF = mpmath.diff(lambda s: mpmath.gammainc(s, 0, z, regularized=True), a)
        exact = -dF / (mpmath.mpf(z) ** (a - 1) * mpmath.e ** (-z) / mpmath.gamma(a))
        assert standard_gamma_grad(np, np.array([a]), np.array([z]))[0] == pytest.approx(float(exact), rel=1e-7)


def test_sample_does_not_record_a_graph_and_rsample_does():
    loc = _t([0.0, 1.0])
    d = DD.Normal(loc, 1.0)
    assert not d.sample((3,)).requires_grad and d.rsample((3,)).requires_grad


# ---- kl_divergence -----------------------------------------------------------------------------
def _r(*s):
    return np.random.default_rng(7).uniform(0.6, 2.2, s)


KL_MAKERS = {
    "Normal": (lambda D, a, b: D.Normal(a - 1.4, b), 2),
    "Uniform": (lambda D, a, b: D.Uniform(a * 0.2 - 0.1, a * 0.2 + b * 0.3), 2),
    "Exponential": (lambda D, a: D.Exponential(a), 1),
    "Laplace": (lambda D, a, b: D.Laplace(a - 1.0, b), 2),
    "Gamma": (lambda D, a, b: D.Gamma(a, b), 2),
    "Beta": (lambda D, a, b: D.Beta(a, b), 2),
    "LogNormal": (lambda D, a, b: D.LogNormal(a - 1.0, b), 2),
    "Bernoulli": (lambda D, a: D.Bernoulli(logits=a - 1.4), 1),
    "Categorical": (lambda D, a: D.Categorical(logits=a.reshape(3, 2)), 1),
    "OneHotCategorical": (lambda D, a: D.OneHotCategorical(probs=a.reshape(3, 2)), 1),
}
# torch's registered pairs among these, and LogNormal's (torch's TransformedDistribution pair)
PAIRS = [
    (p, q)
    for p in KL_MAKERS
    for q in KL_MAKERS
    if (getattr(TD, p), getattr(TD, q)) in TD.kl._KL_REGISTRY or p == q == "LogNormal"
]


@pytest.mark.parametrize("p_name, q_name", PAIRS, ids=[f"{p}-{q}" for p, q in PAIRS])
def test_kl_matches_torch(p_name, q_name):
    (mp, np_), (mq, nq) = KL_MAKERS[p_name], KL_MAKERS[q_name]
    arrays = [_r(6) * (1 + 0.1 * i) for i in range(np_ + nq)]

    def kl(D, m):
        def fn(*xs):
            return m.kl_divergence(mp(D, *xs[:np_]), mq(D, *xs[np_:]))

        return fn

    check(kl(DD, DD), kl(TD, TD.kl), *arrays, rtol=1e-7, atol=1e-10)


def test_every_torch_pair_among_distgraphs_families_is_registered():
    names = set(KL_MAKERS) | {"MultivariateNormal", "Independent"}
    missing = [
        (p.__name__, q.__name__)
        for p, q in TD.kl._KL_REGISTRY
        if p.__name__ in names
        and q.__name__ in names
        and (getattr(DD, p.__name__), getattr(DD, q.__name__)) not in DD.kl._KL_REGISTRY
    ]
    assert missing == []


def test_kl_mvn_and_independent_match_torch():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 3))
    covs = [a @ a.T + 3 * np.eye(3), b @ b.T + 3 * np.eye(3)]
    locs = rng.standard_normal((2, 3))

    def mvn(D, m):
        def fn(l1, c1, l2, c2):
            return m.kl_divergence(D.MultivariateNormal(l1, c1), D.MultivariateNormal(l2, scale_tril=c2))

        return fn

    L2 = np.linalg.cholesky(covs[1])
    check(mvn(DD, DD), mvn(TD, TD.kl), locs[0], covs[0], locs[1], L2, rtol=1e-7, atol=1e-10)

    def ind(D, m):
        def fn(a1, s1, a2, s2):
            return m.kl_divergence(D.Independent(D.Normal(a1, s1), 1), D.Independent(D.Normal(a2, s2), 1))

        return fn

    check(ind(DD, DD), ind(TD, TD.kl), *(np.abs(rng.standard_normal((2, 3))) + 0.5 for _ in range(4)), rtol=1e-7)


def test_kl_is_infinite_where_supports_do_not_nest_as_torch():
    cases = [
        lambda D: (D.Uniform(0.0, 2.0), D.Uniform(0.5, 3.0)),
        lambda D: (D.Normal(0.0, 1.0), D.Exponential(1.0)),
        lambda D: (D.Beta(2.0, 2.0), D.Uniform(0.2, 3.0)),
        lambda D: (D.Bernoulli(0.3), D.Bernoulli(0.0)),
        lambda D: (D.Categorical(dg.tensor([0.5, 0.5, 0.0])), D.Categorical(dg.tensor([0.5, 0.0, 0.5]))),
    ]
    for make in cases:
        p, q = make(DD)
        out = DD.kl_divergence(p, q).numpy()
        tp, tq = (
            make(TD)
            if "Categorical" not in type(p).__name__
            else (TD.Categorical(torch.tensor([0.5, 0.5, 0.0])), TD.Categorical(torch.tensor([0.5, 0.0, 0.5])))
        )
        np.testing.assert_array_equal(out, TD.kl_divergence(tp, tq).numpy())


def test_kl_of_unregistered_pair_raises_torchs_error():
    with pytest.raises(
        NotImplementedError, match="No KL\\(p \\|\\| q\\) is implemented for p type Bernoulli and q type"
    ):
        DD.kl_divergence(DD.Bernoulli(0.3), DD.Normal(0.0, 1.0))


def test_register_kl_dispatches_to_the_most_specific_pair():
    class MyNormal(DD.Normal):
        pass

    p, q = MyNormal(0.0, 1.0), DD.Normal(1.0, 2.0)
    base = DD.kl_divergence(p, q).item()

    @DD.register_kl(MyNormal, DD.Normal)
    def _(p, q):
        return dg.tensor(42.0)

    try:
        assert DD.kl_divergence(p, q).item() == 42.0
        assert DD.kl_divergence(DD.Normal(0.0, 1.0), q).item() == pytest.approx(base)
    finally:
        del DD.kl._KL_REGISTRY[MyNormal, DD.Normal]
        DD.kl._KL_MEMO.clear()


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda D, m: D.Normal(m.tensor([0.0, 1.0]), m.tensor([1.0, -1.0])),
            r"Expected parameter scale \(Tensor of shape \(2,\)\) of distribution Normal\(.*\) to satisfy the "
            r"constraint GreaterThan\(lower_bound=0.0\), but found invalid values",
        ),
        (lambda D, m: D.Bernoulli(probs=m.tensor([1.5])), r"constraint Interval\(lower_bound=0.0, upper_bound=1.0\)"),
        (lambda D, m: D.Bernoulli(probs=m.tensor([0.5]), logits=m.tensor([0.0])), "Either `probs` or `logits`"),
        (lambda D, m: D.Categorical(probs=m.tensor([0.5, -0.1, 0.6])), r"constraint Simplex\(\)"),
        (
            lambda D, m: D.Uniform(m.tensor([1.0]), m.tensor([0.0])),
            r"Expected parameter low \(Tensor of shape \(1,\)\) of distribution Uniform\(low: tensor\(\[1.\]\), "
            r"high: tensor\(\[0.\]\)\) to satisfy the constraint LessThan\(upper_bound=tensor\(\[0.\]\)\)",
        ),
        (lambda D, m: D.Gamma(m.tensor([-1.0]), 1.0), "parameter concentration"),
        (lambda D, m: D.MultivariateNormal(m.tensor(0.0), m.eye(2)), "loc must be at least one-dimensional"),
        (
            lambda D, m: D.MultivariateNormal(m.zeros(2), m.eye(2), scale_tril=m.eye(2)),
            "Exactly one of covariance_matrix or precision_matrix or scale_tril may be specified",
        ),
        (
            lambda D, m: D.MultivariateNormal(m.zeros(2), covariance_matrix=m.tensor([[1.0, 2.0], [2.0, 1.0]])),
            r"constraint PositiveDefinite\(\)",
        ),
        (
            lambda D, m: D.MultivariateNormal(m.zeros(2), scale_tril=m.tensor([[1.0, 1.0], [0.0, 1.0]])),
            r"constraint LowerCholesky\(\)",
        ),
        (
            lambda D, m: D.Independent(D.Normal(m.zeros(3), 1.0), 2),
            r"Expected reinterpreted_batch_ndims <= len\(base_distribution.batch_shape\), actual 2 vs 1",
        ),
    ],
)
def test_bad_parameters_raise_torchs_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make(TD, torch)
    with pytest.raises(ValueError, match=match):
        make(DD, dg)


@pytest.mark.parametrize(
    "make, value, match",
    [
        (
            lambda D: D.Uniform(0.0, 1.0),
            [2.0],
            r"Expected value argument \(Tensor of shape \(1,\)\) to be within the support "
            r"\(Interval\(lower_bound=0.0, upper_bound=1.0\)\) of the distribution Uniform\(low: 0.0, high: 1.0\)",
        ),
        (lambda D: D.Exponential(1.0), [-1.0], r"support \(GreaterThanEq\(lower_bound=0.0\)\)"),
        (lambda D: D.Bernoulli(0.3), [0.5], r"support \(Boolean\(\)\)"),
        (lambda D: D.Categorical(dg.ones(3) if D is DD else torch.ones(3)), [3.0], "IntegerInterval"),
        (
            lambda D: D.Normal(dg.zeros(3) if D is DD else torch.zeros(3), 1.0),
            [0.0, 1.0],
            r"Value is not broadcastable with batch_shape\+event_shape",
        ),
        (
            lambda D: D.MultivariateNormal(*((dg.zeros(3), dg.eye(3)) if D is DD else (torch.zeros(3), torch.eye(3)))),
            [0.0, 1.0],
            "The right-most size of value must match event_shape",
        ),
    ],
)
def test_values_outside_the_support_raise_torchs_value_error(make, value, match):
    with pytest.raises(ValueError, match=match):
        make(TD).log_prob(torch.tensor(value))
    with pytest.raises(ValueError, match=match):
        make(DD).log_prob(dg.tensor(value))


def test_log_prob_needs_a_tensor_and_validation_can_be_turned_off():
    with pytest.raises(ValueError, match="The value argument to log_prob must be a Tensor"):
        DD.Normal(0.0, 1.0).log_prob(0.5)
    assert np.isnan(DD.Normal(0.0, -1.0, validate_args=False).log_prob(dg.tensor(0.5)).item())
    DD.Distribution.set_default_validate_args(False)
    try:
        assert DD.Uniform(0.0, 1.0).log_prob(dg.tensor(2.0)).item() == -math.inf
    finally:
        DD.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError):
        DD.Uniform(0.0, 1.0).log_prob(dg.tensor(2.0))
