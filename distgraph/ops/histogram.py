"""histogram and histogramdd, as torch's: counts (or summed weights) of a floating tensor's values in bins.

One rule serves both, torch's (aten HistogramKernel): D coordinates per sample (histogram is the D = 1
case); for each dimension, the edges are the given tensor, or `bins + 1` points of linspace over `range`
(the data's min and max when none, widened by 0.5 each way when they agree, [0, 1] for no data); a
sample is counted when every coordinate lies in [first edge, last edge], in the bin `searchsorted(edges,
x, right) - 1` with the last edge closing the last bin. `density` divides by the total and by each bin's
width. No gradient flows (torch's has no derivative); the results are new tensors of the input's dtype.
"""

import builtins
from collections import namedtuple

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from distgraph.ops.counting import host_read
from distgraph.ops.creation import linspace

Histogram = namedtuple("histogram", ["hist", "bin_edges"])
HistogramDD = namedtuple("histogramdd", ["hist", "bin_edges"])
_DD = "torch.histogramdd"


def _edges(x, k, bins, lo_hi, dt, dev):
    """Dimension k's bin edges (an array of dtype `dt`), from a tensor of edges or a bin count."""
    if isinstance(bins, Tensor):
        if bins.ndim != 1:
            raise ShapeError(f"{_DD}: bins tensor should have one dimension, but got {bins.ndim} dimensions in the "
                             f"bins tensor for dimension {k}")  # fmt: skip
        if bins.array.dtype != dt:
            raise DTypeError(f"{_DD}: input tensor and bins tensors should have the same dtype, but got input with "
                             f"dtype {_c(dt)} and bins for dimension {k} with dtype {_c(bins.array.dtype)}")  # fmt: skip
        if bins.shape[0] == 0:
            raise InputRangeError(f"torch.histogram(): bins must be > 0, but got 0 for dimension {k}")
        return bins.array
    bins = int(bins)
    if bins <= 0:
        raise InputRangeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension {k}")
    if lo_hi is not None:
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
    elif x.shape[0]:
        lo, hi = float(x[:, k].min()), float(x[:, k].max())
    else:
        lo, hi = 0.0, 1.0
    if lo > hi:
        raise InputRangeError(f"{_DD}: min should not exceed max, but got min {_g(lo)} max {_g(hi)} for dimension {k}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputRangeError(f"{_DD}: dimension {k}'s range [{_g(lo)}, {_g(hi)}] is not finite")
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return linspace(lo, hi, bins + 1, dtype=dtypes.from_any(dt), device=dev).array


def _c(dt):
    """torch's C name of a dtype, as its messages print it."""
    return {"float32": "float", "float64": "double", "float16": "c10::Half"}.get(np.dtype(dt).name, np.dtype(dt).name)


def _g(v):
    return f"{v:g}"


def _hist(input, bins, range, weight, density):
    """(hist array, [edge arrays]) of `input` read as (N, D) samples."""
    x = input.array
    if x.dtype.kind != "f":
        raise NotImplementedError(f"\"histogramdd\" not implemented for '{input.dtype.name}'")
    host_read(input, "histogram()")
    xp, d = input.device.xp, x.shape[-1]
    samples = x.reshape(-1, d)
    if weight is not None:
        if tuple(weight.shape) != tuple(x.shape[:-1]):
            raise ShapeError(
                f"{_DD}: if weight tensor is provided it should have the same shape as the input tensor excluding "
                f"its innermost dimension, but got input with shape {list(x.shape)} and weight with shape "
                f"{list(weight.shape)}"
            )
        if weight.array.dtype != x.dtype:
            raise DTypeError(f"{_DD}: if weight tensor is provided, input tensor and weight tensor should have the "
                             f"same dtype, but got input({_c(x.dtype)}), and weight({_c(weight.array.dtype)})")  # fmt: skip
    if range is not None and len(range) != 2 * d:
        raise ShapeError(f"{_DD}: for a {d}-dimensional histogram range should have {2 * d} elements, but got "
                         f"{len(range)}")  # fmt: skip
    edges = [_edges(samples, k, bins[k], None if range is None else range[2 * k : 2 * k + 2], x.dtype, input.device)
             for k in builtins.range(d)]  # fmt: skip
    inside = xp.ones(samples.shape[0], dtype=bool)
    pos = []
    for k, e in enumerate(edges):
        col = samples[:, k]
        inside &= (col >= e[0]) & (col <= e[-1])
        pos.append(xp.minimum(xp.searchsorted(e, col, side="right") - 1, e.shape[0] - 2))
    shape = tuple(e.shape[0] - 1 for e in edges)
    flat = np.ravel_multi_index(tuple(p[inside] for p in pos), shape) if samples.shape[0] else xp.zeros(0, int)
    w = None if weight is None else weight.array.reshape(-1)[inside]
    hist = xp.bincount(flat, weights=w, minlength=int(np.prod(shape))).astype(x.dtype).reshape(shape)
    if density:
        hist = hist / hist.sum()
        for k, e in enumerate(edges):
            hist = hist / xp.diff(e).reshape((-1,) + (1,) * (d - 1 - k))
    return hist.astype(x.dtype, copy=False), edges


def histogram(input, bins=100, *, range=None, weight=None, density=False):
    """torch.histogram: (hist, bin_edges) of all of `input`'s values; `bins` a count or a 1-D edges tensor."""
    if isinstance(bins, Tensor) and range is not None:
        raise TypeError("histogram(): range is only accepted with an int bins count, not a bins tensor")
    flat = Tensor(input.array.reshape(-1, 1), device=input.device)
    w = None if weight is None else Tensor(weight.array.reshape(-1), device=weight.device)
    hist, (edges,) = _hist(flat, [bins], range, w, density)
    return Histogram(Tensor(hist, device=input.device), Tensor(edges.copy(), device=input.device))


def histogramdd(input, bins=10, *, range=None, weight=None, density=False):
    """torch.histogramdd: `input` is (..., D) samples; `bins` an int for every dimension, D ints or D tensors."""
    if input.ndim < 2:
        raise ShapeError(f"{_DD}: input tensor should have at least 2 dimensions")
    d = input.shape[-1]
    bins = [bins] * d if isinstance(bins, int | np.integer) else list(bins)
    if len(bins) != d:
        raise ShapeError("histogramdd: The size of bins must be equal to the innermost dimension of the input.")
    hist, edges = _hist(input, bins, range, weight, density)
    dev = input.device
    return HistogramDD(Tensor(hist, device=dev), tuple(Tensor(e.copy(), device=dev) for e in edges))


def install():
    Tensor.histogram = histogram
