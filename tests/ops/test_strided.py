"""ops/strided.py against torch in float64: as_strided values, memory sharing, gradients (overlapping windows
summed) vs torch and finite differences, double backward, a write through the view; empty_strided's layout;
bad sizes, strides and offsets raise torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import InputRangeError, ShapeError
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

T = Table()
T.op("overlapping-windows", lambda m, a: m.as_strided(a, (3, 3), (1, 1), 2), (12,))
T.op("overlapping-squared", lambda m, a: m.as_strided(a, (3, 3), (1, 1), 2) ** 2, (12,), double=True)
T.op("transpose-of-rows-cubed", lambda m, a: a.as_strided((4, 3), (1, 4)) ** 3, (3, 4), double=True)
T.op("every-third", lambda m, a: a.as_strided((4,), (3,)), (12,))
T.op("3d-with-offset", lambda m, a: a.as_strided((2, 2, 2), (4, 2, 1), 1), (2, 6))
T.op("broadcast-stride-0", lambda m, a: a.as_strided((3, 4), (0, 1)).exp(), (5,), double=True)
T.op("scalar", lambda m, a: a.as_strided((), (), 5), (12,))
T.op("empty", lambda m, a: a.as_strided((0, 3), (3, 1)), (12,), gradcheck=False)


@pytest.mark.parametrize("row", T.rows())
def test_as_strided_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_as_strided_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_as_strided_double_backward(row):
    run_double_backward(row)


def test_as_strided_shares_memory():
    x = dg.arange(12.0)
    x.as_strided((2, 2), (1, 2), 1).mul_(10)
    np.testing.assert_array_equal(x.numpy()[:5], [0.0, 10.0, 20.0, 30.0, 40.0])


def test_write_through_view_reaches_base_gradient():
    a = np.arange(1.0, 13.0)

    def run(m, x):
        y = x * 1
        y.as_strided((2, 2), (1, 2), 1).mul_(x[:4].reshape(2, 2))
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy()

    got = run(dg, dg.tensor(a, requires_grad=True))
    want = run(torch, torch.tensor(a, requires_grad=True))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_empty_strided_layout_as_torch():
    got, want = dg.empty_strided((2, 3), (1, 2)), torch.empty_strided((2, 3), (1, 2))
    assert got.shape == want.shape and got.stride() == want.stride() and got.dtype == dg.float32
    d = dg.empty_strided((4,), (2,), dtype=dg.float64, requires_grad=True)
    assert d.dtype == dg.float64 and d.requires_grad and d.stride() == (2,)


X = dg.arange(6.0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: X.as_strided((3, 3), (1, 1), 5), InputRangeError, "requiring a storage size of 40 are out of bounds"),
        (lambda: X.as_strided((2,), (1, 2)), ShapeError, "mismatch in length of strides and shape"),
        (lambda: X.as_strided((2,), (-1,)), ShapeError, r"Negative strides are not supported.*\[-1\]"),
        (lambda: X.as_strided((2, -3), (1, 1)), ShapeError, "negative dimension -3"),
        (lambda: X.as_strided((2, 2), (1, 2), -1), InputRangeError, "invalid storage offset -1"),
        (lambda: X.reshape(2, 3).t().as_strided((2,), (1,)), ShapeError, "not contiguous"),
        (lambda: dg.empty_strided((2, 3), (1,)), ShapeError, r"empty_strided: dimensionality of sizes \(2\)"),
        (lambda: dg.empty_strided((2, -3), (1, 1)), ShapeError, "empty_strided: negative sizes"),
    ],
)
def test_strided_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
