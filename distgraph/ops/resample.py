"""Resampling: interpolate (nearest, nearest-exact, linear, bilinear, bicubic, trilinear, area; antialias for
bilinear and bicubic) and pixel_shuffle / pixel_unshuffle, with torch's names, arguments and index arithmetic.

Interpolation is separable, so it runs one spatial dim at a time (last dim first, as torch's kernels
weigh it): nearest modes gather one source index per output position; the others blend K taps,
out = Σ_k x[index[k]]·weight[k], with the taps built in numpy from the sizes: two neighbours for linear
modes, four for bicubic (Keys' cubic, A = −0.75, indices clamped into the input), and for antialias
Pillow's window that widens with the downsampling factor (triangle, or cubic with A = −0.5, normalised
per output). Gathers, products and sums are differentiable ops (index_select adds gradients back to
repeated sources), so no backward of its own is needed and higher-order gradients come free. Source
indices follow ATen's UpSample.h bit for bit: nearest scales in float32, and a linear output as large as
its input is a plain copy. The pixel shuffles are a reshape, a permute and a reshape.

The gradient is always the adjoint of the forward. torch 2.13's is not in three places: bicubic with a
scale_factor ≠ 1 and an output as large as its input (its forward resamples, its backward copies);
antialias on a dim it does not resize (its forward copies, its backward resamples with the scale_factor);
and its antialias forward, resizing the height to an output of width 1, repeats the first output row (its
backward is right: this forward is the one whose adjoint it is).
"""

import math

import numpy as np

from distgraph.autograd.formats import channels_last, channels_last_3d
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops.channels_last import suggests
from distgraph.ops.indexing import index_select

_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
_NDIM = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}


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


def _pixel_scale(size, out, scale, align_corners):
    """ATen's area_pixel_compute_scale: input pixels per output pixel."""
    if align_corners:
        return (size - 1) / (out - 1) if out > 1 else 0.0
    return _scale(scale, size, out)


def _source_index(size, out, scale, align_corners, cubic):
    """Each output's position in the input and the input index left of it: ATen's
    area_pixel_compute_source_index (clamped at 0 unless cubic) and guard_index_and_lambda's floorf."""
    dst = np.arange(out, dtype=np.float64)
    s = _pixel_scale(size, out, scale, align_corners)
    src = s * dst if align_corners else s * (dst + 0.5) - 0.5
    src = src if cubic else np.maximum(src, 0.0)
    return src, np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)


def _linear_taps(size, out, scale, align_corners):
    """(index, weight), each (2, out): ATen's compute_source_index_and_lambda, taps i0 and i1 with λ0, λ1."""
    if out == size:
        i = np.arange(out)
        return np.stack([i, i]), np.stack([np.ones(out), np.zeros(out)])
    src, i0 = _source_index(size, out, scale, align_corners, cubic=False)
    lam1 = np.clip(src - i0, 0.0, 1.0)
    return np.stack([i0, i0 + (i0 < size - 1)]), np.stack([1.0 - lam1, lam1])


def _cubic(x, a):
    """Keys' cubic convolution kernel at distance |x|: ATen's cubic_convolution1/2, in their order of operations."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _cubic_taps(size, out, scale, align_corners):
    """(index, weight), each (4, out): ATen's HelperInterpCubic. Taps floor(src) − 1 … floor(src) + 2, clamped
    into the input, weighted by the A = −0.75 kernel at their distances t + 1, t, 1 − t, 2 − t."""
    src, i0 = _source_index(size, out, scale, align_corners, cubic=True)
    t = np.clip(src - i0, 0.0, 1.0)
    index = np.clip(i0 + np.arange(-1, 3)[:, None], 0, size - 1)
    return index, _cubic(np.stack([t + 1, t, 1 - t, 2 - t]), -0.75)


def _antialias_taps(size, out, scale, align_corners, cubic):
    """(index, weight), each (K, out): ATen's _compute_indices_min_size_weights_aa (Pillow's resampling). Output
    i reads the inputs within `support` of its centre s·(i + 0.5) (no −0.5, even with align_corners), weighted
    by the triangle (bilinear) or A = −0.5 cubic (bicubic) filter, stretched by s when downsampling, then
    normalised to sum to 1. K = 2·ceil(support) + 1; taps past an output's window weigh 0."""
    s = _pixel_scale(size, out, scale, align_corners)
    support = (2.0 if cubic else 1.0) * max(s, 1.0)
    k = int(math.ceil(support)) * 2 + 1
    centre = s * (np.arange(out) + 0.5)
    xmin = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    xsize = np.clip(np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), size) - xmin, 0, k)
    j = np.arange(k)[:, None]
    x = (j + xmin - centre + 0.5) * (1.0 / s if s >= 1.0 else 1.0)
    w = np.where(j < xsize, _cubic(x, -0.5) if cubic else np.maximum(1.0 - np.abs(x), 0.0), 0.0)
    total = w.sum(axis=0)
    return np.minimum(xmin + j, size - 1), w / np.where(total != 0, total, 1.0)


def _gather(x, dim, index):
    return index_select(x, dim, Tensor(x.device.xp.asarray(index), device=x.device))


def _blend(x, dim, index, weight):
    """Σ_k x[index[k]]·weight[k] along `dim`, for (K, out) taps: one gather of all K·out source positions, a
    product with the weights and a sum over K. Differentiable ops only (index_select adds gradients back to
    repeated sources), so no backward of its own is needed and higher-order gradients come free."""
    k, out = index.shape
    taps = _gather(x, dim, index.reshape(-1)).reshape(*x.shape[:dim], k, out, *x.shape[dim + 1 :])
    shape = [1] * (x.ndim + 1)
    shape[dim : dim + 2] = k, out
    w = Tensor(x.device.xp.asarray(weight.astype(x.array.dtype)).reshape(shape), device=x.device)
    return (taps * w).sum(dim)


def _resample_dim(x, dim, out, scale, mode, align_corners, antialias):
    size = x.shape[dim]
    if mode in ("nearest", "nearest-exact"):
        exact, shortcuts = mode == "nearest-exact", mode == "nearest" and x.ndim == 4
        return _gather(x, dim, _nearest_index(size, out, scale, exact, shortcuts))
    if antialias:
        if out == size:  # torch's separable antialias forward skips a dim it does not resize
            return x
        return _blend(x, dim, *_antialias_taps(size, out, scale, align_corners, mode == "bicubic"))
    if mode == "bicubic":
        return _blend(x, dim, *_cubic_taps(size, out, scale, align_corners))
    return _blend(x, dim, *_linear_taps(size, out, scale, align_corners))


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
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError(
            "interpolate: align_corners can only be set with the modes linear, bilinear, bicubic, trilinear"
        )
    if antialias and (mode not in ("bilinear", "bicubic") or input.ndim != 4):
        raise ValueError(
            f"interpolate: antialias=True is restricted to the modes bilinear and bicubic on 4-D input, got mode "
            f"{mode!r} and input {tuple(input.shape)}"
        )
    if not 3 <= input.ndim <= 5:
        raise ShapeError(f"interpolate: expected 3-D, 4-D or 5-D input (N, C, ...), got {tuple(input.shape)}")
    if mode in _NDIM and input.ndim != _NDIM[mode]:
        raise ShapeError(f"interpolate: mode {mode!r} needs {_NDIM[mode]}-D input, got {tuple(input.shape)}")
    if mode == "area":
        recompute_scale_factor = True if size is None else recompute_scale_factor
    sizes, scales = _output_size(input, size, scale_factor, recompute_scale_factor)
    if min(sizes) <= 0 or min(input.shape[2:]) <= 0:
        raise ShapeError(
            f"interpolate: input {tuple(input.shape)} and output size {sizes} must both be non-empty in every spatial dim"
        )
    if mode == "area":  # torch's: the adaptive average pool of the input's rank
        from distgraph.ops.pool import adaptive_avg_pool1d, adaptive_avg_pool2d
        from distgraph.ops.pool3d import adaptive_avg_pool3d

        return {3: adaptive_avg_pool1d, 4: adaptive_avg_pool2d, 5: adaptive_avg_pool3d}[input.ndim](input, sizes)
    out = input
    for dim in reversed(range(2, input.ndim)):
        out = _resample_dim(out, dim, sizes[dim - 2], scales[dim - 2], mode, bool(align_corners), bool(antialias))
    if suggests(input.array):  # torch's result keeps a channels_last input's layout (ops/channels_last.py)
        out = out.contiguous(memory_format=channels_last if input.ndim == 4 else channels_last_3d)
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
