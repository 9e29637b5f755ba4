"""ops/kernels.py gives the plain numpy expression's bits, above and below its size threshold, with the
values where a shortcut could differ: NaN (either sign), ±0, ±inf, subnormals."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops import kernels

_SPECIAL = [np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40, 1.5, -1.5]


def _values(dtype, n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(dtype)
    x[: len(_SPECIAL)] = np.array(_SPECIAL).astype(dtype)
    return x.reshape(-1, 8)


def _bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n", [16, kernels.BIG * 2])
def test_relu_matches_maximum_with_zero(dtype, n):
    x = _values(dtype, n)
    got = kernels.relu(np, x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(_bits(got), _bits(np.maximum(x, 0)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n", [16, kernels.BIG * 2])
def test_keep_or_zero_matches_where(dtype, n):
    g = _values(dtype, n)
    keep = np.roll(g, 3) > 0  # a mask unrelated to g's own values
    got = kernels.keep_or_zero(np, keep, g)
    assert got.dtype == g.dtype
    np.testing.assert_array_equal(_bits(got), _bits(np.where(keep, g, 0)))


def test_keep_or_zero_broadcasts_a_gradient_row_against_the_mask():
    g = _values(np.float32, 64)[:1].repeat(kernels.BIG, 0)[:, :1]  # (BIG, 1)
    keep = np.random.default_rng(1).random((kernels.BIG, 3)) > 0.5
    np.testing.assert_array_equal(_bits(kernels.keep_or_zero(np, keep, g)), _bits(np.where(keep, g, 0)))


def test_relu_of_a_large_tensor_and_its_gradient_at_nan_and_zero():
    x0 = _values(np.float64, kernels.BIG * 2)
    x = dg.tensor(x0, requires_grad=True)
    y = x.relu()
    g = np.random.default_rng(2).standard_normal(x0.shape)
    y.backward(dg.tensor(g))
    np.testing.assert_array_equal(_bits(y.detach().numpy()), _bits(np.maximum(x0, 0)))
    out = np.maximum(x0, 0)
    np.testing.assert_array_equal(_bits(x.grad.numpy()), _bits(np.where(out <= 0, 0, g)))


def test_where_gradients_of_large_tensors_are_where_of_the_gradient():
    rng = np.random.default_rng(3)
    shape = (kernels.BIG // 8, 16)
    a, b = (dg.tensor(rng.standard_normal(shape), requires_grad=True) for _ in range(2))
    cond = rng.random(shape) > 0.5
    g = _values(np.float64, shape[0] * shape[1]).reshape(shape)
    dg.where(dg.tensor(cond), a, b).backward(dg.tensor(g))
    np.testing.assert_array_equal(_bits(a.grad.numpy()), _bits(np.where(cond, g, 0)))
    np.testing.assert_array_equal(_bits(b.grad.numpy()), _bits(np.where(cond, 0, g)))
