"""Writes at a subscript: t[index] = v, index_put and index_put_, as torch does them.

The location is the one t[index] reads (ops/subscript.py): t[basic][adv]. One op, `index_put`, records
every such write (last write wins on repeated positions, or they add up with accumulate), so its
backward is shared: the old value's gradient is zero where it was overwritten, and each index reads
the value's gradient (duplicates included, as torch). An in-place write under grad mode is recorded as
an index_put of the tensor's old value, and the views the tensor belongs to are rebased
(ops/views.py). What torch checks first is checked here too: the value's type, dtype and shape, a
value that shares memory with where it goes, a leaf that requires grad.
"""

import numpy as np

from distgraph.autograd import grad_mode, memory_format
from distgraph.autograd.function import set_history
from distgraph.autograd.tensor import Tensor
from distgraph.backend import on
from distgraph.errors import AutogradError, DTypeError, InputRangeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.indexing import IDX, _add_at, _getitem, getitem
from distgraph.ops.registry import defop
from distgraph.ops.subscript import indexed_shape, memory_overlap, parse
from distgraph.ops.views import (
    check_view_write,
    commit,
    internal_overlap,
    overwrite,
    rebase,
    refuse_internal_overlap,
    snapshot,
)


def _write(xp, out, basic, adv, values, accumulate):
    """out[basic][adv] = values (or +=, repeated positions adding up), in place."""
    if adv is None:
        index = () if basic is None else basic
        if accumulate:
            out[index] += values
        else:
            out[index] = values
        return
    view = out if basic is None else out[basic]  # holds the advanced dims, so an array view
    if accumulate:
        _add_at(xp, view, adv, values)
    else:
        view[adv] = values


@defop("index_put", kind=IDX, save=())
def _index_put(xp, x, values, basic, adv, accumulate, layout="contiguous"):
    """`layout`: the result's, as torch makes it for the op written this way: "contiguous" (row-major, as
    index_add's), "preserve" (clone(self), as index_put's) or "strides" (clone_preserve_strides(self), as
    the *_scatter ops'): autograd/memory_format.py."""
    out = x.copy() if layout == "contiguous" else memory_format.clone(xp, x, preserve_strides=layout == "strides")
    _write(xp, out, basic, adv, values, accumulate)
    return out


@_index_put.grad
def _(ctx, g):
    a = ctx.attrs
    gx = g if a["accumulate"] else _index_put(g, ew.const(0, g), basic=a["basic"], adv=a["adv"], accumulate=False)
    gv = None
    if ctx.next[1] is not None:  # each index reads g, duplicates included (torch: values' grad is grad[indices])
        gv = g if a["basic"] is None else _getitem(g, index=a["basic"])
        gv = gv if a["adv"] is None else _getitem(gv, index=a["adv"])
    return gx, gv  # the engine sums gv down to the values' (broadcast) shape


def index_put(input, indices, values, accumulate=False):
    """torch.index_put: `input` with `values` written at `indices` (a tuple of index tensors), added up
    over repeated positions when `accumulate`."""
    sub, values = _index_put_args(input, indices, values, accumulate, "index_put")
    return _index_put(input, values, basic=sub.basic, adv=sub.adv, accumulate=bool(accumulate), layout="preserve")


def index_put_(input, indices, values, accumulate=False):
    """Tensor.index_put_: index_put in place."""
    sub, values = _index_put_args(input, indices, values, accumulate, "index_put_")
    _put_(input, sub, values, bool(accumulate), "index_put_")
    return input


def _index_put_args(input, indices, values, accumulate, op):
    if not isinstance(indices, tuple | list):
        raise DTypeError(f"{op}(): argument 'indices' must be a tuple of Tensors, not {type(indices).__name__}")
    for i, t in enumerate(indices):
        if not isinstance(t, Tensor):
            raise DTypeError(
                f"{op}(): expected Tensor as element {i} in argument 'indices', but got {type(t).__name__}"
            )
    if not isinstance(values, Tensor):
        raise DTypeError(f"{op}(): argument 'values' must be Tensor, not {type(values).__name__}")
    with on(input.device):  # (the index arrays it makes go on the tensor's GPU, where they are used)
        sub = parse(input.shape, tuple(indices), input.device.xp, op)
    return sub, _matched_value(input, sub, values, op, masked_fill=not accumulate)


def _matched_value(input, sub, v, op, masked_fill=True):
    """`v` (a Tensor) checked and shaped for writing at `sub` in `input`, as torch's index_put_ does: a
    one-element value through a lone mask goes through masked_fill_ (which refuses uint8 masks and casts
    the value); any other advanced write needs the value in `input`'s dtype (a basic one casts, as
    copy_). Leading 1s the indexed result lacks are dropped; the rest must broadcast to it."""
    fill = masked_fill and sub.lone_mask is not None and v.array.size == 1
    if fill and sub.lone_mask == "uint8":
        raise DTypeError(f"{op}: masked_fill_ only supports boolean masks, but got mask with dtype uint8")
    if v.array.dtype != input.array.dtype:
        if sub.adv is not None and not fill:
            raise DTypeError(
                f"{op}: Index put requires the source and destination dtypes match, got {input.dtype.name} for the "
                f"destination and {v.dtype.name} for the source."
            )
        v = ew.cast(v, input.array.dtype)
    target = indexed_shape(input.shape, sub)
    shape = tuple(v.shape)
    while len(shape) > len(target) and shape[0] == 1:
        shape = shape[1:]
    try:
        fits = np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{op}: shape mismatch: value tensor of shape {list(v.shape)} cannot be broadcast to indexing result "
            f"of shape {list(target)} (tensor shape {list(input.shape)})"
        )
    return v if shape == tuple(v.shape) else v.reshape(shape)


def setitem(input, index, value):
    """t[index] = value, as torch: a Python number takes the tensor's dtype; a tensor value goes through
    the same checks as index_put_."""
    if index is True:  # torch copies the value over the whole tensor (x[True] would add a dim of size 1)
        index = None
    with on(input.device):  # (as in `_index_put_args`)
        sub = parse(input.shape, index, input.device.xp, "setitem")
    if not isinstance(value, Tensor):
        value = _scalar_value(input, value)
    elif sub.adv is not None or (not value.ndim and indexed_shape(input.shape, sub)):
        # torch writes a 0-d value into a larger basic target with fill_, an advanced one with index_put_
        # (masked_fill_): their check counts the value's grad even where the target's dtype (int, bool)
        # drops it in the cast below; only copy_ (same shape, or a broadcast value) leaves it out
        check_view_write(input, (value,), "setitem")
    _put_(input, sub, _matched_value(input, sub, value, "setitem"), False, "setitem")


def _scalar_value(input, value):
    """A Python (or numpy) number as a 0-d tensor of `input`'s dtype. torch takes nothing else that is not
    a Tensor (lists, arrays and None are refused) and refuses a number the dtype cannot hold (an unsigned
    dtype takes down to -max, wrapping; float16 overflows to inf)."""
    if not isinstance(value, bool | int | float | complex | np.bool_ | np.number):
        raise DTypeError(f"setitem: can't assign a {type(value).__name__} to a {input.dtype.name} tensor")
    dt = input.array.dtype
    if isinstance(value, complex | np.complexfloating) and dt.kind != "c":
        raise DTypeError(f"setitem: value {value!r} cannot be converted to {dt.name}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InputRangeError(f"setitem: value {value} overflows int64 (torch reads Python ints as int64)")
    if not isinstance(value, bool | np.bool_) and dt.kind in "iuf" and dt != np.float16:
        info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
        high = int(info.max) if dt.kind in "iu" else float(info.max)
        low = -high if dt.kind == "u" else -high - 1 if dt.kind == "i" else -high
        finite = dt.kind == "f" and not np.isfinite(value)  # inf and nan fit a float dtype, no int one
        if not finite and not low <= value <= high:
            raise InputRangeError(f"setitem: value {value} cannot be converted to type {dt.name} without overflow")
    return ew.const(value, input)


def _put_(input, sub, v, accumulate, op):
    """Write `v` at `sub` into `input` in place. Under grad mode, when `input` or `v` needs grad, it is
    recorded as an index_put of `input`'s old value (the views `input` belongs to are rebased)."""
    _refuse_overlap(input, sub, v, op)
    check_view_write(input, (v,), op)
    if sub.adv is None:  # a basic write copies into its target, which torch refuses to do into aliases
        refuse_internal_overlap(input.array[(*(sub.basic or ()), Ellipsis)], op)
    recording = grad_mode.state.grad_enabled and (input.requires_grad or v.requires_grad)
    if recording:
        if input.requires_grad and input.grad_fn is None:
            view = op == "setitem" and _views(sub.basic, input.shape)
            what = "a view of a leaf Variable" if view else "a leaf Variable"
            raise AutogradError(f"{op}: {what} that requires grad is being used in an in-place operation.")
        written = input
        if sub.adv is None and internal_overlap(input.array):  # as torch, input[basic].copy_(v): the target
            written = getitem(input, sub.basic)  # (no aliases in it) gets v, and input, a view of the
            result = overwrite(snapshot(written), v)  # memory written, rebuilds its graph from the root's
        else:
            result = _index_put(snapshot(input), v, basic=sub.basic, adv=sub.adv, accumulate=accumulate)
        rebased = rebase(written, result)
    with on(input.device):  # (cupy writes on its current GPU: the tensor's; on cpu a shared no-op)
        _write(input.device.xp, input.array, sub.basic, sub.adv, v.array, accumulate)
    input._vc[0] += 1
    if recording:
        if written is input:
            set_history(input, result.grad_fn)
        commit(rebased)


def _views(basic, shape):
    """Whether torch's basic step makes a view (an int, None or a slice short of the whole dim); whole
    slices it skips, writing into the tensor itself."""
    d = 0
    for b in basic or ():
        if not isinstance(b, slice) or b.indices(shape[d]) != (0, shape[d], 1):
            return True
        d += 1
    return False


def _refuse_overlap(input, sub, v, op):
    """torch refuses a value that shares memory with where it is written: partly, for a basic write
    of a value that needs no broadcasting; at all, for an advanced one (but a one-element value through
    a lone mask, which is read out first)."""
    if sub.adv is None:
        target = input.array[(*(sub.basic or ()), Ellipsis)]  # `...` keeps a 0-d view, not a scalar
        bad = tuple(v.shape) == target.shape and memory_overlap(target, v.array) == "partial"
    else:
        target = input.array if sub.basic is None else input.array[sub.basic]
        fill = sub.lone_mask is not None and v.array.size == 1
        bad = not fill and memory_overlap(target, v.array) is not None
    if bad:
        raise AutogradError(
            f"{op}: unsupported operation: some elements of the input tensor and the written-to tensor refer to a "
            "single memory location. Please clone() the tensor before performing the operation."
        )
