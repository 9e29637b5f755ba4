"""torch.special's orthogonal polynomials: values against torch on a grid of x and n (negative, zero,
small, past the trigonometric switch, fractional, non-finite, past Hermite's limit), dtypes, scalar
operands, and no gradient (as torch)."""

import math

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import torch

NAMES = [
    "chebyshev_polynomial_t",
    "chebyshev_polynomial_u",
    "chebyshev_polynomial_v",
    "chebyshev_polynomial_w",
    "shifted_chebyshev_polynomial_t",
    "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w",
    "hermite_polynomial_h",
    "hermite_polynomial_he",
    "laguerre_polynomial_l",
    "legendre_polynomial_p",
]
X = np.concatenate([np.linspace(-1.5, 1.5, 31), [0.0, 1.0, -1.0, 0.25, 0.75, 2.0, -3.0, math.inf, -math.inf]])
N = np.array([-2, -1, 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 15, 40, 2.7, -0.5, math.nan, math.inf, -math.inf, 513, 600])


@pytest.mark.parametrize("name", NAMES)
def test_values_match_torch_on_a_grid(name):
    x, n = np.meshgrid(X, N)
    out = getattr(dg.special, name)(dg.tensor(x), dg.tensor(n)).numpy()
    ref = getattr(torch.special, name)(torch.tensor(x), torch.tensor(n)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_nan_x_gives_nan(name):
    """torch's kernels return an uninitialized value for x = NaN and n >= 2 (their loop stops before its
    first step); NaN is the value."""
    out = getattr(dg.special, name)(dg.tensor([math.nan] * 3, dtype=dg.float64), dg.tensor([2.0, 3.0, 12.0]))
    assert np.isnan(out.numpy()).all()


@pytest.mark.parametrize("name", NAMES)
def test_integer_orders_float32_and_scalars_take_torchs_dtype(name):
    x32 = np.array([0.3, -0.7, 1.2], dtype=np.float32)
    cases = [
        (dg.tensor(x32), dg.tensor([2, 3, 9]), torch.tensor(x32), torch.tensor([2, 3, 9])),
        (dg.tensor(x32), 4, torch.tensor(x32), 4),
        (0.5, dg.tensor([1, 2, 10]), 0.5, torch.tensor([1, 2, 10])),
        (dg.tensor([1, 2]), dg.tensor([2, 3]), torch.tensor([1, 2]), torch.tensor([2, 3])),
        (dg.tensor(x32.astype(np.float64)), 3, torch.tensor(x32.astype(np.float64)), 3),
    ]
    fn, ref_fn = getattr(dg.special, name), getattr(torch.special, name)
    for x, n, tx, tn in cases:
        out, ref = fn(x, n), ref_fn(tx, tn)
        assert str(out.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1], (x, n)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_hermite_limit_is_lower_in_float32_as_torch():
    for dt in (np.float32, np.float64):
        n = np.array([128, 129, 512, 513])
        x = np.full(4, 0.01, dtype=dt)
        out = dg.special.hermite_polynomial_he(dg.tensor(x), dg.tensor(n)).numpy()
        ref = torch.special.hermite_polynomial_he(torch.tensor(x), torch.tensor(n)).numpy()
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_as_torch(name):
    x = dg.tensor([0.3, 0.6], dtype=dg.float64, requires_grad=True)
    out = getattr(dg.special, name)(x, 3)
    ref = getattr(torch.special, name)(torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True), 3)
    assert not out.requires_grad and not ref.requires_grad


def test_float16_refused_naming_the_op_as_torch():
    with pytest.raises(dg.errors.DTypeError, match="\"legendre_polynomial_p\" not implemented for 'Half'"):
        dg.special.legendre_polynomial_p(dg.tensor([0.5], dtype=dg.float16), 2)
    with pytest.raises(NotImplementedError, match="not implemented for 'Half'"):
        torch.special.legendre_polynomial_p(torch.tensor([0.5], dtype=torch.float16), 2)


def test_broadcasts_x_against_n():
    x = np.linspace(-0.9, 0.9, 4)[:, None]
    n = np.arange(6)[None, :]
    out = dg.special.chebyshev_polynomial_u(dg.tensor(x), dg.tensor(n))
    assert tuple(out.shape) == (4, 6)
    ref = torch.special.chebyshev_polynomial_u(torch.tensor(x), torch.tensor(n))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12)
