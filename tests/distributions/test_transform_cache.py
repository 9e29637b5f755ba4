"""Transforms' cache_size=1 against torch 2.x: the (x, y) pair is remembered by tensor identity in both
directions, `t.inv` shares it, and a saturated squashed Gaussian (SAC's tanh policy) keeps a finite
log_prob and gradient where recomputing atanh(1.0) would give inf/NaN."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions


def _squashed_log_prob(D, name, cache_size):
    """log_prob of the sample the policy just drew: base draw x = mu + s·eps pinned so both libraries see
    the same x; y = t(x) then log_prob(y), as rsample followed by log_prob does."""
    T = D if D is DD else TD.transforms

    def run(mu, s, eps):
        t = getattr(T, name)(cache_size=cache_size)
        pi = D.TransformedDistribution(D.Normal(mu, s), [t])
        return pi.log_prob(t(mu + s * eps))

    return run


@pytest.mark.parametrize("name, mu", [("TanhTransform", 20.0), ("SigmoidTransform", 40.0), ("ExpTransform", 710.0)])
def test_saturated_squash_log_prob_and_grad_match_torch_with_cache(name, mu):
    mu, s, eps = np.array([mu, 0.3]), np.array([0.1, 0.5]), np.array([0.7, -1.2])
    out = check(_squashed_log_prob(DD, name, 1), _squashed_log_prob(TD, name, 1), mu, s, eps)
    assert np.isfinite(np.asarray(out.detach().numpy())).all()


def test_tanh_without_cache_is_nan_like_torch():
    mu, s, eps = np.array([20.0]), np.array([0.1]), np.array([0.7])
    check(
        _squashed_log_prob(DD, "TanhTransform", 0), _squashed_log_prob(TD, "TanhTransform", 0), mu, s, eps, grad=False
    )


@pytest.mark.parametrize("name", ["ExpTransform", "TanhTransform", "SigmoidTransform"])
def test_cache_is_keyed_by_identity_both_ways(name):
    t = getattr(DD.transforms, name)(cache_size=1)
    x = dg.tensor([0.3, -0.2])
    y = t(x)
    assert t(x) is y and t.inv(y) is x and t.inv is t.inv and t.inv.inv is t
    y2 = dg.tensor([0.4, 0.5])
    x2 = t.inv(y2)
    assert t(x2) is y2 and t.inv(y2) is x2
    assert t(dg.tensor([0.3, -0.2])) is not y  # equal values, other object: recomputed
    plain = getattr(DD.transforms, name)()
    assert plain(x) is not plain(x)


def test_with_cache_and_compose_follow_torch():
    for D in (DD.transforms, TD.transforms):
        exp = D.ExpTransform()
        assert exp.with_cache(0) is exp and exp.with_cache(1)._cache_size == 1
        assert exp.inv.with_cache(1).inv._cache_size == 1
        affine = D.AffineTransform(1.0, 2.0).with_cache(1)
        assert (affine.loc, affine.scale, affine._cache_size) == (1.0, 2.0, 1)
        compose = D.ComposeTransform([D.ExpTransform(), D.AffineTransform(1.0, 2.0)], cache_size=1)
        assert [p._cache_size for p in compose.parts] == [1, 1] and compose.inv.inv is compose
    with pytest.raises(ValueError, match="cache_size must be 0 or 1"):
        DD.transforms.TanhTransform(cache_size=2)


def test_abs_transform_matches_torch():
    x = np.array([-1.5, 0.0, 2.0])
    d, t = DD.transforms.AbsTransform(), TD.transforms.AbsTransform()
    check(lambda v: d(v), lambda v: t(v), x)
    check(lambda v: d.inv(v), lambda v: t.inv(v), np.abs(x))
    assert d.bijective == t.bijective and repr(d.codomain) == repr(t.codomain)
    assert d == DD.transforms.AbsTransform()
