"""torch's further products, built from matmul, mul, sum and shape ops (so their gradients are those
ops' and every captured graph sees known ops): addmv, addr, baddbmm, addbmm, inner, vdot, kron,
tensordot, trace, diff, cross, dist. Each checks its operands' shapes first and names itself in the
error, where numpy's broadcasting message would not.
"""

import numpy as np

from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg, regions, same_dtype, shape
from distgraph.ops import reduction as red
from distgraph.ops.autocast import autocast_op
from distgraph.ops.int_args import as_int


def _shape(x):
    return tuple(x.shape)


def _need_dims(name, **operands):
    """Each operand `name=(tensor, ndim)` must have that many dims (torch's 'must be a matrix' checks)."""
    for what, (x, ndim) in operands.items():
        if not isinstance(x, Tensor):
            raise DTypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")
        if x.ndim != ndim:
            raise ShapeError(f"{name}: {what} must be {ndim}-D, got a {x.ndim}-D tensor of shape {_shape(x)}")


def addmv(input, mat, vec, *, beta=1, alpha=1):
    _need_dims("addmv", mat=(mat, 2), vec=(vec, 1))
    same_dtype.addmv(input, mat, vec)
    return linalg.scaled_sum("addmv", input, linalg.mv(mat, vec), beta, alpha)


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    _need_dims("addr", vec1=(vec1, 1), vec2=(vec2, 1))
    return linalg.scaled_sum("addr", input, linalg.outer(vec1, vec2), beta, alpha, layout_of_input=True)


@autocast_op("baddbmm")
def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    _need_dims("baddbmm", batch1=(batch1, 3), batch2=(batch2, 3))
    same_dtype.baddbmm(input, batch1, batch2)
    return linalg.scaled_sum("baddbmm", input, linalg.bmm(batch1, batch2), beta, alpha)


@autocast_op("addbmm")
def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta·input + alpha·Σ_b batch1[b] @ batch2[b]."""
    _need_dims("addbmm", batch1=(batch1, 3), batch2=(batch2, 3))
    same_dtype.addmm(input, batch1, batch2)  # (torch's addbmm checks as addmm)
    return linalg.scaled_sum("addbmm", input, red.sum(linalg.bmm(batch1, batch2), 0), beta, alpha)


def vdot(input, other):
    """dot of two 1-D tensors (no conjugation to do: distgraph has no complex dtypes)."""
    _need_dims("vdot", input=(input, 1), other=(other, 1))
    return linalg.dot(input, other)


def tensordot(a, b, dims=2):
    """Σ over a's dims `dims[0]` and b's `dims[1]` (or a's last `dims` and b's first `dims`): the
    contracted dims moved together, flattened, and one matmul. `dims` may be a tensor, as torch's: 0-d (a
    count) or 2-d (the two lists)."""
    if a.array.dtype != b.array.dtype:  # torch's words (it promotes nothing here)
        raise DTypeError("both inputs should have same dtype")
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: dims must be in [0, {min(a.ndim, b.ndim)}], got {dims}")
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    da = [red.normalize_dim(d, a.ndim, "tensordot") for d in da]
    db = [red.normalize_dim(d, b.ndim, "tensordot") for d in db]
    if len(da) != len(db) or any(a.shape[i] != b.shape[j] for i, j in zip(da, db)):
        raise ShapeError(f"tensordot: contracted dims {da} of {_shape(a)} and {db} of {_shape(b)} do not match in size")
    free_a = [d for d in range(a.ndim) if d not in da]
    free_b = [d for d in range(b.ndim) if d not in db]
    k = int(np.prod([a.shape[d] for d in da]))
    left = shape.reshape(shape.permute(a, free_a + da), (-1, k))
    right = shape.reshape(shape.permute(b, db + free_b), (k, -1))
    out = linalg.matmul(left, right)
    return shape.reshape(out, tuple(a.shape[d] for d in free_a) + tuple(b.shape[d] for d in free_b))


def inner(input, other):
    """Σ over the last dims of both (a 0-d operand multiplies instead)."""
    if input.ndim == 0 or other.ndim == 0:
        return ew.mul(input, other)
    if input.shape[-1] != other.shape[-1]:
        raise ShapeError(f"inner: last dims differ: {_shape(input)} and {_shape(other)}")
    return tensordot(input, other, ([-1], [-1]))


def kron(input, other):
    """The Kronecker product: dims interleaved as (a0, b0, a1, b1, ...) by broadcasting, then merged."""
    n = max(input.ndim, other.ndim)
    a = shape.reshape(input, tuple(s for d in _padded(input, n) for s in (d, 1)))
    b = shape.reshape(other, tuple(s for d in _padded(other, n) for s in (1, d)))
    return shape.reshape(ew.mul(a, b), tuple(x * y for x, y in zip(_padded(input, n), _padded(other, n))))


def _padded(x, n):
    return (1,) * (n - x.ndim) + _shape(x)


@autocast_op("trace")
def trace(input):
    _need_dims("trace", input=(input, 2))
    return named(red.sum(regions.diagonal(input)), "TraceBackward0")


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """The n-th forward difference along dim, after prepending/appending (a bool tensor's is xor)."""
    if input.ndim == 0:
        raise ShapeError("diff: expected at least a 1-D tensor, got a 0-D tensor")
    if (n := as_int(n, "diff", "order n")) < 0:
        raise ValueError(f"diff: order n must be a non-negative int, got {n!r}")
    axis = red.normalize_dim(dim, input.ndim, "diff")
    parts = [p for p in (prepend, input, append) if p is not None]
    if any(p.ndim != input.ndim for p in parts):
        raise ShapeError(
            f"diff: expects prepend or append to be the same dimension as input {_shape(input)}, got "
            f"{[_shape(p) for p in (prepend, append) if p is not None]}"
        )
    x = shape.cat(parts, axis) if len(parts) > 1 else input
    if n == 0:
        return x.clone()  # a new tensor, as torch's (not input itself)
    for _ in range(n):  # an empty result too is a difference (of empty slices), never a view of input
        length = max(x.shape[axis] - 1, 0)
        hi, lo = shape.narrow(x, axis, min(1, x.shape[axis]), length), shape.narrow(x, axis, 0, length)
        x = cmp.logical_xor(hi, lo) if x.array.dtype == np.bool_ else ew.sub(hi, lo)
    return x


def cross(input, other, dim=None):
    """The cross product of 3-vectors along dim (default: the first dim of size 3, as torch.cross)."""
    if input.ndim != other.ndim:
        raise ShapeError(f"cross: inputs must have the same number of dimensions ({_shape(input)}, {_shape(other)})")
    if dim is None:
        dim = next((d for d, s in enumerate(input.shape) if s == 3), None)
        if dim is None:
            raise ShapeError(f"cross: no dimension of size 3 in input {_shape(input)}")
    axis = red.normalize_dim(dim, input.ndim, "cross")
    if input.shape[axis] != 3 or other.shape[axis] != 3:
        raise ShapeError(f"cross: dimension {dim} does not have size 3 (inputs {_shape(input)}, {_shape(other)})")
    a, b = shape.broadcast_tensors(input, other)  # the other dims broadcast
    ai = [shape.narrow(a, axis, i, 1) for i in range(3)]
    bi = [shape.narrow(b, axis, i, 1) for i in range(3)]
    parts = [ew.sub(ew.mul(ai[j], bi[k]), ew.mul(ai[k], bi[j])) for j, k in ((1, 2), (2, 0), (0, 1))]
    return shape.cat(parts, axis)


def dist(input, other, p=2):
    """The p-norm of input - other (broadcast)."""
    return red.norm(ew.sub(input, other), p)
