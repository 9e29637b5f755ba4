"""Indexed writes and reads beyond gather/scatter: index_add/copy/fill/reduce, scatter_reduce, masked_scatter,
take/put, select, narrow_copy, the *_scatter ops (slice, select, diagonal), and the Tensor methods torch has
for ops distgraph had as functions only (where, argwhere, fliplr, flipud, addmm, bincount, ...).

Each write is built on an existing recorded op where one fits, so its gradient is that op's: an index_put
along one dim (index_add, index_copy, index_fill, put, masked_scatter, slice/select_scatter), a `where`
over a placed diagonal (diagonal_scatter). scatter_reduce is its own op, with torch's backward formulas
written in differentiable ops; index_reduce is scatter_reduce with its index spread along the other dims.
Indices are checked first (torch refuses negative ones in these ops but index_fill, take and put), so a
bad index raises an error naming the op, the dim and its size, never numpy's own.
"""

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import scatter_at
from distgraph.errors import DTypeError, IndexOutOfRangeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import creation, indexing, linalg, reorder
from distgraph.ops import elementwise as ew
from distgraph.ops.index_put import _index_put
from distgraph.ops.indexing import IDX, _gather, _scatter, _scatter_add, _take_index, getitem
from distgraph.ops.methods import inplace_variant
from distgraph.ops.reduction import normalize_dim
from distgraph.ops.registry import defop
from distgraph.ops.shape import _dim, movedim, narrow, reshape

REDUCES = ("sum", "prod", "mean", "amax", "amin")


# ---- checks -------------------------------------------------------------------------------------------------
def _check_index(op, index, n, d, negative=False, vector=True):
    """`index` (a Tensor) as torch checks it for `op`: int32/int64, at most 1-d when `vector`, every entry
    in [0, n) of dim `d` ([-n, n) with `negative`). Returns its array, negatives wrapped."""
    if not isinstance(index, Tensor):
        raise DTypeError(f"{op}(): argument 'index' must be Tensor, not {type(index).__name__}")
    if index.array.dtype.name not in ("int32", "int64"):
        raise DTypeError(f"{op}(): Expected dtype int32/int64 for index but got {index.dtype.name}")
    if vector and index.ndim > 1:
        raise IndexOutOfRangeError(f"{op}(): Index is supposed to be a vector, but got shape {tuple(index.shape)}")
    idx = index.array.reshape(-1) if vector else index.array
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if hi >= n or lo < (-n if negative else 0):
            bad = hi if hi >= n else lo
            raise IndexOutOfRangeError(f"{op}(): index {bad} is out of bounds for dimension {d} with size {n}")
    return idx % n if negative and idx.size else idx


def _check_source(op, input, d, k, source):
    """source must be a Tensor of input's dtype shaped as input with dim `d` of size `k` (the index's length)."""
    if not isinstance(source, Tensor):
        raise DTypeError(f"{op}(): argument 'source' must be Tensor, not {type(source).__name__}")
    if source.array.dtype != input.array.dtype:
        raise DTypeError(
            f"{op}(): self ({input.dtype.name}) and source ({source.dtype.name}) must have the same scalar type"
        )
    want = tuple(k if i == d else s for i, s in enumerate(input.shape))
    if tuple(source.shape) != want or (not input.ndim and k != 1):
        raise ShapeError(
            f"{op}(): source shape {tuple(source.shape)} must match self shape {tuple(input.shape)} except at "
            f"dim {d}, where it must be the number of indices ({k})"
        )


def _check_differentiable(op, input, src):
    """torch's autograd refuses to record a write of a source that requires grad into an integer or bool
    tensor (it cannot carry a gradient): an error where distgraph would silently drop the gradient."""
    if src.requires_grad and grad_mode.is_grad_enabled() and input.array.dtype.kind != "f":
        raise DTypeError(
            f"{op}(): autograd does not support dtype {input.dtype.name}: the source ({src.dtype.name}, "
            f"shape {tuple(src.shape)}) requires grad, but self ({tuple(input.shape)}) is not floating point"
        )


def _along(input, dim, op):
    """(dim as an axis, its size, input as at least 1-d): torch reads a 0-d tensor as one element here."""
    d = normalize_dim(dim, input.ndim, op)
    return d, (input.shape[d] if input.ndim else 1), (input if input.ndim else reshape(input, (1,)))


def _put_along(op, input, dim, index, source, accumulate, negative=False, layout="contiguous"):
    """input with source written (or added) at `index` along `dim`: one recorded index_put (`layout`: its)."""
    d, n, x = _along(input, dim, op)
    idx = _check_index(op, index, n, d, negative)
    _check_source(op, input, d, idx.size, source)
    src = source if input.ndim else reshape(source, (1,))
    out = _index_put(x, src, basic=None, adv=(slice(None),) * d + (idx,), accumulate=accumulate, layout=layout)
    return out if input.ndim else reshape(out, ())


# ---- index_add / index_copy / index_fill --------------------------------------------------------------------
def index_add(input, dim, index, source, *, alpha=1):
    """torch.index_add: input with alpha * source added at `index` along `dim` (repeats add up)."""
    if alpha != 1 and isinstance(source, Tensor):
        source = ew.mul(source, alpha) if source.array.dtype.kind in "fc" else ew.mul(source, int(alpha))
    return _put_along("index_add", input, dim, index, source, accumulate=True)


def index_copy(input, dim, index, source):
    """torch.index_copy: input with the slices of source written at `index` along `dim`. A 0-d input takes a
    source of one element as shape (1,) too (torch's index_copy does; its index_add and index_reduce do not)."""
    if not input.ndim and isinstance(source, Tensor) and tuple(source.shape) == (1,):
        source = reshape(source, ())
    return _put_along("index_copy", input, dim, index, source, accumulate=False)


def index_fill(input, dim, index, value):
    """torch.index_fill: input with `value` (a number or 0-d tensor) at `index` along `dim`. Repeated indices
    write once: as torch, a tensor value's gradient counts each filled slice once."""
    if isinstance(value, Tensor):  # not index_fill_: torch's in-place form lets an integer self through
        _check_differentiable("index_fill", input, value)
    return _index_fill(input, dim, index, value)


def _index_fill(input, dim, index, value):
    if isinstance(value, Tensor):
        if value.ndim:
            raise ShapeError(
                f"index_fill(): only supports a 0-dimensional value tensor, got one of shape {tuple(value.shape)}"
            )
        fill = value if value.array.dtype == input.array.dtype else ew.cast(value, input.array.dtype)
    else:
        fill = ew.const(value, input)
    d, n, _ = _along(input, dim, "index_fill")
    idx = _check_index("index_fill", index, n, d, negative=True)
    xp = input.device.xp
    unique = Tensor(xp.unique(idx).astype(np.int64), device=input.device)
    shape = tuple(unique.array.size if i == d else s for i, s in enumerate(input.shape))
    # torch fills a clone of input (its layout kept); index_add and index_copy write a row-major result
    return _put_along("index_fill", input, dim, unique, fill.expand(shape), accumulate=False, layout="preserve")


# ---- scatter_reduce / index_reduce ---------------------------------------------------------------------------
_UFUNC = {"sum": "add", "mean": "add", "prod": "multiply", "amax": "maximum", "amin": "minimum"}


def _identity(reduce, dtype):
    """The value a reduction starts from where `include_self` leaves self out."""
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    high = reduce == "amin"
    if dtype.kind == "b":
        return high
    if dtype.kind in "iu":
        return np.iinfo(dtype).max if high else np.iinfo(dtype).min
    return np.inf if high else -np.inf


def _reduce_at(xp, reduce, out, idx, src):
    """out[idx] = reduce(out[idx], src) in place, repeated positions all taking part."""
    scatter_at(_UFUNC[reduce], out, idx, src)


@defop("scatter_reduce", kind=IDX, save=(0, 1, 2), saves_output=True)
def _scatter_reduce(xp, x, index, src, axis, reduce, include_self):
    out = x.copy()
    idx = _take_index(xp, index, axis, x.ndim)
    src = src[tuple(slice(0, s) for s in index.shape)]
    if not include_self:
        out[idx] = _identity(reduce, x.dtype)
    _reduce_at(xp, reduce, out, idx, src)
    if reduce == "mean":
        count = xp.full(x.shape, int(include_self), dtype=np.int32)  # (cupyx's scatter_add takes no int64)
        _reduce_at(xp, "sum", count, idx, xp.ones(index.shape, dtype=np.int32))
        count = xp.maximum(count, 1)
        out = out // count.astype(out.dtype) if out.dtype.kind in "iu" else (out / count).astype(out.dtype)
    return out


@_scatter_reduce.grad
def _(ctx, g):
    """torch's scatter_reduce_backward (FunctionsManual.cpp), formula for formula."""
    x, index, src = ctx.inputs
    a = ctx.attrs
    axis, reduce = a["axis"], a["reduce"]
    s = getitem(src, tuple(slice(0, n) for n in index.shape)) if src.shape != index.shape else src
    gather = lambda t: _gather(t, index, axis=axis)  # noqa: E731
    as_g = lambda b: ew.cast(b, g.array.dtype)  # noqa: E731
    if reduce == "sum":
        gx, gs = g, gather(g)
    elif reduce == "mean":
        with grad_mode.no_grad():
            start = ew.const(int(a["include_self"]), g).expand(g.shape)
            n = _scatter_add(start, index, ew.const(1, g).expand(index.shape), axis=axis)
            n = ew.where(cmp.eq(n, 0), ew.const(1, n), n)
        gx = ew.div(g, n)
        gs = gather(gx)
    elif reduce == "prod":
        gx, gs = _prod_grads(ctx, g, x, index, s, gather, as_g)
    else:
        out = ctx.out
        value = gather(out)
        with grad_mode.no_grad():
            self_is = as_g(cmp.eq(x, out))
            src_is = as_g(cmp.eq(s, value))
            n = _scatter_add(self_is, index, src_is, axis=axis)
        spread = ew.div(g, n)
        gx, gs = ew.mul(self_is, spread), ew.mul(src_is, gather(spread))
    if not a["include_self"]:
        gx = _scatter(gx, index, _index_zeros(g, index), axis=axis)
    if gs.shape != src.shape:
        from distgraph.ops.regions import pad_nd

        gs = pad_nd(gs, [(0, n - i) for n, i in zip(src.shape, index.shape)])
    return gx, None, gs


def _index_zeros(g, index):
    return Tensor(g.device.xp.zeros(index.shape, dtype=g.array.dtype), device=g.device)


def _prod_grads(ctx, g, x, index, s, gather, as_g):
    """prod's gradients as torch's: a zero in self or a single zero among a position's sources gets the
    product of the others (dividing by it would give 0/0); two zeros give all zero."""
    a = ctx.attrs
    kw = {"axis": a["axis"], "reduce": "prod", "include_self": a["include_self"]}
    with grad_mode.no_grad():
        x_zero, s_zero = cmp.eq(x, 0), cmp.eq(s, 0)
        zeros_at = gather(_scatter_add(ew.const(0, g).expand(x.shape), index, as_g(s_zero), axis=a["axis"]))
        single = cmp.logical_and(s_zero, cmp.eq(zeros_at, 1))
    masked_x = ew.where(x_zero, ew.const(1, x), x)
    gx = ew.div(ew.mul(g, _scatter_reduce(masked_x, index, s, **kw)), masked_x)
    masked_s = ew.where(single, ew.const(1, s), s)
    with_single = gather(ew.mul(g, _scatter_reduce(x, index, masked_s, **kw)))
    others = ew.div(gather(ew.mul(g, ctx.out)), ew.where(s_zero, ew.const(1, s), s))
    return gx, ew.where(single, with_single, others)


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """torch.scatter_reduce: src reduced into input at `index` along `dim` ('sum', 'prod', 'mean', 'amax',
    'amin'); `include_self` False leaves input's own values out where an index writes."""
    if reduce not in REDUCES:
        raise ShapeError(f"scatter_reduce(): reduce argument must be one of {', '.join(REDUCES)}, got {reduce!r}")
    d = indexing._check_gather("scatter_reduce", input, dim, index)
    _check_index("scatter_reduce", index, input.shape[d] if input.ndim else 1, d, vector=False)
    if not isinstance(src, Tensor):
        raise DTypeError(f"scatter_reduce(): argument 'src' must be Tensor, not {type(src).__name__}")
    if src.array.dtype != input.array.dtype:
        raise DTypeError(
            f"scatter_reduce(): Expected self.dtype to be equal to src.dtype (self {input.dtype.name}, src "
            f"{src.dtype.name})"
        )
    if max(src.ndim, 1) != max(index.ndim, 1) or any(i > s for i, s in zip(index.shape, src.shape)):
        raise ShapeError(
            f"scatter_reduce(): index {tuple(index.shape)} must be no larger than src {tuple(src.shape)} (and have "
            "as many dims)"
        )
    kw = {"reduce": reduce, "include_self": bool(include_self)}
    if input.ndim and index.ndim:
        return _scatter_reduce(input, index, src, axis=d, **kw)
    one = indexing._as_1d
    return reshape(_scatter_reduce(one(input), one(index), one(src), axis=0, **kw), input.shape)


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """torch.index_reduce: source's slices reduced into input at `index` along `dim` ('prod', 'mean',
    'amax', 'amin'): scatter_reduce with the index spread over source's other dims."""
    if reduce not in REDUCES[1:]:
        raise ShapeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got {reduce}.")
    d, n, x = _along(input, dim, "index_reduce")
    idx = _check_index("index_reduce", index, n, d)
    _check_source("index_reduce", input, d, idx.size, source)
    src = source if source.ndim else reshape(source, (1,))
    view = [1] * x.ndim
    view[d] = idx.size
    spread = Tensor(input.device.xp.broadcast_to(idx.reshape(view), src.shape).astype(np.int64), device=input.device)
    out = _scatter_reduce(x, spread, src, axis=d, reduce=reduce, include_self=bool(include_self))
    return out if input.ndim else reshape(out, ())


# ---- masked_scatter / take / put ------------------------------------------------------------------------------
def masked_scatter(input, mask, source):
    """torch.masked_scatter: input with source's first elements, in order, where mask (broadcast with
    input) is True."""
    if not isinstance(mask, Tensor) or mask.array.dtype.kind != "b":
        what = mask.dtype.name if isinstance(mask, Tensor) else type(mask).__name__
        raise DTypeError(f"masked_scatter(): expected a boolean mask, got {what}")
    if source.array.dtype != input.array.dtype:
        raise DTypeError(
            f"masked_scatter(): expected source to have the dtype of self ({input.dtype.name}), got {source.dtype.name}"
        )
    try:
        shape = tuple(np.broadcast_shapes(tuple(input.shape), tuple(mask.shape)))
    except ValueError:
        raise ShapeError(
            f"masked_scatter(): mask of shape {tuple(mask.shape)} does not broadcast with self of shape "
            f"{tuple(input.shape)}"
        ) from None
    xp = input.device.xp
    where = xp.broadcast_to(mask.array, shape)
    count = int(where.sum())
    if source.array.size < count:
        raise ShapeError(
            f"masked_scatter(): source has {source.array.size} elements, fewer than the {count} True in the mask"
        )
    values = getitem(reshape(source, (-1,)), slice(0, count))
    x = input if tuple(input.shape) == shape else input.expand(shape)
    return _index_put(x, values, basic=None, adv=(where,), accumulate=False)


def take(input, index):
    """torch.take: input read as 1-d at `index` (any shape; negative counts from the end)."""
    idx = _check_flat("take", input, index)
    return reshape(getitem(reshape(input, (-1,)), idx.reshape(-1)), index.shape)


def put(input, index, source, accumulate=False):
    """torch.put: input read as 1-d with source written (or added) at `index`."""
    idx = _check_flat("put", input, index)
    if not isinstance(source, Tensor) or source.array.size != idx.size:
        n = source.array.size if isinstance(source, Tensor) else type(source).__name__
        raise ShapeError(
            f"put(): expected source and index to have the same number of elements, got {n} and {idx.size}"
        )
    if source.array.dtype != input.array.dtype:
        raise DTypeError(f"put(): self ({input.dtype.name}) and source ({source.dtype.name}) must have the same dtype")
    flat = reshape(input, (-1,))
    out = _index_put(flat, reshape(source, (-1,)), basic=None, adv=(idx.reshape(-1),), accumulate=bool(accumulate))
    return reshape(out, input.shape)


def _check_flat(op, input, index):
    n = input.array.size
    if not isinstance(index, Tensor) or index.array.dtype.kind not in "iu":
        what = index.dtype.name if isinstance(index, Tensor) else type(index).__name__
        raise DTypeError(f"{op}(): expected an int64 index tensor, got {what}")
    if index.array.size and not n:
        raise IndexOutOfRangeError(f"{op}(): tried to index an empty tensor of shape {tuple(input.shape)}")
    idx = index.array.astype(np.int64)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if hi >= n or lo < -n:
            raise IndexOutOfRangeError(
                f"{op}(): index {hi if hi >= n else lo} out of range for a tensor of {n} elements (shape "
                f"{tuple(input.shape)})"
            )
    return idx % n if n else idx


# ---- select / narrow_copy / the *_scatter ops -------------------------------------------------------------------
def select(input, dim, index):
    """torch.select: the view of `input` at `index` along `dim`, that dim removed."""
    d = _dim(dim, input.ndim, "select", whole=True)
    n = input.shape[d]
    if not -n <= int(index) < n:
        raise IndexOutOfRangeError(
            f"select(): index {int(index)} out of range for tensor of size {list(input.shape)} at dimension {d}"
        )
    return getitem(input, (slice(None),) * d + (int(index),))


def narrow_copy(input, dim, start, length):
    """torch.narrow_copy: narrow, as a copy that shares no memory with `input`."""
    return narrow(input, dim, start, length).clone()


def _scatter_into(op, input, src, basic):
    """input with src written at the basic index `basic` (src must have exactly the slice's shape)."""
    if not isinstance(src, Tensor):
        raise DTypeError(f"{op}(): argument 'src' must be Tensor, not {type(src).__name__}")
    target = input.array[basic].shape
    if tuple(src.shape) != target:
        raise ShapeError(
            f"{op}(): expected src to have a size equal to the slice of self. src size = {list(src.shape)}, slice "
            f"size = {list(target)}"
        )
    _check_differentiable(op, input, src)
    if src.array.dtype != input.array.dtype:
        src = ew.cast(src, input.array.dtype)
    # torch writes into clone_preserve_strides(input): a sliced input's gaps kept (autograd/memory_format.py)
    return _index_put(input, src, basic=basic, adv=None, accumulate=False, layout="strides")


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """torch.slice_scatter: input with src at input[..., start:end:step, ...] (the slice along `dim`)."""
    d = _dim(dim, input.ndim, "slice_scatter", whole=True)
    if step <= 0:
        raise ShapeError(f"slice_scatter(): slice step must be positive, got {step}")
    return _scatter_into("slice_scatter", input, src, (slice(None),) * d + (slice(start, end, step),))


def select_scatter(input, src, dim, index):
    """torch.select_scatter: input with src at input.select(dim, index)."""
    select(input, dim, index)  # checks dim and index
    d = _dim(dim, input.ndim, "select_scatter", whole=True)
    return _scatter_into("select_scatter", input, src, (slice(None),) * d + (int(index),))


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """torch.diagonal_scatter: input with src on input.diagonal(offset, dim1, dim2)."""
    a1, a2 = _dim(dim1, input.ndim, "diagonal_scatter"), _dim(dim2, input.ndim, "diagonal_scatter")
    if a1 == a2:
        raise ShapeError(f"diagonal_scatter(): dim1 and dim2 cannot be equal, got {dim1} and {dim2}")
    target = input.array.diagonal(offset, a1, a2).shape
    if tuple(src.shape) != target:
        raise ShapeError(
            f"diagonal_scatter(): expected src to have a size equal to the diagonal of self. src size = "
            f"{list(src.shape)}, diagonal size = {list(target)}"
        )
    _check_differentiable("diagonal_scatter", input, src)
    src = src if src.array.dtype == input.array.dtype else ew.cast(src, input.array.dtype)
    xp, n = input.device.xp, target[-1]
    adv = [slice(None)] * input.ndim
    adv[a1], adv[a2] = xp.arange(n) + max(-offset, 0), xp.arange(n) + max(offset, 0)
    # numpy puts the two indexed dims' one where they stood when adjacent, else first; the diagonal's is last
    src = movedim(src, -1, min(a1, a2) if abs(a1 - a2) == 1 else 0)
    # torch writes into clone_preserve_strides(input), as select_scatter's (_scatter_into)
    return _index_put(input, src, basic=None, adv=tuple(adv), accumulate=False, layout="strides")


# ---- Tensor methods of ops distgraph had as functions only ---------------------------------------------------------
def _where_method(self, condition, other):
    return ew.where(condition, self, other)


def _bincount_method(self, weights=None, minlength=0):
    return indexing.bincount(self, weights, minlength)


def _addmm_method(self, mat1, mat2, *, beta=1, alpha=1):
    return linalg.addmm(self, mat1, mat2, beta=beta, alpha=alpha)


METHODS = {
    "where": _where_method,
    "argwhere": indexing.argwhere,
    "fliplr": reorder.fliplr,
    "flipud": reorder.flipud,
    "addmm": _addmm_method,
    "bernoulli": creation.bernoulli,
    "multinomial": creation.multinomial,
    "bincount": _bincount_method,
    "index_add": index_add,
    "index_copy": index_copy,
    "index_fill": index_fill,
    "index_reduce": index_reduce,
    "scatter_reduce": scatter_reduce,
    "masked_scatter": masked_scatter,
    "take": take,
    "put": put,
    "select": select,
    "narrow_copy": narrow_copy,
    "slice_scatter": slice_scatter,
    "select_scatter": select_scatter,
    "diagonal_scatter": diagonal_scatter,
}
# in-place forms torch has; index_fill_ writes one value to chosen positions, which torch lets through an expanded tensor
INPLACE = ("addmm", "index_add", "index_copy", "index_fill", "index_reduce", "scatter_reduce", "masked_scatter", "put")


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name in INPLACE:
        fn = _index_fill if name == "index_fill" else METHODS[name]
        setattr(Tensor, name + "_", inplace_variant(fn, name + "_", overlap_ok=name == "index_fill"))
