"""Norms, matrix_rank, cond, lstsq, matrix_exp, tensorinv / tensorsolve, vander, chain_matmul and the
randomized low-rank SVD against torch float64: values, gradients, central differences, double backward,
batching and the errors."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check

INF = float("inf")


def _w(m, a):
    return a + 4 * m.eye(a.shape[-1], dtype=a.dtype)


T = Table()
for ord_ in ("fro", "nuc", INF, -INF, 1, -1, 2, -2):
    T.op(f"matrix_norm-{ord_}", lambda m, a, o=ord_: m.linalg.matrix_norm(a, o), (3, 4), double=ord_ in ("nuc", 2))
    T.op(
        f"matrix_norm-{ord_}-dims", lambda m, a, o=ord_: m.linalg.matrix_norm(a, o, dim=(2, 0), keepdim=True), (3, 2, 4)
    )
    T.op(f"matrix_norm-{ord_}-dims-02", lambda m, a, o=ord_: m.linalg.matrix_norm(a, o, dim=(0, 2)), (3, 2, 4))
T.op("norm-flat", lambda m, a: m.linalg.norm(a), (2, 3, 4))
T.op("norm-vector-ord", lambda m, a: m.linalg.norm(a, 3, dim=1), (2, 3, 4))
T.op("norm-1d-inf", lambda m, a: m.linalg.norm(a, INF), (5,))
T.op("norm-2d-nuc", lambda m, a: m.linalg.norm(a, "nuc"), (4, 3))
T.op("norm-2d-2", lambda m, a: m.linalg.norm(a, 2), (4, 3))
T.op("norm-dims", lambda m, a: m.linalg.norm(a, -1, dim=(0, 1), keepdim=True), (3, 4, 2))
T.op("vector_norm-ord-keyword", lambda m, a: m.linalg.vector_norm(a, ord=1.5, dim=(0, 2)), (3, 4, 2))
T.op("nuclear_norm", lambda m, a: m.nuclear_norm(a), (2, 3, 4))
T.op("nuclear_norm-dims", lambda m, a: m.nuclear_norm(a, (0, 2), keepdim=True), (3, 2, 4))
T.op("frobenius_norm", lambda m, a: m.frobenius_norm(a, (0, 1)), (3, 4))
for p in (None, 2, -2):
    T.op(f"cond-{p}", lambda m, a, p=p: m.linalg.cond(_w(m, a), p), (2, 3, 3), double=p is None)
# torch's own backward of cond(p) for these p fails (an in-place write into inv_ex's output): values are
# compared with torch, gradients with central differences
for p in ("fro", "nuc", INF, -INF, 1, -1):
    T.op(f"cond-{p}", lambda m, a, p=p: m.linalg.cond(_w(m, a), p), (2, 3, 3), grad=False)
T.op("cond-rectangular", lambda m, a: m.linalg.cond(a), (5, 3))
T.op("matrix_rank", lambda m, a: m.linalg.matrix_rank(a), (2, 4, 3), grad=False)
T.op("matrix_rank-atol", lambda m, a: m.linalg.matrix_rank(a, atol=1.0), (4, 3), grad=False)
T.op("matrix_rank-rtol", lambda m, a: m.linalg.matrix_rank(a, atol=0.1, rtol=0.5), (4, 3), grad=False)
T.op("matrix_rank-hermitian", lambda m, a: m.linalg.matrix_rank(a @ a.mT, hermitian=True), (3, 2), grad=False)
# gelsd / gelss also return the singular values, which have no gradient: central differences would see them
for driver in ("gels", "gelsy", "gelsd", "gelss"):
    T.op(
        f"lstsq-{driver}",
        lambda m, a, b, d=driver: m.linalg.lstsq(a, b, driver=d),
        (5, 3),
        (5, 2),
        gradcheck=driver in ("gels", "gelsy"),
    )
    T.op(f"lstsq-{driver}-solution", lambda m, a, b, d=driver: m.linalg.lstsq(a, b, driver=d).solution, (5, 3), (5, 2))
T.op("lstsq-default-batched", lambda m, a, b: m.linalg.lstsq(a, b), (2, 5, 3), (2, 5, 2))
T.op("lstsq-vector", lambda m, a, b: m.linalg.lstsq(a, b, driver="gelsd").solution, (4, 2), (4,), double=True)
T.op("lstsq-wide", lambda m, a, b: m.linalg.lstsq(a, b).solution, (2, 4), (2, 3))
T.op("lstsq-residuals", lambda m, a, b: m.linalg.lstsq(a, b, driver="gelsd").residuals, (5, 2), (5, 3), double=True)
T.op("matrix_exp", lambda m, a: m.linalg.matrix_exp(a), (3, 3), double=True)
T.op("matrix_exp-batched", lambda m, a: m.matrix_exp(a * 2), (2, 4, 4))
T.op("matrix_exp-method", lambda m, a: a.matrix_exp(), (1, 1))
T.op("tensorinv", lambda m, a: m.linalg.tensorinv(_w(m, a.reshape(6, 6)).reshape(2, 3, 6), ind=2), (6, 6))
T.op("tensorinv-ind1", lambda m, a: m.linalg.tensorinv(_w(m, a).reshape(4, 2, 2), ind=1), (4, 4))
T.op("tensorsolve", lambda m, a, b: m.linalg.tensorsolve(_w(m, a).reshape(2, 3, 6), b), (6, 6), (2, 3))
T.op(
    "tensorsolve-dims",
    lambda m, a, b: m.linalg.tensorsolve(_w(m, a).reshape(6, 2, 3).permute(1, 0, 2), b, dims=(1,)),
    (6, 6),
    (2, 3),
)
T.op("vander", lambda m, a: m.linalg.vander(a), (2, 4), double=True)
T.op("vander-N", lambda m, a: m.linalg.vander(a, N=5), (3,))
T.op("chain_matmul", lambda m, a, b, c: m.chain_matmul(a, b, c), (2, 3), (3, 4), (4, 2))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


@pytest.mark.parametrize("p", ["fro", "nuc", INF, -INF, 1, -1])
def test_cond_gradcheck_where_torch_has_no_gradient(p):
    a = dg.tensor(np.random.default_rng(8).standard_normal((2, 3, 3)) + 4 * np.eye(3), requires_grad=True)
    assert dg.autograd.gradcheck(lambda x: dg.linalg.cond(x, p), [a])


def test_matrix_norm_2_splits_the_gradient_between_tied_singular_values_like_torch():
    check(lambda a: dg.linalg.matrix_norm(a, 2), lambda a: torch.linalg.matrix_norm(a, 2), np.diag([3.0, 3.0, 1.0]))


def test_lstsq_of_a_rank_deficient_matrix_matches_gelsy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 3))
    a[:, 2] = a[:, 0] + a[:, 1]
    b = rng.standard_normal((6, 2))
    for driver in ("gelsy", "gelsd", "gelss"):
        got = dg.linalg.lstsq(dg.tensor(a), dg.tensor(b), driver=driver)
        want = torch.linalg.lstsq(torch.tensor(a), torch.tensor(b), driver=driver)
        assert got.rank.item() == want.rank.item() == 2
        assert tuple(got.residuals.shape) == tuple(want.residuals.shape) == (0,)
        np.testing.assert_allclose(got.solution.numpy(), want.solution.numpy(), atol=1e-10)


def test_lstsq_fields_and_dtypes_are_torchs():
    a, b = dg.randn(4, 2, dtype=dg.float64), dg.randn(4, 1, dtype=dg.float64)
    got = dg.linalg.lstsq(a, b, driver="gelsd")
    assert got._fields == ("solution", "residuals", "rank", "singular_values")
    assert got.rank.dtype == dg.int64 and got.singular_values.dtype == dg.float64


def test_cond_of_a_singular_matrix_is_inf_like_torch():
    for p in (1, "fro", INF):
        assert dg.linalg.cond(dg.zeros(2, 2, dtype=dg.float64), p).item() == INF
    check(lambda a: dg.linalg.cond(a, 1), lambda a: torch.linalg.cond(a, 1), np.zeros((2, 2)), grad=False)


def test_matrix_exp_of_commuting_and_nilpotent_matrices():
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(dg.linalg.matrix_exp(dg.tensor(nilpotent)).numpy(), [[1.0, 1.0], [0.0, 1.0]])
    diag = np.diag([0.5, -1.0, 2.0])
    np.testing.assert_allclose(dg.matrix_exp(dg.tensor(diag)).numpy(), np.diag(np.exp([0.5, -1.0, 2.0])), rtol=1e-14)


@pytest.mark.parametrize("shape", [(20, 8), (8, 20), (3, 12, 10)])
def test_svd_lowrank_reconstructs_a_low_rank_matrix(shape):
    rng = np.random.default_rng(1)
    *batch, m, n = shape
    a = rng.standard_normal((*batch, m, 3)) @ rng.standard_normal((*batch, 3, n))  # rank 3
    u, s, v = dg.svd_lowrank(dg.tensor(a), q=5, niter=2)
    assert tuple(u.shape) == (*batch, m, 5) and tuple(v.shape) == (*batch, n, 5)
    rebuilt = (u * s.unsqueeze(-2)) @ v.mT
    np.testing.assert_allclose(rebuilt.numpy(), a, atol=1e-9)
    np.testing.assert_allclose(s.numpy()[..., :3], np.linalg.svd(a, compute_uv=False)[..., :3], rtol=1e-9)


def test_svd_lowrank_approximates_the_top_singular_values_of_a_full_rank_matrix():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 30)) * np.geomspace(10, 0.01, 30)  # fast-decaying spectrum
    _, s, _ = dg.svd_lowrank(dg.tensor(a), q=10, niter=4)
    np.testing.assert_allclose(s.numpy()[:4], np.linalg.svd(a, compute_uv=False)[:4], rtol=1e-3)


def test_pca_lowrank_centers_like_torch():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 6)) + 5.0  # rank 2 after centering
    u, s, v = dg.pca_lowrank(dg.tensor(a), q=3)
    centered = a - a.mean(0)
    np.testing.assert_allclose(((u * s.unsqueeze(-2)) @ v.mT).numpy(), centered, atol=1e-9)
    _, st, _ = torch.pca_lowrank(torch.tensor(a), q=3)
    np.testing.assert_allclose(s.numpy()[:2], st.numpy()[:2], rtol=1e-9)


def test_svd_lowrank_is_differentiable():
    a = dg.tensor(np.random.default_rng(4).standard_normal((6, 4)), requires_grad=True)
    _, s, _ = dg.svd_lowrank(a, q=4)
    s.sum().backward()
    u, _, vh = np.linalg.svd(a.detach().numpy(), full_matrices=False)
    np.testing.assert_allclose(a.grad.numpy(), u @ vh, atol=1e-8)  # d(nuclear norm) = U Vᵀ at full rank


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda: dg.linalg.matrix_norm(dg.eye(2), "foo"), ValueError, "linalg.matrix_norm: Order foo not supported"),
        (lambda: dg.linalg.matrix_norm(dg.zeros(3)), ValueError, "must have at least 2 dimensions"),
        (lambda: dg.linalg.matrix_norm(dg.eye(2), dim=(0,)), ValueError, "dim must be a 2-tuple"),
        (lambda: dg.linalg.norm(dg.zeros(2, 2, 2), 2), ValueError, "input must be 1D or 2D. Got 3D"),
        (lambda: dg.linalg.cond(dg.zeros(3, 2), "fro"), ValueError, r"linalg.cond\(ord=fro\): A must be batches"),
        (lambda: dg.linalg.lstsq(dg.eye(3), dg.eye(3), driver="x"), ValueError, "parameter `driver` should be one"),
        (lambda: dg.linalg.lstsq(dg.eye(3), dg.zeros(2, 1)), ValueError, r"input.size\(-2\) should match"),
        (lambda: dg.linalg.matrix_exp(dg.zeros(2, 3)), ValueError, "linalg.matrix_exp: A must be batches of square"),
        (lambda: dg.linalg.tensorinv(dg.zeros(3, 5), ind=1), ValueError, "tensorinv: Expected self to satisfy"),
        (lambda: dg.linalg.tensorinv(dg.zeros(3, 3), ind=0), ValueError, "strictly positive integer for 'ind'"),
        (lambda: dg.linalg.tensorsolve(dg.zeros(2, 3, 4), dg.zeros(2, 3)), ValueError, "tensorsolve: Expected self"),
        (lambda: dg.linalg.vander(dg.zeros(3), N=1), ValueError, "N must be greater than 1"),
        (lambda: dg.chain_matmul(dg.zeros(2, 2), dg.zeros(2)), ValueError, "chain_matmul.*Tensor 1 must have 2"),
        (lambda: dg.linalg.vector_norm(dg.zeros(2), ord="fro"), TypeError, "'ord' must be Number"),
    ],
)
def test_errors_name_the_op(fn, error, match):
    with pytest.raises(error, match=match):
        fn()


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("fn", ["lstsq", "solve"])
def test_right_hand_side_shapes_are_read_as_torch_reads_them(fn):
    """Every pairing of these A and B shapes gives torch's solution shape and values, or an error where torch
    raises one — a distgraph ShapeError, never numpy's broadcasting ValueError. torch 2.13's lstsq reads B's
    batch as all but its last dim whenever B has one dim fewer than A, a matrix B too: A (1, 4, 3) with
    B (4, 2) is a batch of 4 solutions, A (2, 4, 3) with B (4, 2) an error."""
    rng = np.random.default_rng(0)
    a_shapes = [(2, 4, 3), (4, 3), (1, 4, 3)] if fn == "lstsq" else [(3, 3), (2, 3, 3), (1, 3, 3)]
    b_shapes = [
        (4,),
        (3,),
        (2, 4),
        (1, 4, 2),
        (4, 2),
        (3, 4, 2),
        (2, 4, 2),
        (2, 1, 4, 2),
        (2, 3),
        (1, 3),
        (3, 2),
        (3, 3, 2),
    ]
    seen = set()
    for a_shape in a_shapes:
        for b_shape in b_shapes:
            a, b = rng.random(a_shape), rng.random(b_shape)
            try:
                want = getattr(torch.linalg, fn)(torch.tensor(a), torch.tensor(b))
            except RuntimeError:
                with pytest.raises(dg.errors.ShapeError):
                    getattr(dg.linalg, fn)(dg.tensor(a), dg.tensor(b))
                seen.add("error")
                continue
            got = getattr(dg.linalg, fn)(dg.tensor(a), dg.tensor(b))
            want, got = (want.solution, got.solution) if fn == "lstsq" else (want, got)
            assert tuple(got.shape) == tuple(want.shape), (a_shape, b_shape)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"{a_shape} {b_shape}")
            seen.add("solved")
    assert seen == {"error", "solved"}  # the table reaches both outcomes
