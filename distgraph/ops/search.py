"""searchsorted: torch's binary search, run on the arrays (not a recorded op: its result is an index,
which has no gradient). `sorted_sequence` is 1-D (every value searched in it) or N-D (each innermost row
searched for the values in the matching row of `values`, whose leading dims must equal its own).

The loop is torch's, not numpy's: torch's comparisons are false at a NaN, so a NaN in the sequence reads
as below a value and a NaN value lands at the end (numpy's order puts NaN last and would place them
otherwise)."""

import math

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.ops.counting import host_read

OP = "searchsorted()"


def searchsorted(sorted_sequence, values, *, out_int32=False, right=False, side=None, sorter=None):
    """torch.searchsorted: for each value, the index where inserting it keeps its row sorted (right /
    side='right': after any equal entries). `sorter` sorts an unsorted sequence (argsort's indices); a
    number as `values` gives a 0-d tensor."""
    right = _right(right, side)
    xp = sorted_sequence.device.xp
    if not isinstance(values, Tensor):
        values = Tensor(xp.asarray(values), device=sorted_sequence.device)
    host_read(sorted_sequence, OP)  # the search reads the values on the host: a traced input stops capture
    host_read(values, OP)
    seq, v = sorted_sequence.array, values.array
    _check_shapes(seq.shape, v.shape)
    if sorter is not None:
        seq = xp.take_along_axis(seq, _sorter(sorter, seq.shape), axis=-1)
    b = math.prod(seq.shape[:-1])  # one row per leading index: 1 for a 1-D sequence (every value in it)
    rows, v_rows = seq.reshape(b, seq.shape[-1]), v.reshape(b, v.shape[-1] if seq.ndim > 1 else v.size)
    out = _search(xp, rows, v_rows, right).reshape(v.shape)
    return Tensor(out.astype(np.int32) if out_int32 else out, device=values.device)


def _right(right, side):
    if side is None:
        return bool(right)
    if side not in ("left", "right"):
        raise InputRangeError(f"{OP}: side can only be 'left' or 'right' but got {side}")
    if right and side == "left":
        raise InputRangeError(f"{OP}: side and right can't be set to opposites, got side of left while right was True")
    return side == "right"


def _check_shapes(seq_shape, v_shape):
    if not seq_shape:
        raise ShapeError(f"{OP}: boundaries tensor should have positive dimension, but got 0 dimension")
    if len(seq_shape) == 1:
        return
    if not v_shape:
        raise ShapeError(
            f"{OP}: input value can be a scalar only when boundaries tensor dimension is 1, but got boundaries "
            f"tensor of shape {tuple(seq_shape)}"
        )
    if tuple(seq_shape[:-1]) != tuple(v_shape[:-1]):
        raise ShapeError(
            f"{OP}: boundaries tensor should be 1 dimension or the first N-1 dimensions of boundaries tensor and "
            f"input value tensor must match, but got boundaries tensor {list(seq_shape)} and input value tensor "
            f"{list(v_shape)}"
        )


def _sorter(sorter, seq_shape):
    """The sorter's indices as an array, checked as torch checks them."""
    if not isinstance(sorter, Tensor) or sorter.array.dtype != np.int64:
        got = sorter.dtype.name if isinstance(sorter, Tensor) else type(sorter).__name__
        raise DTypeError(f"{OP}: sorter must be a tensor of long dtype but got {got}")
    host_read(sorter, OP)
    s = sorter.array
    if tuple(s.shape) != tuple(seq_shape):
        raise ShapeError(
            f"{OP}: boundary and sorter must have the same size, but got boundary tensor {list(seq_shape)} and "
            f"sorter tensor {list(s.shape)}"
        )
    if s.size and (int(s.min()) < 0 or int(s.max()) >= seq_shape[-1]):
        raise IndexOutOfRangeError(f"{OP}: sorter index out of range (each must be in [0, {seq_shape[-1]}))")
    return s


def _search(xp, rows, v, right):
    """Binary search of each row of `v` (B, k) in the same row of `rows` (B, m): torch's loop, every value
    at once."""
    m = rows.shape[1]
    lo, hi = xp.zeros(v.shape, dtype=np.int64), xp.full(v.shape, m, dtype=np.int64)
    row = xp.arange(rows.shape[0])[:, None]
    while bool((lo < hi).any()):
        mid = (lo + hi) // 2
        s = rows[row, xp.minimum(mid, m - 1)]
        up = (lo < hi) & ~((s > v) if right else (s >= v))  # torch: start = mid + 1 unless mid_val >= val
        lo, hi = xp.where(up, mid + 1, lo), xp.where(up | (lo >= hi), hi, mid)
    return lo
