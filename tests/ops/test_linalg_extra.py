"""linalg_extra's products against torch float64 (forward, gradient, gradcheck, double backward), their
dtypes for integer inputs, in-place forms, and the shape errors they raise."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check

T = Table()
T.op("addmv", lambda m, i, a, v: m.addmv(i, a, v), (3,), (3, 4), (4,), double=True)
T.op("addmv-beta-alpha-bcast", lambda m, i, a, v: m.addmv(i, a, v, beta=0.5, alpha=-2), (1,), (3, 4), (4,))
T.op("addmv-method", lambda m, i, a, v: i.addmv(a, v, alpha=3), (3,), (3, 4), (4,))
T.op("addr", lambda m, i, a, b: m.addr(i, a, b, beta=2, alpha=0.5), (3, 4), (3,), (4,), double=True)
T.op("addr-bcast", lambda m, i, a, b: i.addr(a, b), (4,), (3,), (4,))
T.op("baddbmm", lambda m, i, a, b: m.baddbmm(i, a, b, beta=0.5, alpha=2), (2, 3, 5), (2, 3, 4), (2, 4, 5), double=True)
T.op("baddbmm-bcast", lambda m, i, a, b: i.baddbmm(a, b), (5,), (2, 3, 4), (2, 4, 5))
T.op("addbmm", lambda m, i, a, b: m.addbmm(i, a, b, beta=-1, alpha=0.5), (3, 5), (2, 3, 4), (2, 4, 5), double=True)
T.op("addbmm-method", lambda m, i, a, b: i.addbmm(a, b), (3, 5), (2, 3, 4), (2, 4, 5))
T.op("inner", lambda m, a, b: m.inner(a, b), (2, 3, 4), (5, 4), double=True)
T.op("inner-1d", lambda m, a, b: a.inner(b), (4,), (4,))
T.op("inner-0d", lambda m, a, b: m.inner(a, b), (), (3, 2))
T.op("vdot", lambda m, a, b: m.vdot(a, b), (5,), (5,))
T.op("kron", lambda m, a, b: m.kron(a, b), (2, 3), (3, 2), double=True)
T.op("kron-ranks", lambda m, a, b: a.kron(b), (2,), (2, 2, 3))
T.op("ger", lambda m, a, b: m.ger(a, b), (3,), (4,))
T.op("tensordot", lambda m, a, b: m.tensordot(a, b), (2, 3, 4), (3, 4, 5), double=True)
T.op("tensordot-int", lambda m, a, b: m.tensordot(a, b, 1), (2, 3), (3, 4))
T.op("tensordot-0", lambda m, a, b: m.tensordot(a, b, 0), (2,), (3,))
T.op("tensordot-lists", lambda m, a, b: m.tensordot(a, b, ([0, 2], [2, 1])), (2, 3, 4), (5, 4, 2))
T.op("trace", lambda m, a: m.trace(a), (3, 4))
T.op("trace-method", lambda m, a: a.trace(), (4, 2))
T.op("diff", lambda m, a: m.diff(a), (3, 5))
T.op("diff-n2-dim0", lambda m, a: m.diff(a, n=2, dim=0), (4, 3))
T.op("diff-prepend-append", lambda m, a, p, q: m.diff(a, dim=1, prepend=p, append=q), (3, 4), (3, 2), (3, 1))
T.op("diff-method-too-high", lambda m, a: a.diff(n=6), (2, 4))
T.op("cross", lambda m, a, b: m.cross(a, b, dim=1), (4, 3), (4, 3), double=True)
T.op("cross-bcast-default-dim", lambda m, a, b: m.cross(a, b), (3, 2), (3, 1))
T.op("cross-method-neg-dim", lambda m, a, b: a.cross(b, dim=-1), (2, 5, 3), (1, 5, 3))
for p in (2, 1, 3, float("inf"), 0.5):
    T.op(f"dist-{p}", lambda m, a, b, p=p: m.dist(a, b, p), (3, 4), (4,), double=p == 2)
T.op("dist-method", lambda m, a, b: a.dist(b), (3,), (3,))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def test_beta_zero_ignores_nan_input_and_gives_it_a_zero_gradient_like_torch():
    rng = np.random.default_rng(0)
    inp = np.array([np.nan, np.inf, 1.0])
    check(
        lambda i, a, v: dg.addmv(i, a, v, beta=0),
        lambda i, a, v: torch.addmv(i, a, v, beta=0),
        inp,
        rng.standard_normal((3, 2)),
        rng.standard_normal(2),
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, a: m.trace(a),
        lambda m, a: m.diff(a, dim=0),
        lambda m, a: m.diff(a > 0, dim=1),
        lambda m, a: m.kron(a, a),
        lambda m, a: m.inner(a, a),
        lambda m, a: m.tensordot(a, a.T, 1),
        lambda m, a: m.cross(a, a.flip(0), dim=0),
        lambda m, a: m.addr(a[0], a[0], a[1]),
        lambda m, a: m.addmv(a[0], a, a[0], beta=2, alpha=3),
    ],
)
def test_integer_and_bool_inputs_take_torch_dtypes(fn):
    values = np.array([[2, -1, 3], [0, 4, -2], [5, 1, 1]])
    got, want = fn(dg, dg.tensor(values)), fn(torch, torch.tensor(values))
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("name", ["addmv_", "addr_", "baddbmm_", "addbmm_"])
def test_inplace_products_match_torch(name):
    rng = np.random.default_rng(1)
    shapes = {"addmv_": [(3,), (3, 4), (4,)], "addr_": [(3, 4), (3,), (4,)]}
    shapes.update({"baddbmm_": [(2, 3, 5), (2, 3, 4), (2, 4, 5)], "addbmm_": [(3, 5), (2, 3, 4), (2, 4, 5)]})
    arrays = [rng.standard_normal(s) for s in shapes[name]]

    def run(i, a, b):
        return getattr(i * 1, name)(a, b, beta=0.5, alpha=2)

    check(run, run, *arrays)
    got, want = dg.tensor(arrays[0]), torch.tensor(arrays[0])
    if name == "addmv_":  # torch's namespace has this one
        dg.addmv_(got, dg.tensor(arrays[1]), dg.tensor(arrays[2]))
        torch.addmv_(want, torch.tensor(arrays[1]), torch.tensor(arrays[2]))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: dg.addmv(dg.zeros(3), dg.zeros(3), dg.zeros(3)), r"addmv: mat must be 2-D.*\(3,\)"),
        (lambda: dg.addmv(dg.zeros(4), dg.zeros(3, 2), dg.zeros(2)), r"addmv: input of shape \(4,\)"),
        (lambda: dg.addr(dg.zeros(3, 3), dg.zeros(3, 1), dg.zeros(3)), "addr: vec1 must be 1-D"),
        (lambda: dg.baddbmm(dg.zeros(1), dg.zeros(2, 3), dg.zeros(2, 3, 4)), "baddbmm: batch1 must be 3-D"),
        (lambda: dg.trace(dg.zeros(2, 2, 2)), "trace: input must be 2-D"),
        (lambda: dg.inner(dg.zeros(2, 3), dg.zeros(4)), "inner: last dims differ"),
        (lambda: dg.tensordot(dg.zeros(2, 3), dg.zeros(4, 3), 1), "tensordot: contracted dims"),
        (lambda: dg.tensordot(dg.zeros(2), dg.zeros(2), 3), "tensordot: dims must be in"),
        (lambda: dg.cross(dg.zeros(2, 4), dg.zeros(2, 4)), "cross: no dimension of size 3"),
        (lambda: dg.cross(dg.zeros(3, 4), dg.zeros(3, 4), dim=1), "cross: dimension 1 does not have size 3"),
        (lambda: dg.diff(dg.tensor(1.0)), "diff: expected at least a 1-D"),
        (lambda: dg.cross(dg.zeros(2, 3), dg.zeros(3)), "cross: inputs must have the same number of dimensions"),
        (lambda: dg.vdot(dg.zeros(2, 2), dg.zeros(2)), "vdot: input must be 1-D"),
    ],
)
def test_shape_errors_name_the_op(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


# ---- functions of square matrices ---------------------------------------------------------------
def _well_conditioned(m, a):
    """a + 4·I: random matrices made safely invertible (det > 0 too)."""
    return a + 4 * m.eye(a.shape[-1], dtype=a.dtype)


def _spd(m, a):
    """a·aᵀ + I: symmetric positive-definite."""
    return a @ a.transpose(-2, -1) + m.eye(a.shape[-1], dtype=a.dtype)


M = Table()
M.op("inverse", lambda m, a: m.inverse(_well_conditioned(m, a)), (3, 3), double=True)
M.op("inverse-batched", lambda m, a: _well_conditioned(m, a).inverse(), (2, 4, 4))
M.op("linalg.inv", lambda m, a: m.linalg.inv(_well_conditioned(m, a)), (3, 3))
M.op("det", lambda m, a: m.det(a), (3, 3), double=True)
M.op("det-batched-method", lambda m, a: a.det(), (2, 2, 2))
M.op("linalg.det", lambda m, a: m.linalg.det(_well_conditioned(m, a)), (4, 4))
M.op("slogdet", lambda m, a: m.slogdet(a), (3, 3))
M.op("slogdet-batched", lambda m, a: m.linalg.slogdet(a)[1], (2, 3, 3), double=True)
M.op("logdet", lambda m, a: m.logdet(_well_conditioned(m, a)), (3, 3), double=True)
M.op("logdet-negative", lambda m, a: a.logdet(), (2, 3, 3), gradcheck=False)
M.op("solve", lambda m, a, b: m.linalg.solve(_well_conditioned(m, a), b), (3, 3), (3, 2), double=True)
M.op("solve-vector", lambda m, a, b: m.linalg.solve(_well_conditioned(m, a), b), (3, 3), (3,))
M.op("solve-batched-vector", lambda m, a, b: m.linalg.solve(_well_conditioned(m, a), b), (2, 3, 3), (2, 3))
M.op("solve-bcast", lambda m, a, b: m.linalg.solve(_well_conditioned(m, a), b), (3, 3), (2, 3, 1))
M.op("solve-right", lambda m, a, b: m.linalg.solve(_well_conditioned(m, a), b, left=False), (3, 3), (2, 3))
M.op("cholesky", lambda m, a: m.cholesky(_spd(m, a)), (3, 3), double=True)
M.op("cholesky-upper", lambda m, a: _spd(m, a).cholesky(upper=True), (2, 3, 3))
M.op("linalg.cholesky", lambda m, a: m.linalg.cholesky(_spd(m, a)), (4, 4))
M.op("matrix_power-3", lambda m, a: m.matrix_power(a, 3), (3, 3), double=True)
M.op("matrix_power-5-batched", lambda m, a: a.matrix_power(5), (2, 2, 2))
M.op("matrix_power-0", lambda m, a: m.matrix_power(a, 0), (3, 3))
M.op("matrix_power-neg", lambda m, a: m.linalg.matrix_power(_well_conditioned(m, a), -2), (3, 3))
M.op("pinverse-wide", lambda m, a: m.pinverse(a), (3, 5), double=True)
M.op("pinverse-tall", lambda m, a: a.pinverse(), (2, 5, 3))
M.op("linalg.pinv", lambda m, a: m.linalg.pinv(a), (4, 3))
M.op("linalg.cross", lambda m, a, b: m.linalg.cross(a, b), (4, 3), (1, 3))
M.op(
    "linalg.vecdot-multi_dot",
    lambda m, a, b: m.linalg.vecdot(a, b) + m.linalg.multi_dot([a, b.T, a]).sum(1),
    (3, 3),
    (3, 3),
)
M.op("linalg.diagonal", lambda m, a: m.linalg.diagonal(a, offset=1), (2, 3, 4))


@pytest.mark.parametrize("row", M.rows())
def test_matrix_functions_match_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", M.gradcheck_rows())
def test_matrix_functions_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", M.double_rows())
def test_matrix_functions_double_backward_match_torch(row):
    run_double_backward(row)


def test_pinverse_of_a_rank_deficient_matrix_matches_torch():
    a = np.outer(np.arange(1.0, 4.0), np.arange(1.0, 5.0))  # rank 1
    check(lambda x: dg.pinverse(x), lambda x: torch.pinverse(x), a)


def test_matrix_power_of_integers_keeps_the_dtype():
    x = [[1, 2], [3, 4]]
    got, want = dg.matrix_power(dg.tensor(x), 3), torch.matrix_power(torch.tensor(x), 3)
    assert got.dtype.name == "int64" and got.tolist() == want.tolist()


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda: dg.inverse(dg.zeros(2, 2)), dg.errors.InputRangeError, "inverse: .*singular"),
        (lambda: dg.cholesky(-dg.eye(2)), dg.errors.InputRangeError, "cholesky: .*positive-definite"),
        (lambda: dg.det(dg.zeros(2, 3)), dg.errors.ShapeError, r"det: A must be batches of square matrices.*\(2, 3\)"),
        (lambda: dg.inverse(dg.tensor([[1, 0], [0, 1]])), dg.errors.DTypeError, "inverse: Expected a floating point"),
        (lambda: dg.linalg.solve(dg.eye(3), dg.zeros(2)), dg.errors.ShapeError, "solve: incompatible shapes"),
        (lambda: dg.matrix_power(dg.zeros(2, 3), 2), dg.errors.ShapeError, "matrix_power: expected"),
        (lambda: dg.matrix_power(dg.tensor([[1, 0], [0, 1]]), -1), dg.errors.DTypeError, "matrix_power"),
    ],
)
def test_matrix_function_errors_name_the_op(fn, error, match):
    with pytest.raises(error, match=match):
        fn()


def test_matrix_functions_capture_into_a_compiled_graph():
    def fn(a, b):
        spd = a @ a.T + dg.eye(3)
        return dg.inverse(spd) * dg.det(spd) + dg.cholesky(spd) + dg.linalg.solve(spd, b) + dg.kron(b[:1, :1], spd)

    x, y = dg.rand(3, 3), dg.rand(3, 3)
    compiled = dg.compile(fn, [x, y])
    np.testing.assert_allclose(compiled(x, y).numpy(), fn(x, y).numpy(), rtol=1e-5)


def test_det_gradient_at_exactly_singular_matrices_is_zero_like_torch():
    """torch 2.13 gives 0 there, not the cofactor matrix; the inverse of a singular matrix is not taken."""
    batch = np.stack([np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0]), np.diag([2.0, 0.0, 3.0]), np.eye(3) * 2])
    check(lambda a: dg.det(a), lambda a: torch.det(a), batch)
    check(lambda a: dg.linalg.det(a), lambda a: torch.linalg.det(a), np.array([[1.0, 2.0], [2.0, 4.0]]))
