"""solve_triangular, lu_factor / lu / lu_unpack / lu_solve, cholesky_solve / cholesky_inverse,
triangular_solve and the _ex forms against torch float64 (values, pivots, gradients, central differences,
double backward, batching), what they give for singular inputs, and their errors."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check


def _w(m, a):
    """a + 4·I: safely invertible, and so are both its triangles."""
    return a + 4 * m.eye(a.shape[-1], dtype=a.dtype)


def _spd(m, a):
    return a @ a.mT + m.eye(a.shape[-1], dtype=a.dtype)


def _st(m, a, b, **kw):
    return m.linalg.solve_triangular(_w(m, a), b, **kw)


def _lu_solve(m, a, b, **kw):
    lu, piv = m.linalg.lu_factor(_w(m, a))
    return m.linalg.lu_solve(lu, piv, b, **kw)


T = Table()
T.op("solve_triangular-upper", lambda m, a, b: _st(m, a, b, upper=True), (3, 3), (3, 2), double=True)
T.op("solve_triangular-lower", lambda m, a, b: _st(m, a, b, upper=False), (4, 4), (4, 1))
T.op("solve_triangular-right", lambda m, a, b: _st(m, a, b, upper=True, left=False), (3, 3), (2, 3))
T.op("solve_triangular-unit", lambda m, a, b: _st(m, a, b, upper=False, unitriangular=True), (3, 3), (3, 2))
T.op("solve_triangular-bcast", lambda m, a, b: _st(m, a, b, upper=True), (2, 3, 3), (3, 2))
T.op(
    "solve_triangular-unit-right",
    lambda m, a, b: _st(m, a, b, upper=True, left=False, unitriangular=True),
    (3, 3),
    (1, 2, 3),
)
T.op("lu_factor", lambda m, a: m.linalg.lu_factor(a), (4, 4), double=False)
T.op("lu_factor-batched", lambda m, a: m.linalg.lu_factor(a), (2, 3, 3))
T.op("lu_factor-tall", lambda m, a: m.linalg.lu_factor(a), (5, 3))
T.op("lu_factor-wide", lambda m, a: m.linalg.lu_factor(a), (3, 5))
T.op("lu_factor_ex", lambda m, a: m.linalg.lu_factor_ex(a), (3, 3))
T.op("lu_factor-cubes", lambda m, a: (m.linalg.lu_factor(a).LU ** 3).sum(), (3, 3), double=True)
T.op("lu", lambda m, a: m.linalg.lu(a), (4, 4))
T.op("lu-tall", lambda m, a: m.linalg.lu(a), (2, 5, 3))
T.op("lu-wide", lambda m, a: m.linalg.lu(a), (3, 5))
T.op("lu-only-U-wide", lambda m, a: m.linalg.lu(a).U, (3, 5))
T.op("lu-only-L-tall", lambda m, a: m.linalg.lu(a).L, (5, 3))
T.op("lu_unpack", lambda m, a: m.lu_unpack(*m.linalg.lu_factor(a)), (2, 3, 3))
T.op("lu-old", lambda m, a: m.lu(a, get_infos=True), (3, 3))
T.op("lu-method", lambda m, a: a.lu(), (3, 3))
T.op("lu_solve", lambda m, a, b: _lu_solve(m, a, b), (3, 3), (3, 2), double=True)
T.op("lu_solve-adjoint", lambda m, a, b: _lu_solve(m, a, b, adjoint=True), (3, 3), (3, 2))
T.op("lu_solve-right", lambda m, a, b: _lu_solve(m, a, b, left=False), (2, 3, 3), (2, 2, 3))
T.op("lu_solve-right-adjoint", lambda m, a, b: _lu_solve(m, a, b, left=False, adjoint=True), (3, 3), (4, 3))
T.op("lu_solve-old", lambda m, a, b: m.lu_solve(b, *m.linalg.lu_factor(_w(m, a))), (4, 4), (4, 1))
T.op("lu_solve-method", lambda m, a, b: b.lu_solve(*m.linalg.lu_factor(_w(m, a))), (3, 3), (3, 2))
T.op("cholesky_solve", lambda m, a, b: m.cholesky_solve(b, m.linalg.cholesky(_spd(m, a))), (3, 3), (3, 2), double=True)
T.op(
    "cholesky_solve-upper",
    lambda m, a, b: b.cholesky_solve(m.linalg.cholesky(_spd(m, a), upper=True), upper=True),
    (2, 3, 3),
    (2, 3, 2),
)
# torch's gradient treats the whole of L as the factor while the solve reads one triangle: with entries in
# the other triangle it is torch's formula, not the derivative central differences measure
T.op(
    "cholesky_solve-full-L", lambda m, a, b: m.cholesky_solve(b, _w(m, a).tril() + 0.1), (3, 3), (3, 2), gradcheck=False
)
T.op("cholesky_inverse", lambda m, a: m.cholesky_inverse(m.linalg.cholesky(_spd(m, a))), (3, 3), double=True)
T.op("cholesky_inverse-upper", lambda m, a: m.linalg.cholesky(_spd(m, a)).mT.cholesky_inverse(upper=True), (3, 3))
T.op("triangular_solve", lambda m, a, b: m.triangular_solve(b, _w(m, a)), (3, 3), (3, 2))
T.op("triangular_solve-transpose-lower", lambda m, a, b: b.triangular_solve(_w(m, a), False, True), (3, 3), (3, 2))
T.op("triangular_solve-unit", lambda m, a, b: m.triangular_solve(b, a, unitriangular=True), (2, 3, 3), (2, 3, 1))
T.op("solve_ex", lambda m, a, b: m.linalg.solve_ex(_w(m, a), b), (3, 3), (3,))
T.op("inv_ex", lambda m, a: m.linalg.inv_ex(_w(m, a)), (2, 3, 3))
T.op("cholesky_ex", lambda m, a: m.linalg.cholesky_ex(_spd(m, a)), (3, 3))
T.op("cholesky_ex-upper", lambda m, a: m.linalg.cholesky_ex(_spd(m, a), upper=True), (2, 3, 3))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def test_solve_triangular_reads_only_its_triangle_and_gives_inf_at_a_zero_pivot_like_torch():
    a = np.array([[2.0, 9.0], [np.nan, 0.0]])  # the NaN lies in the unread triangle
    b = np.ones((2, 1))
    got = dg.linalg.solve_triangular(dg.tensor(a), dg.tensor(b), upper=True).numpy()
    want = torch.linalg.solve_triangular(torch.tensor(a), torch.tensor(b), upper=True).numpy()
    np.testing.assert_array_equal(np.isinf(got) | np.isnan(got), np.isinf(want) | np.isnan(want))


def test_lu_factor_of_a_singular_matrix_raises_and_lu_factor_ex_reports_info_like_torch():
    singular = np.array([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match=r"torch.linalg.lu_factor: \(Batch element 0\): U\[2,2\] is zero"):
        dg.linalg.lu_factor(dg.tensor(singular))
    got, want = dg.linalg.lu_factor_ex(dg.tensor(singular)), torch.linalg.lu_factor_ex(torch.tensor(singular))
    assert got.info.tolist() == want.info.tolist() == [2, 0]
    np.testing.assert_allclose(got.LU.numpy(), want.LU.numpy())


def test_inv_ex_and_solve_ex_report_singular_matrices_in_info_like_torch():
    a = np.stack([np.zeros((2, 2)), np.eye(2) * 2])
    got, want = dg.linalg.inv_ex(dg.tensor(a)), torch.linalg.inv_ex(torch.tensor(a))
    assert got.info.tolist() == want.info.tolist() == [1, 0]
    np.testing.assert_allclose(got.inverse.numpy()[1], want.inverse.numpy()[1])
    assert np.isnan(got.inverse.numpy()[0]).all()
    got = dg.linalg.solve_ex(dg.tensor(a), dg.ones(2, 2, dtype=dg.float64))
    assert got.info.tolist() == [1, 0] and np.allclose(got.result.numpy()[1], 0.5)
    with pytest.raises(ValueError, match="linalg.inv_ex: .*singular"):
        dg.linalg.inv_ex(dg.tensor(a), check_errors=True)


@pytest.mark.parametrize(
    "a",
    [-np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([[4.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])],
)
def test_cholesky_ex_info_is_the_failing_minor_like_torch(a):
    got, want = dg.linalg.cholesky_ex(dg.tensor(a)), torch.linalg.cholesky_ex(torch.tensor(a))
    assert got.info.item() == want.info.item() > 0
    with pytest.raises(ValueError, match="linalg.cholesky_ex: .*not positive-definite"):
        dg.linalg.cholesky_ex(dg.tensor(a), check_errors=True)


def test_cholesky_ex_batch_keeps_the_good_factors():
    a = np.stack([np.eye(2) * 4, -np.eye(2)])
    got = dg.linalg.cholesky_ex(dg.tensor(a))
    assert got.info.tolist() == [0, 1]
    np.testing.assert_allclose(got.L.numpy()[0], np.eye(2) * 2)


def test_lu_reconstructs_batched_rectangular_inputs():
    a = np.random.default_rng(4).standard_normal((3, 2, 4, 6))
    p, low, up = dg.linalg.lu(dg.tensor(a))
    np.testing.assert_allclose((p @ low @ up).numpy(), a, atol=1e-12)


def test_solvers_capture_into_a_compiled_graph():
    def fn(a, b):
        lu, piv = dg.linalg.lu_factor(a)
        return dg.linalg.lu_solve(lu, piv, b) + dg.linalg.solve_triangular(a, b, upper=True)

    rng = np.random.default_rng(6)
    x, y = dg.tensor(rng.standard_normal((3, 3)) + 4 * np.eye(3)), dg.tensor(rng.standard_normal((3, 2)))
    np.testing.assert_allclose(dg.compile(fn, [x, y])(x, y).numpy(), fn(x, y).numpy(), rtol=1e-10)


def test_lu_solve_gradient_reaches_lu_and_b_like_torch():
    rng = np.random.default_rng(7)
    lu, piv = torch.linalg.lu_factor(torch.tensor(rng.standard_normal((3, 3)) + 4 * np.eye(3)))
    check(
        lambda lu_, b: dg.linalg.lu_solve(lu_, dg.tensor(piv.numpy()), b, adjoint=True),
        lambda lu_, b: torch.linalg.lu_solve(lu_, piv, b, adjoint=True),
        lu.numpy(),
        rng.standard_normal((3, 2)),
    )


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (
            lambda: dg.linalg.solve_triangular(dg.zeros(5, 3), dg.zeros(5, 2), upper=True),
            ValueError,
            r"linalg.solve_triangular: A must be batches of square matrices.*\(5, 3\)",
        ),
        (
            lambda: dg.linalg.solve_triangular(dg.eye(3), dg.zeros(5, 2), upper=True),
            ValueError,
            r"linalg.solve_triangular: Incompatible shapes of A and B for the equation AX = B \(3x3 and 5x2\)",
        ),
        (
            lambda: dg.linalg.lu_solve(*dg.linalg.lu_factor(dg.eye(3)), dg.zeros(5, 2)),
            ValueError,
            r"linalg.lu_solve: Incompatible shapes of A and B for the equation AX = B \(3x3 and 5x2\)",
        ),
        (lambda: dg.linalg.lu_factor(dg.tensor([[1, 2], [3, 4]])), TypeError, "lu_factor: Expected a floating point"),
        (lambda: dg.linalg.lu_factor(dg.eye(2), pivot=False), NotImplementedError, "LU without pivoting"),
        (lambda: dg.linalg.lu_factor(dg.zeros(3, 3)), ValueError, r"U\[1,1\] is zero"),
        (lambda: dg.cholesky_solve(dg.zeros(3, 1), dg.zeros(2, 3)), ValueError, "cholesky_solve: A must be batches"),
        (
            lambda: dg.linalg.solve_triangular(dg.eye(2), dg.eye(2, dtype=dg.float64), upper=True),
            TypeError,
            "solve_triangular: B must be a Tensor of A's dtype",
        ),
    ],
)
def test_errors_name_the_op(fn, error, match):
    with pytest.raises(error, match=match):
        fn()
