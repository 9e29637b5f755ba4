"""Fractional max pooling (Graham, 2014) with torch's names, arguments, interval formula and tie rule.

Each (sample, channel) plane draws one number u per spatial dim (`_random_samples`, (N, C, dims), uniform
in [0, 1) unless given) and ATen's generate_intervals turns it into the windows' starts: with
α = (in − k) / (out − 1), start_i = ⌊(i + u)·α⌋ − ⌊u·α⌋ for i < out − 1 (truncations, computed in the
input's dtype as ATen does) and the last window ends at the edge. With the same samples the windows, and
so the outputs and indices, are torch's. Within a window the maximum is ATen's running one (the first
maximum in row-major order; a window holding NaN takes its last NaN). The forward is a gather at those
flat indices, so the gradient goes to the max positions (accumulating where windows share one) and
differentiates again.
"""

import math

from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, ConfigError, DTypeError, ShapeError
from distgraph.ops.conv import ntuple
from distgraph.ops.creation import rand
from distgraph.ops.indexing import gather

_AXES = {2: ("height", "width"), 3: ("time", "height", "width")}


def _intervals(xp, u, size, out, k):
    """ATen's generate_intervals for every plane at once: u (N, C) → window starts (N, C, out)."""
    last = xp.full((*u.shape, min(out, 1)), size - k, dtype=xp.int64)
    if out <= 1:
        return last
    alpha = xp.asarray(size - k, dtype=u.dtype) / xp.asarray(out - 1, dtype=u.dtype)
    i = xp.arange(out - 1).astype(u.dtype)
    u = u[..., None]
    starts = ((i + u) * alpha).astype(xp.int64) - (u * alpha).astype(xp.int64)  # C++'s int(): toward zero
    return xp.concatenate([starts, last], axis=-1)


def _window_indices(xp, x, starts, kernel):
    """Flat index (into the plane) of each window's maximum, ATen's pick: (N, C, Π out)."""
    n, c, sizes, dims = x.shape[0], x.shape[1], x.shape[2:], len(kernel)
    out = tuple(s.shape[-1] for s in starts)
    flat = xp.zeros((n, c) + (1,) * 2 * dims, dtype=xp.int64)
    for d in range(dims):  # (N, C, *out, *kernel): positions of every tap of every window
        pos = starts[d][..., None] + xp.arange(kernel[d])  # (N, C, out_d, k_d)
        shape = [n, c] + [1] * 2 * dims
        shape[2 + d], shape[2 + dims + d] = out[d], kernel[d]
        flat = flat * sizes[d] + pos.reshape(shape)
    taps = flat.reshape(n, c, math.prod(out), math.prod(kernel))
    plane = x.reshape(n, c, math.prod(sizes))  # explicit sizes: -1 is ambiguous for an empty batch
    values = xp.take_along_axis(plane, taps.reshape(n, c, math.prod(taps.shape[2:])), axis=2).reshape(taps.shape)
    nan = xp.isnan(values)
    last_nan = taps.shape[-1] - 1 - xp.argmax(nan[..., ::-1], axis=-1)
    pick = xp.where(nan.any(axis=-1), last_nan, xp.argmax(values, axis=-1))
    return xp.take_along_axis(taps, pick[..., None], axis=-1)[..., 0]


def _output_size(input, output_size, output_ratio, dims, name):
    if output_size is None and output_ratio is None:
        raise ConfigError(f"{name} requires specifying either an output_size or an output_ratio")
    if output_size is not None:
        return ntuple(output_size, dims, "output_size", name, least=0)
    ratio = (output_ratio,) * dims if isinstance(output_ratio, int | float) else tuple(output_ratio)
    if len(ratio) != dims:
        raise ConfigError(f"{name} requires output_ratio to either be a single Int or tuple of Ints.")
    return tuple(int(input.shape[-dims + d] * ratio[d]) for d in range(dims))


def _check_samples(samples, input, dims, name):
    """torch's checks of `_random_samples`: no gradient wanted, the input's dtype, (≥ N, C, dims)."""
    if samples.requires_grad and is_grad_enabled():
        raise AutogradError(
            f"The function '{name}' is not differentiable with respect to argument 'random_samples'. This input "
            "cannot have requires_grad True."
        )
    if samples.dtype != input.dtype:
        raise DTypeError(
            f"Expect _random_samples to have the same dtype as input (got {samples.dtype.name} and {input.dtype.name})"
        )
    if samples.ndim != 3:
        raise ShapeError(f"Expect _random_samples to have 3 dimensions, got {samples.ndim}")
    if samples.shape[0] < input.shape[0]:
        raise ShapeError(
            f"Expect _random_samples.size(0) no less then input batch size (got {samples.shape[0]} for a batch "
            f"of {input.shape[0]})."
        )
    if samples.shape[1] != input.shape[1]:
        raise ShapeError(
            f"Expect _random_samples.size(1) equals to input channel size (got {samples.shape[1]} for "
            f"{input.shape[1]} channels)."
        )
    if samples.shape[2] != dims:
        raise ShapeError(f"Expect _random_samples.size(2) equals to {dims}; got {samples.shape[2]}.")


def _fractional_max_pool(input, kernel_size, output_size, output_ratio, samples, dims):
    """(output, indices) of fractional max pooling over the last `dims` dims of a batched or unbatched input."""
    name = f"fractional_max_pool{dims}d"
    op = name + ("()" if dims == 2 else "_out()")  # torch's prefix of the checks below
    if input.ndim not in (dims + 1, dims + 2):
        raise ShapeError(f"{op}: Expected {dims + 1}D or {dims + 2}D tensor, but got: {list(input.shape)}")
    if not input.is_floating_point():
        raise DTypeError(f"{name}: expected a floating point input, got {input.dtype.name}")
    kernel = ntuple(kernel_size, dims, "kernel_size", name)
    out = _output_size(input, output_size, output_ratio, dims, name)
    for d in range(1, input.ndim):
        if input.shape[d] == 0:
            raise ShapeError(f"{op}: Expected input to have non-zero size for non-batch dimensions, but got "
                             f"{list(input.shape)} with dimension {d} being empty.")  # fmt: skip
    sizes = input.shape[-dims:]
    for axis, o, k, size in zip(_AXES[dims], out, kernel, sizes):
        if o + k - 1 > size - (dims == 3):  # torch's 3-d check is strict (one input row more)
            raise ShapeError(f"{op}: pool {axis} {k} too large relative to input {axis} {size}")
    x = input if input.ndim == dims + 2 else input.unsqueeze(0)
    n, c = x.shape[0], x.shape[1]
    if samples is None:
        samples = rand(n, c, dims, dtype=input.dtype, device=input.device)
    _check_samples(samples, x, dims, name)
    xp = input.device.xp
    u = samples.array[:n]
    # ATen's sample order: (W, H) for 2-d, (T, H, W) for 3-d
    order = (1, 0) if dims == 2 else (0, 1, 2)
    starts = [_intervals(xp, u[:, :, order[d]], sizes[d], out[d], kernel[d]) for d in range(dims)]
    index = _window_indices(xp, x.array, starts, kernel)
    values = gather(x.reshape(n, c, math.prod(sizes)), 2, Tensor(index, device=input.device))
    values, index = values.reshape(n, c, *out), Tensor(index.reshape(n, c, *out), device=input.device)
    return (values, index) if input.ndim == dims + 2 else (values.squeeze(0), index.squeeze(0))


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):  # fmt: skip
    """(output, indices): max over kH x kW windows at pseudo-random fractional strides; `return_indices` is
    ignored, as torch's."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, _random_samples, 2)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):  # fmt: skip
    """(output, indices) of 3-d fractional max pooling; `return_indices` is ignored, as torch's."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, _random_samples, 3)


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):  # fmt: skip
    """Max over kH x kW windows placed at pseudo-random fractional strides, to output_size (or the input's
    size times output_ratio); with the indices (for max_unpool2d) when return_indices."""
    out = _fractional_max_pool(input, kernel_size, output_size, output_ratio, _random_samples, 2)
    return out if return_indices else out[0]


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):  # fmt: skip
    """fractional_max_pool2d over kT x kH x kW windows of the last three dims."""
    out = _fractional_max_pool(input, kernel_size, output_size, output_ratio, _random_samples, 3)
    return out if return_indices else out[0]
