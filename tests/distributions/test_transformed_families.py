"""LogNormal, Gumbel and HalfNormal are TransformedDistributions as torch's: isinstance, `base_dist`,
`transforms`, expand, and KL against a hand-built TransformedDistribution through torch's (Transformed,
Transformed) rule; values and gradients stay torch's in float64."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions

FAMILIES = {
    "LogNormal": lambda D, a, b: D.LogNormal(a, b),
    "Gumbel": lambda D, a, b: D.Gumbel(a, b),
    "HalfNormal": lambda D, a, b: D.HalfNormal(b),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_is_a_transformed_distribution_like_torch(name):
    a, b = np.array([0.2, -0.4]), np.array([0.7, 1.3])
    d = FAMILIES[name](DD, dg.tensor(a), dg.tensor(b))
    t = FAMILIES[name](TD, torch.tensor(a), torch.tensor(b))
    assert isinstance(d, DD.TransformedDistribution) and isinstance(t, TD.TransformedDistribution)
    assert type(d.base_dist).__name__ == type(t.base_dist).__name__
    assert [type(x).__name__ for x in d.transforms] == [type(x).__name__ for x in t.transforms]
    assert repr(d).startswith(name + "(") and repr(t).startswith(name + "(")
    e = d.expand((3, 2))
    assert type(e) is type(d) and tuple(e.batch_shape) == (3, 2) and tuple(e.sample().shape) == (3, 2)
    x = np.abs(a) + 0.5
    check(lambda v: e.log_prob(v), lambda v: t.expand((3, 2)).log_prob(v), np.tile(x, (3, 1)), grad=False)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("what", ["log_prob", "cdf", "icdf", "entropy", "mean", "variance"])
def test_closed_forms_and_gradients_match_torch(name, what):
    x = np.array([0.3, 1.5]) if what != "icdf" else np.array([0.3, 0.8])

    def run(D):
        def f(a, b, v):
            d = FAMILIES[name](D, a, b)
            if what == "entropy":
                return d.entropy()
            return getattr(d, what)(v) if what in ("log_prob", "cdf", "icdf") else getattr(d, what)

        return f

    check(run(DD), run(TD), np.array([0.2, -0.4]), np.array([0.7, 1.3]), x)


def test_kl_lognormal_to_transformed_normal_matches_torch():
    def run(D):
        T = D if D is DD else TD.transforms

        def f(a, b):
            q = D.TransformedDistribution(D.Normal(b, a.exp()), [T.ExpTransform()])
            return D.kl_divergence(D.LogNormal(a, a.exp() + 0.5), q)

        return f

    check(run(DD), run(TD), np.array([0.0, 0.3]), np.array([0.5, -0.2]))


def test_kl_gumbel_and_halfnormal_pairs_still_match_torch():
    def run(D):
        return lambda a, b: (
            D.kl_divergence(D.Gumbel(a, b), D.Gumbel(b, a.exp())),
            D.kl_divergence(D.HalfNormal(b), D.HalfNormal(a.exp())),
            D.kl_divergence(D.LogNormal(a, b), D.LogNormal(b, a.exp())),
        )

    check(run(DD), run(TD), np.array([0.0, 0.3]), np.array([0.5, 1.2]))


def test_rsample_goes_through_the_transforms_with_gradients():
    loc, scale = dg.tensor([0.5], requires_grad=True), dg.tensor([2.0], requires_grad=True)
    dg.manual_seed(0)
    x = DD.Gumbel(loc, scale).rsample((20_000,))
    x.mean().backward()
    # d mean/d loc = 1 and d mean/d scale = Euler's gamma for the pathwise estimator
    assert abs(loc.grad.item() - 1.0) < 1e-9 and abs(scale.grad.item() - 0.5772) < 0.05
