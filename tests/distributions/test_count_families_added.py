"""NegativeBinomial and Multinomial against torch's in float64: log_prob and moments with parameter
gradients (probs or logits), validation errors, expand, and draws' shapes and means."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.family_parity import (
    DD,
    TD,
    check_both_raise,
    check_closed_form,
    check_expand,
    check_sample_moments,
)
from tests.parity import torch

NEGBIN = {
    "probs": lambda D, n, p: D.NegativeBinomial(n, probs=p),
    "logits": lambda D, n, p: D.NegativeBinomial(n, logits=p),
}


@pytest.mark.parametrize("given", sorted(NEGBIN))
@pytest.mark.parametrize("what", ["log_prob", "mean", "variance", "stddev", "mode", "entropy", "cdf"])
@pytest.mark.parametrize("shape", [(2,), (3, 2)])
def test_negative_binomial_matches_torch(given, what, shape):
    rng = np.random.default_rng(0)
    n = rng.uniform(0.5, 5.0, shape[-1:])
    p = rng.uniform(0.1, 0.9, shape) if given == "probs" else rng.uniform(-2.0, 2.0, shape)
    value = rng.integers(0, 8, shape).astype(np.float64)
    check_closed_form(NEGBIN[given], what, [n, p], value)


def test_negative_binomial_zero_count_zero_value_has_probability_one():
    check_closed_form(NEGBIN["probs"], "log_prob", [np.array([0.0, 2.0]), np.array([0.3, 0.6])], np.zeros(2))


def test_negative_binomial_validation_and_expand_match_torch():
    n, p = np.array([2.0, 3.0]), np.array([0.3, 0.6])
    for bad_n, bad_p in [(np.array([-1.0, 2.0]), p), (n, np.array([0.3, 1.0]))]:
        check_both_raise(
            lambda: DD.NegativeBinomial(dg.tensor(bad_n), dg.tensor(bad_p)),
            lambda: TD.NegativeBinomial(torch.tensor(bad_n), torch.tensor(bad_p)),
        )
    check_both_raise(lambda: DD.NegativeBinomial(dg.tensor(n)), lambda: TD.NegativeBinomial(torch.tensor(n)))
    d, t = DD.NegativeBinomial(dg.tensor(n), dg.tensor(p)), TD.NegativeBinomial(torch.tensor(n), torch.tensor(p))
    check_both_raise(lambda: d.log_prob(dg.tensor([0.5, 1.0])), lambda: t.log_prob(torch.tensor([0.5, 1.0])))
    check_expand(NEGBIN["probs"], [n, p], (3, 2), np.array([[0.0, 1.0]] * 3))


def test_negative_binomial_draws_have_torchs_shape_and_mean():
    n, p = np.array([0.7, 4.0]), np.array([0.3, 0.6])
    check_sample_moments(
        DD.NegativeBinomial(dg.tensor(n), dg.tensor(p)), TD.NegativeBinomial(torch.tensor(n), torch.tensor(p))
    )


MULTI = {
    "probs": lambda D, p: D.Multinomial(5, probs=p),
    "logits": lambda D, p: D.Multinomial(5, logits=p),
}
COUNTS = np.array([[1.0, 0.0, 4.0], [2.0, 2.0, 1.0], [0.0, 5.0, 0.0]])


@pytest.mark.parametrize("given", sorted(MULTI))
@pytest.mark.parametrize("what", ["log_prob", "mean", "variance", "entropy", "mode"])
@pytest.mark.parametrize("shape", [(3,), (3, 3)])
def test_multinomial_matches_torch(given, what, shape):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 1.0, shape) if given == "probs" else rng.uniform(-2.0, 2.0, shape)
    # torch's entropy takes log n! in float32 (lgamma of an integer tensor)
    check_closed_form(MULTI[given], what, [p], COUNTS, rtol=1e-6 if what == "entropy" else 1e-7)


def test_multinomial_zero_probability_with_zero_count():
    logits = np.array([0.0, -np.inf, 1.0])
    d, t = DD.Multinomial(3, logits=dg.tensor(logits)), TD.Multinomial(3, logits=torch.tensor(logits))
    value = np.array([1.0, 0.0, 2.0])
    np.testing.assert_allclose(d.log_prob(dg.tensor(value)).item(), t.log_prob(torch.tensor(value)).item())


def test_multinomial_validation_and_expand_match_torch():
    p = np.array([0.2, 0.3, 0.5])
    check_both_raise(
        lambda: DD.Multinomial(2, dg.tensor([0.5, -0.1, 0.6])),
        lambda: TD.Multinomial(2, torch.tensor([0.5, -0.1, 0.6])),
    )
    check_both_raise(
        lambda: DD.Multinomial(2.5, dg.tensor(p)), lambda: TD.Multinomial(2.5, torch.tensor(p)), NotImplementedError
    )
    d, t = DD.Multinomial(3, dg.tensor(p)), TD.Multinomial(3, torch.tensor(p))
    for bad in ([2.0, 2.0, 0.0], [4.0, -1.0, 0.0], [1.0, 1.0]):
        check_both_raise(lambda: d.log_prob(dg.tensor(bad)), lambda: t.log_prob(torch.tensor(bad)))
    assert repr(d.support) == repr(t.support) and d.support.event_dim == 1 and d.support.is_discrete
    check_expand(MULTI["probs"], [p], (4,), np.array([[1.0, 0.0, 4.0]] * 4))


def test_multinomial_draws_have_torchs_shape_and_mean():
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    d, t = DD.Multinomial(7, dg.tensor(p)), TD.Multinomial(7, torch.tensor(p))
    check_sample_moments(d, t)
    x = d.sample((100,))
    assert bool((x.sum(-1) == 7).all()) and x.dtype == dg.float64
