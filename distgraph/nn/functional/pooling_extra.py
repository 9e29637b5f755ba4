"""Power-average pooling, max unpooling, channel shuffling and the `*_with_indices` pooling names.

lp_pool follows torch's formula step by step: (sign(s)·relu(|s|)·k)^(1/p) with s the average of x^p
over each window, so a window whose powers sum to 0 gets a zero gradient (relu's select) and ±inf
norms are max pools of |x|. max_unpool scatters each value to its recorded flat index in a zero plane,
so its gradient is the gather of the output gradient at those indices, as torch's.
"""

import numpy as np

from distgraph.errors import DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing, pool, pool3d
from distgraph.ops.creation import zeros

INF = float("inf")


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, dims):
    name = f"lp_pool{dims}d"
    max_pool, avg_pool = {
        1: (pool.max_pool1d, pool.avg_pool1d),
        2: (pool.max_pool2d, pool.avg_pool2d),
        3: (pool3d.max_pool3d, pool3d.avg_pool3d),
    }[dims]
    if norm_type == INF:
        return max_pool(ew.abs(input), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -INF:
        return ew.neg(max_pool(ew.neg(ew.abs(input)), kernel_size, stride, 0, 1, ceil_mode))
    if not input.is_floating_point():
        raise DTypeError(f"{name}: input must be a floating-point tensor, got {input.dtype.name}")
    with np.errstate(invalid="ignore"):  # a negative x to a fractional p is NaN, silently as in torch
        out = avg_pool(ew.pow(input, norm_type), kernel_size, stride, 0, ceil_mode)
    area = int(np.prod(_tuple(kernel_size, dims)))
    v = ew.mul(ew.mul(ew.sign(out), ew.relu(ew.abs(out))), area)
    # where v = 0, torch's value is 0^(1/p) and its gradient 0 (relu's select): the root is taken of 1 there,
    # so no 0^(1/p − 1) = inf enters the backward pass
    zero = cmp.eq(v, 0)
    with np.errstate(invalid="ignore"):  # a negative sum (odd p) to a fractional 1/p: NaN, as torch's
        root = ew.pow(ew.where(zero, ew.const(1, v), v), 1.0 / norm_type)
    return ew.where(zero, ew.const(0.0 if norm_type > 0 else INF, v), root)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over windows of the last dim."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over windows of the last two dims."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2)


def _unpool_output_size(input, kernel_size, stride, padding, output_size, name):
    """torch's _unpool_output_size: the pool's input size by default; a given size (with or without the
    (N, C) dims) must lie strictly within one stride of it."""
    n = len(kernel_size)
    default = [(input.shape[-n + d] - 1) * stride[d] + kernel_size[d] - 2 * padding[d] for d in range(n)]
    if output_size is None:
        return default
    output_size = list(output_size)
    if len(output_size) == n + 2:
        output_size = output_size[2:]
    if len(output_size) != n:
        raise ShapeError(f"{name}: output_size should be a sequence containing {n} or {n + 2} elements, but it has "
                         f"a length of '{len(output_size)}'")  # fmt: skip
    for d in range(n):
        lo, hi = default[d] - stride[d], default[d] + stride[d]
        if not lo < output_size[d] < hi:
            raise ShapeError(f'{name}: invalid output_size "{output_size}" (dim {d} must be between {lo} and {hi})')
    return output_size


def _max_unpool(input, indices, kernel_size, stride, padding, output_size, dims):
    name = f"max_unpool{dims}d"
    if input.ndim not in (dims + 1, dims + 2):
        raise ShapeError(f"{name}: expected {dims + 1}D or {dims + 2}D input, got {tuple(input.shape)}")
    if tuple(indices.shape) != tuple(input.shape):
        raise ShapeError(f"{name}: indices {tuple(indices.shape)} must have the input's shape {tuple(input.shape)}")
    if indices.array.dtype.kind not in "iu":
        raise DTypeError(f"{name}: indices must be an integer tensor (as max_pool returns), got {indices.dtype.name}")
    k = _tuple(kernel_size, dims)
    s = k if stride is None else _tuple(stride, dims)
    size = _unpool_output_size(input, k, s, _tuple(padding, dims), output_size, name)
    lead = tuple(input.shape[: input.ndim - dims])
    plane = int(np.prod(size))
    if indices.numel():
        lo, hi = int(indices.array.min()), int(indices.array.max())
        if lo < 0 or hi >= plane:
            raise IndexOutOfRangeError(
                f"{name}: found an invalid max index {lo if lo < 0 else hi} (output volumes are of size "
                f"{' x '.join(map(str, size))})"
            )
    flat = (*lead, -1)
    out = zeros(*lead, plane, dtype=input.dtype, device=input.device)
    out = indexing.scatter(out, len(lead), indices.reshape(*flat), input.reshape(*flat))
    return out.reshape(*lead, *size)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool1d: each value at its index in a zero output of the pool's input size."""
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 1)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool2d: each value at its flat index in a zero (H, W) plane."""
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 2)


def channel_shuffle(input, groups):
    """(N, g·k, *) → (N, k·g, *): channel i·k + j moves to j·g + i, as in ShuffleNet."""
    if input.ndim < 3:
        raise ShapeError(f"channel_shuffle: expected input of at least 3 dims (N, C, *), got {tuple(input.shape)}")
    if groups <= 0:
        raise InputRangeError(f"channel_shuffle: number of groups to divide channels in must be positive, got {groups}")
    n, c, rest = input.shape[0], input.shape[1], tuple(input.shape[2:])
    if c % groups:
        raise ShapeError(f"channel_shuffle: number of channels must be divisible by groups, got {c} channels and "
                         f"{groups} groups")  # fmt: skip
    return input.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):  # fmt: skip
    """torch's name for max_pool1d(..., return_indices=True); its return_indices flag is ignored, as torch's."""
    return pool.max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):  # fmt: skip
    return pool.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    return pool.adaptive_max_pool1d(input, output_size, True)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    return pool.adaptive_max_pool2d(input, output_size, True)
