"""Special functions at their infinities and poles against torch float64: polygamma, digamma's gradient, zeta."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

INF, NAN = float("inf"), float("nan")
POINTS = [INF, -INF, NAN, 0.0, -0.0, -1.0, -2.0, -3.0, -1e6, -(2.0**60), -0.5, -7.5, 0.3, 2.5, 1e10]


def _same(actual, expected):
    """Equal up to torch's trigamma series (good to ~1e-10), NaNs included; zeros and infinities by sign too."""
    np.testing.assert_allclose(actual, expected, rtol=1e-9, equal_nan=True)
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers]))


@pytest.mark.parametrize("n", range(6))
def test_polygamma_at_infinities_and_poles(n):
    expected = torch.polygamma(n, torch.tensor(POINTS, dtype=torch.float64)).numpy()
    _same(dg.polygamma(n, dg.tensor(POINTS, dtype=dg.float64)).numpy(), expected)


def test_digamma_gradient_at_its_poles_is_torchs_large_finite_value():
    points = [-1.0, -2.0, -3.0, 0.0, -INF]
    t = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    torch.special.digamma(t).sum().backward()
    x = dg.tensor(points, dtype=dg.float64, requires_grad=True)
    dg.special.digamma(x).sum().backward()
    _same(x.grad.numpy(), t.grad.numpy())
    assert np.isfinite(x.grad.numpy()[:3]).all()


def test_zeta_at_infinities():
    xs, qs = np.meshgrid([INF, -INF, 1.0, 2.0, 0.5, 5.0, NAN], [INF, -INF, 1.0, 0.0, -1.0, -1.5, 3.0, NAN])
    expected = torch.special.zeta(torch.tensor(xs.ravel()), torch.tensor(qs.ravel())).numpy()
    _same(dg.special.zeta(dg.tensor(xs.ravel()), dg.tensor(qs.ravel())).numpy(), expected)
