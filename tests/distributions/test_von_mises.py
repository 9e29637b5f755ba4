"""VonMises against torch's in float64: log_prob and moments with gradients, what torch leaves
unimplemented, validation, expand, and rejection-sampled draws (their circular moments)."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.family_parity import DD, TD, check_both_raise, check_closed_form, check_expand
from tests.parity import torch


def ctor(D, loc, k):
    return D.VonMises(loc, k)


@pytest.mark.parametrize("what", ["log_prob", "mean", "mode", "variance", "stddev", "entropy", "cdf"])
@pytest.mark.parametrize("batch", [(4,), (2, 4)])
def test_closed_forms_and_gradients_match_torch(what, batch):
    rng = np.random.default_rng(0)
    loc = rng.uniform(-3, 3, batch)
    k = np.array([0.01, 0.8, 3.7, 12.0])  # both sides of the Bessel approximations' switch at 3.75
    check_closed_form(ctor, what, [loc, k], rng.uniform(-3, 3, batch))


def test_validation_and_expand_match_torch():
    loc, k = np.array([0.2, -1.0]), np.array([1.0, 2.0])
    check_both_raise(
        lambda: DD.VonMises(dg.tensor(loc), dg.tensor(-k)), lambda: TD.VonMises(torch.tensor(loc), torch.tensor(-k))
    )
    d = DD.VonMises(dg.tensor(loc), dg.tensor(k))
    assert not d.has_rsample and not TD.VonMises(torch.tensor(loc), torch.tensor(k)).has_rsample
    check_expand(ctor, [loc, k], (3, 2), np.zeros((3, 2)))


def test_draws_have_the_circular_moments():
    """E[cos(x - loc)] = I₁(κ)/I₀(κ) = 1 - variance and E[sin(x - loc)] = 0, within 5 standard errors; draws
    lie in [-π, π) and keep the parameters' dtype."""
    n = 20_000
    loc, k = np.array([0.5, -2.9, 3.0]), np.array([0.05, 1.5, 8.0])
    d = DD.VonMises(dg.tensor(loc), dg.tensor(k))
    dg.manual_seed(0)
    x = d.sample((n,))
    assert tuple(x.shape) == (n, 3) and x.dtype == dg.float64 and not x.requires_grad
    xs = np.asarray(x.__array__())
    assert np.all((xs >= -np.pi) & (xs < np.pi))
    cos, sin = np.cos(xs - loc), np.sin(xs - loc)
    expected = 1 - TD.VonMises(torch.tensor(loc), torch.tensor(k)).variance.numpy()
    assert np.all(np.abs(cos.mean(0) - expected) <= 5 * cos.std(0) / np.sqrt(n))
    assert np.all(np.abs(sin.mean(0)) <= 5 * sin.std(0) / np.sqrt(n))
    assert DD.VonMises(dg.tensor([0.0], dtype=dg.float32), dg.tensor([1.0], dtype=dg.float32)).sample().dtype == (
        dg.float32
    )
