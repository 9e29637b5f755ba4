"""`distgraph.linalg`: torch.linalg's names for distgraph's matrix ops (ops/linalg_matrix.py, the products,
and the decompositions, solvers, norms and functions of ops/linalg_{decomp,solvers,norms,functions}.py),
with torch.linalg's signatures where they differ from the top-level functions (cross's dim=-1, pinv's
rtol, diagonal's last two dims, svd's Vh, qr's mode)."""

import numpy as _np

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

det, slogdet, solve, matrix_power = _matrix.det, _matrix.slogdet, _matrix.solve, _matrix.matrix_power
inv, matmul = _matrix.inverse, _products.matmul


def cholesky(A, *, upper=False):
    return _matrix.cholesky(A, upper=upper)


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    """Singular values below rtol·σ_max are cut (torch's default rtol: eps·max(m, n)); atol is not
    supported."""
    if atol is not None:
        raise NotImplementedError("linalg.pinv: atol is not supported by distgraph (use rtol)")
    if rtol is None:
        rtol = float(_np.finfo(A.array.dtype).eps) * max(A.shape[-2:])
    return _matrix.pinverse(A, rcond=rtol)


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
    out = tensors[0]
    for t in tensors[1:]:
        out = _products.matmul(out, t)
    return out
