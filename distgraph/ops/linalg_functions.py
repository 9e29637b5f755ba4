"""The rest of torch.linalg's real surface: lstsq, matrix_exp, tensorinv, tensorsolve, vander, and the older
torch.chain_matmul, torch.svd_lowrank, torch.pca_lowrank.

lstsq's forward is LAPACK's least-squares driver (torch's CPU default gelsy, through scipy.linalg; cupy's
SVD-based lstsq on the GPU), its gradient torch's linalg_lstsq_backward: through the pseudo-inverse for
the solution (pinv_backward), Danskin's for the residuals. matrix_exp's forward is scipy's Padé expm
(cupyx's on the GPU), its gradient torch's: the upper-right block of exp([[Aᵀ, G], [0, Aᵀ]]), which,
being matrix_exp itself, has gradients of every order.
"""

from collections import namedtuple

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import scipy_linalg
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import creation, shape
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg as products
from distgraph.ops import reduction as red
from distgraph.ops.linalg_decomp import float_matrices, qr, svd, svdvals
from distgraph.ops.linalg_matrix import (
    _mT,
    _pinverse,
    _square,
    broadcast_batches,
    inverse,
    pinv_backward,
    right_hand_side,
    solve,
)
from distgraph.ops.linalg_solvers import per_matrix
from distgraph.ops.products import cumprod
from distgraph.ops.registry import defop

LstSq = namedtuple("LstSq", ["solution", "residuals", "rank", "singular_values"])
DRIVERS = ("gels", "gelsy", "gelsd", "gelss")
mm = products.matmul


# ---- lstsq --------------------------------------------------------------------------------------
def _lstsq_one(xp, rcond, driver):
    """One matrix pair's (solution, rank) by `driver` (gels, full-rank QR, runs as gelsy: same solution)."""
    if xp is np:
        lstsq = scipy_linalg(xp, "lstsq", "linalg.lstsq")
        chosen = "gelsy" if driver == "gels" else driver
        return lambda ab: _pick(lstsq(ab[0], ab[1], cond=rcond, lapack_driver=chosen, check_finite=False), xp)
    return lambda ab: _pick(xp.linalg.lstsq(ab[0], ab[1], rcond=rcond), xp)


def _pick(result, xp):
    return result[0], xp.asarray(result[2], dtype=np.int64)


def _run_lstsq(xp, a, b, rcond, driver):
    n, k = a.shape[-1], b.shape[-1]
    if a.size == 0 or b.size == 0:
        return xp.zeros(a.shape[:-2] + (n, k), a.dtype), xp.zeros(a.shape[:-2], np.int64)
    solve_one = _lstsq_one(xp, rcond, driver)
    pairs = zip(a.reshape((-1,) + a.shape[-2:]), b.reshape((-1,) + b.shape[-2:]))
    results = [solve_one(ab) for ab in pairs]
    x = xp.stack([r[0] for r in results]).reshape(a.shape[:-2] + (n, k))
    return x, xp.stack([r[1] for r in results]).reshape(a.shape[:-2])


@defop("lstsq", kind="other", save=(0, 1))
def _lstsq(xp, a, b, rcond, driver):
    return _run_lstsq(xp, a, b, rcond, driver)[0].astype(a.dtype, copy=False)


@_lstsq.grad
def _(ctx, g):
    """torch's linalg_lstsq_backward (solution part): gA = pinv_backward(gX Bᵀ), gB = pinv(A)ᵀ gX."""
    a, b = ctx.inputs
    p = _pinverse(a, rcond=_default_rcond(a))
    ga = pinv_backward(mm(g, _mT(b)), p, a) if ctx.next[0] is not None else None
    return ga, mm(_mT(p), g) if ctx.next[1] is not None else None


@defop("lstsq_rank", kind="other", save=())
def _lstsq_rank(xp, a, b, rcond, driver):
    return _run_lstsq(xp, a, b, rcond, driver)[1]


@defop("lstsq_residuals", kind="other", save=(0, 1, 2))
def _lstsq_residuals(xp, a, b, x):
    r = a @ x - b
    return (r * r).sum(-2)


@_lstsq_residuals.grad
def _(ctx, g):
    """torch's (Danskin): X minimizes the residual, so X's own change does not move it; gA = 2 (gL·r) Xᵀ,
    gB = -2 gL·r, with r = A X - B read through X (so double backward sees X's dependence, as torch's)."""
    a, b, x = ctx.inputs
    gr = ew.mul(ew.mul(shape.unsqueeze(g, -2), ew.sub(mm(a, x), b)), 2)
    return mm(gr, _mT(x)), ew.neg(gr), None


def _default_rcond(a):
    return float(np.finfo(a.array.dtype).eps) * max(a.shape[-2:])


def lstsq(A, B, rcond=None, *, driver=None):
    """torch.linalg.lstsq: (solution, residuals, rank, singular_values) as torch's CPU drivers fill them:
    residuals (‖AX - B‖² per column) for m > n and full rank with drivers other than gelsy, rank for all
    but gels, singular values for gelsd / gelss; the others are empty."""
    name = "torch.linalg.lstsq"
    float_matrices(name, A)
    driver = "gelsy" if driver is None else driver
    if driver not in DRIVERS:
        raise ValueError(f"{name}: parameter `driver` should be one of ({', '.join(DRIVERS)})")
    if not isinstance(B, Tensor) or B.array.dtype != A.array.dtype:
        raise DTypeError(f"{name}: Expected input and other to have the same dtype, got {A.dtype.name} and {B.dtype}")
    if not 0 <= A.ndim - B.ndim <= 1:
        raise ShapeError(
            f"{name}: input.dim() must be greater or equal to other.dim() and (input.dim() - other.dim()) <= 1 "
            f"({tuple(A.shape)} and {tuple(B.shape)})"
        )
    b, vector = right_hand_side(A, B)
    if b.shape[-2] != A.shape[-2]:
        which = "other.size(-1)" if vector else "other.size(-2)"
        raise ShapeError(f"{name}: input.size(-2) should match {which} ({tuple(A.shape)} and {tuple(B.shape)})")
    # torch 2.13 reads B's batch as all but its last dim whenever B has one dim fewer than A, also where B is
    # a matrix (A (1, 4, 3), B (4, 2): a batch of 4 solutions, each of A[0] X = B; A (2, 4, 3): an error)
    a, b = broadcast_batches(name, A, b, B.shape[:-1] if A.ndim - B.ndim == 1 else None)
    rcond = _default_rcond(A) if rcond is None else float(rcond)
    x = _lstsq(a, b, rcond=rcond, driver=driver)
    m, n = A.shape[-2:]
    empty = creation.zeros(0, dtype=A.dtype, device=A.device)
    rank = _lstsq_rank(a.detach(), b.detach(), rcond=rcond, driver=driver) if driver != "gels" else None
    full = m > n and (rank is None or bool((rank.array == n).all()))
    if driver != "gelsy" and full:
        residuals = _lstsq_residuals(a, b, x)
    else:  # empty, but in the graph as torch's (requires_grad follows the solution's)
        residuals = shape.narrow(shape.reshape(x, (-1,)), 0, 0, 0)
    sv = svdvals(a.detach()) if driver in ("gelsd", "gelss") else empty
    if rank is None:
        rank = creation.zeros(0, dtype=np.int64, device=A.device)
    return LstSq(shape.squeeze(x, -1) if vector else x, residuals, rank, sv)


# ---- matrix_exp ---------------------------------------------------------------------------------
@defop("matrix_exp", kind="other", save=(0,))
def _matrix_exp(xp, a):
    if a.size == 0:
        return a.copy()
    expm = scipy_linalg(xp, "expm", "linalg.matrix_exp")
    with np.errstate(all="ignore"):
        return per_matrix(xp, lambda m: (expm(m),), a)[0].astype(a.dtype, copy=False)


@_matrix_exp.grad
def _(ctx, g):
    """torch's: exp([[Aᵀ, G], [0, Aᵀ]])'s upper-right block (Mathias' chain rule for matrix functions)."""
    at = _mT(ctx.inputs[0])
    n = at.shape[-1]
    g = shape.expand(g, tuple(at.shape))
    block = shape.cat([shape.cat([at, g], -1), shape.cat([ew.mul(at, 0), at], -1)], -2)
    return shape.narrow(shape.narrow(_matrix_exp(block), -2, 0, n), -1, n, n)


def matrix_exp(A):
    """torch.linalg.matrix_exp (and torch.matrix_exp): e^A of (batches of) square matrices."""
    return _matrix_exp(_square("linalg.matrix_exp", A))


# ---- tensorinv, tensorsolve, vander, chain_matmul -----------------------------------------------
def tensorinv(A, ind=2):
    """torch.linalg.tensorinv: the inverse of A read as a (prod(shape[:ind]) × prod(shape[ind:])) matrix,
    shaped shape[ind:] + shape[:ind]."""
    if not isinstance(ind, int) or ind <= 0:
        raise ValueError(f"Expected a strictly positive integer for 'ind', but got {ind}")
    rows, cols = int(np.prod(A.shape[:ind])), int(np.prod(A.shape[ind:]))
    if rows != cols:
        raise ShapeError(
            f"linalg.tensorinv: Expected self to satisfy the requirement prod(self.shape[ind:]) == "
            f"prod(self.shape[:ind]), but got {cols} != {rows} (shape {tuple(A.shape)}, ind {ind})"
        )
    return shape.reshape(inverse(shape.reshape(A, (rows, cols))), tuple(A.shape[ind:]) + tuple(A.shape[:ind]))


def tensorsolve(A, B, dims=None):
    """torch.linalg.tensorsolve: X with tensordot(A, X, X.ndim) = B; `dims` moves those dims of A last."""
    if dims is not None:
        dims = [dims] if isinstance(dims, int) else list(dims)
        A = shape.movedim(A, dims, list(range(A.ndim - len(dims), A.ndim)))
    out_shape = tuple(A.shape[B.ndim :])
    rows, cols = int(np.prod(B.shape)), int(np.prod(out_shape))
    if tuple(A.shape[: B.ndim]) != tuple(B.shape) or rows != cols:
        raise ShapeError(
            f"linalg.tensorsolve: Expected self to satisfy the requirement prod(self.shape[other.ndim:]) == "
            f"prod(self.shape[:other.ndim]), but got {cols} != {rows} (A {tuple(A.shape)}, B {tuple(B.shape)})"
        )
    return shape.reshape(solve(shape.reshape(A, (rows, cols)), shape.reshape(B, (rows,))), out_shape)


def vander(x, *, N=None):
    """torch.linalg.vander: (..., n) -> (..., n, N) of increasing powers x⁰ … x^(N-1), by cumprod (as
    torch's, so the gradient at x = 0 is finite)."""
    if x.ndim < 1:
        raise ShapeError("linalg.vander: x must have at least one dimension, got a 0-d tensor")
    n = x.shape[-1] if N is None else N
    if n <= 1:
        raise ValueError(f"N must be greater than 1. (got {n})")
    if x.array.dtype.kind in "biu":
        x = x.long()
    col = shape.unsqueeze(x, -1)
    ones = Tensor(x.device.xp.ones(tuple(x.shape) + (1,), dtype=x.array.dtype), device=x.device)
    return shape.cat([ones, cumprod(shape.expand(col, tuple(x.shape) + (n - 1,)), -1)], -1)


def chain_matmul(*matrices):
    """torch.chain_matmul (older name of linalg.multi_dot for 2-D operands)."""
    if len(matrices) == 1 and isinstance(matrices[0], list | tuple):
        matrices = tuple(matrices[0])
    if not matrices:
        raise ValueError("chain_matmul(): Expected one or more matrices")
    for i, m in enumerate(matrices):
        if m.ndim != 2:
            raise ShapeError(f"chain_matmul(): Tensor {i} must have 2 dimensions, but got {m.ndim} ({tuple(m.shape)})")
    out = matrices[0]
    for m in matrices[1:]:
        out = mm(out, m)
    return out if len(matrices) > 1 else out.clone()


# ---- randomized low-rank SVD (Halko, Martinsson, Tropp 2009), as torch's _lowrank.py --------------
def _approximate_basis(A, q, niter, M):
    """An orthonormal Q (..., m, q) whose range approximates A's (- M's), by niter power iterations."""
    r = creation.randn(A.shape[-1], q, dtype=A.dtype, device=A.device)
    x = mm(A, r) if M is None else ew.sub(mm(A, r), mm(M, r))
    basis = qr(x).Q
    for _ in range(niter):
        x = mm(_mT(A), basis) if M is None else ew.sub(mm(_mT(A), basis), mm(_mT(M), basis))
        basis = qr(x).Q
        x = mm(A, basis) if M is None else ew.sub(mm(A, basis), mm(M, basis))
        basis = qr(x).Q
    return basis


def svd_lowrank(A, q=6, niter=2, M=None):
    """torch.svd_lowrank: an approximate rank-q (U, S, V) of A - M from a random projection (so not the
    same bits as torch's: the random matrix differs); exact when q >= rank."""
    float_matrices("svd_lowrank", A)
    q = 6 if q is None else q
    m, n = A.shape[-2:]
    if M is not None:
        M = shape.expand(M, tuple(A.shape))
    if m < n or n > q:  # the transpose's basis keeps B (and V) small, as torch
        basis = _approximate_basis(_mT(A), q, niter, None if M is None else _mT(M))
        bt = mm(A, basis) if M is None else ew.sub(mm(A, basis), mm(M, basis))
        u, s, vh = svd(bt, full_matrices=False)
        return u, s, mm(basis, _mT(vh))
    basis = _approximate_basis(A, q, niter, M)
    b = mm(_mT(basis), A) if M is None else ew.sub(mm(_mT(basis), A), mm(_mT(basis), M))
    u, s, vh = svd(b, full_matrices=False)
    return mm(basis, u), s, _mT(vh)


def pca_lowrank(A, q=None, center=True, niter=2):
    """torch.pca_lowrank: svd_lowrank of A with its column means taken away (center=True)."""
    float_matrices("pca_lowrank", A)
    m, n = A.shape[-2:]
    q = min(6, m, n) if q is None else q
    if not 0 <= q <= min(m, n):
        raise ValueError(
            f"pca_lowrank: q(={q}) must be non-negative integer and not greater than min(m, n)={min(m, n)}"
        )
    if niter < 0:
        raise ValueError(f"pca_lowrank: niter(={niter}) must be non-negative integer")
    if not center:
        return svd_lowrank(A, q, niter)
    return svd_lowrank(A, q, niter, M=red.mean(A, -2, keepdim=True))
