"""Indexing ops: t[idx] (ints, slices, None, Ellipsis, boolean masks, integer arrays, read as torch
reads them: ops/subscript.py; writes are ops/index_put.py), gather, scatter/scatter_add, index_select,
masked_fill, one_hot, sort, topk, nonzero.

Every gather-like op's backward is a scatter-add and every scatter-add's backward is a gather, so
both directions stay differentiable for higher-order gradients.
"""

from collections import namedtuple

import numpy as np

from distgraph.autograd import memory_format
from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.function import mark_view
from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.backend import scatter_at
from distgraph.errors import DTypeError, IndexOutOfRangeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.reduction import normalize_dim
from distgraph.ops.registry import defop
from distgraph.ops.row_scatter import add_at as _add_at  # (ops/index_put.py takes it from here too)
from distgraph.ops.subscript import parse
from distgraph.ops.views import is_basic_index

IDX = "index"
SortResult = namedtuple("SortResult", ["values", "indices"])


# ---- getitem ---------------------------------------------------------------------------------------------
# t[index] is t[basic][adv] (ops/subscript.py reads the index as torch does): the basic part is a view,
# the advanced part a copy.
@defop("getitem", kind=IDX, save=())
def _getitem(xp, x, index):
    out = x[index]
    if isinstance(out, np.generic):  # an element: numpy copies it out as a scalar, torch returns a
        out = x[(*(index if isinstance(index, tuple) else (index,)), Ellipsis)]  # 0-d view (`...` keeps one)
    elif not out.flags.c_contiguous and not is_basic_index(index):  # an advanced index's copy is laid
        out = xp.ascontiguousarray(out)  # out contiguously, as torch's (so .view() of it works)
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
        _add_at(xp, out, index, g, fresh=True)
    return out


_index_put_add.grad(lambda ctx, gg: _getitem(gg, index=ctx.attrs["index"]))


def index_add_into(values, shape, index):
    """A zero tensor of `shape` with `values` added at `index` (repeated indices accumulate)."""
    return _index_put_add(values, shape=tuple(shape), index=index)


def getitem(input, index):
    sub = parse(input.array.shape, index, input.device.xp)
    out = input
    if sub.basic is not None or sub.adv is None:  # x[...] and x[()] are views too, as in torch
        attrs = {"index": () if sub.basic is None else sub.basic}
        out = _getitem(input, **attrs)
        mark_view(out, input, _getitem, attrs)  # writes through the view change `input`: shared versions
    if sub.adv is not None:
        out = _getitem(out, index=sub.adv)
    return out


# ---- gather / scatter -------------------------------------------------------------------------------------
def _take_index(xp, index, axis, ndim):
    """Open-mesh index that takes `index` along `axis` and the identity elsewhere."""
    grids = list(xp.ix_(*[xp.arange(s) for s in index.shape]))
    grids[axis] = index
    return tuple(grids)


@defop("gather", kind=IDX, save=(1,))  # backward reads the index (not the input)
def _gather(xp, x, index, axis):
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
    if max(index.ndim, 1) != max(input.ndim, 1):  # torch counts a 0-d tensor as 1-d here
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
        if lo < 0 or hi >= n:  # torch's gather and scatter refuse a negative index (take_along_dim wraps it)
            raise IndexOutOfRangeError(
                f"{name}(): index {hi if hi >= n else lo} is out of bounds for dimension {d} with size {n}"
            )
    return d


def gather(input, dim, index, *, sparse_grad=False):
    if sparse_grad:
        raise NotImplementedError("gather: sparse_grad=True needs sparse tensors, which distgraph does not have")
    d = _check_gather("gather", input, dim, index)
    if input.ndim and index.ndim:
        return _gather(input, index, axis=d)
    return _as_shape(_gather(_as_1d(input), _as_1d(index), axis=0), index.shape)


def _as_1d(t):
    """A 0-d input, index or src as 1-d: gather and scatter count it so (torch), and run on the 1-d view."""
    return _as_shape(t, (1,)) if isinstance(t, Tensor) and t.ndim == 0 else t


def _as_shape(t, shape):
    from distgraph.ops.shape import reshape

    return reshape(t, shape)


@defop("scatter_add", kind=IDX, save=(1,))
def _scatter_add(xp, x, index, src, axis):
    out = x.copy()
    idx = _take_index(xp, index, axis, x.ndim)
    src = src[tuple(slice(0, s) for s in index.shape)]
    scatter_at("add", out, idx, src)
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


def _check_src(name, index, src):
    """src as the scatter reads it. torch counts a 0-d index or src as 1-d here, so a 0-d index takes
    the first element of a 1-d src; other dims must match in number."""
    if not isinstance(src, Tensor):
        return src
    if max(src.ndim, 1) != max(index.ndim, 1):
        raise ShapeError(
            f"{name}(): Index tensor must have the same number of dimensions as src tensor (index "
            f"{tuple(index.shape)}, src {tuple(src.shape)})"
        )
    if index.ndim == 0 and src.ndim == 1 and src.shape[0]:
        return src[0]
    src = src.reshape(1) if src.ndim == 0 and index.ndim == 1 else src  # a 0-d src: one element
    if index.ndim and any(i > s for i, s in zip(index.shape, src.shape)):
        raise ShapeError(
            f"{name}(): Expected index {list(index.shape)} to be no larger size than src {list(src.shape)}"
        )
    return src


def scatter_add(input, dim, index, src):
    d = _check_gather("scatter_add", input, dim, index)
    src = _check_src("scatter_add", index, src)
    if input.ndim and index.ndim:
        return _scatter_add(input, index, src, axis=d)
    return _as_shape(_scatter_add(_as_1d(input), _as_1d(index), _as_1d(src), axis=0), input.shape)


@defop("scatter", kind=IDX, save=(1,))
def _scatter(xp, x, index, src, axis):
    out = x.copy()
    idx = _take_index(xp, index, axis, x.ndim)
    out[idx] = src[tuple(slice(0, s) for s in index.shape)]
    return out


@_scatter.grad
def _(ctx, g):
    x, index, src = ctx.inputs
    axis = ctx.attrs["axis"]
    # torch's g.scatter(dim, index, 0): the overwritten elements get an exact 0 (a NaN/inf g does not stay)
    zeros = Tensor(x.device.xp.zeros(index.shape, dtype=g.array.dtype), device=x.device)
    gsrc = _gather(g, index, axis=axis) if ctx.next[2] is not None else None
    return _scatter(g, index, zeros, axis=axis), None, gsrc


def scatter(input, dim, index, src=None, value=None, *, reduce=None):
    """`reduce` 'add' or 'multiply': torch's older form of scatter_reduce 'sum' or 'prod' (self included)."""
    d = _check_gather("scatter", input, dim, index)
    if src is None or not isinstance(src, Tensor):
        fill = value if src is None else src
        src = Tensor(input.device.xp.full(index.shape, fill, dtype=input.array.dtype), device=input.device)
    if reduce is not None:
        if reduce not in ("add", "multiply"):
            raise ShapeError(f"scatter(): reduce argument must be either add or multiply, got {reduce!r}")
        from distgraph.ops.indexing_extra import scatter_reduce  # (it builds on this module)

        return scatter_reduce(input, dim, index, src, "sum" if reduce == "add" else "prod")
    src = _check_src("scatter", index, src)
    if input.ndim and index.ndim:
        return _scatter(input, index, src, axis=d)
    return _as_shape(_scatter(_as_1d(input), _as_1d(index), _as_1d(src), axis=0), input.shape)


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
    if index.array.size and (int(index.array.max()) >= n or int(index.array.min()) < 0):  # (no negative: torch)
        raise IndexOutOfRangeError(f"index_select(): index out of range in self: dim {d} has size {n}")
    if tensor_module.host_reads is not None:  # being captured: the index must be an op's input, not an
        return _index_select_traced(input, d, index)  # array in getitem's attributes (a weighted loss's target)
    out = getitem(input, (slice(None),) * d + (index.array.reshape(-1),))  # a 0-d index keeps the dim
    return named(out, "IndexSelectBackward0")


def _index_select_traced(input, d, index):
    """index_select as a gather along `d` of the index broadcast over the other dims: the same values,
    recorded with the index as an input, so a captured graph selects each call's rows."""
    from distgraph.ops.shape import expand, reshape

    k = index.array.size
    lead = [1] * input.ndim
    lead[d] = k
    idx = expand(reshape(index, tuple(lead)), *[k if i == d else s for i, s in enumerate(input.shape)])
    return gather(input, d, idx)


def take_along_dim(input, indices, dim=None):
    """gather, after input and indices broadcast on every dim but `dim` (torch's); as torch's, an index in
    [-n, 0) counts from the end (one beyond [-n, n) is refused here, as gather refuses it). Without a dim
    both are flattened, and a negative index is refused, as torch refuses it."""
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    if input.ndim == 0:  # torch's take_along_dim has no dim to take along (gather reads a 0-d as 1-d)
        raise IndexOutOfRangeError(f"take_along_dim: Dimension specified as {dim} but tensor has no dimensions")
    if indices.ndim != input.ndim:
        raise ShapeError(
            f"take_along_dim(): input and indices should have the same number of dimensions, but got "
            f"{input.ndim} dimensions for input, and {indices.ndim} dimensions for indices"
        )
    d = normalize_dim(dim, input.ndim, "take_along_dim")
    input, indices = _broadcast_but(input, indices, d)
    n = input.shape[d]
    if indices.array.dtype.kind == "i" and indices.array.size and -n <= int(indices.array.min()) < 0:
        indices = ew.where(cmp.lt(indices, 0), ew.add(indices, n), indices)
    return gather(input, d, indices)


def _broadcast_but(input, indices, d):
    """input and indices expanded to their broadcast shape on every dim but d (each keeps its own size there)."""
    from distgraph.ops.shape import expand

    a, b = list(input.shape), list(indices.shape)
    for k in range(len(a)):
        if k == d or a[k] == b[k]:
            continue
        if 1 not in (a[k], b[k]):
            raise ShapeError(
                f"take_along_dim(): input {tuple(input.shape)} and indices {tuple(indices.shape)} do not broadcast "
                f"at dimension {k} (all dimensions but dim={d} must)"
            )
        a[k] = b[k] = b[k] if a[k] == 1 else a[k]
    expanded = [t if list(t.shape) == s else expand(t, *s) for t, s in ((input, a), (indices, b))]
    return tuple(expanded)


def masked_fill(input, mask, value):
    if mask.array.dtype.kind != "b":
        raise DTypeError(f"masked_fill only supports boolean masks, but got mask with dtype {mask.dtype.name}")
    fill = value if isinstance(value, Tensor) else ew.const(value, input)
    out = ew.where(mask, fill if fill.array.dtype == input.array.dtype else ew.cast(fill, input.array.dtype), input)
    return named(out, "MaskedFillBackward1" if isinstance(value, Tensor) else "MaskedFillBackward0")


def masked_select(input, mask):
    """As torch, input and mask broadcast together (either may be the smaller one)."""
    if mask.array.dtype.kind != "b":
        raise DTypeError(f"masked_select: expected a boolean mask, got mask with dtype {mask.dtype.name}")
    _host_read(mask, "masked_select()")  # the result's length is the mask's count: a traced mask stops capture
    if mask.shape != input.shape:
        from distgraph.ops.shape import broadcast_tensors

        try:
            input, mask = broadcast_tensors(input, mask)
        except ValueError:
            raise ShapeError(
                f"masked_select: the shapes of input {tuple(input.shape)} and mask {tuple(mask.shape)} do not broadcast"
            ) from None
    return named(getitem(input, mask.array), "MaskedSelectBackward0")


def nonzero(input, as_tuple=False):
    _host_read(input, "nonzero()")  # its result is made from the values on the host: a traced input stops capture
    xp = input.device.xp
    idx = xp.nonzero(input.array if input.ndim else input.array.reshape(1))  # 0-d: as torch, one dim
    if not input.ndim and not as_tuple:
        return Tensor(xp.zeros((idx[0].size, 0), np.int64), device=input.device)
    if as_tuple:
        return tuple(Tensor(i.astype(np.int64), device=input.device) for i in idx)
    # torch's (n, ndim) result is column-major (strides (1, n)): view(-1) refuses it, reshape copies
    return Tensor(xp.stack(idx).astype(np.int64).T, device=input.device)


def one_hot(tensor, num_classes=-1):
    if tensor.array.dtype.kind not in "iu":
        raise DTypeError(f"one_hot is only applicable to index tensor, got {tensor.dtype.name}")
    xp = tensor.device.xp
    if num_classes == -1:  # the width is the largest value: a traced input stops capture
        _host_read(tensor, "one_hot(num_classes=-1)")
        num_classes = int(tensor.array.max()) + 1 if tensor.array.size else 0
    if tensor.array.size and (int(tensor.array.min()) < 0 or int(tensor.array.max()) >= num_classes):
        raise IndexOutOfRangeError(
            f"one_hot: class values must be in [0, {num_classes}), got {tensor.array.min()}..{tensor.array.max()}"
        )
    # recorded ops (not an array made here), so a captured graph encodes each call's classes
    from distgraph.ops.shape import unsqueeze

    classes = Tensor(xp.arange(num_classes, dtype=tensor.array.dtype), device=tensor.device)
    return ew.cast(cmp.eq(unsqueeze(tensor, -1), classes), np.int64)


def _host_read(t, what):
    """Tell graph capture that `t`'s values are read on the host (see counting.host_read)."""
    if tensor_module.host_reads is not None:
        tensor_module.host_reads(t, what)


# ---- sort / topk ------------------------------------------------------------------------------------------
@defop("argsort_indices", kind=IDX, save=())
def _argsort_indices(xp, x, axis, descending=False):
    """sort's indices: an op of their own, so a captured graph sorts each new input (not the example's).
    Laid out as torch's, in empty_like(x); sort's values, gathered at them, take their layout (numpy's
    take_along_axis follows the index's)."""
    if descending:  # the stable ascending sort of the reversed input, reversed: ties keep their order and
        # NaN comes first as in torch (sorting -x wrapped unsigned ints and int64's minimum, kept NaN last)
        rev = xp.flip(xp.argsort(xp.flip(x, axis=axis), axis=axis, kind="stable"), axis=axis)
        return memory_format.like(xp, (x.shape[axis] - 1 - rev).astype(np.int64), x)
    return memory_format.like(xp, xp.argsort(x, axis=axis, kind="stable").astype(np.int64), x)


def sort(input, dim=-1, descending=False, stable=False):
    d = normalize_dim(dim, input.ndim, "sort")
    xp = input.device.xp
    if input.ndim == 0:
        return SortResult(input, Tensor(xp.zeros((), dtype=np.int64), device=input.device))
    indices = _argsort_indices(input, axis=d, descending=descending)
    return SortResult(named(gather(input, d, indices), "SortBackward0"), indices)


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
    if input.array.dtype == np.bool_:  # torch's sort takes bool, its topk kernel does not
        raise DTypeError("topk does not support bool dtypes (as torch)")
    if input.ndim == 0:  # torch gives the element for k=0 too (its output cannot be shorter than 0-d)
        return _scalar_pick(input)
    values, indices = sort(input, d, descending=largest)
    from distgraph.ops.shape import narrow

    idx = narrow(indices, d, 0, k)
    return SortResult(named(gather(input, d, idx), "TopkBackward0"), idx)


def kthvalue(input, k, dim=-1, keepdim=False):
    d = normalize_dim(dim, input.ndim, "kthvalue")
    n = input.shape[d] if input.ndim else 1
    if not 1 <= k <= n:  # unchecked, k=0 or k<0 read from the end (narrow's negative start): a wrong value
        raise IndexOutOfRangeError(f"kthvalue(): selected number k ({k}) out of range for dimension {d} of size {n}")
    if input.ndim == 0:  # a 0-d bool tensor too, as torch
        return _scalar_pick(input)
    if input.array.dtype == np.bool_:
        raise DTypeError("kthvalue(): not implemented for bool tensors (as torch)")
    values, indices = sort(input, d)
    from distgraph.ops.shape import narrow, squeeze

    idx = narrow(indices, d, k - 1, 1).contiguous()  # torch's indices are a row-major tensor, not a view
    v = gather(input, d, idx)
    return SortResult(v, idx) if keepdim else SortResult(squeeze(v, d), squeeze(idx, d))


def argwhere(input):
    return nonzero(input)


def bincount(input, weights=None, minlength=0):
    """torch.bincount: checked first (numpy's own errors named no op); float weights keep their dtype."""
    from distgraph.ops.counting import host_read

    xp, a = input.device.xp, input.array
    if a.dtype.kind not in "iu":  # (bool too: torch has no kernel for it)
        raise DTypeError(f"bincount: expected an integral input, not implemented for {input.dtype.name}")
    host_read(input, "bincount()")  # its output's length is the input's largest value
    if a.ndim != 1 or (a.size and int(a.min()) < 0):
        raise ShapeError(f"bincount only supports 1-d non-negative integral inputs (got shape {tuple(a.shape)})")
    if weights is not None and (weights.ndim != 1 or weights.shape[0] != a.shape[0]):
        raise ShapeError(
            f"bincount: weights {tuple(weights.shape)} should be 1-d and as long as input {tuple(a.shape)}"
        )
    w = None if weights is None else weights.array
    out = xp.bincount(a, w, minlength)
    return Tensor(out.astype(w.dtype) if w is not None and w.dtype.kind == "f" else out, device=input.device)
