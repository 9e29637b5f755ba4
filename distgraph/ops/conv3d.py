"""3-d convolution as ops: conv3d and conv_transpose3d, with torch's arguments.

The same scheme as the 2-d ops in `conv` (read its docstring first), written once for any number of
spatial dims and used here for three: im2col from a strided view of the padded input, laid out
channel-major (C·kd·kh·kw, N·OD·OH·OW), then one matmul per group; the output is (O, N, OD, OH, OW) in
memory, returned as an (N, O, ...) view. Backward is `conv3d_input_grad` (Wᵀ·grad, then col2im as
one slice-add per kernel tap) and `conv3d_weight_grad` (grad·colsᵀ); each of the three is linear in
each argument and their derivatives are each other, so every order of gradient is exact. The 2-d
ops stay as they are: their narrow-row fast path is tuned for images.

A transposed convolution is the input gradient of a convolution (see `conv_transpose`), so
conv_transpose3d is `conv3d_input_grad` applied to the input with the transposed layer's weight.
"""

import functools
import itertools
import math

import numpy as np

from distgraph.autograd.function import apply
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import conv as conv2
from distgraph.ops import same_dtype
from distgraph.ops.autocast import autocast_op
from distgraph.ops.conv import batch_optional, conv_rules, ntuple
from distgraph.ops.conv_transpose import _out_size as _transposed_size
from distgraph.ops.regions import pad
from distgraph.ops.registry import defop

DIMS = 3


def _out_sizes(spatial, kernel, stride, padding, dilation):
    return tuple(conv2._out_size(*a) for a in zip(spatial, kernel, stride, padding, dilation))


def windows(xp, x, kernel, stride, dilation, out):
    """(N, C, *out, *kernel) strided view of an already padded (N, C, *spatial) array."""
    st = x.strides
    nd = len(kernel)
    strides = (*st[:2], *(st[2 + i] * stride[i] for i in range(nd)), *(st[2 + i] * dilation[i] for i in range(nd)))
    lib = xp.lib.stride_tricks if hasattr(xp, "lib") else xp
    return lib.as_strided(x, shape=(*x.shape[:2], *out, *kernel), strides=strides)


def tap_slices(tap, stride, dilation, out):
    """The slices of the padded input that kernel tap `tap` (one offset per dim) reads for every output."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, s, d, o in zip(tap, stride, dilation, out))


def _columns(xp, x, w_shape, stride, padding, dilation, groups):
    """im2col: (groups, C/g·prod(kernel), N·prod(out)) and the output size."""
    n, c, *spatial = x.shape
    kernel = w_shape[2:]
    out = _out_sizes(spatial, kernel, stride, padding, dilation)
    if any(padding):  # zeros + one slice assignment: cheaper than xp.pad
        xpad = xp.zeros((n, c, *(s + 2 * p for s, p in zip(spatial, padding))), dtype=x.dtype)
        xpad[(..., *(slice(p, p + s) for s, p in zip(spatial, padding)))] = x
        x = xpad
    nd = len(kernel)
    cols = windows(xp, x, kernel, stride, dilation, out)  # (N, C, *out, *kernel) view
    order = (1, *range(2 + nd, 2 + 2 * nd), 0, *range(2, 2 + nd))  # (C, *kernel, N, *out): the one copy
    cols = xp.ascontiguousarray(cols.transpose(order))
    return cols.reshape(groups, w_shape[1] * math.prod(kernel), n * math.prod(out)), out


def _channels_first(a):
    """(O, N, *rest) <-> (N, O, *rest): a view."""
    return a.swapaxes(0, 1)


def _quiet(forward):
    """Run a forward under np.errstate: an inf times 0 in the matmul is NaN, unwarned as in torch."""

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore"):
            return forward(*args, **kwargs)

    return run


@defop("conv3d", kind="matmul", save=(0, 1))
@_quiet
def _conv3d(xp, x, w, *, stride, padding, dilation, groups):
    n, c, *spatial = x.shape
    o, kernel = w.shape[0], w.shape[2:]
    out = _out_sizes(spatial, kernel, stride, padding, dilation)
    wg = w.reshape(groups, o // groups, -1)
    slices = conv2._batches(n, c * math.prod(kernel) * math.prod(out) * x.itemsize)
    if len(slices) == 1:  # the matmul's result is the output: no second buffer, no copy
        cols, _ = _columns(xp, x, w.shape, stride, padding, dilation, groups)
        return _channels_first((wg @ cols).reshape(o, n, *out))
    res = xp.empty((o, n, *out), dtype=xp.result_type(x, w))
    for s in slices:
        cols, _ = _columns(xp, x[s], w.shape, stride, padding, dilation, groups)
        res[:, s] = (wg @ cols).reshape(o, -1, *out)
    return _channels_first(res)


def _grad_rows(g, groups):
    """(N, O, *out) -> (groups, O/g, N·prod(out)); a view when g is laid out as the forward's output."""
    n, o, *out = g.shape
    return _channels_first(g).reshape(groups, o // groups, n * math.prod(out))


@defop("conv3d_input_grad", kind="matmul", save=(0, 1))
@_quiet
def _conv3d_input_grad(xp, g, w, *, input_shape, stride, padding, dilation, groups):
    n, c, *spatial = input_shape
    o, cg, *kernel = w.shape
    out = g.shape[2:]
    wg = w.reshape(groups, o // groups, cg * math.prod(kernel)).transpose(0, 2, 1)
    gx = xp.zeros((c, n, *(s + 2 * p for s, p in zip(spatial, padding))), dtype=g.dtype)  # the columns' layout
    for s in conv2._batches(n, c * math.prod(kernel) * math.prod(out) * g.itemsize):
        cols = (wg @ _grad_rows(g[s], groups)).reshape(c, *kernel, -1, *out)
        part = gx[:, s]
        for tap in itertools.product(*map(range, kernel)):  # col2im: each tap adds its strided slice
            part[(slice(None), slice(None), *tap_slices(tap, stride, dilation, out))] += cols[(slice(None), *tap)]
    return _channels_first(gx[(..., *(slice(p, p + sz) for sz, p in zip(spatial, padding)))])


@defop("conv3d_weight_grad", kind="matmul", save=(0, 1))
@_quiet
def _conv3d_weight_grad(xp, x, g, *, weight_shape, stride, padding, dilation, groups):
    o, cg, *kernel = weight_shape
    n, c = x.shape[:2]
    gw = xp.zeros((groups, o // groups, cg * math.prod(kernel)), dtype=xp.result_type(x, g))
    for s in conv2._batches(n, c * math.prod(kernel) * math.prod(g.shape[2:]) * x.itemsize):
        cols, _ = _columns(xp, x[s], weight_shape, stride, padding, dilation, groups)
        # (cols · gradᵀ)ᵀ, not grad · colsᵀ: threaded OpenBLAS runs this form of the long-K product far faster
        gw += (cols @ _grad_rows(g[s], groups).transpose(0, 2, 1)).transpose(0, 2, 1)
    return gw.reshape(weight_shape)


conv_rules(_conv3d, _conv3d_input_grad, _conv3d_weight_grad)


def triple(v, name, op):
    return ntuple(v, DIMS, name, op)


def _check(op, input, weight, bias, groups):
    if input.ndim != 5 or weight.ndim != 5:
        raise ShapeError(
            f"{op}: expected 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input and 5-D weight, got input "
            f"{tuple(input.shape)} and weight {tuple(weight.shape)}"
        )
    if not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {groups!r}")
    same_dtype.conv(input, weight, bias, "type" if op == "conv3d" else "scalar")  # torch's words
    if input.array.dtype.kind == "b":
        raise DTypeError(f"{op}: input and weight must be numeric (as torch), got {input.dtype.name}")


def _add_bias(op, out, bias):
    if bias is None:
        return out
    if tuple(bias.shape) != (out.shape[1],):
        raise ShapeError(
            f"{op}: bias must be 1-D with one value per output channel ({out.shape[1]}), got {tuple(bias.shape)}"
        )
    return out + bias.reshape(1, -1, 1, 1, 1)


@batch_optional(5)
@autocast_op("conv3d")
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv3d: input (N, C, D, H, W) or (C, D, H, W), weight (O, C/groups, kd, kh, kw)."""
    _check("conv3d", input, weight, bias, groups)
    c, spatial = input.shape[1], tuple(input.shape[2:])
    o, cg, *kernel = weight.shape
    if c % groups or o % groups or c // groups != cg:
        raise ShapeError(
            f"conv3d: input {tuple(input.shape)} with groups={groups} needs weight (O, {c // groups}, kd, kh, kw) "
            f"with O divisible by groups, got weight {tuple(weight.shape)}"
        )
    stride, dilation = triple(stride, "stride", "conv3d"), triple(dilation, "dilation", "conv3d")
    if padding == "valid":
        padding = 0
    elif padding == "same":
        if stride != (1,) * DIMS:
            raise ShapeError("conv3d: padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):  # even effective kernel: torch puts the odd pixel at the end
            input = pad(input, tuple(w for t in reversed(total) for w in (0, t % 2)))
            spatial = tuple(input.shape[2:])
        padding = tuple(t // 2 for t in total)
    elif isinstance(padding, str):
        raise ShapeError(f"conv3d: padding must be 'valid', 'same', an int or a tuple of 3 ints, got {padding!r}")
    padding = triple(padding, "padding", "conv3d")
    out = _out_sizes(spatial, kernel, stride, padding, dilation)
    if min(out) <= 0:
        raise ShapeError(
            f"conv3d: input {tuple(input.shape)} is smaller than the kernel {tuple(kernel)} (dilation {dilation}, "
            f"padding {padding}): output would be {out}"
        )
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    res = apply(_conv3d, (input, weight), attrs)
    return _add_bias("conv3d", res, bias)


@batch_optional(5)
@autocast_op("conv_transpose3d")
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose3d: input (N, C_in, D, H, W) or unbatched, weight (C_in, C_out/g, kd, kh, kw)."""
    op = "conv_transpose3d"
    _check(op, input, weight, bias, groups)
    n, c, *spatial = input.shape
    ci, cg, *kernel = weight.shape
    if ci != c or c % groups:
        raise ShapeError(
            f"{op}: input {tuple(input.shape)} with groups={groups} needs weight ({c}, C_out/groups, kd, kh, kw) with "
            f"{c} divisible by groups, got weight {tuple(weight.shape)}"
        )
    stride, dilation = triple(stride, "stride", op), triple(dilation, "dilation", op)
    padding, extra = triple(padding, "padding", op), triple(output_padding, "output_padding", op)
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
        raise ShapeError(
            f"{op}: output_padding {extra} must be smaller than either stride {stride} or dilation {dilation} in each dim"
        )
    size = tuple(_transposed_size(*a) for a in zip(spatial, kernel, stride, padding, dilation, extra))
    if min(size) <= 0:
        raise ShapeError(
            f"{op}: input {tuple(input.shape)} with kernel {tuple(kernel)}, stride {stride}, padding {padding}, "
            f"dilation {dilation} and output_padding {extra} gives output size {size}, which is too small"
        )
    attrs = {"stride": stride, "dilation": dilation, "groups": groups}
    if all(e < s for e, s in zip(extra, stride)):  # the conv that maps `size` back gives the input's size
        out = apply(_conv3d_input_grad, (input, weight), {**attrs, "padding": padding, "input_shape": (n, cg * groups, *size)})  # fmt: skip
    else:  # the full output, then cropped (and zero-extended past the padding) to `size`
        full = tuple(_transposed_size(sz, k, s, 0, d, 0) for sz, k, s, d in zip(spatial, kernel, stride, dilation))
        out = apply(_conv3d_input_grad, (input, weight), {**attrs, "padding": (0,) * DIMS, "input_shape": (n, cg * groups, *full)})  # fmt: skip
        widths = [(-p, sz + p - f) for p, sz, f in zip(padding, size, full)]
        out = pad(out, tuple(w for pair in reversed(widths) for w in pair))
    return _add_bias(op, out, bias)
