"""The KL pairs torch registers for Pareto and ContinuousBernoulli, against torch's in float64 with
gradients (+inf where p's support reaches outside q's)."""

import numpy as np
import pytest

from tests.distributions.family_parity import DD, TD
from tests.parity import check

# a and b are positive vectors; each builder makes a distribution of them
BUILD = {
    "Pareto": lambda D, a, b: D.Pareto(a, b + 1.5),
    "ParetoHeavy": lambda D, a, b: D.Pareto(a, b * 0.5),
    "ContinuousBernoulli": lambda D, a, b: D.ContinuousBernoulli(logits=a - b),
    "Exponential": lambda D, a, b: D.Exponential(b),
    "Gamma": lambda D, a, b: D.Gamma(a, b),
    "Normal": lambda D, a, b: D.Normal(a - 1, b),
    "Uniform": lambda D, a, b: D.Uniform(a - 1, a + b),
    "UnitUniform": lambda D, a, b: D.Uniform(a * 0.1, 1 - b * 0.1),
    "Beta": lambda D, a, b: D.Beta(a, b),
    "Laplace": lambda D, a, b: D.Laplace(a, b),
    "Gumbel": lambda D, a, b: D.Gumbel(a, b),
}
PAIRS = [
    ("Pareto", "Pareto"),
    ("Pareto", "Exponential"),
    ("ParetoHeavy", "Exponential"),
    ("Pareto", "Gamma"),
    ("Pareto", "Normal"),
    ("ParetoHeavy", "Normal"),
    ("Uniform", "Pareto"),
    ("ContinuousBernoulli", "ContinuousBernoulli"),
    ("Beta", "ContinuousBernoulli"),
    ("UnitUniform", "ContinuousBernoulli"),
    ("Uniform", "ContinuousBernoulli"),
    ("ContinuousBernoulli", "Exponential"),
    ("ContinuousBernoulli", "Normal"),
    ("ContinuousBernoulli", "Uniform"),
    ("ContinuousBernoulli", "Pareto"),
    ("Beta", "Pareto"),
    ("Exponential", "Pareto"),
    ("Gamma", "ContinuousBernoulli"),
    ("Normal", "Pareto"),
    ("Laplace", "ContinuousBernoulli"),
    ("Gumbel", "Pareto"),
    ("Pareto", "Beta"),
    ("Pareto", "Uniform"),
]


@pytest.mark.parametrize("p_name, q_name", PAIRS)
def test_kl_pair_matches_torch(p_name, q_name):
    def run(D):
        return lambda a, b: D.kl_divergence(BUILD[p_name](D, a, b), BUILD[q_name](D, b + 0.3, a))

    check(run(DD), run(TD), np.array([0.4, 1.7, 0.9]), np.array([1.3, 0.6, 2.2]))
