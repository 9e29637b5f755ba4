"""Triangular and factored solvers with torch's gradients: solve_triangular, lu_factor(_ex) / lu /
lu_unpack / lu_solve, cholesky_solve / cholesky_inverse, the `_ex` forms (solve_ex, inv_ex, cholesky_ex)
and torch's older names (triangular_solve).

solve_triangular substitutes row by row on the backend's arrays (numpy or cupy alike), as LAPACK's
trsm: a zero on the diagonal gives inf/NaN, not an error, as torch's. lu_factor is LAPACK's getrf
(scipy.linalg / cupyx.scipy.linalg); its op packs the pivots (1-based, as torch's int32) into an extra
column of LU's dtype, so one op call yields both and a captured graph replays both. lu, lu_unpack and
lu_solve are built from lu_factor, triangular solves, masks and the (constant) permutation matrix, so
their gradients are the ops'; lu_factor's backward is torch's linalg_lu_backward.
"""

import math
import warnings
from collections import namedtuple

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import scipy_linalg, to_device
from distgraph.errors import DTypeError, InputRangeError, LinAlgError, ShapeError
from distgraph.ops import creation, regions, shape
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg as products
from distgraph.ops.linalg_matrix import _mT, _square, cholesky, inverse, solve
from distgraph.ops.promotion import cast
from distgraph.ops.registry import defop

LUFactor = namedtuple("LUFactor", ["LU", "pivots"])
LUFactorEx = namedtuple("LUFactorEx", ["LU", "pivots", "info"])
PLU = namedtuple("PLU", ["P", "L", "U"])
TriangularSolve = namedtuple("TriangularSolve", ["solution", "cloned_coefficient"])
SolveEx = namedtuple("SolveEx", ["result", "info"])
InvEx = namedtuple("InvEx", ["inverse", "info"])
CholeskyEx = namedtuple("CholeskyEx", ["L", "info"])

mm = products.matmul


def _dims(a):
    return "x".join(map(str, a.shape[-2:]))


def _rhs(name, A, B, left=True):
    """B must be a float matrix (batch) of A's dtype whose rows (left) or columns match A's order."""
    if not isinstance(B, Tensor) or B.array.dtype != A.array.dtype:
        raise DTypeError(f"{name}: B must be a Tensor of A's dtype {A.dtype.name}, got {getattr(B, 'dtype', B)!r}")
    n = A.shape[-1]
    if B.ndim < 2 or B.shape[-2 if left else -1] != n:
        equation = "AX = B" if left else "XA = B"
        raise ShapeError(
            f"{name}: Incompatible shapes of A and B for the equation {equation} ({_dims(A)} and "
            f"{_dims(B) if B.ndim >= 2 else tuple(B.shape)})"
        )


# ---- solve_triangular ---------------------------------------------------------------------------
def _substitute(xp, a, b, upper, unit):
    """X with A X = B for triangular A (the other triangle unread), row by row."""
    n = a.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    x = xp.zeros(batch + b.shape[-2:], dtype=np.result_type(a.dtype, b.dtype))
    for i in range(n - 1, -1, -1) if upper else range(n):
        rest = slice(i + 1, n) if upper else slice(0, i)
        r = b[..., i, :] - (a[..., i : i + 1, rest] @ x[..., rest, :])[..., 0, :]
        x[..., i, :] = r if unit else r / a[..., i, i, None]
    return x


@defop("solve_triangular", kind="other", save=(0,), saves_output=True)
def _solve_triangular(xp, a, b, upper, unitriangular=False):
    with np.errstate(all="ignore"):
        return _substitute(xp, a, b, upper, unitriangular)


@_solve_triangular.grad
def _(ctx, g):
    """torch's linalg_solve_triangular_backward: gB = A⁻ᵀ G; gA = -gB Xᵀ on A's triangle."""
    a = ctx.inputs[0]
    upper, unit = ctx.attrs["upper"], ctx.attrs.get("unitriangular", False)
    gb = _solve_triangular(_mT(a), g, upper=not upper, unitriangular=unit)
    if ctx.next[0] is None:
        return None, gb
    ga = ew.neg(mm(gb, _mT(ctx.out)))
    ga = regions.triu(ga, int(unit)) if upper else regions.tril(ga, -int(unit))
    return ga, gb


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    """torch.linalg.solve_triangular: X with A X = B (left) or X A = B; A's other triangle is not read."""
    _square("linalg.solve_triangular", A)
    _rhs("linalg.solve_triangular", A, B, left)
    if not left:
        return _mT(_solve_triangular(_mT(A), _mT(B), upper=not upper, unitriangular=bool(unitriangular)))
    return _solve_triangular(A, B, upper=bool(upper), unitriangular=bool(unitriangular))


def triangular_solve(b, A, upper=True, transpose=False, unitriangular=False):
    """torch.triangular_solve (older name): (X with op(A) X = b, a copy of A)."""
    _square("triangular_solve", A)
    coefficient = _mT(A) if transpose else A
    x = solve_triangular(coefficient, b, upper=bool(upper) != bool(transpose), unitriangular=unitriangular)
    return TriangularSolve(x, A.clone())


# ---- lu_factor ----------------------------------------------------------------------------------
def per_matrix(xp, fn, a):
    """fn (one matrix -> a tuple of arrays) over each matrix of a non-empty batch, its results stacked: for
    LAPACK wrappers that take one matrix."""
    results = [fn(m) for m in a.reshape((-1,) + a.shape[-2:])]
    return [xp.stack(parts).reshape(a.shape[:-2] + parts[0].shape) for parts in zip(*results)]


@defop("lu_factor", kind="other", save=(), saves_output=True)
def _lu_factor(xp, a):
    """(..., m, n + 1): LU, then the 1-based pivots down the last column (rows past min(m, n) zero)."""
    getrf = scipy_linalg(xp, "lu_factor", "linalg.lu_factor")
    m, n = a.shape[-2:]
    k = min(m, n)
    out = xp.swapaxes(xp.zeros(a.shape[:-2] + (n + 1, m), dtype=a.dtype), -1, -2)  # column-major, as torch's LU
    if a.size:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's 'Diagonal number %d is exactly zero': torch says nothing
            lu, piv = per_matrix(xp, lambda x: getrf(x, check_finite=False), a)
        out[..., :n] = lu
        out[..., :k, n] = piv + 1
    return out


@_lu_factor.grad
def _(ctx, g):
    m, n = ctx.inputs[0].shape[-2:]
    lu, piv = _split(ctx.out, m, n)
    p, low, up = lu_unpack(lu, piv)
    g = shape.narrow(g, -1, 0, n)
    return lu_backward(_lower(g, m, n), _upper(g, m, n), p, low, up)


def _lower(x, m, n):
    return regions.tril(shape.narrow(x, -1, 0, min(m, n)), -1)


def _upper(x, m, n):
    return regions.triu(shape.narrow(x, -2, 0, min(m, n)))


def lu_backward(gl, gu, p, low, up):
    """torch's linalg_lu_backward for A = P L U (gl, gu already on L's and U's triangles)."""
    m, n = low.shape[-2], up.shape[-1]
    k = min(m, n)
    if m == n:
        ga = ew.add(regions.tril(mm(_mT(low), gl), -1), regions.triu(mm(gu, _mT(up))))
        ga = solve_triangular(_mT(up), ga, upper=False, left=False)
        ga = solve_triangular(_mT(low), ga, upper=True, unitriangular=True)
    elif m < n:
        u1 = shape.narrow(up, -1, 0, k)
        ga = ew.sub(mm(_mT(low), gl), mm(regions.triu(gu), _mT(up)))
        ga = solve_triangular(_mT(u1), regions.tril(ga, -1), upper=False, left=False)
        ga = shape.cat([ew.add(ga, regions.triu(shape.narrow(gu, -1, 0, k))), shape.narrow(gu, -1, k, n - k)], -1)
        ga = solve_triangular(_mT(low), ga, upper=True, unitriangular=True)
    else:
        l1 = shape.narrow(low, -2, 0, k)
        ga = ew.sub(mm(gu, _mT(up)), mm(_mT(low), regions.tril(gl, -1)))
        ga = solve_triangular(_mT(l1), regions.triu(ga), upper=True, unitriangular=True)
        ga = shape.cat([ew.add(ga, regions.tril(shape.narrow(gl, -2, 0, k), -1)), shape.narrow(gl, -2, k, m - k)], -2)
        ga = solve_triangular(_mT(up), ga, upper=False, left=False)
    return mm(p, ga)


def _split(packed, m, n):
    """LU and the int32 pivots out of lu_factor's packed output."""
    piv = shape.squeeze(shape.narrow(shape.narrow(packed, -1, n, 1), -2, 0, min(m, n)), -1)
    return shape.narrow(packed, -1, 0, n), cast(piv.detach(), np.int32)


def _factor(name, A, pivot):
    from distgraph.ops.linalg_decomp import float_matrices

    float_matrices(name, A)
    if not pivot:
        raise NotImplementedError(f"{name}: LU without pivoting is not implemented on the CPU")
    m, n = A.shape[-2:]
    return _split(_lu_factor(A), m, n)


def _lu_info(lu):
    """LAPACK getrf's info: the 1-based index of U's first zero diagonal entry, 0 where there is none."""
    xp = lu.device.xp
    diag = xp.diagonal(lu.array, 0, -2, -1)
    zero = diag == 0
    first = xp.where(zero.any(-1), xp.argmax(zero, -1) + 1, 0) if diag.shape[-1] else xp.zeros(diag.shape[:-1], int)
    return Tensor(xp.asarray(first, dtype=np.int32), device=lu.device)


def lu_factor_ex(A, *, pivot=True, check_errors=False):
    lu, piv = _factor("torch.linalg.lu_factor_ex", A, pivot)
    info = _lu_info(lu)
    if check_errors:
        _raise_info("torch.linalg.lu_factor_ex", info, "U[{i},{i}] is zero: the matrix is singular")
    return LUFactorEx(lu, piv, info)


def lu_factor(A, *, pivot=True):
    """torch.linalg.lu_factor: (LU, pivots) of P A = L U; an exactly singular U is refused, as torch."""
    lu, piv = _factor("torch.linalg.lu_factor", A, pivot)
    _raise_info(
        "torch.linalg.lu_factor",
        _lu_info(lu),
        "U[{i},{i}] is zero and using it on lu_solve would result in a division by zero. If you still want to "
        "perform the factorization, consider calling linalg.lu(A, pivot) or linalg.lu_factor_ex(A, pivot)",
    )
    return LUFactor(lu, piv)


def _raise_info(name, info, message):
    bad = to_device(info.array, "cpu").reshape(-1)  # (a cuda tensor refuses .numpy())
    hit = np.flatnonzero(bad)
    if hit.size:
        batch = f"(Batch element {hit[0]}): " if info.ndim else ""
        raise LinAlgError(f"{name}: {batch}{message.format(i=bad[hit[0]])}")


def _permutation(piv, m, dtype):
    """P (..., m, m) with A = P L U from getrf's 1-based row swaps (a constant: pivots have no gradient)."""
    xp = piv.device.xp
    swaps = piv.array.reshape(math.prod(piv.shape[:-1]), piv.shape[-1]) - 1  # (no -1: a batch may be empty)
    perm = xp.tile(xp.arange(m), (swaps.shape[0], 1))
    rows = xp.arange(swaps.shape[0])
    for i in range(swaps.shape[1]):
        j = swaps[:, i]
        perm[rows, i], perm[rows, j] = perm[rows, j], perm[rows, i].copy()
    p = xp.zeros((swaps.shape[0], m, m), dtype=dtype)
    p[rows[:, None], perm, xp.arange(m)] = 1
    return Tensor(p.reshape(tuple(piv.shape[:-1]) + (m, m)), device=piv.device)


def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True):
    """torch.lu_unpack: (P, L, U) from lu_factor's result; the parts not asked for are empty tensors."""
    m, n = LU_data.shape[-2:]
    k = min(m, n)
    empty = creation.zeros(0, dtype=LU_data.dtype, device=LU_data.device)
    p = _permutation(LU_pivots, m, LU_data.array.dtype) if unpack_pivots else empty
    if not unpack_data:
        return PLU(p, empty, empty)
    eye = Tensor(LU_data.device.xp.eye(m, k, dtype=LU_data.array.dtype), device=LU_data.device)
    return PLU(p, ew.add(_lower(LU_data, m, n), eye), _upper(LU_data, m, n))


def lu(A, *, pivot=True):
    """torch.linalg.lu: (P, L, U) with A = P L U."""
    return PLU(*lu_unpack(*_factor("torch.linalg.lu", A, pivot)))


def lu_old(A, pivot=True, get_infos=False):
    """torch.lu (older name): (LU, pivots[, infos])."""
    lu_, piv, info = lu_factor_ex(A, pivot=pivot)
    return (lu_, piv, info) if get_infos else (lu_, piv)


def lu_solve(LU, pivots, B, *, left=True, adjoint=False):
    """torch.linalg.lu_solve: X with A X = B (op(A) = Aᵀ for adjoint; X A = B for left=False), A = P L U
    given as lu_factor's result; two triangular solves and the permutation, so gradients reach LU and B."""
    _square("linalg.lu_solve", LU)
    _rhs("linalg.lu_solve", LU, B, left)
    if not left:
        return _mT(lu_solve(LU, pivots, _mT(B), adjoint=not adjoint))
    p = _permutation(pivots, LU.shape[-1], LU.array.dtype)
    if adjoint:  # Uᵀ Lᵀ Pᵀ X = B
        y = solve_triangular(_mT(LU), B, upper=False)
        return mm(p, solve_triangular(_mT(LU), y, upper=True, unitriangular=True))
    y = solve_triangular(LU, mm(_mT(p), B), upper=False, unitriangular=True)
    return solve_triangular(LU, y, upper=True)


def lu_solve_old(b, LU_data, LU_pivots):
    """torch.lu_solve (older argument order)."""
    return lu_solve(LU_data, LU_pivots, b)


# ---- cholesky_solve / cholesky_inverse ----------------------------------------------------------
@defop("cholesky_solve", kind="other", save=(1,), saves_output=True)
def _cholesky_solve(xp, b, low, upper=False):
    with np.errstate(all="ignore"):
        if upper:  # Uᵀ U X = B
            return _substitute(xp, low, _substitute(xp, xp.swapaxes(low, -1, -2), b, False, False), True, False)
        return _substitute(xp, xp.swapaxes(low, -1, -2), _substitute(xp, low, b, False, False), True, False)


@_cholesky_solve.grad
def _(ctx, g):
    """torch's cholesky_solve_backward: gB = A⁻¹ G; gL = -(C + Cᵀ) L (L Cᵀ... for upper), C = gB Xᵀ —
    for the whole of L, as torch's."""
    low, upper = ctx.inputs[1], ctx.attrs.get("upper", False)
    gb = _cholesky_solve(g, low, upper=upper)
    if ctx.next[1] is None:
        return gb, None
    common = mm(gb, _mT(ctx.out))
    common = ew.add(common, _mT(common))
    return gb, ew.neg(mm(low, common) if upper else mm(common, low))


def cholesky_solve(B, L, upper=False):
    """torch.cholesky_solve: X with A X = B for A = L Lᵀ (or Uᵀ U), given the factor."""
    _square("cholesky_solve", L)
    _rhs("cholesky_solve", L, B)
    return _cholesky_solve(B, L, upper=bool(upper))


def cholesky_inverse(L, upper=False):
    """torch.cholesky_inverse: (L Lᵀ)⁻¹ from the factor (cholesky_solve of the identity: torch's gradient)."""
    _square("cholesky_inverse", L)
    eye = Tensor(L.device.xp.eye(L.shape[-1], dtype=L.array.dtype), device=L.device)
    return _cholesky_solve(shape.expand(eye, tuple(L.shape)), L, upper=bool(upper))


# ---- the _ex forms: (result, info) without raising ----------------------------------------------
def _failed_as_identity(A, info):
    """A with each failed matrix replaced by the identity (so the batch factors), and the failed mask."""
    failed = Tensor(A.device.xp.asarray(info.array != 0)[..., None, None], device=A.device)
    eye = Tensor(A.device.xp.eye(A.shape[-1], dtype=A.array.dtype), device=A.device)
    return ew.where(failed, eye, A), failed


def _nan_where(failed, x):
    return ew.where(failed, float("nan"), x)


def inv_ex(A, *, check_errors=False):
    """torch.linalg.inv_ex: (inverse, info); a singular matrix's info is getrf's and its inverse NaN."""
    _square("linalg.inv_ex", A)
    info = _lu_info(_split(_lu_factor(A.detach()), *A.shape[-2:])[0])
    if check_errors:
        _raise_info(
            "linalg.inv_ex",
            info,
            "The diagonal element {i} is zero, the inversion could not be completed "
            "because the input matrix is singular.",
        )
    if not info.array.any():
        return InvEx(inverse(A), info)
    safe, failed = _failed_as_identity(A, info)
    return InvEx(_nan_where(failed, inverse(safe)), info)


def solve_ex(A, B, *, left=True, check_errors=False):
    """torch.linalg.solve_ex: (result, info), as inv_ex."""
    _square("linalg.solve_ex", A)
    info = _lu_info(_split(_lu_factor(A.detach()), *A.shape[-2:])[0])
    if check_errors:
        _raise_info(
            "linalg.solve_ex", info, "The solver failed because the input matrix is singular (U[{i},{i}] is zero)."
        )
    if not info.array.any():
        return SolveEx(solve(A, B, left=left), info)
    safe, failed = _failed_as_identity(A, info)
    x = solve(safe, B, left=left)
    mask = failed if x.ndim == A.ndim else shape.squeeze(failed, -1)
    return SolveEx(_nan_where(mask, x), info)


def _cholesky_info(xp, a):
    """potrf's info for each matrix: the order of the first leading minor that is not positive-definite
    (unpivoted elimination of the lower triangle, symmetrized), 0 where every one is."""
    a = xp.tril(a) + xp.swapaxes(xp.tril(a, -1), -1, -2)
    n = a.shape[-1]
    info = xp.zeros(a.shape[:-2], dtype=np.int32)
    with np.errstate(all="ignore"):
        for j in range(n):
            d = a[..., j, j]
            info = xp.where((info == 0) & ~(d > 0), j + 1, info)
            col = a[..., j + 1 :, j] / xp.sqrt(xp.where(d > 0, d, 1))[..., None]
            a[..., j + 1 :, j + 1 :] -= col[..., :, None] * col[..., None, :]
    return info


def cholesky_ex(A, *, upper=False, check_errors=False):
    """torch.linalg.cholesky_ex: (L, info); a matrix that is not positive-definite has potrf's info and a
    NaN factor."""
    _square("linalg.cholesky_ex", A)
    xp = A.device.xp
    try:
        return CholeskyEx(cholesky(A, upper=upper), Tensor(xp.zeros(A.shape[:-2], dtype=np.int32), device=A.device))
    except InputRangeError:
        read = xp.swapaxes(A.array, -1, -2) if upper else A.array
        info = Tensor(_cholesky_info(xp, read), device=A.device)
    if check_errors:
        _raise_info(
            "linalg.cholesky_ex",
            info,
            "The factorization could not be completed because the input is not "
            "positive-definite (the leading minor of order {i} is not positive-definite).",
        )
    safe, failed = _failed_as_identity(A, info)
    return CholeskyEx(_nan_where(failed, cholesky(safe, upper=upper)), info)
