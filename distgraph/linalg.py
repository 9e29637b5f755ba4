"""`distgraph.linalg`: torch.linalg's names for distgraph's matrix ops (ops/linalg_matrix.py, the products,
and the decompositions, solvers, norms and functions of ops/linalg_{decomp,solvers,norms,functions}.py),
with torch.linalg's signatures where they differ from the top-level functions (cross's dim=-1, pinv's
rtol, diagonal's last two dims, svd's Vh, qr's mode)."""

import numpy as _np

from distgraph.errors import LinAlgError  # noqa: F401  (torch.linalg.LinAlgError)
from distgraph.errors import ShapeError as _ShapeError
from distgraph.ops import elementwise as _ew
from distgraph.ops import linalg as _products
from distgraph.ops import linalg_extra as _extra
from distgraph.ops import linalg_matrix as _matrix
from distgraph.ops import reduction as _reduction
from distgraph.ops import regions as _regions
from distgraph.ops.linalg_decomp import eig, eigh, eigvals, eigvalsh, householder_product, qr, svd, svdvals  # noqa: F401
from distgraph.ops.linalg_functions import lstsq, matrix_exp, tensorinv, tensorsolve, vander  # noqa: F401
from distgraph.ops.linalg_norms import cond, matrix_norm, matrix_rank, norm, vector_norm  # noqa: F401
from distgraph.ops.linalg_solvers import (  # noqa: F401
    cholesky_ex,
    inv_ex,
    lu,
    lu_factor,
    lu_factor_ex,
    lu_solve,
    solve_ex,
    solve_triangular,
)
from distgraph.ops.torch_keywords import accept as _accept_torch_keywords

det, slogdet, solve, matrix_power = _matrix.det, _matrix.slogdet, _matrix.solve, _matrix.matrix_power
inv, matmul = _matrix.inverse, _products.matmul


def cholesky(A, *, upper=False):
    return _matrix.cholesky(A, upper=upper)


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    """Singular values (|eigenvalues| of A's lower triangle if hermitian) at most max(atol, rtol·σ_max)
    are cut; rtol defaults to eps·max(m, n), or 0 when a positive atol is given (torch's rules). A tensor
    tolerance must hold one value."""
    atol, rtol = _one_value("atol", atol), _one_value("rtol", rtol)
    if rtol is None and atol is not None and atol > 0:
        rtol = 0.0
    elif rtol is None:  # (pinverse refuses a non-float A)
        rtol = float(_np.finfo(A.array.dtype).eps) * max(A.shape[-2:]) if A.array.dtype.kind == "f" else 0.0
    return _matrix.pinverse(A, rcond=rtol, atol=0.0 if atol is None else atol, hermitian=hermitian)


def _one_value(name, tol):
    if tol is None or not hasattr(tol, "numel"):
        return tol
    if tol.numel() != 1:
        raise NotImplementedError(
            f"linalg.pinv: a tensor {name} of shape {tuple(tol.shape)} (one per matrix) is not supported"
        )
    return float(tol.item())


def cross(input, other, *, dim=-1):
    return _extra.cross(input, other, dim=dim)


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    return _regions.diagonal(A, offset, dim1, dim2)


def vecdot(x, y, *, dim=-1):
    return _reduction.sum(_ew.mul(x, y), dim)


def multi_dot(tensors):
    """The chain product, a 1-D first (last) operand read as a row (column) vector, as torch."""
    if len(tensors) < 2:
        raise ValueError(f"linalg.multi_dot: expected at least 2 tensors, got {len(tensors)}")
    last = len(tensors) - 1
    for i, t in enumerate(tensors):
        if i in (0, last) and t.ndim not in (1, 2):
            which = "first" if i == 0 else "last"
            raise _ShapeError(
                f"linalg.multi_dot: the {which} tensor must be 1D or 2D but got {t.ndim}D (shape {tuple(t.shape)})"
            )
        if 0 < i < last and t.ndim != 2:
            raise _ShapeError(f"linalg.multi_dot: tensor {i} must be 2D but got {t.ndim}D (shape {tuple(t.shape)})")
    out = tensors[0]
    for t in tensors[1:]:
        out = _products.matmul(out, t)
    return out


_accept_torch_keywords(globals(), "linalg")  # out=, axis=, keepdims= (ops/torch_keywords.py)
