"""Pooling as ops: max_pool2d (indices kept for backward), avg_pool2d; adaptive average and max pooling.

Windows are strided views of the padded input, as in `conv`. max_pool2d's backward routes each
output gradient to the argmax of its window (`max_pool2d_scatter`, whose own derivative gathers
back); avg_pool2d's backward spreads each gradient over its window (`avg_pool2d_backward`, whose
derivative is avg_pool2d itself). 1-D pooling is 2-D pooling with height 1; adaptive pooling is built
from these and from separable row/column averages (`adaptive_avg_pool2d`).

As torch's pooling backward ops, which take the forward input `self` as an input of derivative
zeros_like(self), each rule ties the gradient it returns to the input under create_graph (`tied`): the
gradient requires grad and a second backward gives the input zeros, not an error (nor None beside other
inputs). The ordinary backward runs the rules without grad mode and pays nothing for it.
"""

import math

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.function import apply
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops.activation import masked_grad
from distgraph.ops.channels_last import laid_out, suggests
from distgraph.ops.conv import _pair, _windows, batch_optional, ntuple, window_stride
from distgraph.ops.creation import zeros
from distgraph.ops.indexing import scatter_add
from distgraph.ops.linalg import _matmul, _matmul_tn, _mm
from distgraph.ops.promotion import const
from distgraph.ops.reduction import mean
from distgraph.ops.registry import defop


def tied(grad, input, edge):
    """`grad`, and under grad mode (create_graph) a function of `input` with derivative zero when `input`
    needs a gradient (`edge`, the Node's edge to it): torch's pooling backward ops take the forward input as
    an input whose derivative is zeros_like(self). `grad` chosen where a True mask holds (masked_grad), not
    grad + 0·input, which an inf or NaN input would make NaN; the values are grad's bits. Without grad mode,
    the ordinary backward, it is `grad` itself."""
    if edge is None or grad is None or not grad_mode.is_grad_enabled() or not input.requires_grad:
        return grad
    return masked_grad(grad, const(True, grad, np.bool_), input)


def input_layout(input):
    """A pooling gradient's layout attribute: channels_last as its forward's input (ops/channels_last.py), given
    only then, so a row-major graph is as it was."""
    return {"channels_last": True} if suggests(input.array) else {}


def _pool_out(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # torch: the last window must start inside the input or left pad
        out -= 1
    return out


def _padded(xp, x, kh, kw, s, p, d, oh, ow, fill):
    """Pad so every window of the (oh, ow) output exists (ceil_mode may need extra on the right)."""
    need_h = (oh - 1) * s[0] + d[0] * (kh - 1) + 1
    need_w = (ow - 1) * s[1] + d[1] * (kw - 1) + 1
    n, c, h, w = x.shape
    extra_h = max(0, need_h - h - 2 * p[0])
    extra_w = max(0, need_w - w - 2 * p[1])
    if not (p[0] or p[1] or extra_h or extra_w):
        return x
    out = xp.full((n, c, h + 2 * p[0] + extra_h, w + 2 * p[1] + extra_w), fill, dtype=x.dtype)
    out[:, :, p[0] : p[0] + h, p[1] : p[1] + w] = x
    return out


def _first_max(xp, taps):
    """torch's running maximum, tap by tap: a tap replaces the maximum where it is greater or NaN
    (`val > max || isnan(val)`), so a tie keeps the first maximum and a NaN window the *last* NaN (torch's
    index). Exact for every input (the sign of a tied zero, which NaN), but its masked copies are slow:
    used only when the input has NaN or -0.0."""
    out = taps[0].copy(order="K")  # (laid out as the input: channels_last stays so)
    arg = xp.zeros(out.shape, dtype=xp.int64)
    for t, tap in enumerate(taps[1:], 1):
        take = (tap > out) | (tap != tap)
        xp.copyto(out, tap, where=take)
        xp.copyto(arg, t, where=take)
    return out, arg


def _has_negative_zero(xp, x):
    bits = x.view(xp.dtype(f"i{x.itemsize}"))
    return bool((bits == xp.iinfo(bits.dtype).min).any())  # -0.0 is the sign bit alone


def _max_and_arg(xp, taps, padded):
    """The maximum as a chain of elementwise maxima (vectorized), then the first tap equal to it as
    the count of leading taps that differ: a few full-speed passes instead of masked copies. Equal
    values are bit-identical except ±0, and NaN equals nothing: inputs with either go to `_first_max`."""
    m = taps[0].copy(order="K")  # a copy, not a view of the input, even for a 1x1 kernel; laid out as the input
    for tap in taps[1:]:
        xp.maximum(m, tap, out=m)
    if m.dtype.kind == "f" and (bool(xp.isnan(m).any()) or _has_negative_zero(xp, padded)):
        return _first_max(xp, taps)
    differs = taps[0] != m
    arg = differs.astype(xp.int64)
    for tap in taps[1:-1]:
        differs &= tap != m
        arg += differs
    return m, arg


def _max_windows(xp, x, kernel, stride, padding, dilation, ceil_mode):
    """Each window's maximum, its argmax (tap index, first maximum as torch) and the padded shape.

    Works on the kh·kw taps, each a strided (N, C, OH, OW) view of the padded input, so the input is
    read in place; copying the windows into an (…, kh·kw) array and reducing its short last axis
    (argmax, take_along_axis) was several times slower.
    """
    kh, kw = kernel
    n, c, h, w = x.shape
    oh = _pool_out(h, kh, stride[0], padding[0], dilation[0], ceil_mode)
    ow = _pool_out(w, kw, stride[1], padding[1], dilation[1], ceil_mode)
    fill = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
    xpad = _padded(xp, x, kh, kw, stride, padding, dilation, oh, ow, fill)
    taps = [xpad[(..., *_tap_slices(i, j, kw, stride, dilation, oh, ow))] for i in range(kh) for j in range(kw)]
    out, arg = _max_and_arg(xp, taps, xpad)
    return out, arg, xpad.shape


@defop("max_pool2d", kind="other", save=(), saves_extra=True)
def _max_pool2d(xp, x, *, kernel, stride, padding, dilation, ceil_mode):
    out, arg, padded_shape = _max_windows(xp, x, kernel, stride, padding, dilation, ceil_mode)
    return laid_out(xp, out, suggests(x)), (arg, padded_shape)


def _flat_indices(xp, arg, width, kernel, stride, padding, dilation):
    """torch's return_indices: the argmax tap of each window as a flat index into the input's H·W."""
    oh, ow = arg.shape[2], arg.shape[3]
    rows = (xp.arange(oh) * stride[0] - padding[0])[:, None] + (arg // kernel[1]) * dilation[0]
    cols = (xp.arange(ow) * stride[1] - padding[1]) + (arg % kernel[1]) * dilation[1]
    return (rows * width + cols).astype(xp.int64)


@_max_pool2d.grad
def _(ctx, g):
    arg, padded_shape = ctx.saved
    a = ctx.attrs
    attrs = {k: a[k] for k in ("kernel", "stride", "padding", "dilation")}
    attrs.update(padded_shape=padded_shape, input_shape=tuple(ctx.inputs[0].shape), **input_layout(ctx.inputs[0]))
    gx = apply(_pool_scatter, (g, Tensor(arg, device=g.device)), attrs)
    return tied(gx, ctx.inputs[0], ctx.next[0])


def _tap_slices(i, j, kw, s, d, oh, ow):
    r0, c0 = (i * d[0], j * d[1])
    return slice(r0, r0 + s[0] * (oh - 1) + 1, s[0]), slice(c0, c0 + s[1] * (ow - 1) + 1, s[1])


@defop("max_pool2d_scatter", kind="other", save=(1,))
def _pool_scatter(xp, g, arg, *, kernel, stride, padding, dilation, padded_shape, input_shape, channels_last=False):
    kh, kw = kernel
    oh, ow = g.shape[2], g.shape[3]
    gx = xp.zeros(padded_shape, dtype=g.dtype)
    disjoint = stride[0] > dilation[0] * (kh - 1) and stride[1] > dilation[1] * (kw - 1)
    bits = xp.dtype(f"i{g.itemsize}")
    for i in range(kh):
        for j in range(kw):
            view = gx[(..., *_tap_slices(i, j, kw, stride, dilation, oh, ow))]
            if disjoint:  # each tap's slice is written once: g's bits times (is argmax), exact for inf and NaN
                xp.multiply(g.view(bits), arg == i * kw + j, out=view.view(bits))
            else:  # overlapping windows accumulate
                view += xp.where(arg == i * kw + j, g, 0)
    if disjoint:
        gx += 0  # torch accumulates into zeros: a -0.0 gradient arrives as 0 + (-0.0) = +0.0
    h, w = input_shape[2], input_shape[3]
    return laid_out(xp, gx[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w], channels_last)


@defop("max_pool2d_gather", kind="other", save=(1,))
def _pool_gather(xp, gx, arg, *, kernel, stride, padding, dilation, padded_shape, input_shape, channels_last=False):
    kh, kw = kernel
    n, c = gx.shape[:2]
    oh, ow = arg.shape[2], arg.shape[3]
    pad = xp.zeros(padded_shape, dtype=gx.dtype)
    pad[:, :, padding[0] : padding[0] + input_shape[2], padding[1] : padding[1] + input_shape[3]] = gx
    win = _windows(xp, pad, kh, kw, stride, dilation, oh, ow).reshape(n, c, oh, ow, kh * kw)
    return laid_out(xp, xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0], channels_last)


_pool_scatter.grad(lambda ctx, gg: (apply(_pool_gather, (gg, ctx.inputs[1]), ctx.attrs), None))
_pool_gather.grad(lambda ctx, g: (apply(_pool_scatter, (g, ctx.inputs[1]), ctx.attrs), None))


def _divisor(xp, shape, kernel, stride, padding, oh, ow, count_include_pad, dtype, divisor=None):
    """Per-output window sizes: all taps, or only those on real input (count_include_pad=False); or
    torch's divisor_override for every window."""
    if divisor:
        return xp.asarray(divisor, dtype=dtype)
    kh, kw = kernel
    if count_include_pad:
        # torch counts padding but not the ceil_mode overhang past it
        h, w = shape[2] + 2 * padding[0], shape[3] + 2 * padding[1]
    else:
        h, w = shape[2], shape[3]
    off = (0, 0) if count_include_pad else padding
    rows = xp.arange(oh) * stride[0] - off[0]
    cols = xp.arange(ow) * stride[1] - off[1]
    nh = xp.minimum(rows + kh, h) - xp.maximum(rows, 0)
    nw = xp.minimum(cols + kw, w) - xp.maximum(cols, 0)
    return (nh[:, None] * nw[None, :]).astype(dtype)


@defop("avg_pool2d", kind="other", save=())
def _avg_pool2d(xp, x, *, kernel, stride, padding, ceil_mode, count_include_pad, divisor=None):
    kh, kw = kernel
    n, c, h, w = x.shape
    oh = _pool_out(h, kh, stride[0], padding[0], 1, ceil_mode)
    ow = _pool_out(w, kw, stride[1], padding[1], 1, ceil_mode)
    xpad = _padded(xp, x, kh, kw, stride, padding, (1, 1), oh, ow, 0)
    win = _windows(xp, xpad, kh, kw, stride, (1, 1), oh, ow)
    div = _divisor(xp, x.shape, kernel, stride, padding, oh, ow, count_include_pad, x.dtype, divisor)
    return laid_out(xp, win.sum(axis=(-2, -1)) / div, suggests(x))  # (a padded input's windows are row-major)


@defop("avg_pool2d_backward", kind="other", save=())
def _avg_pool2d_backward(
    xp, g, *, kernel, stride, padding, ceil_mode, count_include_pad, input_shape, divisor=None, channels_last=False
):
    kh, kw = kernel
    oh, ow = g.shape[2], g.shape[3]
    div = _divisor(xp, input_shape, kernel, stride, padding, oh, ow, count_include_pad, g.dtype, divisor)
    share = g / div
    need_h = (oh - 1) * stride[0] + kh
    need_w = (ow - 1) * stride[1] + kw
    h, w = input_shape[2], input_shape[3]
    gx = xp.zeros((g.shape[0], g.shape[1], max(need_h, h + 2 * padding[0]), max(need_w, w + 2 * padding[1])), g.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, kw, stride, (1, 1), oh, ow)
            gx[:, :, rows, cols] += share
    return laid_out(xp, gx[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w], channels_last)


@_avg_pool2d.grad
def _(ctx, g):
    x = ctx.inputs[0]
    gx = apply(_avg_pool2d_backward, (g,), {**ctx.attrs, "input_shape": tuple(x.shape), **input_layout(x)})
    return tied(gx, ctx.inputs[0], ctx.next[0])


@_avg_pool2d_backward.grad
def _(ctx, gg):
    attrs = {k: v for k, v in ctx.attrs.items() if k not in ("input_shape", "channels_last")}
    return apply(_avg_pool2d, (gg,), attrs)


def _check4(input, op):
    if input.ndim != 4:
        raise ShapeError(f"{op}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got {tuple(input.shape)}")


def _check_out(input, k, s, p, d, ceil_mode, op):
    """torch refuses a window that does not fit even once (an empty output), naming both sizes."""
    out = [_pool_out(input.array.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(2)]
    if min(out) < 1:
        c, h, w = input.shape[1:]
        raise ShapeError(f"{op}: given input size ({c}x{h}x{w}), calculated output size ({c}x{out[0]}x{out[1]}): "
                         f"output size is too small (kernel {k}, stride {s}, padding {p}, dilation {d})")  # fmt: skip


@batch_optional(4)
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    _check4(input, "max_pool2d")
    k = _pair(kernel_size, "kernel_size", "max_pool2d")
    s = _pair(window_stride(stride, kernel_size), "stride", "max_pool2d")
    p, d = _pair(padding, "padding", "max_pool2d"), _pair(dilation, "dilation", "max_pool2d")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"max_pool2d: padding {p} should be at most half of kernel size {k}")
    _check_out(input, k, s, p, d, ceil_mode, "max_pool2d")
    out = apply(_max_pool2d, (input,), {"kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": ceil_mode})
    if not return_indices:
        return out
    xp = input.device.xp
    _, arg, _ = _max_windows(xp, input.array, k, s, p, d, ceil_mode)
    indices = laid_out(xp, _flat_indices(xp, arg, input.shape[3], k, s, p, d), suggests(input.array))
    return out, Tensor(indices, device=input.device)


@batch_optional(4)
def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    _check4(input, "avg_pool2d")
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override <= 0):
        raise ShapeError(f"avg_pool2d: divisor_override must be a positive int, got {divisor_override!r}")
    k = _pair(kernel_size, "kernel_size", "avg_pool2d")
    s = _pair(window_stride(stride, kernel_size), "stride", "avg_pool2d")
    p = _pair(padding, "padding", "avg_pool2d")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"avg_pool2d: padding {p} should be at most half of kernel size {k}")
    _check_out(input, k, s, p, (1, 1), ceil_mode, "avg_pool2d")
    attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    if divisor_override is not None:
        attrs["divisor"] = divisor_override
    return apply(_avg_pool2d, (input,), attrs)


def _single(v, name, op):
    """An int or a sequence of exactly one int (torch refuses the rest, naming the argument)."""
    return ntuple(v, 1, name, op)[0]


@batch_optional(3)
def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    op = "max_pool1d"
    k, p = _single(kernel_size, "kernel_size", op), _single(padding, "padding", op)
    d = _single(dilation, "dilation", op)
    s = (1, _single(window_stride(stride, kernel_size), "stride", op))
    out = max_pool2d(input.unsqueeze(2), (1, k), s, (0, p), (1, d), ceil_mode, return_indices)
    return (out[0].squeeze(2), out[1].squeeze(2)) if return_indices else out.squeeze(2)


@batch_optional(3)
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    op = "avg_pool1d"
    k, p = _single(kernel_size, "kernel_size", op), _single(padding, "padding", op)
    s = (1, _single(window_stride(stride, kernel_size), "stride", op))
    return avg_pool2d(input.unsqueeze(2), (1, k), s, (0, p), ceil_mode, count_include_pad).squeeze(2)


def _adaptive_bounds(size, out):
    """torch's adaptive windows: cell i covers [floor(i·size/out), ceil((i+1)·size/out))."""
    return [((i * size) // out, math.ceil((i + 1) * size / out)) for i in range(out)]


def _averaging(xp, size, out, dtype):
    """(out, size) matrix whose row i averages window i: adaptive average pooling is separable."""
    a = xp.zeros((out, size), dtype=dtype)
    for i, (lo, hi) in enumerate(_adaptive_bounds(size, out)):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _nonempty_spatial(input, first, op):
    """torch's adaptive pools refuse an empty spatial dim (from dim `first` on); an empty batch or channel dim
    gives an empty output."""
    for i in range(first, input.ndim):
        if input.array.shape[i] == 0:
            raise ShapeError(
                f"{op}: expected input to have non-zero size for non-batch dimensions, but input has sizes "
                f"{tuple(input.shape)} with dimension {i} being empty"
            )


def _adaptive_size(input, output_size, op):
    _check4(input, op)
    _nonempty_spatial(input, 2, op)
    oh, ow = (output_size, output_size) if isinstance(output_size, int | None) else tuple(output_size)
    oh, ow = input.shape[2] if oh is None else oh, input.shape[3] if ow is None else ow  # None keeps that size
    if oh < 0 or ow < 0:
        raise ShapeError(f"{op}: elements of output_size must be greater than or equal to 0, got {(oh, ow)}")
    return oh, ow


@batch_optional(4)
def adaptive_avg_pool2d(input, output_size):
    """Equal windows are one strided pooling op (one window: the mean, as torch's, whose gradient does not
    depend on the input); otherwise rows then columns are averaged by two small matmuls (A_h · x · A_wᵀ),
    whatever the output size."""
    oh, ow = _adaptive_size(input, output_size, "adaptive_avg_pool2d")
    h, w = input.array.shape[2], input.array.shape[3]
    if oh == ow == 1:
        return mean(input, (-2, -1), keepdim=True)
    if oh and ow and h % oh == 0 and w % ow == 0:
        return avg_pool2d(input, (h // oh, w // ow))
    return _separable_average(input, oh, ow)  # an output size of 0 too: (N, C, 0, ow) or (N, C, oh, 0)


def _separable_average(input, oh, ow):
    return apply(_adaptive_avg_pool2d, (input,), {"output_size": (oh, ow)})


def _averagings(xp, x, output_size):
    """The row and column averaging matrices of input `x` (an array, or a Tensor's metadata in backward)."""
    return tuple(_averaging(xp, x.shape[2 + i], output_size[i], x.dtype) for i in (0, 1))


@defop("adaptive_avg_pool2d", kind="other", save=())
def _adaptive_avg_pool2d(xp, x, *, output_size):
    rows, cols = _averagings(xp, x, output_size)
    return _mm(_mm(rows, x), cols.T)


@_adaptive_avg_pool2d.grad
def _(ctx, g):
    """A_hᵀ · (G · A_w), by the two matmuls' own ops (the averaging matrices are constants of the shapes).
    No array rule: the ordinary backward runs this under no_grad, the same products."""
    x = ctx.inputs[0]
    rows, cols = (Tensor(a, device=g.device) for a in _averagings(g.device.xp, x.array, ctx.attrs["output_size"]))
    return tied(apply(_matmul_tn, (rows, apply(_matmul, (g, cols)))), x, ctx.next[0])


def _adaptive_argmax(xp, x, oh, ow):
    """Flat H·W index of each adaptive window's first maximum in row-major order, torch's pick (ties
    included): each row's first maximal column within the column window, then the window's first row
    holding the maximum. OW + OH reductions, not OH·OW."""
    w = x.shape[3]
    cols = _adaptive_bounds(w, ow)
    col_max = xp.stack([x[..., lo:hi].max(-1) for lo, hi in cols], -1)  # (N, C, H, OW)
    col_arg = xp.stack([x[..., lo:hi].argmax(-1) + lo for lo, hi in cols], -1)
    rows = xp.stack([col_max[:, :, lo:hi].argmax(2) + lo for lo, hi in _adaptive_bounds(x.shape[2], oh)], 2)
    return (rows * w + xp.take_along_axis(col_arg, rows, axis=2)).astype(xp.int64)  # (N, C, OH, OW)


@defop("adaptive_max_pool2d", kind="other", save=(), saves_extra=True)
def _adaptive_max_pool2d(xp, x, *, output_size):
    idx = _adaptive_argmax(xp, x, *output_size)
    n, c, h, w = x.shape  # explicit sizes: -1 is ambiguous for an empty batch
    flat = xp.take_along_axis(x.reshape(n, c, h * w), idx.reshape(n, c, idx.shape[2] * idx.shape[3]), axis=2)
    return flat.reshape(idx.shape), idx


@_adaptive_max_pool2d.grad
def _(ctx, g):
    """Each output's gradient goes to its argmax alone; overlapping windows that share one accumulate."""
    n, c, h, w = ctx.inputs[0].shape
    cells = g.shape[2] * g.shape[3]
    idx = Tensor(ctx.saved.reshape(n, c, cells), device=g.device)
    base = zeros(n, c, h * w, dtype=g.dtype, device=g.device)
    return tied(scatter_add(base, 2, idx, g.reshape(n, c, cells)).reshape(n, c, h, w), ctx.inputs[0], ctx.next[0])


@batch_optional(4)
def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Equal windows are one max_pool2d; otherwise one op picks each window's first maximum (as torch,
    so tied inputs, e.g. after a ReLU, send the whole gradient to one element)."""
    oh, ow = _adaptive_size(input, output_size, "adaptive_max_pool2d")
    h, w = input.shape[2], input.shape[3]
    if not (oh and ow):  # an empty output (torch's), still attached to the input
        out = _separable_average(input, oh, ow)
        idx = Tensor(input.device.xp.zeros(out.shape, dtype=input.device.xp.int64), device=input.device)
        return (out, idx) if return_indices else out
    if h % oh == 0 and w % ow == 0:
        return max_pool2d(input, (h // oh, w // ow), return_indices=return_indices)
    out = apply(_adaptive_max_pool2d, (input,), {"output_size": (oh, ow)})
    if not return_indices:
        return out
    return out, Tensor(_adaptive_argmax(input.device.xp, input.array, oh, ow), device=input.device)


@batch_optional(3)
def adaptive_avg_pool1d(input, output_size):
    size = ntuple(output_size, 1, "output_size", "adaptive_avg_pool1d", least=0)[0]
    _nonempty_spatial(input, 2, "adaptive_avg_pool1d")
    return adaptive_avg_pool2d(input.unsqueeze(2), (1, size)).squeeze(2)


@batch_optional(3)
def adaptive_max_pool1d(input, output_size, return_indices=False):
    size = ntuple(output_size, 1, "output_size", "adaptive_max_pool1d", least=0)[0]
    _nonempty_spatial(input, 2, "adaptive_max_pool1d")
    out = adaptive_max_pool2d(input.unsqueeze(2), (1, size), return_indices)
    return (out[0].squeeze(2), out[1].squeeze(2)) if return_indices else out.squeeze(2)
