"""svd / svdvals, eigh / eigvalsh, qr and householder_product against torch float64: values, gradients of
every output (torch's formulas: full_matrices narrowing, wide and tall QR, repeated singular values when
only S is used), central differences, double backward, batching, and the errors.

Singular vectors and eigenvectors are fixed only up to sign, and numpy's LAPACK may pick the other sign
than torch's: the rows here read them through `_signed`, which turns each column so its first entry is
positive (a constant factor, so the gradient still flows through the factor itself)."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch
from tests.parity import check


def _signed(m, u, *rest):
    """u's columns (and rest's rows: Vh) turned so u's first row is positive."""
    s = m.sign(u[..., :1, :]).detach()
    return (u * s, *(r * s.transpose(-2, -1) for r in rest))


def _svd(m, a, full=False):
    u, s, vh = m.linalg.svd(a, full_matrices=full)
    k = s.shape[-1]
    u1, vh1 = _signed(m, u[..., :k], vh[..., :k, :])
    return u1, s, vh1


def _eigh(m, a, uplo="L"):
    w, v = m.linalg.eigh(a, UPLO=uplo)
    return (w, *_signed(m, v))


def _cubes(outs):
    """One scalar of every output, curved (so double backward sees second derivatives of each)."""
    return sum((o**3).sum() for o in outs)


T = Table()
T.op("svd-tall", _svd, (4, 3))
T.op("svd-tall-cubes", lambda m, a: _cubes(_svd(m, a)), (4, 3), double=True)
T.op("svd-wide", _svd, (3, 5))
T.op("svd-batched", _svd, (2, 4, 4))
T.op("svd-full-tall", lambda m, a: _svd(m, a, full=True), (5, 3))
T.op("svd-full-wide", lambda m, a: _svd(m, a, full=True), (2, 3, 4))
T.op("svd-only-U", lambda m, a: _signed(m, m.linalg.svd(a, full_matrices=False).U)[0], (4, 3))
T.op("svd-only-Vh", lambda m, a: _svd(m, a)[2], (3, 5))
T.op("svd-only-S", lambda m, a: m.linalg.svd(a).S, (3, 5))
T.op("svdvals", lambda m, a: m.linalg.svdvals(a), (2, 3, 4), double=True)
T.op("svd-old", lambda m, a: _signed(m, m.svd(a).U, m.svd(a).V.mT)[0] * m.svd(a).S.unsqueeze(-2), (4, 3))
T.op("svd-method-some-false", lambda m, a: a.svd(some=False).S, (3, 5))
# eigh reads one triangle, so central differences see only that one: the gradcheck rows symmetrize first;
# the plain rows check torch's (symmetric) gradient of the unsymmetrized input
T.op("eigh", lambda m, a: _eigh(m, a + a.mT), (3, 3))
T.op("eigh-cubes", lambda m, a: _cubes(_eigh(m, a + a.mT)), (3, 3), double=True)
T.op("eigh-upper-batched", lambda m, a: _eigh(m, a + a.mT, "U"), (2, 4, 4))
T.op("eigh-reads-lower", _eigh, (3, 3), gradcheck=False)
T.op("eigh-reads-upper", lambda m, a: _eigh(m, a, "U"), (3, 3), gradcheck=False)
T.op("eigvalsh", lambda m, a: m.linalg.eigvalsh(a + a.mT), (2, 3, 3), double=True)
T.op("eigvalsh-upper", lambda m, a: m.linalg.eigvalsh(a, UPLO="U"), (4, 4), gradcheck=False)
T.op("qr-tall", lambda m, a: m.linalg.qr(a), (5, 3))
T.op("qr-wide", lambda m, a: m.linalg.qr(a), (3, 5))
T.op("qr-tall-cubes", lambda m, a: _cubes(m.linalg.qr(a)), (5, 3), double=True)
T.op("qr-wide-cubes", lambda m, a: _cubes(m.linalg.qr(a)), (3, 5), double=True)
T.op("qr-complete-square", lambda m, a: m.linalg.qr(a, mode="complete"), (2, 3, 3))
T.op("qr-complete-wide", lambda m, a: m.linalg.qr(a, mode="complete"), (3, 4))
T.op("qr-only-R", lambda m, a: m.linalg.qr(a).R, (4, 3))
T.op("qr-only-Q-wide", lambda m, a: m.linalg.qr(a).Q, (2, 3, 4))
T.op("qr-old", lambda m, a: m.qr(a, some=True), (4, 2))
T.op("qr-method", lambda m, a: a.qr(), (3, 3))
T.op("householder_product", lambda m, a, t: m.linalg.householder_product(a, t), (4, 3), (2,), double=True)
T.op("householder_product-batched", lambda m, a, t: m.linalg.householder_product(a, t), (2, 5, 3), (2, 3))
T.op("orgqr", lambda m, a, t: m.orgqr(a, t), (3, 3), (3,))
T.op("orgqr-method", lambda m, a, t: a.orgqr(t), (4, 4), (1,))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def test_householder_product_of_geqrf_rebuilds_q():
    """householder_product(geqrf's reflectors) is Q of the QR: torch's own reflectors, our product."""
    a = torch.tensor(np.random.default_rng(0).standard_normal((5, 3)))
    refl, tau = torch.geqrf(a)
    q = dg.linalg.householder_product(dg.tensor(refl.numpy()), dg.tensor(tau.numpy()))
    np.testing.assert_allclose(q.numpy(), torch.linalg.qr(a).Q.numpy(), rtol=1e-10, atol=1e-12)


def test_svd_reconstructs_and_orders_like_torch():
    a = np.random.default_rng(3).standard_normal((2, 3, 6, 4))
    u, s, vh = dg.linalg.svd(dg.tensor(a), full_matrices=True)
    assert tuple(u.shape) == (2, 3, 6, 6) and tuple(vh.shape) == (2, 3, 4, 4)
    rebuilt = (u[..., :4] * s.unsqueeze(-2)) @ vh
    np.testing.assert_allclose(rebuilt.numpy(), a, atol=1e-12)
    assert np.all(np.diff(s.numpy(), axis=-1) <= 0)
    np.testing.assert_allclose(s.numpy(), torch.linalg.svdvals(torch.tensor(a)).numpy(), rtol=1e-12)


def test_svdvals_gradient_is_finite_at_repeated_singular_values_like_torch():
    """With only S read, the gradient is U diag(gS) Vh (torch's shortcut), not the 1/(s_j² - s_i²) form."""
    check(lambda a: dg.linalg.svdvals(a), lambda a: torch.linalg.svdvals(a), np.eye(3) * 2.0)
    check(lambda a: dg.linalg.svd(a).S, lambda a: torch.linalg.svd(a).S, np.eye(3) * 2.0)


def test_eigvalsh_gradient_is_finite_at_repeated_eigenvalues_like_torch():
    check(lambda a: dg.linalg.eigvalsh(a), lambda a: torch.linalg.eigvalsh(a), np.diag([1.0, 1.0, 3.0]))


def test_svd_compute_uv_false_returns_zero_factors_like_torch():
    a = np.random.default_rng(1).standard_normal((4, 3))
    got, want = dg.svd(dg.tensor(a), compute_uv=False), torch.svd(torch.tensor(a), compute_uv=False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-12)


def test_qr_mode_r_returns_an_empty_q_and_refuses_a_gradient():
    values = np.random.default_rng(2).standard_normal((4, 3))
    q, r = dg.linalg.qr(dg.tensor(values, requires_grad=True), mode="r")
    assert tuple(q.shape) == (0,)
    np.testing.assert_allclose(r.detach().numpy(), torch.linalg.qr(torch.tensor(values), mode="r").R.numpy())
    with pytest.raises(RuntimeError, match="mode='r'"):
        r.sum().backward()


def test_qr_complete_of_a_tall_matrix_is_not_differentiable_like_torch():
    a = dg.tensor(np.random.default_rng(2).standard_normal((4, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match="mode='complete' and nrows > ncols"):
        dg.linalg.qr(a, mode="complete").Q.sum().backward()


def test_named_fields_are_torchs():
    a = dg.tensor(np.random.default_rng(0).standard_normal((3, 3)))
    assert dg.linalg.svd(a)._fields == ("U", "S", "Vh")
    assert dg.svd(a)._fields == ("U", "S", "V")
    assert dg.linalg.eigh(a)._fields == ("eigenvalues", "eigenvectors")
    assert dg.linalg.qr(a)._fields == ("Q", "R")


def test_decompositions_capture_into_a_compiled_graph():
    def fn(a):
        return dg.linalg.svdvals(a).sum() + dg.linalg.qr(a).R.sum() + dg.linalg.eigvalsh(a @ a.T).sum()

    x = dg.tensor(np.random.default_rng(5).standard_normal((3, 3)))
    np.testing.assert_allclose(dg.compile(fn, [x])(x).numpy(), fn(x).numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda: dg.linalg.svd(dg.zeros(3)), ValueError, r"linalg.svd: The input tensor A must have at least 2"),
        (lambda: dg.linalg.svd(dg.tensor([[1, 2], [3, 4]])), TypeError, "linalg.svd: Expected a floating point"),
        (lambda: dg.linalg.eigh(dg.zeros(2, 3)), ValueError, r"linalg.eigh: A must be batches of square.*\(2, 3\)"),
        (lambda: dg.linalg.eigh(dg.eye(2), UPLO="X"), ValueError, "Expected UPLO argument to be 'L' or 'U'"),
        (lambda: dg.linalg.qr(dg.eye(2), mode="x"), ValueError, "qr received unrecognized mode 'x'"),
        (lambda: dg.linalg.eig(dg.eye(2)), NotImplementedError, "linalg.eig: .*complex.*no complex dtype"),
        (lambda: dg.linalg.eigvals(dg.eye(2)), NotImplementedError, "linalg.eigvals: .*eigvalsh"),
        (
            lambda: dg.linalg.householder_product(dg.zeros(4, 2), dg.zeros(3)),
            ValueError,
            r"input.shape\[-1\] must be greater than or equal to tau.shape\[-1\]",
        ),
        (
            lambda: dg.linalg.householder_product(dg.zeros(2, 3), dg.zeros(1)),
            ValueError,
            r"input.shape\[-2\] must be greater than or equal to input.shape\[-1\]",
        ),
    ],
)
def test_errors_name_the_op(fn, error, match):
    with pytest.raises(error, match=match):
        fn()
