"""torch.* namespace functions built from recorded ops: atleast_Nd, meshgrid and cartesian_prod,
combinations, block_diag, the stacks torch adds (column_stack, dstack, row_stack), cdist and pdist,
trapezoid and cumulative_trapezoid, vander, rsub; the index builders (tril/triu_indices, unravel_index,
bucketize, isin) and the dtype questions (broadcast_shapes, result_type, can_cast, finfo, iinfo).

Every differentiable function here composes ops that already carry a backward rule (reshape, expand,
slicing, cat, sub, norm, cumprod, ...), so gradients, double backward and graph capture come for free;
the integer-valued ones compute their answer on the array and return a tensor without grad, as torch's.
"""

import builtins
import itertools

import numpy as np

from distgraph import dtypes
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.compare import eq
from distgraph.ops.indexing import index_select
from distgraph.ops.products import cumprod, cumsum
from distgraph.ops.promotion import cast
from distgraph.ops.reduction import norm, sum
from distgraph.ops.registry import defop
from distgraph.ops.search import searchsorted
from distgraph.ops.shape import _dim, _slice, cat, concatenate, expand, hstack, reshape, stack, vstack

__all__ = ["concatenate"]  # re-exported: torch.concatenate is shape.cat under its numpy name

row_stack = vstack
INF = float("inf")


def _tensors(op, tensors):
    """The tensors of a `f(*tensors)` call, which torch also takes as one list or tuple."""
    if len(tensors) == 1 and isinstance(tensors[0], list | tuple):
        return list(tensors[0]), True
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise DTypeError(f"{op}: expected Tensors, got {type(t).__name__} at position {i}")
    return list(tensors), False


# ---- atleast_Nd ----------------------------------------------------------------------------------
def _atleast(op, tensors, shape_of):
    ts, as_list = _tensors(op, tensors)
    out = tuple(t if t.ndim >= len(shape_of(())) else reshape(t, shape_of(tuple(t.shape))) for t in ts)
    return out if as_list or len(out) != 1 else out[0]


def atleast_1d(*tensors):
    """torch.atleast_1d: a 0-d tensor as shape (1,); one tensor in gives one out, several (or a list) a tuple."""
    return _atleast("atleast_1d", tensors, lambda s: s if s else (1,))


def atleast_2d(*tensors):
    """torch.atleast_2d: 0-d as (1, 1), 1-d (n,) as (1, n)."""
    return _atleast("atleast_2d", tensors, lambda s: (1, 1)[: 2 - len(s)] + s)


def atleast_3d(*tensors):
    """torch.atleast_3d: 0-d as (1, 1, 1), (n,) as (1, n, 1), (m, n) as (m, n, 1) (numpy's layout)."""
    return _atleast("atleast_3d", tensors, lambda s: {0: (1, 1, 1), 1: (1, *s, 1), 2: (*s, 1)}.get(len(s), s))


# ---- grids, products, combinations ---------------------------------------------------------------
def meshgrid(*tensors, indexing="ij"):
    """torch.meshgrid: coordinate grids of 0-d/1-d tensors, each an expanded view of its input ('ij':
    dims in input order; 'xy': the first two swapped, as numpy's default)."""
    ts, _ = _tensors("meshgrid", tensors)
    if indexing not in ("ij", "xy"):
        raise ShapeError(f"torch.meshgrid: indexing must be one of 'xy' or 'ij', but received: {indexing!r}")
    if not ts:
        raise ShapeError("torch.meshgrid: expects a non-empty TensorList")
    for i, t in enumerate(ts):
        if t.ndim > 1:
            raise ShapeError(
                f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got shape {tuple(t.shape)} at {i}"
            )
        if t.array.dtype != ts[0].array.dtype:
            raise DTypeError(
                f"meshgrid expects all tensors to have the same dtype, got {ts[0].dtype.name} and {t.dtype.name}"
            )
    sizes = [t.numel() for t in ts]
    swap = indexing == "xy" and len(ts) >= 2
    order = [1, 0, *range(2, len(ts))] if swap else list(range(len(ts)))
    shape = tuple(sizes[j] for j in order)
    out = []
    for i, t in enumerate(ts):
        view = [1] * len(ts)
        view[order.index(i)] = sizes[i]
        out.append(expand(reshape(t, tuple(view)), shape))
    return tuple(out)


def cartesian_prod(*tensors):
    """torch.cartesian_prod: every combination of the 1-d inputs' elements, one row each (one input: itself)."""
    ts, _ = _tensors("cartesian_prod", tensors)
    for i, t in enumerate(ts):
        if t.ndim != 1:
            raise ShapeError(f"cartesian_prod: Expect a 1D vector, but got shape {tuple(t.shape)} at input {i}")
    if len(ts) == 1:
        return ts[0]
    return stack([reshape(g, (-1,)) for g in meshgrid(*ts, indexing="ij")], dim=1)


def combinations(input, r=2, with_replacement=False):
    """torch.combinations: the length-r combinations of a 1-d tensor's elements as rows (itertools' order)."""
    if input.ndim != 1:
        raise ShapeError(f"combinations: Expect a 1D vector, but got shape {tuple(input.shape)}")
    if r < 0:
        raise ShapeError(f"combinations: Expect a non-negative number, but got {r}")
    if r == 0:
        return Tensor(input.device.xp.empty((0,), dtype=input.array.dtype), device=input.device)
    pick = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    idx = np.asarray(list(pick(range(input.shape[0]), r)), dtype=np.int64).reshape(-1, r)
    flat = index_select(input, 0, Tensor(input.device.xp.asarray(idx.reshape(-1)), device=input.device))
    return reshape(flat, idx.shape)


def block_diag(*tensors):
    """torch.block_diag: the inputs (0-d/1-d/2-d, read as 2-d rows) on the diagonal of a zero matrix, in
    their promoted dtype; built with cat so each block's gradient is its slice of the output's."""
    ts, _ = _tensors("block_diag", tensors)
    for i, t in enumerate(ts):
        if t.ndim > 2:
            raise ShapeError(
                f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has {t.ndim} dimensions"
            )
    if not ts:
        return Tensor(np.empty((1, 0), dtype=dtypes.get_default_dtype().np))
    dt = (
        dtypes.result_np_dtype([t for t in ts])
        if builtins.any(t.array.dtype != ts[0].array.dtype for t in ts)
        else ts[0].array.dtype
    )
    blocks = [reshape(t if t.array.dtype == dt else cast(t, dt), (1, -1) if t.ndim < 2 else tuple(t.shape)) for t in ts]
    width = builtins.sum(b.shape[1] for b in blocks)
    xp, rows, left = ts[0].device.xp, [], 0
    for b in blocks:
        h, w = b.shape
        pad = lambda n: Tensor(xp.zeros((h, n), dtype=dt), device=b.device)  # noqa: E731
        rows.append(cat([pad(left), b, pad(width - left - w)], dim=1))
        left += w
    return cat(rows, dim=0)


# ---- stacks torch adds to ops/shape.py's -----------------------------------------------------------
def column_stack(tensors):
    """torch.column_stack: 0-d and 1-d inputs as columns (n, 1), then hstack."""
    ts = [reshape(t, (t.numel(), 1)) if t.ndim < 2 else t for t in tensors]
    return hstack(ts)


def dstack(tensors):
    """torch.dstack: atleast_3d of each input, then cat along dim 2."""
    return cat(atleast_3d(list(tensors)), dim=2)


# ---- distances -------------------------------------------------------------------------------------
def _check_p(op, p):
    if not isinstance(p, int | float) or p < 0:
        raise ShapeError(f"{op} only supports non-negative p values, got {p!r}")


@autocast_op("cdist")
def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """torch.cdist: the p-norm distance between every row of x1 (..., P, M) and of x2 (..., R, M), batch dims
    broadcast. Computed directly (torch's matmul shortcut for large p=2 inputs differs only in rounding);
    `compute_mode` is checked and taken for compatibility."""
    modes = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")
    if compute_mode not in modes:
        raise ShapeError(f"cdist: {compute_mode!r} is not a valid value for compute_mode (expected one of {modes})")
    _check_p("cdist", p)
    if x1.ndim < 2 or x2.ndim < 2:
        raise ShapeError(f"cdist only supports at least 2D tensors, got X1 {tuple(x1.shape)} and X2 {tuple(x2.shape)}")
    if x1.shape[-1] != x2.shape[-1]:
        raise ShapeError(
            f"cdist: X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} X2: {x2.shape[-1]}"
        )
    for name, x in (("X1", x1), ("X2", x2)):
        if x.array.dtype.kind != "f":
            raise DTypeError(f"cdist only supports floating-point dtypes, {name} got: {x.dtype.name}")
    diff = ew.sub(reshape(x1, (*x1.shape[:-1], 1, x1.shape[-1])), reshape(x2, (*x2.shape[:-2], 1, *x2.shape[-2:])))
    return _pnorm(diff, p)


@defop("inf_norm_last", kind="reduction", saves_output=True)
def _inf_norm_last(xp, d):
    """max |d| over the last dim (a NaN propagates, as torch's cdist/pdist)."""
    return xp.abs(d).max(axis=-1)


@_inf_norm_last.grad
def _(ctx, g):
    """torch's cdist/pdist rule at p=inf: sign(d) * g at every tied maximum, each taking it whole (amax would
    share g among ties)."""
    d, out = ctx.inputs[0], ctx.out.detach()
    tied = cast(eq(ew.abs(d.detach()), reshape(out, (*out.shape, 1))), d.array.dtype)
    return (ew.mul(reshape(g, (*g.shape, 1)), ew.mul(ew.sign(d.detach()), tied)),)


def _pnorm(diff, p):
    """The p-norm over the last dim; an empty last dim gives zeros (a max over it would refuse)."""
    if diff.shape[-1] == 0:
        return ew.mul(sum(diff, dim=-1), 0.0)
    return _inf_norm_last(diff) if p == INF else norm(diff, p=float(p), dim=-1)


def pdist(input, p=2):
    """torch.pdist: the p-norm distance between each pair of rows i < j of an (N, M) input, in row-major
    order of the pairs (the upper triangle of cdist(input, input) without its diagonal)."""
    _check_p("pdist", p)
    if input.ndim != 2:
        raise ShapeError(f"pdist only supports 2D tensors, got: {input.ndim}D (shape {tuple(input.shape)})")
    if input.array.dtype.kind != "f":
        raise DTypeError(f"pdist only supports floating-point dtypes, got: {input.dtype.name}")
    i, j = np.triu_indices(input.shape[0], 1)
    xp, dev = input.device.xp, input.device
    rows_i = index_select(input, 0, Tensor(xp.asarray(i.astype(np.int64)), device=dev))
    rows_j = index_select(input, 0, Tensor(xp.asarray(j.astype(np.int64)), device=dev))
    return _pnorm(ew.sub(rows_i, rows_j), p)


# ---- integration, polynomials, rsub -------------------------------------------------------------------
def _float(y):
    return y if y.array.dtype.kind == "f" else cast(y, dtypes.get_default_dtype())


def _halves(y, d):
    """The mean of each pair of neighbours along `d`: (y[1:] + y[:-1]) / 2."""
    n = y.shape[d]
    return ew.mul(
        ew.add(_slice(y, axis=d, start=1, stop=n), _slice(y, axis=d, start=0, stop=builtins.max(n - 1, 0))), 0.5
    )


def _spacing(op, y, x, dx, d):
    """The widths between samples: dx (a number), or diff(x) (x 1-d along d, or y's shape)."""
    if x is None:
        return 1 if dx is None else dx
    if not isinstance(x, Tensor):
        return x  # torch.trapezoid(y, 2.0): the positional number is dx
    n = y.shape[d]
    if x.ndim == 1:
        if x.shape[0] != n:
            raise ShapeError(
                f"{op}: There must be one `x` value for each sample point (x {tuple(x.shape)}, y {tuple(y.shape)}, dim {d})"
            )
        x = reshape(x, tuple(n if k == d else 1 for k in range(y.ndim)))
        return ew.sub(_slice(x, axis=d, start=1, stop=n), _slice(x, axis=d, start=0, stop=builtins.max(n - 1, 0)))
    xd = _dim(d - y.ndim, x.ndim, op)
    m = x.shape[xd]
    return ew.sub(_slice(x, axis=xd, start=1, stop=m), _slice(x, axis=xd, start=0, stop=builtins.max(m - 1, 0)))


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """torch.trapezoid: the trapezoid rule along `dim`, samples spaced by dx or at the points x."""
    if x is not None and dx is not None:
        raise ShapeError("trapezoid: cannot pass both x and dx")
    d = _dim(dim, y.ndim, "trapezoid")
    return sum(ew.mul(_halves(_float(y), d), _spacing("trapezoid", y, x, dx, d)), dim=d)


def trapz(y, x=None, *, dx=None, dim=-1):
    """torch.trapz: trapezoid's older name (trapz(y, x, dim=) or trapz(y, dx=, dim=))."""
    return trapezoid(y, x, dx=dx, dim=dim)


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """torch.cumulative_trapezoid: the running trapezoid sums along `dim` (one fewer than the samples)."""
    if x is not None and dx is not None:
        raise ShapeError("cumulative_trapezoid: cannot pass both x and dx")
    d = _dim(dim, y.ndim, "cumulative_trapezoid")
    return cumsum(ew.mul(_halves(_float(y), d), _spacing("cumulative_trapezoid", y, x, dx, d)), d)


def vander(x, N=None, increasing=False):
    """torch.vander: columns x**(N-1) ... x**0 (or increasing), built with cumprod as torch's (so the
    gradient at x = 0 is finite); integer and bool inputs give int64."""
    if x.ndim != 1:
        raise ShapeError(f"vander: x must be a one-dimensional tensor, got shape {tuple(x.shape)}")
    n = x.shape[0] if N is None else N
    if n < 0:
        raise ShapeError(f"vander: N must be non-negative, got {n}")
    if x.array.dtype.kind in "biu":
        x = cast(x, np.int64)
    col = reshape(x, (-1, 1))
    ones = Tensor(x.device.xp.ones((x.shape[0], builtins.min(n, 1)), dtype=x.array.dtype), device=x.device)
    out = cat([ones, cumprod(expand(col, (x.shape[0], n - 1)), 1)], dim=1) if n > 1 else ones
    return out if increasing else out.flip(1)


def rsub(input, other, alpha=1):
    """torch.rsub: other - alpha * input (sub with its operands swapped)."""
    if not isinstance(input, Tensor):
        raise DTypeError(f"rsub: expected input to be a Tensor, got {type(input).__name__}")
    return ew.sub(other, input, alpha=alpha)


# ---- index builders (integer results, no grad) ------------------------------------------------------
def _indices(op, take, row, col, offset, dtype, device):
    if row < 0 or col < 0:
        raise ShapeError(f"{op}: row and col must be non-negative, got row={row}, col={col}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.int64
    if dt.category != 1:
        raise DTypeError(f"{op}: dtype must be an integer dtype, got {dt.name}")
    dev = as_device(device)
    r, c = take(row, offset, col)
    return Tensor(dev.xp.asarray(np.stack([r, c]).astype(dt.np).reshape(2, -1)), device=dev)


def tril_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """torch.tril_indices: the (2, N) coordinates of the lower triangle of a row x col matrix, row-major."""
    return _indices("tril_indices", np.tril_indices, row, col, offset, dtype, device)


def triu_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """torch.triu_indices: the (2, N) coordinates of the upper triangle of a row x col matrix, row-major."""
    return _indices("triu_indices", np.triu_indices, row, col, offset, dtype, device)


def unravel_index(indices, shape):
    """torch.unravel_index: flat indices as a tuple of coordinate tensors, one per dim of `shape`. As torch,
    indices wrap Python-style (floor division and modulo), so -1 is the last element."""
    if not isinstance(indices, Tensor):
        raise DTypeError(f"unravel_index: expected 'indices' to be a Tensor, got {type(indices).__name__}")
    if indices.array.dtype.kind not in "iu":
        raise DTypeError(f"unravel_index: expected 'indices' to be integer dtype, but got {indices.dtype.name}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if builtins.any(s < 0 for s in shape):
        raise ShapeError(f"unravel_index: 'shape' cannot have negative values, but got {shape}")
    if builtins.any(s == 0 for s in shape):
        raise ShapeError(f"unravel_index: 'shape' cannot have a zero size, got {shape}")
    flat, out = indices.array.astype(np.int64), []
    for s in reversed(shape):
        out.append(flat % s)
        flat = flat // s
    return tuple(Tensor(a, device=indices.device) for a in reversed(out))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """torch.bucketize: the index of each input value's bucket in the sorted 1-d `boundaries` (right=False:
    boundaries[i-1] < v <= boundaries[i]); a number input gives a 0-d tensor."""
    if not isinstance(boundaries, Tensor) or boundaries.ndim != 1:
        got = tuple(boundaries.shape) if isinstance(boundaries, Tensor) else type(boundaries).__name__
        raise ShapeError(f"bucketize: boundaries tensor must be 1 dimension, but got {got}")
    if not isinstance(input, Tensor):
        input = Tensor(boundaries.device.xp.asarray(input), device=boundaries.device)
    out = searchsorted(boundaries, input, right=right)
    return cast(out, np.int32) if out_int32 else out


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """torch.isin: whether each element occurs in test_elements (either may be a number); `invert` negates."""
    ref = elements if isinstance(elements, Tensor) else test_elements
    if not isinstance(ref, Tensor):
        raise DTypeError("isin: expected elements or test_elements to be a Tensor, got two numbers")
    xp = ref.device.xp
    a, b = (x.array if isinstance(x, Tensor) else xp.asarray(x) for x in (elements, test_elements))
    out = xp.isin(a, b, assume_unique=assume_unique, invert=invert)
    return Tensor(xp.asarray(out), device=ref.device)


# ---- dtype and shape questions -----------------------------------------------------------------------
def broadcast_shapes(*shapes):
    """torch.broadcast_shapes: the shape the given shapes broadcast to (ints read as 1-d shapes)."""
    shapes = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    try:
        return Size(np.broadcast_shapes(*shapes))  # torch's type
    except ValueError:
        raise ShapeError(f"broadcast_shapes: shapes {shapes} cannot be broadcast together") from None


def result_type(tensor1, tensor2):
    """torch.result_type: the dtype an arithmetic op on the two operands (tensors or numbers) gives."""
    return dtypes.from_numpy(dtypes.result_np_dtype((tensor1, tensor2)))


def can_cast(from_, to):
    """torch.can_cast: whether a cast keeps the kind (bool < integer < floating): never floating -> integer
    or integer -> bool; within a kind any size goes, as torch allows."""
    return dtypes.from_any(from_).category <= dtypes.from_any(to).category


class finfo:  # noqa: N801  (torch.finfo)
    """torch.finfo: the machine limits of a floating dtype (numpy's), under torch's field names."""

    def __init__(self, type=None):
        dt = dtypes.from_any(type) if type is not None else dtypes.get_default_dtype()
        if not dt.is_floating_point:
            raise DTypeError(f"finfo: expected a floating dtype, got {dt.name}")
        info = np.finfo(dt.np)
        self.bits, self.dtype = int(info.bits), dt.name
        self.eps, self.max, self.min = float(info.eps), float(info.max), float(info.min)
        self.tiny = self.smallest_normal = float(info.smallest_normal)
        self.resolution = 10.0 ** -int(info.precision)  # torch's: exact, not numpy's rounded float

    def __repr__(self):
        fields = ("resolution", "min", "max", "eps", "smallest_normal", "tiny")
        return "finfo(" + ", ".join(f"{k}={getattr(self, k):g}" for k in fields) + f", dtype={self.dtype})"


class iinfo:  # noqa: N801  (torch.iinfo)
    """torch.iinfo: the range of an integer dtype (numpy's), under torch's field names."""

    def __init__(self, type):
        dt = dtypes.from_any(type)
        if dt.category != 1:
            raise DTypeError(f"iinfo: expected an integer dtype, got {dt.name}")
        info = np.iinfo(dt.np)
        self.bits, self.min, self.max, self.dtype = int(info.bits), int(info.min), int(info.max), dt.name

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"
