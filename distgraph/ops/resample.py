"""Resampling: interpolate (nearest, nearest-exact, linear, bilinear, trilinear, area) and pixel_shuffle /
pixel_unshuffle, with torch's names, arguments and index arithmetic.

Interpolation is separable, so it runs one spatial dim at a time (last dim first, as torch's kernels
weigh it): nearest modes gather one source index per output position; linear modes gather the two
neighbours and blend them, out = x[i0]·λ0 + x[i1]·λ1. Gathers and products are differentiable ops
(index_select adds gradients back to repeated sources), so no backward of its own is needed and
higher-order gradients come free. Source indices follow ATen's UpSample.h bit for bit: nearest
scales in float32, and a linear output as large as its input is a plain copy. The pixel shuffles are a
reshape, a permute and a reshape.
"""

import math

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops.indexing import index_select

_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area")
_LINEAR_NDIM = {"linear": 3, "bilinear": 4, "trilinear": 5}


def _scale(scale, size, out):
    """ATen's compute_scales_value: 1/scale_factor when one is used, else input/output size."""
    return 1.0 / scale if scale is not None and scale > 0 else size / out


def _nearest_index(size, out, scale, exact, shortcuts):
    """Source index of every output position, as ATen's CPU kernels: floor((dst [+ 0.5])·scale) in float32.
    torch's 2-D 'nearest' kernel (`shortcuts`) copies an output as large as the input and halves the
    indices of one twice as large, whatever the scale_factor; its 1-D and 3-D forwards do not (their
    backward does, so torch's gradient there is not its forward's adjoint; this one is)."""
    dst = np.arange(out)
    if shortcuts and out == size:
        return dst
    if shortcuts and out == 2 * size:
        return dst >> 1
    s = np.float32(_scale(scale, size, out))
    pos = (dst.astype(np.float32) + np.float32(0.5 if exact else 0)) * s
    return np.minimum(np.floor(pos).astype(np.int64), size - 1)


def _linear_taps(size, out, scale, align_corners):
    """(i0, i1, λ0, λ1) per output position: ATen's compute_source_index_and_lambda."""
    dst = np.arange(out, dtype=np.float64)
    if out == size:
        i = np.arange(out)
        return i, i, np.ones(out), np.zeros(out)
    if align_corners:
        src = dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        src = np.maximum(_scale(scale, size, out) * (dst + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)
    lam1 = np.clip(src - i0, 0.0, 1.0)
    return i0, i0 + (i0 < size - 1), 1.0 - lam1, lam1


def _gather(x, dim, index):
    return index_select(x, dim, Tensor(x.device.xp.asarray(index), device=x.device))


def _along(x, dim, weights):
    """Weights (out,) shaped to broadcast along `dim` of x, in x's dtype and device."""
    shape = [1] * x.ndim
    shape[dim] = -1
    return Tensor(x.device.xp.asarray(weights.astype(x.array.dtype)).reshape(shape), device=x.device)


def _resample_dim(x, dim, out, scale, mode, align_corners):
    size = x.shape[dim]
    if mode in ("nearest", "nearest-exact"):
        exact, shortcuts = mode == "nearest-exact", mode == "nearest" and x.ndim == 4
        return _gather(x, dim, _nearest_index(size, out, scale, exact, shortcuts))
    i0, i1, lam0, lam1 = _linear_taps(size, out, scale, align_corners)
    return _gather(x, dim, i0) * _along(x, dim, lam0) + _gather(x, dim, i1) * _along(x, dim, lam1)


def _output_size(input, size, scale_factor, recompute_scale_factor):
    """Output sizes and the scales the kernels use (None where they derive them from the sizes)."""
    dims, spatial = input.ndim - 2, tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: exactly one of size or scale_factor must be given")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        sizes = tuple(size) if isinstance(size, list | tuple) else (size,) * dims
        if len(sizes) != dims or not all(isinstance(s, int | np.integer) for s in sizes):
            raise ValueError(f"interpolate: size {size!r} must be an int or {dims} ints for input {tuple(input.shape)}")
        return sizes, (None,) * dims
    scales = tuple(scale_factor) if isinstance(scale_factor, list | tuple) else (scale_factor,) * dims
    if len(scales) != dims:
        raise ValueError(
            f"interpolate: scale_factor {scale_factor!r} must be a number or {dims} numbers for input "
            f"{tuple(input.shape)}"
        )
    sizes = tuple(math.floor(n * s) for n, s in zip(spatial, scales))
    return sizes, (None,) * dims if recompute_scale_factor else scales


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):  # fmt: skip
    """torch.nn.functional.interpolate on (N, C, L), (N, C, H, W) or (N, C, D, H, W) input."""
    if mode not in _MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported; use one of {', '.join(_MODES)}")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with the modes linear, bilinear, trilinear")
    if not 3 <= input.ndim <= 5:
        raise ShapeError(f"interpolate: expected 3-D, 4-D or 5-D input (N, C, ...), got {tuple(input.shape)}")
    if mode in _LINEAR_NDIM and input.ndim != _LINEAR_NDIM[mode]:
        raise ShapeError(f"interpolate: mode {mode!r} needs {_LINEAR_NDIM[mode]}-D input, got {tuple(input.shape)}")
    if mode == "area":
        recompute_scale_factor = True if size is None else recompute_scale_factor
    sizes, scales = _output_size(input, size, scale_factor, recompute_scale_factor)
    if min(sizes) <= 0 or min(input.shape[2:]) <= 0:
        raise ShapeError(
            f"interpolate: input {tuple(input.shape)} and output size {sizes} must both be non-empty in every spatial dim"
        )
    if mode == "area":
        if input.ndim == 5:
            raise NotImplementedError("interpolate: mode 'area' on 5-D input (adaptive_avg_pool3d) is not supported")
        from distgraph.ops.pool import adaptive_avg_pool1d, adaptive_avg_pool2d

        return (adaptive_avg_pool1d if input.ndim == 3 else adaptive_avg_pool2d)(input, sizes)
    out = input
    for dim in reversed(range(2, input.ndim)):
        out = _resample_dim(out, dim, sizes[dim - 2], scales[dim - 2], mode, bool(align_corners))
    return out


def pixel_shuffle(input, upscale_factor):
    """(*, C·r², H, W) -> (*, C, H·r, W·r)."""
    r = upscale_factor
    if input.ndim < 3 or input.shape[-3] % (r * r):
        raise ShapeError(
            f"pixel_shuffle: input {tuple(input.shape)} must be (*, C·r², H, W) with its channels divisible by "
            f"upscale_factor² = {r * r}"
        )
    *lead, c, h, w = input.shape
    n = len(lead)
    x = input.reshape(*lead, c // (r * r), r, r, h, w)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # (*, C, H, r, W, r)
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H·r, W·r) -> (*, C·r², H, W)."""
    r = downscale_factor
    if input.ndim < 3 or input.shape[-2] % r or input.shape[-1] % r:
        raise ShapeError(
            f"pixel_unshuffle: input {tuple(input.shape)} must be (*, C, H, W) with H and W divisible by "
            f"downscale_factor = {r}"
        )
    *lead, c, h, w = input.shape
    n = len(lead)
    x = input.reshape(*lead, c, h // r, r, w // r, r)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (*, C, r, r, H, W)
    return x.reshape(*lead, c * r * r, h // r, w // r)
