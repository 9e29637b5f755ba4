"""Counting and covariance: unique, unique_consecutive, histc, cov, corrcoef.

unique and unique_consecutive have no derivative in torch: their values still require grad when the
input does, and a backward through them raises, as torch's. histc counts (no gradient);
cov and corrcoef are written with differentiable ops, following torch's Correlation.cpp step by step.
"""

import warnings

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, DTypeError, InputRangeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.linalg import mm
from distgraph.ops.regions import diagonal
from distgraph.ops.registry import defop
from distgraph.ops.shape import reshape, squeeze, t, unsqueeze


def host_read(t, what):
    """Tell graph capture that `t`'s values are read on the host (an output whose shape or contents are
    found there cannot be replayed for other inputs: capture stops and the caller runs eagerly)."""
    from distgraph.autograd import tensor as tensor_module

    if tensor_module.host_reads is not None:
        tensor_module.host_reads(t, what)


def repeated_index(repeats, n, output_size, like):
    """repeat_interleave's index, on `like`'s device: 0..n-1, index i repeated `repeats` times (an int, or
    a 0-d or 1-d integer tensor: its i-th value); its length checked against `output_size` where given."""
    xp = like.device.xp
    if isinstance(repeats, Tensor):  # its values set the output's length: a host read (no graph replays them)
        if repeats.ndim > 1 or repeats.dtype.is_floating_point or repeats.dtype == dtypes.bool_:
            raise DTypeError(
                f"repeat_interleave: repeats must be a 0-d or 1-d integer tensor, got a {repeats.ndim}-d "
                f"{repeats.dtype.name} one"
            )
        host_read(repeats, "repeat_interleave's repeats")
        repeats = repeats.array.tolist()  # (cupy's repeat takes no array)
    index = xp.repeat(xp.arange(n), repeats)
    if output_size is not None and output_size != len(index):
        raise ShapeError(f"repeat_interleave: Invalid output_size, expected {len(index)} but got {output_size}")
    return Tensor(index, device=like.device)


def _int_tensor(arr, like):
    return Tensor(like.device.xp.asarray(arr, dtype=np.int64), device=like.device)


# ---- unique / unique_consecutive ----------------------------------------------------------------------
def _no_derivative(name):
    def rule(ctx, g):
        raise AutogradError(f"the derivative for '{name}' is not implemented (as in PyTorch)")

    return rule


@defop("unique_values", kind="other", save=())
def _unique_values(xp, x, values):
    """The values found on the host side, passed through as the op's output so they carry the input's
    requires_grad (torch's unique output does) while backward refuses."""
    return values


_unique_values.grad(_no_derivative("unique"))


def _as_rows(xp, x, axis):
    """`x` with `axis` first and the rest flattened: one row per slice along `axis`."""
    moved = xp.moveaxis(x, axis, 0)
    return moved.reshape(moved.shape[0], int(np.prod(moved.shape[1:]))), moved.shape


def _results(input, values, inverse, counts, return_inverse, return_counts):
    out = _unique_values(input, values=values)
    extra = ([_int_tensor(inverse, input)] if return_inverse else []) + (
        [_int_tensor(counts, input)] if return_counts else []
    )
    return (out, *extra) if extra else out


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values (sorted, as torch always does on CPU; each NaN distinct, as torch's)."""
    host_read(input, "unique()")
    xp, x = input.device.xp, input.array
    if dim is None:
        values, inverse, counts = xp.unique(x.reshape(-1), return_inverse=True, return_counts=True, equal_nan=False)
        return _results(input, values, inverse.reshape(x.shape), counts, return_inverse, return_counts)
    axis = red.normalize_dim(dim, input.ndim, "unique")
    if input.ndim == 0:
        raise ShapeError("unique(): a 0-d tensor has no dim to take unique slices along")
    if any(n == 0 for i, n in enumerate(x.shape) if i != axis):
        raise ShapeError(
            f"unique(): There are 0 sized dimensions, and they aren't selected (shape {tuple(x.shape)}, dim {dim})"
        )
    rows, moved_shape = _as_rows(xp, x, axis)
    if rows.shape[0] == 0:
        return _results(input, x, xp.zeros(0), xp.zeros(0), return_inverse, return_counts)
    order = xp.lexsort(rows.T[::-1])  # lexicographic order of the slices, as torch's unique_dim
    srt = rows[order]
    new = xp.concatenate([xp.ones(1, dtype=bool), (srt[1:] != srt[:-1]).any(1)])
    group = xp.cumsum(new) - 1
    inverse = xp.empty_like(group)
    inverse[order] = group
    starts = xp.flatnonzero(new)
    counts = xp.diff(xp.concatenate([starts, xp.asarray([rows.shape[0]])]))
    values = xp.moveaxis(srt[starts].reshape((starts.shape[0],) + moved_shape[1:]), 0, axis)
    return _results(input, values, inverse, counts, return_inverse, return_counts)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Collapse runs of equal consecutive values (or slices along `dim`)."""
    host_read(input, "unique_consecutive()")
    xp, x = input.device.xp, input.array
    if dim is None:
        rows, axis, shape = x.reshape(-1, 1), None, x.shape
    else:
        axis = red.normalize_dim(dim, input.ndim, "unique_consecutive")
        if input.ndim == 0:
            raise ShapeError("unique_consecutive(): a 0-d tensor has no dim to take slices along")
        rows, moved_shape = _as_rows(xp, x, axis)
        shape = (rows.shape[0],)
    n = rows.shape[0]
    new = xp.concatenate([xp.ones(min(n, 1), dtype=bool), (rows[1:] != rows[:-1]).any(1)])
    starts = xp.flatnonzero(new)
    counts = xp.diff(xp.concatenate([starts, xp.asarray([n])]))
    inverse = (xp.cumsum(new) - 1).reshape(shape)
    if axis is None:
        values = x.reshape(-1)[starts]
    else:
        values = xp.moveaxis(rows[starts].reshape((starts.shape[0],) + moved_shape[1:]), 0, axis)
    return _results(input, values, inverse, counts, return_inverse, return_counts)


# ---- histc ---------------------------------------------------------------------------------
def histc(input, bins=100, min=0, max=0):
    """Counts in `bins` equal bins over [min, max] (the data's range when min == max), as input's dtype;
    values outside, and NaN, are not counted. torch's bin: int((x - min) · bins / (max - min)), the
    last bin closed."""
    if input.array.dtype.kind != "f":
        raise DTypeError(f"histc(): expected a floating point input, got {input.dtype.name}")
    host_read(input, "histc()")
    if bins <= 0:
        raise InputRangeError(f"histc(): bins must be > 0, but got {bins}")
    xp, x = input.device.xp, input.array.reshape(-1)
    typ = x.dtype.type
    lo, hi = typ(min), typ(max)
    if lo == hi and x.size:
        lo, hi = typ(x.min().item()), typ(x.max().item())  # (cupy's 0-d arrays convert only through item())
    if lo == hi:
        lo, hi = lo - typ(1), hi + typ(1)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputRangeError(f"histc(): range of [{lo}, {hi}] is not finite")
    if lo > hi:
        raise InputRangeError(f"histc(): max must be larger than min (min {lo}, max {hi})")
    kept = x[(x >= lo) & (x <= hi)]
    pos = ((kept - lo) * typ(bins) / (hi - lo)).astype(np.int64)
    pos = xp.minimum(pos, bins - 1)
    return Tensor(xp.bincount(pos, minlength=bins).astype(x.dtype), device=input.device)


# ---- cov / corrcoef -----------------------------------------------------------------------------------
def _check_weights(w, name, n, integral):
    if w.ndim > 1:
        raise ShapeError(f"cov(): expected {name} to have one or fewer dimensions, got shape {tuple(w.shape)}")
    if w.numel() != n:
        raise ShapeError(
            f"cov(): expected {name} to have the same numel as there are observations ({n}), got {w.numel()}"
        )
    if integral and w.array.dtype.kind not in "iu":
        raise DTypeError(f"cov(): expected fweights to have integral dtype but got fweights with {w.dtype.name} dtype")
    if not integral and w.array.dtype.kind != "f":
        raise DTypeError(f"cov(): expected aweights to have floating point dtype but got {w.dtype.name} dtype")
    if w.numel() and not bool((w.array >= 0).all()):  # a NaN weight too: torch checks w.min() >= 0
        raise InputRangeError(f"cov(): {name} cannot be negative")


def cov(input, *, correction=1, fweights=None, aweights=None):
    """Covariance of the variables in `input`'s rows (observations in its columns), torch's estimator."""
    if input.ndim > 2:
        raise ShapeError(f"cov(): expected input to have two or fewer dimensions but got shape {tuple(input.shape)}")
    if input.array.dtype == np.bool_:
        raise DTypeError("cov(): bool dtype is not supported for input")
    x = input if input.ndim == 2 else reshape(input, (1, -1))
    if x.array.dtype.kind in "iu":
        x = ew.cast(x, dtypes.get_default_dtype().np)
    n = x.shape[1]
    w = None
    if fweights is not None:
        _check_weights(fweights, "fweights", n, True)
        w = fweights
    if aweights is not None:
        _check_weights(aweights, "aweights", n, False)
        w = aweights if w is None else ew.mul(w, aweights)
    w_sum = red.sum(w) if w is not None else n
    avg = ew.div(red.sum(ew.mul(x, w) if w is not None else x, 1), w_sum)
    if w is not None and correction != 0 and aweights is not None:
        norm = ew.sub(w_sum, ew.div(ew.mul(red.sum(ew.mul(w, aweights)), correction), w_sum))
    else:
        norm = ew.sub(w_sum, correction) if w is not None else w_sum - correction
    if isinstance(norm, Tensor):
        host_read(norm, "cov()'s check of its weights' degrees of freedom")
    if float(norm.array if isinstance(norm, Tensor) else norm) <= 0:
        warnings.warn(
            "cov(): degrees of freedom is <= 0. Correction should be strictly less than the number of observations.",
            UserWarning,
            stacklevel=2,
        )
        norm = ew.mul(norm, 0) if isinstance(norm, Tensor) else 0
    centered = ew.sub(x, unsqueeze(avg, 1))
    c = mm(centered, t(ew.mul(centered, w) if w is not None else centered))
    if not isinstance(norm, Tensor):
        norm = ew.const(norm, c)
    with np.errstate(divide="ignore", invalid="ignore"):  # no degree of freedom: inf / NaN, as torch
        return squeeze(ew.div(c, norm))


def corrcoef(input):
    """Pearson correlation coefficients of `input`'s rows: cov scaled by the standard deviations,
    clipped to [-1, 1] as torch's."""
    c = cov(input)
    with np.errstate(divide="ignore", invalid="ignore"):
        if c.ndim == 0:
            return ew.div(c, c)
        std = ew.sqrt(diagonal(c))
        c = ew.div(ew.div(c, unsqueeze(std, 1)), unsqueeze(std, 0))
    return ew.clamp(c, -1, 1)
