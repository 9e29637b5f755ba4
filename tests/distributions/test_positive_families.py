"""Chi2, FisherSnedecor, Weibull, Pareto, HalfCauchy, InverseGamma and Kumaraswamy against torch's in
float64: closed forms with parameter gradients on two batch shapes, validation errors, expand, draws (shape
and moments, pathwise gradients), and their KL pairs."""

import numpy as np
import pytest

from tests.distributions.family_parity import (
    DD,
    TD,
    check_both_raise,
    check_closed_form,
    check_expand,
    check_rsample_gradient,
    check_sample_cdf,
    check_sample_moments,
)
from tests.parity import torch

# name: (ctor(D, *params), [(low, high) of each parameter], value(params, u) in the support for u in (0, 1))
FAMILIES = {
    "Chi2": (lambda D, df: D.Chi2(df), [(0.5, 6.0)], lambda p, u: 4 * u),
    "FisherSnedecor": (lambda D, a, b: D.FisherSnedecor(a, b), [(0.5, 8.0), (0.5, 9.0)], lambda p, u: 3 * u),
    "Weibull": (lambda D, s, c: D.Weibull(s, c), [(0.5, 2.0), (0.5, 3.0)], lambda p, u: 3 * u),
    "Pareto": (lambda D, s, a: D.Pareto(s, a), [(0.5, 2.0), (0.5, 4.0)], lambda p, u: p[0] * (1 + 2 * u)),
    "HalfCauchy": (lambda D, s: D.HalfCauchy(s), [(0.5, 2.0)], lambda p, u: 3 * u),
    "InverseGamma": (lambda D, c, r: D.InverseGamma(c, r), [(0.5, 4.0), (0.5, 2.0)], lambda p, u: 2 * u),
    "Kumaraswamy": (lambda D, a, b: D.Kumaraswamy(a, b), [(0.5, 3.0), (0.5, 3.0)], lambda p, u: u),
}
WHATS = ["log_prob", "cdf", "icdf", "entropy", "mean", "variance", "stddev", "mode"]


def _params(name, shapes):
    rng = np.random.default_rng(0)
    return [rng.uniform(lo, hi, shape) for (lo, hi), shape in zip(FAMILIES[name][1], shapes)]


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("what", WHATS)
@pytest.mark.parametrize("shapes", [[(2,), (2,)], [(3, 2), (2,)]])
def test_closed_forms_and_gradients_match_torch(name, what, shapes):
    ctor, ranges, value = FAMILIES[name]
    params = _params(name, shapes[: len(ranges)])
    batch = np.broadcast_shapes(*(p.shape for p in params))
    u = np.random.default_rng(1).uniform(0.05, 0.95, batch)
    x = u if what == "icdf" else value([np.broadcast_to(p, batch) for p in params], u)
    no_grad = what == "cdf" and name in ("Chi2", "InverseGamma")  # gammainc: no gradient in torch either
    check_closed_form(ctor, what, params, x, grad=not no_grad, rtol=1e-6 if what == "icdf" else 1e-7)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_invalid_parameters_and_values_raise_like_torch(name):
    ctor, ranges, _ = FAMILIES[name]
    bad = [np.array([1.0, -1.0])] + [np.array([1.0, 1.0])] * (len(ranges) - 1)
    check_both_raise(lambda: ctor(DD, *map(DD_tensor, bad)), lambda: ctor(TD, *map(torch.tensor, bad)))
    good = [np.array([1.5, 2.5])] * len(ranges)
    d, t = ctor(DD, *map(DD_tensor, good)), ctor(TD, *map(torch.tensor, good))
    outside = np.array([-0.5, 0.5])
    check_both_raise(lambda: d.log_prob(DD_tensor(outside)), lambda: t.log_prob(torch.tensor(outside)))


def DD_tensor(a):  # noqa: N802  (reads as the DD constructor beside torch.tensor)
    import distgraph as dg

    return dg.tensor(a)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_expand_matches_torch(name):
    ctor, ranges, value = FAMILIES[name]
    params = _params(name, [(2,)] * len(ranges))
    x = value(params, np.array([0.3, 0.6]))
    check_expand(ctor, params, (4, 2), np.broadcast_to(x, (4, 2)).copy())


# parameters with a finite variance, so a mean is a fair check of draws
MOMENT_PARAMS = {
    "Chi2": [np.array([0.7, 3.0])],
    "FisherSnedecor": [np.array([2.0, 6.0]), np.array([7.0, 12.0])],
    "Weibull": [np.array([0.8, 2.0]), np.array([0.7, 3.0])],
    "Pareto": [np.array([1.0, 2.0]), np.array([3.5, 5.0])],
    "InverseGamma": [np.array([3.0, 5.0]), np.array([1.0, 2.0])],
    "Kumaraswamy": [np.array([0.6, 2.0]), np.array([3.0, 0.8])],
}


@pytest.mark.parametrize("name", sorted(MOMENT_PARAMS))
def test_draws_have_torchs_shape_and_mean(name):
    ctor = FAMILIES[name][0]
    params = MOMENT_PARAMS[name]
    d, t = ctor(DD, *map(DD_tensor, params)), ctor(TD, *map(torch.tensor, params))
    assert d.has_rsample == t.has_rsample
    check_sample_moments(d, t)


def test_halfcauchy_draws_follow_torchs_cdf():
    scale = np.array([0.5, 2.0])
    d, t = DD.HalfCauchy(DD_tensor(scale)), TD.HalfCauchy(torch.tensor(scale))
    check_sample_cdf(d, t, [0.3, 1.0, 4.0])


@pytest.mark.parametrize("name", sorted(MOMENT_PARAMS))
def test_rsample_gradients_are_unbiased(name):
    params = [float(p[-1]) for p in MOMENT_PARAMS[name]]
    check_rsample_gradient(FAMILIES[name][0], params)


def test_power_transform_matches_torch():
    x, e = np.array([0.5, 2.0]), np.array([-1.5, 0.5])
    d = DD.transforms.PowerTransform(DD_tensor(e))
    t = TD.transforms.PowerTransform(torch.tensor(e))
    y = d(DD_tensor(x))
    np.testing.assert_allclose(np.asarray(y.__array__()), t(torch.tensor(x)).numpy())
    np.testing.assert_allclose(np.asarray(d.inv(y).__array__()), x)
    ladj = d.log_abs_det_jacobian(DD_tensor(x), y).__array__()
    np.testing.assert_allclose(ladj, t.log_abs_det_jacobian(torch.tensor(x), t(torch.tensor(x))).numpy())
    assert d == DD.transforms.PowerTransform(DD_tensor(e)) and d != DD.transforms.PowerTransform(DD_tensor(x))


KL_PAIRS = [
    ("Chi2", "Chi2"),
    ("Chi2", "Exponential"),
    ("InverseGamma", "InverseGamma"),
    ("HalfCauchy", "HalfCauchy"),
]


@pytest.mark.parametrize("p_name, q_name", KL_PAIRS)
def test_kl_pairs_match_torch(p_name, q_name):
    """Chi2 takes Gamma's pairs; the transformed families take torch's (Transformed, Transformed) rule."""
    from tests.parity import check

    def build(D, name, a, b):
        if name == "Exponential":
            return D.Exponential(b)
        ctor, ranges, _ = FAMILIES[name]
        return ctor(D, *[a, b][: len(ranges)])

    def run(D):
        return lambda a, b: D.kl_divergence(build(D, p_name, a, b), build(D, q_name, b, a + 0.5))

    check(run(DD), run(TD), np.array([0.8, 1.7]), np.array([1.3, 2.2]))


@pytest.mark.parametrize("name", ["Weibull", "Kumaraswamy"])
def test_kl_of_transforms_that_carry_the_parameters_is_not_implemented_like_torch(name):
    """torch's (Transformed, Transformed) rule needs equal transforms, which these families' are not."""
    ctor = FAMILIES[name][0]
    a, b = np.array([0.8, 1.7]), np.array([1.3, 2.2])
    check_both_raise(
        lambda: DD.kl_divergence(ctor(DD, DD_tensor(a), DD_tensor(b)), ctor(DD, DD_tensor(b), DD_tensor(a))),
        lambda: TD.kl_divergence(
            ctor(TD, torch.tensor(a), torch.tensor(b)), ctor(TD, torch.tensor(b), torch.tensor(a))
        ),
        NotImplementedError,
    )
