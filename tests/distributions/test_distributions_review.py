"""distgraph.distributions against torch.distributions in float64 for what a review found: Beta's mode
where a concentration is below 1 (torch's, via its Dirichlet, nan cases included), and the
positive_definite constraint's symmetry tolerance (torch's isclose, relative as well as absolute)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions

# (concentration1, concentration0): both above 1, one below, both below, ones (nan in torch)
A = np.array([3.0, 0.5, 2.0, 0.5, 0.3, 0.8, 1.0, 1.0, 0.5, 2.0, 1.0])
B = np.array([2.0, 2.0, 0.5, 0.5, 0.6, 0.8, 1.0, 0.5, 1.0, 1.0, 3.0])


def test_beta_mode_matches_torch_outside_both_above_one():
    d = DD.Beta(dg.tensor(A), dg.tensor(B)).mode.numpy()
    t = TD.Beta(torch.tensor(A), torch.tensor(B)).mode.numpy()
    np.testing.assert_allclose(d, t, rtol=1e-12, equal_nan=True)
    assert ((d >= 0) | np.isnan(d)).all() and ((d <= 1) | np.isnan(d)).all()


def test_beta_mode_gradient_matches_torch_where_both_above_one():
    a, b = np.array([3.0, 1.5]), np.array([2.0, 4.0])
    check(lambda x, y: DD.Beta(x, y).mode, lambda x, y: TD.Beta(x, y).mode, a, b)


@pytest.mark.parametrize(
    "cov",
    [
        [[1000.0, 500.0001], [500.0, 1000.0]],  # off by 1e-4: within torch's rtol 1e-5, past atol 1e-6
        [[1.0, 0.5 + 5e-7], [0.5, 1.0]],  # within atol
    ],
)
def test_positive_definite_accepts_what_torch_calls_symmetric(cov):
    TD.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.tensor(cov))
    DD.MultivariateNormal(dg.zeros(2, dtype=dg.float64), covariance_matrix=dg.tensor(cov))
    c = np.asarray(cov)
    assert bool(DD.constraints.positive_definite.check(dg.tensor(c))) == bool(
        TD.constraints.positive_definite.check(torch.tensor(c))
    )


@pytest.mark.parametrize("cov", [[[1000.0, 500.1], [500.0, 1000.0]], [[1.0, 0.5 + 1e-5], [0.5, 1.0]]])
def test_positive_definite_refuses_what_torch_calls_asymmetric(cov):
    with pytest.raises(ValueError):
        TD.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.tensor(cov))
    with pytest.raises(ValueError, match="positive_definite|PositiveDefinite"):
        DD.MultivariateNormal(dg.zeros(2, dtype=dg.float64), covariance_matrix=dg.tensor(cov))
