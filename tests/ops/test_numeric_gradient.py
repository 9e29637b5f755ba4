"""ops/numeric_gradient.py (torch.gradient) against torch in float64: values and gradients for uniform,
per-dimension and coordinate spacing, edge_order 1 and 2, chosen dims; gradcheck by finite differences
through the input and the coordinates; bad arguments raise torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import InputRangeError, ShapeError
from tests.ops._table import Table, run_gradcheck, run_parity

torch = pytest.importorskip("torch")


def _coords(m, c, n):
    return m.cumsum(c.abs() + 0.5, 0)[:n]  # increasing, unevenly spaced


T = Table()
for eo in (1, 2):
    T.op(f"all-dims-eo{eo}", lambda m, a, eo=eo: m.gradient(a, edge_order=eo), (4, 5))
    T.op(f"scalar-spacing-eo{eo}", lambda m, a, eo=eo: m.gradient(a, spacing=0.7, edge_order=eo), (3, 4))
    T.op(f"spacing-per-dim-eo{eo}", lambda m, a, eo=eo: m.gradient(a, spacing=[2.0, 0.5], edge_order=eo), (3, 6))
    T.op(f"dim-reordered-eo{eo}", lambda m, a, eo=eo: m.gradient(a, dim=(2, 0), edge_order=eo), (3, 2, 4))
    T.op(
        f"coordinates-eo{eo}",
        lambda m, a, c, eo=eo: m.gradient(a, spacing=(_coords(m, c, 5),), dim=1, edge_order=eo),
        (3, 5),
        (5,),
    )
    T.op(
        f"coordinates-both-eo{eo}",
        lambda m, a, c, eo=eo: m.gradient(a, spacing=(_coords(m, c, 4), _coords(m, c, 3)), edge_order=eo),
        (4, 3),
        (4,),
    )
T.op("1d-dim-int", lambda m, a: m.gradient(a, dim=0), (6,))
T.op("minimum-size-eo2", lambda m, a: m.gradient(a, edge_order=2), (3,))


@pytest.mark.parametrize("row", T.rows())
def test_gradient_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradient_gradcheck(row):
    run_gradcheck(row)


def test_integer_input_gives_default_float():
    got, want = dg.gradient(dg.tensor([1, 4, 9, 16])), torch.gradient(torch.tensor([1, 4, 9, 16]))
    assert got[0].dtype == dg.float32
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())


X = dg.tensor(np.zeros((4, 5)))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dg.gradient(X, edge_order=3), InputRangeError, "only supports edge_order=1 and edge_order=2"),
        (lambda: dg.gradient(dg.zeros(2, 5), edge_order=2), InputRangeError, r"at least edge_order\+1"),
        (lambda: dg.gradient(X, spacing=[1.0]), ShapeError, "'self.dim\\(\\) = 2', since dim argument was not given"),
        (lambda: dg.gradient(X, spacing=[1.0], dim=(0, 1)), ShapeError, "spacing argument of length 1 and a dim"),
        (lambda: dg.gradient(X, dim=(0, 0)), ShapeError, "dim 0 appears multiple times"),
        (lambda: dg.gradient(X, dim=2), ShapeError, "Dimension out of range"),
        (lambda: dg.gradient(X, spacing=(dg.arange(3.0),), dim=0), ShapeError, "coordinates for dimension 0"),
    ],
)
def test_gradient_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
