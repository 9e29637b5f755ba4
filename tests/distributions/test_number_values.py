"""log_prob of a Python number with validation off, where torch accepts one (it broadcasts the number
against the parameters); with validation on both refuse it with torch's ValueError."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import torch

TD = torch.distributions
DD = dg.distributions

CASES = {
    "Bernoulli-probs": (lambda D, p: D.Bernoulli(p, validate_args=False), [0.3, 0.8], [1.0, 0, True, 0.0]),
    "Bernoulli-logits": (lambda D, p: D.Bernoulli(logits=p, validate_args=False), [0.3, -2.0], [1.0, 0]),
    "Poisson": (lambda D, p: D.Poisson(p, validate_args=False), [0.3, 2.0], [2.0, 3]),
    "Geometric": (lambda D, p: D.Geometric(p, validate_args=False), [0.3, 0.6], [2.0, 0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_prob_of_a_python_number_matches_torch(name):
    make, param, values = CASES[name]
    for value in values:
        p_dg = dg.tensor(np.array(param), requires_grad=True)
        p_t = torch.tensor(np.array(param), requires_grad=True)
        ours, theirs = make(DD, p_dg).log_prob(value), make(TD, p_t).log_prob(value)
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)
        assert ours.dtype == dg.float64 and tuple(ours.shape) == tuple(theirs.shape)
        ours.sum().backward(), theirs.sum().backward()
        np.testing.assert_allclose(p_dg.grad.numpy(), p_t.grad.numpy(), rtol=1e-12)


def test_validated_log_prob_refuses_a_number_like_torch():
    for D in (DD, TD):
        with pytest.raises(ValueError, match="must be a Tensor"):
            D.Bernoulli(probs=(dg if D is DD else torch).tensor([0.3])).log_prob(1.0)
