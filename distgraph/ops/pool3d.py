"""3-d pooling as ops: max_pool3d (indices kept for backward), avg_pool3d; adaptive average and max pooling.

The scheme of the 2-d ops in `pool`, written for any number of spatial dims and used for three:
windows are the kd·kh·kw taps, each a strided (N, C, OD, OH, OW) view of the padded input, so the
input is read in place. max_pool3d's maximum and argmax come from `pool._max_and_arg` (torch's
first-maximum and NaN rules); its backward routes each output gradient to its window's argmax
(`max_pool3d_scatter`, whose derivative gathers back). avg_pool3d's backward spreads each gradient
over its window (`avg_pool3d_backward`, whose derivative is avg_pool3d). Adaptive average pooling
is separable (slice means, dim by dim); adaptive max pooling picks each window's first maximum in
row-major order by separable reductions, last dim first. As in `pool`, each rule ties the gradient it
returns to the input under create_graph (`pool.tied`), as torch's backward ops take `self`.
"""

import itertools
import math

import numpy as np

from distgraph.autograd.function import apply
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops.conv import batch_optional, window_stride
from distgraph.ops.conv3d import tap_slices, triple, windows
from distgraph.ops.creation import zeros
from distgraph.ops.indexing import scatter_add
from distgraph.ops.pool import _adaptive_bounds, _max_and_arg, _pool_out, tied
from distgraph.ops.reduction import mean
from distgraph.ops.registry import defop
from distgraph.ops.shape import _cat


def _taps(kernel):
    return list(itertools.product(*map(range, kernel)))


def _out(spatial, kernel, stride, padding, dilation, ceil_mode):
    return tuple(_pool_out(*a, ceil_mode) for a in zip(spatial, kernel, stride, padding, dilation))


def _inner(spatial, padding):
    """The slices of the padded array that hold the input."""
    return (..., *(slice(p, p + s) for s, p in zip(spatial, padding)))


def _padded(xp, x, kernel, stride, padding, dilation, out, fill):
    """Pad with `fill` so every window of the output exists (ceil_mode may need extra at the end)."""
    spatial = x.shape[2:]
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - n - 2 * p)
             for o, s, d, k, n, p in zip(out, stride, dilation, kernel, spatial, padding)]  # fmt: skip
    if not any(padding) and not any(extra):
        return x
    res = xp.full((*x.shape[:2], *(n + 2 * p + e for n, p, e in zip(spatial, padding, extra))), fill, dtype=x.dtype)
    res[_inner(spatial, padding)] = x
    return res


def _max_windows(xp, x, kernel, stride, padding, dilation, ceil_mode):
    """Each window's maximum, its argmax (tap index in row-major order) and the padded shape."""
    out = _out(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    fill = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
    xpad = _padded(xp, x, kernel, stride, padding, dilation, out, fill)
    taps = [xpad[(..., *tap_slices(t, stride, dilation, out))] for t in _taps(kernel)]
    m, arg = _max_and_arg(xp, taps, xpad)
    return m, arg, xpad.shape


def _window_attrs(a):
    return {k: a[k] for k in ("kernel", "stride", "padding", "dilation")}


@defop("max_pool3d", kind="other", save=(), saves_extra=True)
def _max_pool3d(xp, x, *, kernel, stride, padding, dilation, ceil_mode):
    out, arg, padded_shape = _max_windows(xp, x, kernel, stride, padding, dilation, ceil_mode)
    return out, (arg, padded_shape)


@_max_pool3d.grad
def _(ctx, g):
    arg, padded_shape = ctx.saved
    attrs = {**_window_attrs(ctx.attrs), "padded_shape": padded_shape, "input_shape": tuple(ctx.inputs[0].shape)}
    return tied(apply(_pool_scatter, (g, Tensor(arg, device=g.device)), attrs), ctx.inputs[0], ctx.next[0])


@defop("max_pool3d_scatter", kind="other", save=(1,))
def _pool_scatter(xp, g, arg, *, kernel, stride, padding, dilation, padded_shape, input_shape):
    gx = xp.zeros(padded_shape, dtype=g.dtype)
    for t, tap in enumerate(_taps(kernel)):  # overlapping windows accumulate; inf and NaN go only where chosen
        gx[(..., *tap_slices(tap, stride, dilation, g.shape[2:]))] += xp.where(arg == t, g, 0)
    return gx[_inner(input_shape[2:], padding)]


@defop("max_pool3d_gather", kind="other", save=(1,))
def _pool_gather(xp, gx, arg, *, kernel, stride, padding, dilation, padded_shape, input_shape):
    full = xp.zeros(padded_shape, dtype=gx.dtype)
    full[_inner(input_shape[2:], padding)] = gx
    win = windows(xp, full, kernel, stride, dilation, arg.shape[2:]).reshape(*arg.shape, math.prod(kernel))
    return xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]


_pool_scatter.grad(lambda ctx, gg: (apply(_pool_gather, (gg, ctx.inputs[1]), ctx.attrs), None))
_pool_gather.grad(lambda ctx, g: (apply(_pool_scatter, (g, ctx.inputs[1]), ctx.attrs), None))


def _flat_indices(xp, arg, spatial, kernel, stride, padding, dilation):
    """torch's return_indices: each window's argmax tap as a flat index into the input's D·H·W."""
    out, nd = arg.shape[2:], len(kernel)
    offsets = xp.unravel_index(arg, kernel)
    flat = xp.zeros(arg.shape, dtype=xp.int64)
    for i in range(nd):
        start = (xp.arange(out[i]) * stride[i] - padding[i]).reshape([out[i] if j == i else 1 for j in range(nd)])
        flat = flat * spatial[i] + start + offsets[i] * dilation[i]
    return flat


def _divisor(xp, spatial, kernel, stride, padding, out, count_include_pad, dtype, divisor=None):
    """Per-output window sizes: all taps, or only those on real input (count_include_pad=False); or
    torch's divisor_override for every window. torch counts padding but not the ceil_mode overhang."""
    if divisor:
        return xp.asarray(divisor, dtype=dtype)
    total, nd = 1, len(kernel)
    for i in range(nd):
        size, off = (spatial[i] + 2 * padding[i], 0) if count_include_pad else (spatial[i], padding[i])
        starts = xp.arange(out[i]) * stride[i] - off
        count = xp.minimum(starts + kernel[i], size) - xp.maximum(starts, 0)
        total = total * count.reshape([out[i] if j == i else 1 for j in range(nd)])
    return total.astype(dtype)


@defop("avg_pool3d", kind="other", save=())
def _avg_pool3d(xp, x, *, kernel, stride, padding, ceil_mode, count_include_pad, divisor=None):
    spatial, ones = x.shape[2:], (1,) * len(kernel)
    out = _out(spatial, kernel, stride, padding, ones, ceil_mode)
    win = windows(xp, _padded(xp, x, kernel, stride, padding, ones, out, 0), kernel, stride, ones, out)
    div = _divisor(xp, spatial, kernel, stride, padding, out, count_include_pad, x.dtype, divisor)
    with np.errstate(invalid="ignore"):  # inf and -inf in one window: NaN, unwarned as in torch
        return win.sum(axis=tuple(range(-len(kernel), 0))) / div


@defop("avg_pool3d_backward", kind="other", save=())
def _avg_pool3d_backward(xp, g, *, kernel, stride, padding, ceil_mode, count_include_pad, input_shape, divisor=None):
    spatial, out, ones = input_shape[2:], g.shape[2:], (1,) * len(kernel)
    share = g / _divisor(xp, spatial, kernel, stride, padding, out, count_include_pad, g.dtype, divisor)
    size = [max((o - 1) * s + k, n + 2 * p) for o, s, k, n, p in zip(out, stride, kernel, spatial, padding)]
    gx = xp.zeros((*g.shape[:2], *size), dtype=g.dtype)
    for tap in _taps(kernel):
        gx[(..., *tap_slices(tap, stride, ones, out))] += share
    return gx[_inner(spatial, padding)]


@_avg_pool3d.grad
def _(ctx, g):
    gx = apply(_avg_pool3d_backward, (g,), {**ctx.attrs, "input_shape": tuple(ctx.inputs[0].shape)})
    return tied(gx, ctx.inputs[0], ctx.next[0])


@_avg_pool3d_backward.grad
def _(ctx, gg):
    return apply(_avg_pool3d, (gg,), {k: v for k, v in ctx.attrs.items() if k != "input_shape"})


def _check5(input, op, floating=False):
    if input.ndim != 5:
        raise ShapeError(f"{op}: expected 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input, got {tuple(input.shape)}")
    kind = input.array.dtype.kind
    if kind == "b" or (floating and kind != "f"):
        raise DTypeError(f"{op}: input must be {'floating point' if floating else 'numeric'}, got {input.dtype.name}")


def _window_args(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Kernel, stride (default: the kernel), padding and dilation as triples, checked as torch checks them."""
    k = triple(kernel_size, "kernel_size", op)
    s = triple(window_stride(stride, kernel_size), "stride", op)
    p, d = triple(padding, "padding", op), triple(dilation, "dilation", op)
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ShapeError(f"{op}: padding {p} should be at most half of kernel size {k}")
    out = _out(input.shape[2:], k, s, p, d, ceil_mode)
    if min(out) < 1:
        size = "x".join(map(str, input.shape[1:]))
        raise ShapeError(f"{op}: given input size ({size}), calculated output size ({input.shape[1]}x"
                         f"{'x'.join(map(str, out))}): output size is too small (kernel {k}, stride {s}, padding {p}, "
                         f"dilation {d})")  # fmt: skip
    return k, s, p, d


@batch_optional(5)
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool3d over (N, C, D, H, W) or (C, D, H, W)."""
    _check5(input, "max_pool3d")
    k, s, p, d = _window_args("max_pool3d", input, kernel_size, stride, padding, dilation, ceil_mode)
    out = apply(_max_pool3d, (input,), {"kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": ceil_mode})
    if not return_indices:
        return out
    xp = input.device.xp
    _, arg, _ = _max_windows(xp, input.array, k, s, p, d, ceil_mode)
    return out, Tensor(_flat_indices(xp, arg, input.shape[2:], k, s, p, d), device=input.device)


@batch_optional(5)
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):  # fmt: skip
    """torch.nn.functional.avg_pool3d over (N, C, D, H, W) or (C, D, H, W)."""
    _check5(input, "avg_pool3d", floating=True)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override <= 0):
        raise ShapeError(f"avg_pool3d: divisor_override must be a positive int, got {divisor_override!r}")
    k, s, p, _ = _window_args("avg_pool3d", input, kernel_size, stride, padding, 1, ceil_mode)
    attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    if divisor_override is not None:
        attrs["divisor"] = divisor_override
    return apply(_avg_pool3d, (input,), attrs)


def _adaptive_size(input, output_size, op):
    _check5(input, op, floating=op.startswith("adaptive_avg"))
    size = (output_size,) * 3 if isinstance(output_size, int | None) else tuple(output_size)
    if len(size) != 3:
        raise ShapeError(f"{op}: output_size must be an int or 3 values, got {output_size!r}")
    size = tuple(n if o is None else o for n, o in zip(input.shape[2:], size))  # None keeps that size
    if min(size) < 1:
        raise ShapeError(f"{op}: output_size {size} must be positive for input {tuple(input.shape)}")
    return size


# cat under a name of its own, for adaptive_avg_pool3d's windows: the same forward and rules, but under
# create_graph each window's gradient is tied to that window's mean (`pool.tied`), so the input's gradient
# depends on the input with derivative zero, as torch's adaptive_avg_pool3d_backward(grad, self)
# (no array rule: the ordinary backward runs this one under no_grad, the same slices of the gradient)
_window_cat = defop("adaptive_avg_pool3d_cat", kind="other", save=())(_cat.forward)
_window_cat.grad(lambda ctx, g: tuple(map(tied, _cat.backward(ctx, g), ctx.inputs, ctx.next)))


@batch_optional(5)
def adaptive_avg_pool3d(input, output_size):
    """Equal windows are one avg_pool3d (one window: the mean, as torch's, whose gradient does not depend on
    the input); otherwise each dim's windows are averaged in turn (W, H, D).

    Slice means, not the averaging matmuls of the 2-d form: a matmul multiplies an inf by the zeros
    outside its window, which would make every output of that row NaN; torch's windows stay finite."""
    size = _adaptive_size(input, output_size, "adaptive_avg_pool3d")
    spatial = input.shape[2:]
    if size == (1, 1, 1):
        return mean(input, (-3, -2, -1), keepdim=True)
    if all(n % o == 0 for n, o in zip(spatial, size)):
        return avg_pool3d(input, tuple(n // o for n, o in zip(spatial, size)))
    x = input
    for axis in (4, 3, 2):
        n, o = spatial[axis - 2], size[axis - 2]
        if n != o:
            cut = lambda lo, hi: (slice(None),) * axis + (slice(lo, hi),)  # noqa: E731
            with np.errstate(invalid="ignore"):  # inf and -inf in one window: NaN, unwarned as in torch
                x = _window_cat(*[mean(x[cut(lo, hi)], axis, keepdim=True) for lo, hi in _adaptive_bounds(n, o)],
                                axis=axis)  # fmt: skip
    return x


def _stage(xp, x, axis, bounds):
    """Each adaptive window's maximum along `axis` and the index of its first maximum (NaN counts as one)."""
    cut = lambda lo, hi: x[(slice(None),) * axis + (slice(lo, hi),)]  # noqa: E731
    return (xp.stack([cut(lo, hi).max(axis) for lo, hi in bounds], axis),
            xp.stack([cut(lo, hi).argmax(axis) + lo for lo, hi in bounds], axis))  # fmt: skip


def _adaptive_argmax(xp, x, out):
    """Flat D·H·W index of each adaptive window's first maximum in row-major order, torch's pick (ties
    included): per (d, h) the first maximal w, per d the first h holding the window's maximum, then the
    first d. OD + OH + OW reductions, not OD·OH·OW."""
    n, c, d, h, w = x.shape
    od, oh, ow = out
    m_w, arg_w = _stage(xp, x, 4, _adaptive_bounds(w, ow))  # (N, C, D, H, OW)
    m_h, arg_h = _stage(xp, m_w, 3, _adaptive_bounds(h, oh))  # (N, C, D, OH, OW)
    _, arg_d = _stage(xp, m_h, 2, _adaptive_bounds(d, od))  # (N, C, OD, OH, OW)
    rows = xp.take_along_axis(arg_h, arg_d, axis=2)  # the chosen d's first h
    planes = (arg_d * h + rows).reshape(n, c, od * oh, ow)
    cols = xp.take_along_axis(arg_w.reshape(n, c, d * h, ow), planes, axis=2).reshape(n, c, od, oh, ow)
    return ((arg_d * h + rows) * w + cols).astype(xp.int64)


@defop("adaptive_max_pool3d", kind="other", save=(), saves_extra=True)
def _adaptive_max_pool3d(xp, x, *, output_size):
    idx = _adaptive_argmax(xp, x, output_size)
    n, c = x.shape[:2]  # explicit sizes: -1 is ambiguous for an empty batch
    flat = xp.take_along_axis(x.reshape(n, c, math.prod(x.shape[2:])), idx.reshape(n, c, math.prod(output_size)), 2)
    return flat.reshape(idx.shape), idx


@_adaptive_max_pool3d.grad
def _(ctx, g):
    """Each output's gradient goes to its argmax alone; overlapping windows that share one accumulate."""
    shape = tuple(ctx.inputs[0].shape)
    n, c, cells = shape[0], shape[1], math.prod(g.shape[2:])
    idx = Tensor(ctx.saved.reshape(n, c, cells), device=g.device)
    base = zeros(n, c, math.prod(shape[2:]), dtype=g.dtype, device=g.device)
    return tied(scatter_add(base, 2, idx, g.reshape(n, c, cells)).reshape(*shape), ctx.inputs[0], ctx.next[0])


@batch_optional(5)
def adaptive_max_pool3d(input, output_size, return_indices=False):
    """Equal windows are one max_pool3d; otherwise one op picks each window's first maximum (as torch)."""
    size = _adaptive_size(input, output_size, "adaptive_max_pool3d")
    spatial = input.shape[2:]
    if all(n % o == 0 for n, o in zip(spatial, size)):
        return max_pool3d(input, tuple(n // o for n, o in zip(spatial, size)), return_indices=return_indices)
    out = apply(_adaptive_max_pool3d, (input,), {"output_size": size})
    if not return_indices:
        return out
    return out, Tensor(_adaptive_argmax(input.device.xp, input.array, size), device=input.device)
