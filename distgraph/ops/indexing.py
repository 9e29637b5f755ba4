"""Indexing ops: t[idx] and t[idx] = v (ints, slices, None, Ellipsis, boolean masks, integer arrays, read
as torch reads them: ops/subscript.py), index_put, gather, scatter/scatter_add, index_select,
masked_fill, one_hot, sort, topk, nonzero.

Every gather-like op's backward is a scatter-add and every scatter-add's backward is a gather, so
both directions stay differentiable for higher-order gradients.
"""

from collections import namedtuple

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.reduction import normalize_dim
from distgraph.ops.registry import defop
from distgraph.ops.subscript import indexed_shape, memory_overlap, parse
from distgraph.ops.views import commit, is_basic_index, rebase, snapshot

IDX = "index"
SortResult = namedtuple("SortResult", ["values", "indices"])


# ---- getitem / setitem / index_put ---------------------------------------------------------------------
# t[index] is t[basic][adv] (ops/subscript.py reads the index as torch does): the basic part is a view,
# the advanced part a copy; writes go to the same two-step location.
@defop("getitem", kind=IDX, save=())
def _getitem(xp, x, index):
    out = x[index]
    if isinstance(out, np.generic):  # an element: numpy copies it out as a scalar, torch returns a
        out = x[(*(index if isinstance(index, tuple) else (index,)), Ellipsis)]  # 0-d view (`...` keeps one)
    return out


@_getitem.grad
def _(ctx, g):
    x = ctx.inputs[0]
    return index_add_into(g, x.shape, ctx.attrs["index"])


@defop("index_put_add", kind=IDX, save=())
def _index_put_add(xp, g, shape, index):
    out = xp.zeros(shape, dtype=g.dtype)
    if is_basic_index(index):  # a view: every position once, so a plain write
        out[index] = g
    else:
        _add_at(xp, out, index, g)
    return out


_index_put_add.grad(lambda ctx, gg: _getitem(gg, index=ctx.attrs["index"]))


def _add_at(xp, out, index, values):
    """out[index] += values in place, repeated positions adding up (numpy's `+=` keeps one of them)."""
    if xp is np:
        np.add.at(out, index, values)
    else:
        import cupyx

        cupyx.scatter_add(out, index, values)


def index_add_into(values, shape, index):
    """A zero tensor of `shape` with `values` added at `index` (repeated indices accumulate)."""
    return _index_put_add(values, shape=tuple(shape), index=index)


def getitem(input, index):
    sub = parse(input.shape, index, input.device.xp)
    out = input
    if sub.basic is not None or sub.adv is None:  # x[...] and x[()] are views too, as in torch
        attrs = {"index": () if sub.basic is None else sub.basic}
        out = _getitem(input, **attrs)
        out._vc = input._vc  # writes through the view change `input`, so they share versions
        out._base = input
        out._view_fn = (_getitem, attrs)
    if sub.adv is not None:
        out = _getitem(out, index=sub.adv)
    return out


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
def _index_put(xp, x, values, basic, adv, accumulate):
    out = x.copy()
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
    return _index_put(input, values, basic=sub.basic, adv=sub.adv, accumulate=bool(accumulate))


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
    sub = parse(input.shape, index, input.device.xp, "setitem")
    if not isinstance(value, Tensor):
        value = _scalar_value(input, value)
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
    recording = grad_mode.state.grad_enabled and (input.requires_grad or v.requires_grad)
    if recording:
        if input.requires_grad and input.grad_fn is None:
            view = op == "setitem" and _views(sub.basic, input.shape)
            what = "a view of a leaf Variable" if view else "a leaf Variable"
            raise AutogradError(f"{op}: {what} that requires grad is being used in an in-place operation.")
        result = _index_put(snapshot(input), v, basic=sub.basic, adv=sub.adv, accumulate=accumulate)
        rebased = rebase(input, result)
    _write(input.device.xp, input.array, sub.basic, sub.adv, v.array, accumulate)
    input._vc[0] += 1
    if recording:
        input.grad_fn, input.requires_grad = result.grad_fn, True
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


# ---- gather / scatter -------------------------------------------------------------------------------------
def _take_index(xp, index, axis, ndim):
    """Open-mesh index that takes `index` along `axis` and the identity elsewhere."""
    if index.ndim == 0:  # a 0-d tensor: its one element
        return ()
    grids = list(xp.ix_(*[xp.arange(s) for s in index.shape]))
    grids[axis] = index
    return tuple(grids)


@defop("gather", kind=IDX, save=())
def _gather(xp, x, index, axis):
    if x.ndim == 0:  # the one index is 0 (checked)
        return x.copy()
    if index.shape != x.shape:  # torch lets index be smaller than x in the other dims: take its corner
        x = x[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))]
    return xp.take_along_axis(x, index, axis=axis)


@_gather.grad
def _(ctx, g):
    x, index = ctx.inputs
    return _scatter_add(_zeros_like(x, g), index, g, axis=ctx.attrs["axis"]), None


def _zeros_like(x, g):
    return Tensor(x.device.xp.zeros(x.shape, dtype=g.array.dtype), device=x.device)


def _check_gather(name, input, dim, index):
    if index.array.dtype.kind not in "iu":
        raise DTypeError(f"{name}(): Expected dtype int64 for index, got {index.dtype.name}")
    if index.ndim != input.ndim:
        raise ShapeError(
            f"{name}(): Index tensor must have the same number of dimensions as input tensor "
            f"(index {tuple(index.shape)}, input {tuple(input.shape)})"
        )
    d = normalize_dim(dim, input.ndim, name)
    if any(i > n for k, (i, n) in enumerate(zip(index.shape, input.shape)) if k != d):
        raise ShapeError(
            f"{name}(): Size does not match at dimension {d}: index {tuple(index.shape)} must not be larger "
            f"than input {tuple(input.shape)} apart from dimension {d}"
        )
    if index.array.size:
        lo, hi = int(index.array.min()), int(index.array.max())
        n = input.shape[d] if input.ndim else 1
        if lo < -n or hi >= n:
            raise IndexOutOfRangeError(
                f"{name}(): index {hi if hi >= n else lo} is out of bounds for dimension {d} with size {n}"
            )
    return d


def gather(input, dim, index):
    d = _check_gather("gather", input, dim, index)
    return _gather(input, index, axis=d)


@defop("scatter_add", kind=IDX, save=())
def _scatter_add(xp, x, index, src, axis):
    out = x.copy()
    idx = _take_index(xp, index, axis, x.ndim)
    src = src[tuple(slice(0, s) for s in index.shape)]
    if xp is np:
        np.add.at(out, idx, src)
    else:
        import cupyx

        cupyx.scatter_add(out, idx, src)
    return out


@_scatter_add.grad
def _(ctx, g):
    x, index, src = ctx.inputs
    axis = ctx.attrs["axis"]
    gsrc = None
    if ctx.next[2] is not None:
        gsrc = _gather(g, index, axis=axis)
        if gsrc.shape != src.shape:
            from distgraph.ops.regions import pad_nd

            gsrc = pad_nd(gsrc, [(0, s - i) for s, i in zip(src.shape, index.shape)])
    return g, None, gsrc


def scatter_add(input, dim, index, src):
    d = _check_gather("scatter_add", input, dim, index)
    return _scatter_add(input, index, src, axis=d)


@defop("scatter", kind=IDX, save=())
def _scatter(xp, x, index, src, axis):
    out = x.copy()
    idx = _take_index(xp, index, axis, x.ndim)
    out[idx] = src[tuple(slice(0, s) for s in index.shape)]
    return out


@_scatter.grad
def _(ctx, g):
    x, index, src = ctx.inputs
    axis = ctx.attrs["axis"]
    keep = _scatter(
        Tensor(x.device.xp.ones(x.shape, dtype=g.array.dtype), device=x.device),
        index,
        Tensor(x.device.xp.zeros(index.shape, dtype=g.array.dtype), device=x.device),
        axis=axis,
    )
    gsrc = _gather(g, index, axis=axis) if ctx.next[2] is not None else None
    return ew.mul(g, keep), None, gsrc


def scatter(input, dim, index, src=None, value=None):
    d = _check_gather("scatter", input, dim, index)
    if src is None:
        src = Tensor(input.device.xp.full(index.shape, value, dtype=input.array.dtype), device=input.device)
    elif not isinstance(src, Tensor):
        src = Tensor(input.device.xp.full(index.shape, src, dtype=input.array.dtype), device=input.device)
    return _scatter(input, index, src, axis=d)


def index_select(input, dim, index):
    d = normalize_dim(dim, input.ndim, "index_select")
    if index.ndim > 1:
        raise ShapeError(f"index_select(): Index is supposed to be a vector, got shape {tuple(index.shape)}")
    if index.array.dtype.name not in ("int32", "int64"):  # a uint8 index would read as a mask below
        raise DTypeError(f"index_select(): Expected dtype int32 or int64 for index, got {index.dtype.name}")
    if input.ndim == 0:  # torch: a 0-d input is one element, and its index must name exactly that one
        if index.array.size != 1:
            raise ShapeError(f"index_select(): Index to scalar can have only 1 value, got {index.array.size} value(s)")
        if int(index.array.reshape(-1)[0]) != 0:
            raise IndexOutOfRangeError(
                f"index_select(): index {int(index.array.reshape(-1)[0])} out of range for a 0-d input (size 1)"
            )
        return gather(input, 0, Tensor(index.array.reshape(()), device=input.device))
    n = input.shape[d]
    if index.array.size and (int(index.array.max()) >= n or int(index.array.min()) < -n):
        raise IndexOutOfRangeError(f"index_select(): index out of range in self: dim {d} has size {n}")
    return getitem(input, (slice(None),) * d + (index.array.reshape(-1),))  # a 0-d index keeps the dim


def take_along_dim(input, indices, dim=None):
    if dim is None:  # torch: both flattened
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    return gather(input, dim, indices)


def masked_fill(input, mask, value):
    if mask.array.dtype.kind != "b":
        raise DTypeError(f"masked_fill only supports boolean masks, but got mask with dtype {mask.dtype.name}")
    fill = value if isinstance(value, Tensor) else ew.const(value, input)
    return ew.where(mask, fill if fill.array.dtype == input.array.dtype else ew.cast(fill, input.array.dtype), input)


def masked_select(input, mask):
    return getitem(
        input, mask.array if mask.shape == input.shape else mask.device.xp.broadcast_to(mask.array, input.shape)
    )


def nonzero(input, as_tuple=False):
    xp = input.device.xp
    idx = xp.nonzero(input.array if input.ndim else input.array.reshape(1))  # 0-d: as torch, one dim
    if not input.ndim and not as_tuple:
        return Tensor(xp.zeros((idx[0].size, 0), np.int64), device=input.device)
    if as_tuple:
        return tuple(Tensor(i.astype(np.int64), device=input.device) for i in idx)
    return Tensor(xp.stack(idx, axis=1).astype(np.int64), device=input.device)


def one_hot(tensor, num_classes=-1):
    if tensor.array.dtype.kind not in "iu":
        raise DTypeError(f"one_hot is only applicable to index tensor, got {tensor.dtype.name}")
    xp = tensor.device.xp
    if num_classes == -1:
        num_classes = int(tensor.array.max()) + 1 if tensor.array.size else 0
    if tensor.array.size and (int(tensor.array.min()) < 0 or int(tensor.array.max()) >= num_classes):
        raise IndexOutOfRangeError(
            f"one_hot: class values must be in [0, {num_classes}), got {tensor.array.min()}..{tensor.array.max()}"
        )
    out = (tensor.array[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor(out, device=tensor.device)


# ---- sort / topk ------------------------------------------------------------------------------------------
def sort(input, dim=-1, descending=False, stable=False):
    d = normalize_dim(dim, input.ndim, "sort")
    xp = input.device.xp
    if input.ndim == 0:
        return SortResult(input, Tensor(xp.zeros((), dtype=np.int64), device=input.device))
    if descending:  # the stable ascending sort of the reversed input, reversed: ties keep their order and
        # NaN comes first as in torch (sorting -x wrapped unsigned ints and int64's minimum, kept NaN last)
        rev = xp.flip(xp.argsort(xp.flip(input.array, axis=d), axis=d, kind="stable"), axis=d)
        idx = (input.shape[d] - 1 - rev).astype(np.int64)
    else:
        idx = xp.argsort(input.array, axis=d, kind="stable").astype(np.int64)
    indices = Tensor(idx, device=input.device)
    return SortResult(gather(input, d, indices), indices)


def argsort(input, dim=-1, descending=False, stable=False):
    return sort(input, dim, descending, stable).indices


def _scalar_pick(input):
    """(values, indices) of topk/kthvalue on a 0-d input: its one element (a copy, so it carries grad)
    and index 0. torch reads a 0-d tensor as one element along dim 0/-1 here."""
    zero = Tensor(input.device.xp.zeros((), dtype=np.int64), device=input.device)
    return SortResult(gather(input, 0, zero), zero)


def topk(input, k, dim=-1, largest=True, sorted=True):
    d = normalize_dim(dim, input.ndim, "topk")
    n = input.shape[d] if input.ndim else 1
    if not 0 <= k <= n:
        raise IndexOutOfRangeError(f"topk: k ({k}) is out of range for dimension {d} of size {n}")
    if input.ndim == 0:  # torch gives the element for k=0 too (its output cannot be shorter than 0-d)
        return _scalar_pick(input)
    values, indices = sort(input, d, descending=largest)
    from distgraph.ops.shape import narrow

    idx = narrow(indices, d, 0, k)
    return SortResult(gather(input, d, idx), idx)


def kthvalue(input, k, dim=-1, keepdim=False):
    d = normalize_dim(dim, input.ndim, "kthvalue")
    n = input.shape[d] if input.ndim else 1
    if not 1 <= k <= n:  # unchecked, k=0 or k<0 read from the end (narrow's negative start): a wrong value
        raise IndexOutOfRangeError(f"kthvalue(): selected number k ({k}) out of range for dimension {d} of size {n}")
    if input.ndim == 0:
        return _scalar_pick(input)
    values, indices = sort(input, d)
    from distgraph.ops.shape import narrow, squeeze

    idx = narrow(indices, d, k - 1, 1)
    v = gather(input, d, idx)
    return SortResult(v, idx) if keepdim else SortResult(squeeze(v, d), squeeze(idx, d))


def argwhere(input):
    return nonzero(input)


def bincount(input, weights=None, minlength=0):
    xp = input.device.xp
    w = None if weights is None else weights.array
    return Tensor(xp.bincount(input.array, w, minlength), device=input.device)


def searchsorted(sorted_sequence, values, right=False):
    xp = sorted_sequence.device.xp
    side = "right" if right else "left"
    return Tensor(
        xp.searchsorted(sorted_sequence.array, values.array, side=side).astype(np.int64), device=values.device
    )
