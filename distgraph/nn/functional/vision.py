"""Spatial transformers: affine_grid and grid_sample, with torch's names, arguments and index arithmetic.

Both are compositions of registered ops, so input and grid (or theta) get their gradients from the
ops' rules. grid_sample follows ATen's GridSampler.h: a grid coordinate in [−1, 1] is unnormalized to a
pixel position, then padded (border: clipped to the image; reflection: reflected off its edges, then
clipped), then sampled. Bilinear (trilinear on 5-D input) blends the 2^k neighbours with weights that
are linear in the position, which carries the gradient to the grid; the neighbours' integer corners are
constants, as in ATen. Nearest rounds half to even (nearbyint) and gives the grid no gradient.
Clipping and reflection pass the gradient only strictly inside the image, as ATen's *_set_grad helpers.
Bicubic (4-D only) pads differently, as ATen's: the position itself is never clipped or reflected; its
4x4 neighbours (integers around it) are, each on its own (`compute_coordinates`), so a neighbour past
the edge reads a border or mirrored pixel and the weights stay cubic in the unpadded position.
"""

import itertools
import math
import warnings

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, DTypeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.indexing import gather
from distgraph.ops.shape import stack

_ALIGN_WARNING = (
    "Default grid_sample and affine_grid behavior has changed to align_corners=False since 1.3.0. Please specify "
    "align_corners=True if the old behavior is desired. See the documentation of grid_sample for details."
)
_MODES = ("bilinear", "nearest", "bicubic")
_PADDINGS = ("zeros", "border", "reflection")


def _align(align_corners):
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, UserWarning, stacklevel=3)
        return False
    return bool(align_corners)


def _linspace(n, align_corners):
    """ATen's linspace_from_neg_one: n points over [−1, 1], pulled in by (n−1)/n unless align_corners."""
    if n <= 1:
        return np.zeros(max(n, 0))
    pts = np.linspace(-1.0, 1.0, n)
    return pts if align_corners else pts * ((n - 1) / n)


def affine_grid(theta, size, align_corners=None):
    """Sampling grid (N, H, W, 2) [or (N, D, H, W, 3)] of the affine maps theta (N, 2, 3) [or (N, 3, 4)]."""
    align_corners = _align(align_corners)
    if theta.array.dtype.kind != "f":
        raise DTypeError(f"affine_grid: expected theta to have floating point type, but got {theta.dtype.name}")
    size = tuple(int(s) for s in size)
    if len(size) not in (4, 5):
        raise NotImplementedError(
            f"affine_grid: only 4-D and 5-D sizes are supported (2-D and 3-D affine transforms), got size {size}"
        )
    k = len(size) - 2
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (k, k + 1):
        raise ShapeError(
            f"affine_grid: expected a batch of {k}-D affine matrices of shape (N, {k}, {k + 1}) for size {size}, "
            f"got {tuple(theta.shape)}"
        )
    if theta.shape[0] != size[0]:
        raise ShapeError(f"affine_grid: theta's batch {theta.shape[0]} does not match size[0] = {size[0]}")
    spatial = size[2:]
    if align_corners and min(spatial) == 1:
        warnings.warn(
            "Since version 1.3.0, affine_grid behavior has changed for unit-size grids when align_corners=True. "
            "This is not an intended use case of affine_grid. See the documentation of affine_grid for details.",
            UserWarning,
            stacklevel=2,
        )
    elif min(size) <= 0:
        raise ShapeError(f"affine_grid: expected non-zero, positive output size, got {size}")
    axes = [_linspace(n, align_corners) for n in reversed(spatial)]  # x (W) first, as the grid's last dim
    mesh = np.meshgrid(*axes, indexing="ij")  # indexed (W, H[, D])
    base = np.stack([m.transpose(*reversed(range(k))) for m in mesh] + [np.ones(spatial)], axis=-1)  # (*spatial, k+1)
    dev = theta.device
    base = Tensor(dev.xp.asarray(base.reshape(1, -1, k + 1), dtype=theta.array.dtype), device=dev)
    return (base @ theta.transpose(1, 2)).reshape(size[0], *spatial, k)  # (N, *spatial, k)


def _unnormalize(coord, size, align_corners):
    """[−1, 1] to pixel positions: the corner centers (align_corners) or the image edges at ±1."""
    if align_corners:
        return (coord + 1) * ((size - 1) / 2)
    return ((coord + 1) * size - 1) / 2


def _clip(coord, size):
    """Clamped to [0, size−1], with gradient only strictly inside, as ATen's clip_coordinates_set_grad."""
    inside = (coord > 0) & (coord < size - 1)
    return ew.where(inside, coord, ew.clamp(coord, 0, size - 1).detach())


def _reflect(coord, twice_low, twice_high):
    """ATen's reflect_coordinates: coord folded into [low, high] by reflection, the gradient's sign flipped
    on each odd fold."""
    if twice_low == twice_high:
        return ew.mul(coord, 0.0)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    dist = ew.where(coord < low, low - coord, coord - low)  # |coord − low|, gradient +1 at low as ATen
    flips = ew.floor(ew.div(dist, span)).detach()
    extra = dist - flips * span
    even = ew.remainder(flips, 2) == 0
    return ew.where(even, extra + low, (span - extra) + low)


def _nan_if_infinite(x):
    """±inf would meet 0 in the weights (0·inf, inf − inf): NaN from the start, which numpy never warns about."""
    return ew.where(Tensor(x.device.xp.isfinite(x.array), device=x.device), x, float("nan"))


def _source_index(coord, size, padding_mode, align_corners):
    x = _unnormalize(coord, size, align_corners)
    if padding_mode == "border":
        return _clip(x, size)  # ±inf clip to the edges
    x = _nan_if_infinite(x)
    if padding_mode == "reflection":
        x = _reflect(x, 0, 2 * (size - 1)) if align_corners else _reflect(x, -1, 2 * size - 1)
        return _clip(x, size)
    return x


def _corner(flat, positions, sizes):
    """flat (N, C, Π sizes) read at integer positions (one (N, P) array per spatial dim); zero where off
    the image (their mask is returned with the values)."""
    xp = flat.device.xp
    valid = xp.ones(positions[0].shape, dtype=bool)
    index = xp.zeros(positions[0].shape, dtype=xp.int64)
    for pos, n in zip(positions, sizes):
        valid &= (pos >= 0) & (pos < n)
        index = index * n + xp.clip(pos, 0, n - 1).astype(xp.int64)
    n, c = flat.shape[0], flat.shape[1]
    index = xp.ascontiguousarray(xp.broadcast_to(index[:, None, :], (n, c, index.shape[-1])))
    return gather(flat, 2, Tensor(index, device=flat.device)), valid


def _finite(xp, a, fill):
    """a with NaN/±inf replaced by `fill` (off the image), so integer corners never come from them."""
    return xp.where(xp.isfinite(a), a, fill)


def _sample_nearest(flat, coords, sizes):
    xp = flat.device.xp
    positions = [xp.rint(_finite(xp, c.array, -2.0)) for c in coords]
    values, valid = _corner(flat, positions, sizes)
    out = ew.mul(values, Tensor(valid[:, None, :].astype(flat.array.dtype), device=flat.device))
    if coords[0].requires_grad:  # torch's grid gets a zero gradient (one op), not none: a term of value 0
        never = Tensor(xp.zeros(coords[0].shape, dtype=bool), device=flat.device)
        out = out + ew.where(never, coords[0], 0.0).unsqueeze(1)
    return out


def _sample_linear(flat, coords, sizes):
    xp, dev, dt = flat.device.xp, flat.device, flat.array.dtype
    lows = [xp.floor(_finite(xp, c.array, -2.0)) for c in coords]
    fracs = [c - Tensor(lo, device=dev) for c, lo in zip(coords, lows)]  # (N, P), carry the grid's gradient
    out = None
    for bits in itertools.product((0, 1), repeat=len(coords)):
        values, valid = _corner(flat, [lo + b for lo, b in zip(lows, bits)], sizes)
        weight = Tensor(valid.astype(dt), device=dev)
        for frac, b in zip(fracs, bits):
            weight = weight * (frac if b else 1 - frac)
        term = values * weight.unsqueeze(1)
        out = term if out is None else out + term
    return out


def _cubic_weights(t):
    """ATen's get_cubic_upsample_coefficients: Keys' cubic convolution (A = −0.75) at the four taps
    floor(x) − 1 … floor(x) + 2, for the fraction t = x − floor(x); written in ATen's order of operations."""
    a = -0.75
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731 - |distance| ≤ 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731 - 1 < |distance| < 2
    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def _pad_taps(device, taps, size, padding_mode, align_corners):
    """Integer tap positions through ATen's compute_coordinates: clipped (border) or reflected then clipped."""
    if padding_mode == "zeros":
        return taps  # off the image: read as 0 by `_corner`
    t = Tensor(taps, device=device)
    if padding_mode == "reflection":
        t = _reflect(t, 0, 2 * (size - 1)) if align_corners else _reflect(t, -1, 2 * size - 1)
    return _clip(t, size).array


def _sample_cubic(flat, coords, sizes, padding_mode, align_corners):
    """Σ over the 4x4 taps of value · wy · wx; the taps' positions are constants, the weights carry the
    grid's gradient (through t = x − floor(x)) and the gather the input's."""
    xp, dev, dt = flat.device.xp, flat.device, flat.array.dtype
    n, p = coords[0].shape
    lows = [xp.floor(_finite(xp, c.array, -4.0)) for c in coords]  # NaN/inf: every tap off the image
    weights = [stack(_cubic_weights(c - Tensor(lo, device=dev)), 1) for c, lo in zip(coords, lows)]  # (N, 4, P)
    offsets = xp.arange(-1, 3, dtype=dt)[None, :, None]
    taps = [
        _pad_taps(dev, lo[:, None, :] + offsets, size, padding_mode, align_corners) for lo, size in zip(lows, sizes)
    ]
    rows = xp.broadcast_to(taps[0][:, :, None, :], (n, 4, 4, p)).reshape(n, 16 * p)
    cols = xp.broadcast_to(taps[1][:, None, :, :], (n, 4, 4, p)).reshape(n, 16 * p)
    values, valid = _corner(flat, [rows, cols], sizes)
    weight = (
        weights[0].unsqueeze(2) * weights[1].unsqueeze(1) * Tensor(valid.reshape(n, 4, 4, p).astype(dt), device=dev)
    )
    return (values.reshape(n, flat.shape[1], 4, 4, p) * weight.unsqueeze(1)).sum((2, 3))


def _check_sample_args(input, grid, mode, padding_mode):
    if mode not in _MODES:
        raise ConfigError(f"grid_sample: expected mode to be 'bilinear', 'nearest' or 'bicubic', but got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise ConfigError(
            f"grid_sample: expected padding_mode to be 'zeros', 'border' or 'reflection', but got {padding_mode!r}"
        )
    if input.ndim not in (4, 5) or grid.ndim != input.ndim or grid.shape[-1] != input.ndim - 2:
        raise ShapeError(
            f"grid_sample: expected input (N, C, H, W) with grid (N, H_out, W_out, 2), or input (N, C, D, H, W) "
            f"with grid (N, D_out, H_out, W_out, 3); got input {tuple(input.shape)} and grid {tuple(grid.shape)}"
        )
    if input.shape[0] != grid.shape[0]:
        raise ShapeError(
            f"grid_sample: input {tuple(input.shape)} and grid {tuple(grid.shape)} must have the same batch size"
        )
    if input.array.dtype.kind != "f" or input.array.dtype != grid.array.dtype:
        raise DTypeError(
            f"grid_sample: expected input and grid to have the same floating dtype, got {input.dtype.name} and "
            f"{grid.dtype.name}"
        )
    if mode == "bicubic" and input.ndim != 4:
        raise ShapeError(f"grid_sample: mode 'bicubic' needs 4-D input, got {tuple(input.shape)}")
    if min(input.shape[2:]) <= 0:
        raise ShapeError(f"grid_sample: input {tuple(input.shape)} has an empty spatial dimension")


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """input (N, C, H, W) sampled at grid (N, H_out, W_out, 2) of [−1, 1] coordinates (x, y); 5-D alike."""
    _check_sample_args(input, grid, mode, padding_mode)
    align_corners = _align(align_corners)
    n, c, sizes = input.shape[0], input.shape[1], tuple(input.shape[2:])
    k = len(sizes)
    out_spatial = tuple(grid.shape[1:-1])
    flat_grid = grid.reshape(n, -1, k)
    # grid's last dim is (x, y[, z]): x indexes the last spatial dim
    flat = input.reshape(n, c, math.prod(sizes))
    if mode == "bicubic":
        coords = [_nan_if_infinite(_unnormalize(flat_grid[:, :, 1 - d], sizes[d], align_corners)) for d in range(2)]
        return _sample_cubic(flat, coords, sizes, padding_mode, align_corners).reshape(n, c, *out_spatial)
    coords = [_source_index(flat_grid[:, :, k - 1 - d], sizes[d], padding_mode, align_corners) for d in range(k)]
    sample = _sample_nearest if mode == "nearest" else _sample_linear
    return sample(flat, coords, sizes).reshape(n, c, *out_spatial)
