"""More reductions and scans: nansum nanmean median nanmedian quantile nanquantile mode aminmax cummax
cummin logcumsumexp msort (unique, histc, cov, corrcoef: ops/counting.py).

Ops that pick elements (median and nanmedian along a dim, mode, cummax, cummin, quantile) find the
positions with an index op of their own (select_index, quantile_ranks: a captured graph finds them
again for each input) and then `gather` the values, so their gradient is gather's scatter-add into the
chosen positions: torch's value_selecting_reduction_backward and cummaxmin_backward. Whole-tensor
median/nanmedian split the gradient evenly among the elements equal to the result, as torch's
evenly_distribute_backward (amax's rule with `evenly`).
"""

from collections import namedtuple

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import counting
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.indexing import _scalar_pick, gather, sort
from distgraph.ops.lerp import lerp
from distgraph.ops.movement import contiguous
from distgraph.ops.registry import defop
from distgraph.ops.reorder import flip
from distgraph.ops.shape import expand, flatten, movedim, reshape, squeeze, unsqueeze

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])
MinMax = namedtuple("MinMax", ["min", "max"])
INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")
PARTS = ("below", "above", "weights")


def _require_float(input, name):
    if input.array.dtype.kind != "f":
        raise DTypeError(f"{name}(): expected input to have floating point dtype but got {input.dtype.name}")


def _index_tensor(arr, like):
    return Tensor(like.device.xp.asarray(arr, dtype=np.int64), device=like.device)


def _accumulate(xp, name, a):
    """The running `name` ("maximum", "minimum", "logaddexp") along the last axis: numpy's ufunc
    accumulate, else (cupy has none for these) one step per position."""
    if xp is np:
        return getattr(np, name).accumulate(a, axis=-1)
    out, step = a.copy(), getattr(xp, name)
    for i in range(1, a.shape[-1]):
        out[..., i] = step(out[..., i - 1], a[..., i])
    return out


# ---- nansum / nanmean ------------------------------------------------------------------------------------
@defop("nan_to_zero", kind="elementwise")
def _nan_to_zero_op(xp, x):
    return xp.where(xp.isnan(x), xp.zeros((), dtype=x.dtype), x)


@_nan_to_zero_op.grad
def _(ctx, g):
    """torch's nansum_backward, grad · (x == x): an infinite grad at a NaN gives NaN (an all-NaN nanmean's
    1 / 0), where a `where` would give 0."""
    with np.errstate(invalid="ignore"):  # inf · 0, unwarned as torch's
        return ew.mul(g, cmp.logical_not(cmp.isnan(ctx.inputs[0])))


def _nan_to_zero(input):
    """`input` with NaN replaced by 0, its gradient torch's nansum's."""
    if input.array.dtype.kind != "f":
        return input
    return _nan_to_zero_op(input)


def nansum(input, dim=None, keepdim=False, dtype=None):
    return red.sum(_nan_to_zero(input), dim=dim, keepdim=keepdim, dtype=dtype)


def nanmean(input, dim=None, keepdim=False, dtype=None):
    _require_float(input, "nanmean")
    count = red.sum(cmp.logical_not(cmp.isnan(input)), dim=dim, keepdim=keepdim)
    total = nansum(input, dim, keepdim, dtype)
    half = total.array.dtype is red.F16  # torch divides a float16 sum in float32: a float16 count is inf above 65504
    with np.errstate(invalid="ignore"):  # an all-NaN (or empty) slice: 0 / 0, NaN as torch's, unwarned
        out = ew.div(ew.cast(total, np.float32) if half else total, count)
    return ew.cast(out, red.F16) if half else out


# ---- median / nanmedian ---------------------------------------------------------------------------------
def _lower_median_rank(xp, x, ignore_nan):
    """Per row of `x` (last axis): the position in sorted order torch's median picks, the lower median
    (of the non-NaN values for nanmedian; the first NaN where median meets a NaN). NaN sorts last."""
    n = x.shape[-1]
    nans = xp.isnan(x).sum(-1) if x.dtype.kind == "f" else xp.zeros(x.shape[:-1], dtype=np.int64)
    if ignore_nan:  # a row of NaNs only: the middle one
        return (xp.where(nans < n, n - nans, n) - 1) // 2
    return xp.where(nans > 0, n - nans, (n - 1) // 2)


@defop("median_all", kind="reduction", saves_output=True)
def _median_all(xp, x, axes, keepdim=False, evenly=True, ignore_nan=False):
    flat = xp.sort(x.reshape(-1))  # numpy's sort puts NaN last
    if flat.size == 0:
        return xp.asarray(xp.nan, dtype=x.dtype)
    return flat[int(_lower_median_rank(xp, flat, ignore_nan))]


_median_all.grad(red._amax.backward)  # torch's evenly_distribute_backward (amax's rule with `evenly`)


def _int_dim(dim, ndim, name):
    if not isinstance(dim, int | np.integer):
        raise TypeError(f"{name}(): argument 'dim' must be int, not {type(dim).__name__}")
    return red.normalize_dim(dim, ndim, name)


def _select_along(input, dim, keepdim, how, name):
    """(values, indices) of the element picker `how` (PICKS) chooses along `dim`."""
    d = _int_dim(dim, input.ndim, name)
    if input.ndim == 0:
        return ValuesIndices(*_scalar_pick(input))
    red._check_nonempty(input, (d,), name)
    indices = _select_index(input, axis=d, how=how)
    values = gather(input, d, indices)
    if keepdim:
        return ValuesIndices(values, indices)
    return ValuesIndices(squeeze(values, d), squeeze(indices, d))


def _median_pick(ignore_nan):
    def pick(xp, rows):
        order = xp.argsort(rows, axis=-1, kind="stable")
        rank = _lower_median_rank(xp, rows, ignore_nan)
        return xp.take_along_axis(order, rank[..., None], axis=-1)[..., 0]

    return pick


def _median(input, dim, keepdim, ignore_nan, name):
    if input.array.dtype == np.bool_:
        raise DTypeError(f"{name}(): not implemented for bool tensors (as torch)")
    if dim is None:
        return _median_all(input, axes=tuple(range(input.ndim)), evenly=True, ignore_nan=ignore_nan)
    return _select_along(input, dim, keepdim, name, name)


def median(input, dim=None, keepdim=False):
    """median(t): the lower median (NaN if any); median(t, dim): (values, indices)."""
    return _median(input, dim, keepdim, False, "median")


def nanmedian(input, dim=None, keepdim=False):
    return _median(input, dim, keepdim, True, "nanmedian")


# ---- mode -------------------------------------------------------------------------------------------------
def _mode_pick(xp, rows):
    """Per row: the most frequent value (the smallest among ties, NaNs counted as one value), at its last
    position, as torch's mode."""
    s = xp.sort(rows, axis=-1)
    n = s.shape[-1]
    same = s[..., 1:] == s[..., :-1]
    if s.dtype.kind == "f":
        same |= xp.isnan(s[..., 1:]) & xp.isnan(s[..., :-1])
    new = xp.concatenate([xp.ones(s.shape[:-1] + (1,), dtype=bool), ~same], axis=-1)
    pos = xp.arange(n)
    start = _accumulate(xp, "maximum", xp.where(new, pos, 0))
    ends = xp.concatenate([new[..., 1:], xp.ones(s.shape[:-1] + (1,), dtype=bool)], axis=-1)
    end = xp.flip(_accumulate(xp, "minimum", xp.flip(xp.where(ends, pos, n), axis=-1)), axis=-1)
    best = xp.argmax(end - start, axis=-1)[..., None]  # the first longest run: the smallest value
    value = xp.take_along_axis(s, best, axis=-1)
    hit = rows == value
    if s.dtype.kind == "f":
        hit |= xp.isnan(rows) & xp.isnan(value)
    return n - 1 - xp.argmax(xp.flip(hit, axis=-1), axis=-1)


def mode(input, dim=-1, keepdim=False):
    return _select_along(input, dim, keepdim, "mode", "mode")


# ---- aminmax ----------------------------------------------------------------------------------------------
def aminmax(input, *, dim=None, keepdim=False):
    axes = red.normalize_dims(dim, input.ndim, "aminmax")
    if input.array.size == 0 and (dim is None or not axes or input.shape[axes[0]] == 0):
        raise ShapeError(
            f"aminmax(): cannot compute aminmax over an empty dimension as the operation has no identity "
            f"(input shape {tuple(input.shape)}, dim {dim})"
        )
    return MinMax(red.amin(input, dim, keepdim), red.amax(input, dim, keepdim))


# ---- cummax / cummin ------------------------------------------------------------------------------------
def _running_pick(better):
    """Per position: the index of the running extreme so far, the latest among ties and NaNs (a NaN wins
    from where it appears, and every later NaN takes over), as torch's cummax/cummin."""

    def pick(xp, rows):
        hit = rows == _accumulate(xp, better, rows)
        if rows.dtype.kind == "f":
            hit |= xp.isnan(rows)
        return _accumulate(xp, "maximum", xp.where(hit, xp.arange(rows.shape[-1]), 0))

    return pick


def _cumulative_select(input, dim, name):
    d = _int_dim(dim, input.ndim, name)
    if input.ndim == 0:
        return ValuesIndices(*_scalar_pick(input))
    indices = _select_index(input, axis=d, how=name)
    return ValuesIndices(gather(input, d, indices), indices)


def cummax(input, dim):
    return _cumulative_select(input, dim, "cummax")


def cummin(input, dim):
    return _cumulative_select(input, dim, "cummin")


# ---- the index op -------------------------------------------------------------------------------------
PICKS = {
    "median": _median_pick(False),
    "nanmedian": _median_pick(True),
    "mode": _mode_pick,
    "cummax": _running_pick("maximum"),
    "cummin": _running_pick("minimum"),
}
RUNNING = ("cummax", "cummin")  # one index per position; the others one per slice (kept as a size-1 dim)


@defop("select_index", kind="index", save=())
def _select_index(xp, x, axis, how):
    """The indices picker `how` chooses along `axis`: an op of its own, so a captured graph picks again
    for each new input instead of keeping the example's indices."""
    rows = xp.moveaxis(x, axis, -1)
    running = how in RUNNING
    if rows.size == 0:
        idx = xp.zeros(rows.shape if running else rows.shape[:-1] + (1,), dtype=np.int64)
    else:
        idx = PICKS[how](xp, rows)
        idx = idx if running else idx[..., None]
    return xp.ascontiguousarray(xp.moveaxis(idx.astype(np.int64), -1, axis))  # torch's layout, not moveaxis's


# ---- logcumsumexp -----------------------------------------------------------------------------------------
@defop("logcumsumexp", kind="other", saves_output=True)
def _logcumsumexp(xp, x, axis):
    return xp.ascontiguousarray(xp.moveaxis(_accumulate(xp, "logaddexp", xp.moveaxis(x, axis, -1)), -1, axis))


@_logcumsumexp.grad
def _(ctx, g):
    # torch's logcumsumexp_backward: the positive and negative parts of g, each a reversed logcumsumexp
    # of log|g| - out, added to x and exponentiated (the smallest finite value stands in for log 0)
    x, out, axis = ctx.inputs[0], ctx.out, ctx.attrs["axis"]
    lowest = ew.const(np.finfo(g.array.dtype).min, g)
    log_abs = ew.log(ew.abs(g))

    def part(mask):
        shifted = ew.sub(ew.where(mask, log_abs, lowest), out)
        return ew.exp(ew.add(flip(_logcumsumexp(flip(shifted, axis), axis=axis), axis), x))

    return ew.sub(part(cmp.gt(g, 0)), part(cmp.lt(g, 0)))


def logcumsumexp(input, dim):
    _require_float(input, "logcumsumexp")
    axis = _int_dim(dim, input.ndim, "logcumsumexp")
    if input.ndim == 0:
        return reshape(_logcumsumexp(reshape(input, (1,)), axis=0), ())
    return _logcumsumexp(input, axis=axis)


def msort(input):
    return sort(input, 0).values if input.ndim else sort(input).values


# ---- quantile / nanquantile ---------------------------------------------------------------------------
def _quantile_args(input, q, interpolation, name):
    """(whether q was a scalar, q as a 1-d tensor of input's dtype), after torch's checks."""
    if input.array.dtype not in (np.float32, np.float64):
        raise DTypeError(f"{name}() input tensor must be either float or double dtype, got {input.dtype.name}")
    if input.array.size == 0:
        raise ShapeError(f"{name}() input tensor must be non-empty (input shape {tuple(input.shape)})")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"{name}() interpolation must be one of linear, lower, higher, midpoint or nearest, but got "
            f"{interpolation!r}"
        )
    xp = input.device.xp
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise ShapeError(f"{name}() q must be a scalar or 1D tensor, got shape {tuple(q.shape)}")
        if q.array.dtype != input.array.dtype:
            raise DTypeError(
                f"{name}() q tensor must be same dtype as the input tensor (q {q.dtype.name}, input {input.dtype.name})"
            )
        counting.host_read(q, f"{name}()'s check of q")
        scalar, q1 = q.ndim == 0, reshape(q, (-1,))
    else:
        scalar, q1 = True, Tensor(xp.asarray([float(q)], dtype=input.array.dtype), device=input.device)
    qa = q1.array
    if qa.size and not bool(((qa >= 0) & (qa <= 1)).all()):
        raise InputRangeError(f"{name}() q values must be in the range [0, 1], got {qa.tolist()}")
    return scalar, q1


def _quantile_ranks(xp, sorted_rows, qa, interpolation, ignore_nan):
    """{"ranks", "scale", "below", "above", "weights"}, each shaped (Q, *rows, 1): torch's quantile_compute.
    "ranks" before rounding (linear interpolation's, `q · scale` where not fixed), "scale" their derivative
    in q: n - 1 (the non-NaN count - 1 for nanquantile), 0 where torch fixes the rank (a row with a NaN
    for quantile, an all-NaN row for nanquantile)."""
    dt = sorted_rows.dtype
    isnan = xp.isnan(sorted_rows)
    q = qa.reshape((-1,) + (1,) * sorted_rows.ndim)
    if ignore_nan:
        count = (~isnan).sum(-1, keepdims=True).astype(dt)
        ranks = q * (count - dt.type(1))
        fixed = ranks < 0
        ranks, scale = xp.where(fixed, dt.type(0), ranks), xp.where(fixed, dt.type(0), count - dt.type(1))
    else:
        last = dt.type(sorted_rows.shape[-1] - 1)
        fixed = isnan.any(-1, keepdims=True)
        ranks, scale = xp.where(fixed, last, q * last), xp.where(fixed, dt.type(0), last) + 0 * q
    rounded = {"lower": xp.floor, "higher": xp.ceil, "nearest": xp.round}.get(interpolation, lambda r: r)(ranks)
    below = rounded.astype(np.int64)
    weights = xp.full_like(rounded, 0.5) if interpolation == "midpoint" else rounded - below.astype(dt)
    return {
        "ranks": ranks,
        "scale": scale,
        "fixed": fixed,
        "below": below,
        "above": xp.ceil(rounded).astype(np.int64),
        "weights": weights,
    }


@defop("quantile_ranks", kind="index", save=(0,))
def _quantile_ranks_op(xp, sorted_rows, q, part, interpolation, ignore_nan):
    """One of `_quantile_ranks`' arrays: an op, so a captured graph finds the ranks of each new input (its
    NaN counts). Only "ranks" is differentiable, in q (torch's linear weights are ranks - below)."""
    return _quantile_ranks(xp, sorted_rows, q, interpolation, ignore_nan)[part]


@_quantile_ranks_op.grad
def _(ctx, g):
    srt, q = ctx.inputs
    if ctx.attrs["part"] != "ranks":
        return None, None
    xp, how = srt.device.xp, {k: ctx.attrs[k] for k in ("interpolation", "ignore_nan")}
    found = _quantile_ranks(xp, srt.array, q.array, **how)
    scale, fixed = (Tensor(found[k], device=srt.device) for k in ("scale", "fixed"))
    g = ew.where(fixed, ew.const(0, g), g)  # masked first, as torch's masked_fill: a NaN g stops there
    return None, red.sum(ew.mul(g, scale), dim=tuple(range(1, g.ndim)))


def _quantile(input, q, dim, keepdim, interpolation, ignore_nan, name):
    scalar, q1 = _quantile_args(input, q, interpolation, name)
    if dim is None:
        rows = flatten(input) if input.ndim else reshape(input, (1,))
    else:
        d = red.normalize_dim(dim, input.ndim, name)
        rows = movedim(input, d, -1) if input.ndim else reshape(input, (1,))
    srt = sort(rows, -1).values  # (*R, n)
    how = {"interpolation": interpolation, "ignore_nan": ignore_nan}
    below, above, weights = (_quantile_ranks_op(srt.detach(), q1.detach(), part=k, **how) for k in PARTS)
    full = expand(unsqueeze(srt, 0), (q1.shape[0],) + tuple(srt.shape))  # (Q, *R, n)
    out = gather(full, -1, below)
    if interpolation == "linear":  # weights = ranks - below, differentiable in q as torch's
        weights = ew.sub(_quantile_ranks_op(srt.detach(), q1, part="ranks", **how), ew.cast(below, srt.array.dtype))
    if interpolation in ("linear", "midpoint"):
        out = lerp(out, gather(full, -1, above), weights)
    out = squeeze(out, -1)  # (Q, *R)
    if keepdim:
        if dim is None:
            out = reshape(out, (q1.shape[0],) + (1,) * input.ndim)
        elif input.ndim:
            out = unsqueeze(out, d + 1)
    if scalar:
        return squeeze(out, 0)
    # torch's quantile_compute fills (*out, Q) and moves Q to the front: its strides, so view() refuses as torch's
    return movedim(contiguous(movedim(out, 0, -1)), -1, 0)


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _quantile(input, q, dim, keepdim, interpolation, False, "quantile")


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _quantile(input, q, dim, keepdim, interpolation, True, "nanquantile")


METHODS = {
    "nansum": nansum,
    "nanmean": nanmean,
    "median": median,
    "nanmedian": nanmedian,
    "quantile": quantile,
    "nanquantile": nanquantile,
    "mode": mode,
    "aminmax": aminmax,
    "cummax": cummax,
    "cummin": cummin,
    "logcumsumexp": logcumsumexp,
    "msort": msort,
    "unique": counting.unique,
    "unique_consecutive": counting.unique_consecutive,
    "histc": counting.histc,
    "cov": counting.cov,
    "corrcoef": counting.corrcoef,
}


def install():
    """Install this module's Tensor methods (and counting.py's); none of them has an in-place form."""
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
