"""ContinuousBernoulli against torch's in float64, inside and outside its Taylor region around p = ½:
closed forms with gradients in probs or logits, validation, expand, and draws (moments, pathwise gradient)."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.family_parity import (
    DD,
    TD,
    check_both_raise,
    check_closed_form,
    check_expand,
    check_rsample_gradient,
    check_sample_moments,
)
from tests.parity import torch

CTORS = {
    "probs": lambda D, p: D.ContinuousBernoulli(probs=p),
    "logits": lambda D, p: D.ContinuousBernoulli(logits=p),
}
PARAMS = {
    "probs": np.array([[0.1, 0.4995, 0.7], [0.3, 0.5005, 0.95]]),
    "logits": np.array([[-2.0, 0.001, 0.5], [1.5, -0.003, 3.0]]),
}


@pytest.mark.parametrize("given", sorted(CTORS))
@pytest.mark.parametrize("what", ["log_prob", "cdf", "icdf", "entropy", "mean", "variance", "stddev", "mode"])
@pytest.mark.parametrize("rows", [1, 2])
def test_closed_forms_and_gradients_match_torch(given, what, rows):
    params = PARAMS[given][:rows] if rows == 2 else PARAMS[given][0]
    value = np.random.default_rng(0).uniform(0.05, 0.95, params.shape)
    check_closed_form(CTORS[given], what, [params], value)


def test_validation_matches_torch():
    bad = np.array([0.3, 1.5])
    check_both_raise(
        lambda: DD.ContinuousBernoulli(dg.tensor(bad), validate_args=True),
        lambda: TD.ContinuousBernoulli(torch.tensor(bad), validate_args=True),
    )
    check_both_raise(lambda: DD.ContinuousBernoulli(), lambda: TD.ContinuousBernoulli())
    d, t = DD.ContinuousBernoulli(dg.tensor([0.3, 0.6])), TD.ContinuousBernoulli(torch.tensor([0.3, 0.6]))
    check_both_raise(lambda: d.log_prob(dg.tensor([0.5, 1.2])), lambda: t.log_prob(torch.tensor([0.5, 1.2])))


def test_expand_matches_torch():
    check_expand(CTORS["logits"], [np.array([-1.0, 0.5])], (3, 2), np.full((3, 2), 0.25))


def test_draws_have_torchs_shape_and_mean_and_unbiased_gradients():
    p = np.array([0.1, 0.5, 0.8])
    check_sample_moments(DD.ContinuousBernoulli(dg.tensor(p)), TD.ContinuousBernoulli(torch.tensor(p)))
    check_rsample_gradient(CTORS["probs"], [0.8])
    check_rsample_gradient(CTORS["logits"], [-1.2])
