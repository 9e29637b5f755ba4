"""torch.linalg's norms and the numbers built on them: vector_norm, matrix_norm, norm, matrix_rank, cond,
and the older torch.nuclear_norm / torch.frobenius_norm.

Each is composed as torch composes it (linalg/LinearAlgebra.cpp): the Frobenius norm is a 2-norm of
the entries, the 1/inf norms a max (min) of absolute row or column sums, the 2/nuclear norms the max
(min) or sum of the singular values. So their gradients are those ops' — torch's too, ties in a max
shared equally, as amax's.
"""

import numpy as np

from distgraph import dtypes
from distgraph.backend import to_device
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import creation, shape
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.linalg_decomp import eigvalsh, float_matrices, svdvals
from distgraph.ops.linalg_matrix import _square
from distgraph.ops.linalg_solvers import inv_ex
from distgraph.ops.promotion import cast

INF = float("inf")
_MATRIX_ORDS = ("fro", "nuc", INF, -INF, 1, -1, 2, -2)


def _float_input(name, x, dtype):
    """x cast to `dtype` (None: as it is), with torch's checks: x must be floating point, and `dtype` a
    floating dtype x converts to without narrowing (float64 to float32 is refused)."""
    if x.array.dtype.kind != "f":
        raise DTypeError(f"{name}: Expected a floating point or complex tensor as input. Got {x.dtype.name}")
    if dtype is None:
        return x
    dt = dtypes.from_any(dtype)
    if dt.np.kind != "f":
        raise DTypeError(f"{name}: dtype should be floating point or complex, but got {dt.name}")
    if np.promote_types(x.array.dtype, dt.np) != dt.np:
        raise DTypeError(
            f"{name}: the dtype of the input ({x.dtype.name}) should be convertible without narrowing to the "
            f"specified dtype ({dt.name})"
        )
    return cast(x, dt.np)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.vector_norm (ord a number; dim None flattens)."""
    if isinstance(ord, str):
        raise TypeError(f"linalg.vector_norm: argument 'ord' must be Number, not str ({ord!r})")
    return red.norm(_float_input("linalg.vector_norm", x, dtype), ord, dim, keepdim)


def _two_dims(name, A, dim):
    if not isinstance(dim, tuple | list) or len(dim) != 2:
        raise ShapeError(
            f"{name}: dim must be a 2-tuple. Got {dim if isinstance(dim, int) else ' '.join(map(str, dim))}"
        )
    d = tuple(red.normalize_dim(x, A.ndim, name) for x in dim)  # in order: rows, then columns
    if d[0] == d[1]:
        raise ShapeError(f"{name}: dims must be different. Got ({dim[0]}, {dim[1]})")
    return d


def _over_singular_values(A, dims, keepdim, reduce):
    """reduce(svdvals over the matrix dims `dims`, last dim); keepdim puts both dims back as size 1."""
    moved = shape.movedim(A, dims, (-2, -1))
    out = reduce(svdvals(moved), -1)
    if keepdim:
        for d in sorted(dims):
            out = shape.unsqueeze(out, d)
    return out


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """torch.linalg.matrix_norm: ord 'fro', 'nuc', inf, -inf, 1, -1, 2, -2 over the two dims `dim`."""
    name = "linalg.matrix_norm"
    if A.ndim < 2:
        raise ShapeError(f"{name}: The input tensor A must have at least 2 dimensions.")
    if ord not in _MATRIX_ORDS:
        raise ValueError(f"{name}: Order {ord} not supported.")
    A = _float_input(name, A, dtype)
    d = _two_dims(name, A, dim)
    if ord == "fro":
        return red.norm(A, 2, d, keepdim)
    if ord == "nuc":
        return _over_singular_values(A, d, keepdim, red.sum)
    # the max (min) is over the singular values (2), the column sums (1) or the row sums (inf)
    over = min(A.shape[d[0]], A.shape[d[1]]) if abs(ord) == 2 else A.shape[d[1] if abs(ord) == 1 else d[0]]
    if over == 0:  # torch's: 0, with no graph, for the max of nothing; an error for the min
        if ord < 0:
            raise ShapeError(f"{name}: Expected a non-empty tensor to reduce over, got {tuple(A.shape)} (ord {ord})")
        return red.norm(A.detach(), 2, d, keepdim)
    if abs(ord) == 2:
        return _over_singular_values(A, d, keepdim, red.amax if ord > 0 else red.amin)
    summed, kept = (d[0], d[1]) if abs(ord) == 1 else (d[1], d[0])
    if not keepdim and summed < kept:
        kept -= 1
    sums = red.norm(A, 1, summed, keepdim)
    return (red.amax if ord > 0 else red.amin)(sums, kept, keepdim)


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.norm: a vector norm over one dim (or all, flattened), a matrix norm over two."""
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None and len(dim) not in (1, 2):
        raise ShapeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {list(dim)}")
    if dim is not None and len(dim) == 2:
        return matrix_norm(A, "fro" if ord is None else ord, tuple(dim), keepdim, dtype=dtype)
    if dim is not None:
        if isinstance(ord, str):
            raise ValueError(f"linalg.norm: ord {ord!r} is a matrix norm, but dim {tuple(dim)} names one dimension")
        return vector_norm(A, 2 if ord is None else ord, tuple(dim), keepdim, dtype=dtype)
    if ord is None:
        return vector_norm(A, 2, None, keepdim, dtype=dtype)
    if A.ndim not in (1, 2):
        raise ShapeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. Got {A.ndim}D.")
    if A.ndim == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    if isinstance(ord, str):
        raise ShapeError(f"linalg.matrix_norm: The input tensor A must have at least 2 dimensions. (ord {ord!r})")
    return vector_norm(A, ord, None, keepdim, dtype=dtype)


def nuclear_norm(input, dim=(-2, -1), keepdim=False):
    """torch.nuclear_norm (older name): the sum of the singular values."""
    return matrix_norm(input, "nuc", dim, keepdim)


def frobenius_norm(input, dim, keepdim=False):
    """torch.frobenius_norm (older name): the 2-norm of the entries over `dim`."""
    return red.norm(input, 2, dim, keepdim)


def matrix_rank(A, *, atol=None, rtol=None, hermitian=False, tol=None):
    """torch.linalg.matrix_rank: the number of singular values (|eigenvalues| if hermitian) above
    max(atol, rtol·σ_max); rtol defaults to eps·max(m, n), or 0 when only a positive atol is given.
    `tol` is torch's older name for atol (with rtol 0)."""
    float_matrices("linalg.matrix_rank", A)
    if tol is not None:
        atol, rtol = tol, 0.0 if rtol is None else rtol
    a = A.detach()
    s = ew.abs(eigvalsh(a)) if hermitian else svdvals(a)
    if rtol is None:
        positive_atol = atol is not None and np.all(np.asarray(to_device(getattr(atol, "array", atol), "cpu")) > 0)
        rtol = 0.0 if positive_atol else float(np.finfo(a.array.dtype).eps) * max(A.shape[-2:])
    if s.shape[-1] == 0:
        return red.sum(cmp.gt(s, 0), -1)  # no singular values: rank 0
    smax = red.amax(s, -1, keepdim=True)
    tol_ = ew.mul(smax, _unsq(rtol))
    if atol is not None:
        tol_ = ew.maximum(tol_, _unsq(atol))
    return red.sum(cmp.gt(s, tol_), -1)


def _unsq(x):
    """A tensor tolerance (one per matrix) against singular values (..., k); a number as it is."""
    return shape.unsqueeze(x, -1) if hasattr(x, "ndim") and x.ndim else x


def cond(A, p=None):
    """torch.linalg.cond: σ_max/σ_min for p None/2 (σ_min/σ_max for -2; any shape); otherwise
    ‖A‖_p·‖A⁻¹‖_p of a square A, inf where A is singular."""
    float_matrices("linalg.cond", A)
    if p in (None, 2, -2):
        s = svdvals(A)
        if not s.shape[-1]:  # an empty matrix: torch's 0 for each
            return creation.zeros(tuple(A.shape[:-2]), dtype=A.dtype, device=A.device)
        big, small = shape.narrow(s, -1, 0, 1), shape.narrow(s, -1, s.shape[-1] - 1, 1)
        out = ew.div(big, small) if p != -2 else ew.div(small, big)
        return shape.squeeze(out, -1)
    if p not in _MATRIX_ORDS:
        raise ValueError(f"linalg.cond: Order {p} not supported.")
    _square(f"linalg.cond(ord={p})", A)
    inverse, info = inv_ex(A)
    singular = shape.expand(cmp.ne(info, 0), tuple(A.shape[:-2]))
    value = ew.mul(matrix_norm(A, p), matrix_norm(ew.where(_unsq2(singular), 0.0, inverse), p))
    return ew.where(singular, INF, value)


def _unsq2(x):
    return shape.unsqueeze(shape.unsqueeze(x, -1), -1)
