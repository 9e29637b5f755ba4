"""Convolution as ops: conv2d (conv1d is conv2d with height 1), with stride, padding, dilation, groups.

Forward is im2col + batched matmuls. The columns are laid out per sample, (N, C·kh·kw, OH·OW):
gathered from a strided *view* of the padded input, the copy's innermost run is a whole output row
(contiguous when stride 1); W·cols broadcasts W over the samples and writes straight into a
contiguous (N, O, OH, OW) output, so nothing downstream meets a transposed layout; torch's channels_last
(input or weight so: `layout`) is colsᵀ·Wᵀ written as NHWC, and both gradients are laid out so. Backward is two ops
of its own: `conv2d_input_grad` (Wᵀ·grad, then col2im; at stride 1 the kw taps of each kernel row are
gathered into the matmul so col2im is kh contiguous row adds) and `conv2d_weight_grad` (per-sample
cols·gradᵀ summed over the batch). Each of the three is linear in each argument and their derivatives
are each other, so every order of gradient is exact. Columns are built for slices of the batch of at
most min(CACHE_BUDGET, COLUMNS_BUDGET) bytes, each gathered from the input padded once for the whole
batch: the matmul reads them while cached, and memory stays bounded on large inputs. Works with xp =
numpy or cupy (both have as_strided). `_columns` and `_col2im` (the channel-major (C, kh, kw, N, OH, OW)
layout) serve unfold / fold.
"""

import functools

from distgraph.autograd.function import apply
from distgraph.errors import ShapeError
from distgraph.ops import same_dtype
from distgraph.ops.autocast import autocast_op
from distgraph.ops.channels_last import laid_out, suggests
from distgraph.ops.regions import pad
from distgraph.ops.registry import defop


def _windows(xp, x, kh, kw, stride, dilation, oh, ow):
    """(N, C, OH, OW, kh, kw) strided view of an already padded (N, C, H, W) array."""
    sn, sc, sh, sw = x.strides
    shape = (x.shape[0], x.shape[1], oh, ow, kh, kw)
    strides = (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    lib = xp.lib.stride_tricks if hasattr(xp, "lib") else xp
    return lib.as_strided(x, shape=shape, strides=strides)


def _out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


COLUMNS_BUDGET = 1 << 26  # bytes of im2col columns materialized at once; bigger batches run in slices


def _batches(n, bytes_per_sample):
    """Slices of the batch whose columns fit COLUMNS_BUDGET (at least one sample each): memory stays
    bounded on large inputs, and small batches are one slice."""
    step = max(1, COLUMNS_BUDGET // max(1, bytes_per_sample))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _columns(xp, x, w_shape, stride, padding, dilation, groups):
    """im2col: (groups, C/g·kh·kw, N·OH·OW) and the output size."""
    n, c, h, wd = x.shape
    _, cg, kh, kw = w_shape
    oh, ow = (
        _out_size(h, kh, stride[0], padding[0], dilation[0]),
        _out_size(wd, kw, stride[1], padding[1], dilation[1]),
    )
    cols = _windows(xp, _padded(xp, x, padding), kh, kw, stride, dilation, oh, ow)  # (N, C, OH, OW, kh, kw) view
    cols = xp.ascontiguousarray(cols.transpose(1, 4, 5, 0, 2, 3))  # (C, kh, kw, N, OH, OW): the one copy
    return cols.reshape(groups, cg * kh * kw, n * oh * ow), oh, ow


def _padded(xp, x, padding):
    """x zero-padded on its last two dims (zeros + one slice assignment: cheaper than xp.pad on small
    batches); x itself when there is no padding."""
    if not (padding[0] or padding[1]):
        return x
    n, c, h, wd = x.shape
    xpad = xp.zeros((n, c, h + 2 * padding[0], wd + 2 * padding[1]), dtype=x.dtype)
    xpad[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd] = x
    return xpad


def _sample_windows(xp, x, w_shape, stride, padding, dilation, oh, ow):
    """(N, C, kh, kw, OH, OW) strided view of x padded once for the whole batch: each slice of the batch
    then gathers its columns with one copy (padding slice by slice would allocate and copy it again)."""
    kh, kw = w_shape[2:]
    return _windows(xp, _padded(xp, x, padding), kh, kw, stride, dilation, oh, ow).transpose(0, 1, 4, 5, 2, 3)


def _sample_columns(xp, windows, groups):
    """im2col of a batch slice of `_sample_windows`: (M, groups, C/g·kh·kw, OH·OW), gathered with one copy
    whose innermost run is an output row; each sample's block is one matrix of the batched matmuls."""
    m, c, kh, kw, oh, ow = windows.shape
    return xp.ascontiguousarray(windows).reshape(m, groups, c // groups * kh * kw, oh * ow)


CACHE_BUDGET = 1 << 20  # bytes of columns per step of the batched ops: the matmul reads them while cached


def _chunks(n, bytes_per_sample):
    step = max(1, min(COLUMNS_BUDGET, CACHE_BUDGET) // max(1, bytes_per_sample))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


@defop("conv2d", kind="matmul", save=(0, 1))
def _conv2d(xp, x, w, *, stride, padding, dilation, groups, channels_last=False):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = _out_size(h, kh, stride[0], padding[0], dilation[0]), _out_size(wd, kw, stride[1], padding[1], dilation[1])
    wg = w.reshape(groups, o // groups, -1)
    win = _sample_windows(xp, x, w.shape, stride, padding, dilation, oh, ow)
    if channels_last:  # colsᵀ·Wᵀ writes each output pixel's channels together: NHWC memory, no copy after
        out = xp.empty((n, oh, ow, o), dtype=xp.result_type(x, w))
        rows = out.reshape(n, oh * ow, groups, o // groups).transpose(0, 2, 1, 3)  # (N, groups, OH·OW, O/g)
        for s in _chunks(n, c * kh * kw * oh * ow * x.itemsize):
            xp.matmul(_sample_columns(xp, win[s], groups).swapaxes(-1, -2), wg.swapaxes(-1, -2), out=rows[s])
        return out.transpose(0, 3, 1, 2)
    out = xp.empty((n, o, oh, ow), dtype=xp.result_type(x, w))  # contiguous NCHW: no transpose downstream
    for s in _chunks(n, c * kh * kw * oh * ow * x.itemsize):
        cols = _sample_columns(xp, win[s], groups)
        xp.matmul(wg, cols, out=out[s].reshape(-1, groups, o // groups, oh * ow))  # wg broadcast over samples
    return out


def _col2im(gx, cols, stride, dilation):
    """Add columns (C, kh, kw, N, OH, OW) back into the padded image gx (C, N, Hp, Wp), in place: each
    kernel tap adds its strided slice (the adjoint of `_columns`' gather)."""
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    for i in range(kh):
        r0 = i * dilation[0]
        rows = slice(r0, r0 + stride[0] * (oh - 1) + 1, stride[0])
        for j in range(kw):
            c0 = j * dilation[1]
            gx[:, :, rows, c0 : c0 + stride[1] * (ow - 1) + 1 : stride[1]] += cols[:, i, j]


def _sample_rows(g, groups):
    """(N, O, OH, OW) -> (N, groups, O/g, OH·OW); a view for the forward's output and most layouts."""
    n, o, oh, ow = g.shape
    return g.reshape(n, groups, o // groups, oh * ow)


@defop("conv2d_input_grad", kind="matmul", save=(0, 1))
def _conv2d_input_grad(xp, g, w, *, input_shape, stride, padding, dilation, groups, channels_last=False):
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    oh, ow = g.shape[2], g.shape[3]
    hp, wp = h + 2 * padding[0], wd + 2 * padding[1]
    wg = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    if stride[0] == stride[1] == 1 and o > kh * c:
        # Stride 1, few input channels (a network's first layer): gathering the kw shifts below would copy
        # more than it saves, so one matmul over the whole batch, the gradient's rows padded to the input
        # width (channel-major), and each tap's contribution added as one contiguous run per image at a
        # flat offset (its zero columns land on the margins; the tail keeps the last run inside).
        flat = xp.zeros((c, n, hp * wp + (kw - 1) * dilation[1]), dtype=g.dtype)
        for s in _batches(n, c * kh * kw * oh * wp * g.itemsize):
            wide = xp.zeros((o, s.stop - s.start, oh, wp), dtype=g.dtype)
            wide[..., :ow] = g[s].transpose(1, 0, 2, 3)
            cols = (wg @ wide.reshape(groups, o // groups, -1)).reshape(c, kh, kw, -1, oh * wp)
            for i in range(kh):
                for j in range(kw):
                    at = i * dilation[0] * wp + j * dilation[1]
                    flat[:, s, at : at + oh * wp] += cols[:, i, j]
        gx = flat[:, :, : hp * wp].reshape(c, n, hp, wp).transpose(1, 0, 2, 3)
    elif stride[0] == stride[1] == 1:
        # Stride 1, in flat (row-major, padded-width) coordinates: tap (i, j) adds Wᵢⱼᵀ·g shifted by
        # i·d·Wp + j·d. The kw shifts of each kernel row are gathered into the matmul's inner dimension
        # (G: the gradient, rows padded to the input width, stacked kw times, each shifted by j·d), so
        # one matmul gives each kernel row's whole contribution and kh contiguous adds replace col2im's
        # kh·kw strided ones. The gradient's zero pad columns land on the input's margins.
        og, t = o // groups, (kw - 1) * dilation[1]
        lq = oh * wp + t
        wr = w.reshape(groups, og, cg, kh, kw).transpose(0, 3, 2, 4, 1).reshape(groups, kh * cg, kw * og)
        flat = xp.zeros((n, groups, cg, hp * wp + t), dtype=g.dtype)
        for s in _chunks(n, (kw * o + kh * c) * lq * g.itemsize):
            m = s.stop - s.start
            e = xp.zeros((m, o, oh * wp + 2 * t), dtype=g.dtype)
            e[:, :, t : t + oh * wp].reshape(m, o, oh, wp)[..., :ow] = g[s]
            e = e.reshape(m, groups, og, -1)
            gs = xp.empty((m, groups, kw, og, lq), dtype=g.dtype)
            for j in range(kw):
                gs[:, :, j] = e[..., t - j * dilation[1] : t - j * dilation[1] + lq]
            rows = (wr @ gs.reshape(m, groups, kw * og, lq)).reshape(m, groups, kh, cg, lq)
            fs = flat[s]
            for i in range(kh):
                fs[..., i * dilation[0] * wp : i * dilation[0] * wp + lq] += rows[:, :, i]
        gx = flat.reshape(n, c, hp * wp + t)[:, :, : hp * wp].reshape(n, c, hp, wp)
    else:
        gx = xp.zeros((c, n, hp, wp), dtype=g.dtype)
        for s in _chunks(n, c * kh * kw * oh * ow * g.itemsize):
            cols = (wg @ _sample_rows(g[s], groups)).reshape(-1, c, kh, kw, oh, ow)
            _col2im(gx[:, s], cols.transpose(1, 2, 3, 0, 4, 5), stride, dilation)
        gx = gx.transpose(1, 0, 2, 3)
    return laid_out(xp, gx[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd], channels_last)


@defop("conv2d_weight_grad", kind="matmul", save=(0, 1))
def _conv2d_weight_grad(xp, x, g, *, weight_shape, stride, padding, dilation, groups, channels_last=False):
    o, cg, kh, kw = weight_shape
    n, c = x.shape[:2]
    oh, ow = g.shape[2], g.shape[3]
    gw = xp.zeros((groups, cg * kh * kw, o // groups), dtype=xp.result_type(x, g))
    win = _sample_windows(xp, x, weight_shape, stride, padding, dilation, oh, ow)
    for s in _chunks(n, c * kh * kw * oh * ow * x.itemsize):
        cols = _sample_columns(xp, win[s], groups)
        # per sample (C/g·kh·kw, O/g) as cols · gradᵀ: OpenBLAS runs this form of the long-K product faster
        gw += (cols @ _sample_rows(g[s], groups).transpose(0, 1, 3, 2)).sum(0)
    return laid_out(xp, gw.transpose(0, 2, 1).reshape(o, cg, kh, kw), channels_last)


def _attrs(ctx):
    """The attributes the three ops share; conv2d's `channels_last` (the layout of all three results) with them."""
    a = ctx.attrs
    return {k: a[k] for k in ("stride", "padding", "dilation", "groups", "channels_last") if k in a}


def conv_rules(conv, input_grad, weight_grad):
    """The differentiable rules of a convolution op and its two gradient ops, each written with the others
    (so gradients of every order are exact): conv2d's here, conv3d's (ops/conv3d.py) the same way."""

    @conv.grad
    def _(ctx, g):
        x, w = ctx.inputs
        a = _attrs(ctx)
        gx = apply(input_grad, (g, w), {"input_shape": tuple(x.shape), **a}) if ctx.next[0] is not None else None
        gw = apply(weight_grad, (x, g), {"weight_shape": tuple(w.shape), **a}) if ctx.next[1] is not None else None
        return gx, gw

    @input_grad.grad
    def _(ctx, gg):  # d/dg <gg, input_grad(g, w)> = conv(gg, w); d/dw = weight_grad(gg, g)
        g, w = ctx.inputs
        a = _attrs(ctx)
        dg = apply(conv, (gg, w), a) if ctx.next[0] is not None else None
        dw = apply(weight_grad, (gg, g), {"weight_shape": tuple(w.shape), **a}) if ctx.next[1] is not None else None
        return dg, dw

    @weight_grad.grad
    def _(ctx, gw):  # d/dx <gw, weight_grad(x, g)> = input_grad(g, gw); d/dg = conv(x, gw)
        x, g = ctx.inputs
        a = _attrs(ctx)
        dx = apply(input_grad, (g, gw), {"input_shape": tuple(x.shape), **a}) if ctx.next[0] is not None else None
        dgr = apply(conv, (x, gw), a) if ctx.next[1] is not None else None
        return dx, dgr


conv_rules(_conv2d, _conv2d_input_grad, _conv2d_weight_grad)


def ntuple(v, n, name, op, least=None):
    """n ints from an int or n of them, each at least `least`: by default padding (and output_padding)
    may be 0, a kernel size, stride or dilation must be ≥ 1."""
    t = (v,) * n if isinstance(v, int) else tuple(v)
    if len(t) != n or not all(isinstance(i, int) for i in t):
        what = "a pair of ints" if n == 2 else f"a tuple of {n} ints"
        raise ShapeError(f"{op}: {name} must be an int or {what}, got {v!r}")
    if least is None:
        least = 0 if name in ("padding", "output_padding") else 1
    if min(t) < least:
        raise ShapeError(f"{op}: {name} must be {'≥ 0' if least == 0 else 'positive'}, got {v!r}")
    return t


def window_stride(stride, kernel_size):
    """A pooling window's stride: the kernel size where none is given, which torch's pooling reads from
    None and from an empty list or tuple alike (TorchScript-style code passes `stride=[]`)."""
    return kernel_size if stride is None or (isinstance(stride, list | tuple) and not stride) else stride


def _pair(v, name, op):
    return ntuple(v, 2, name, op)


def check_bias(op, bias, weight, channels):
    """A convolution's bias holds one value per output channel: shape (channels,)."""
    if bias is not None and tuple(bias.array.shape) != (channels,):
        raise ShapeError(
            f"{op}: given weight of size {tuple(weight.shape)}, expected bias to be 1-dimensional with {channels} "
            f"elements, but got bias of size {tuple(bias.shape)} instead"
        )


def layout(input, weight):
    """torch's convolution layout: channels_last results (output, both gradients) when the input or the weight
    suggests it (ops/channels_last.py), an attribute of the ops only then, so a row-major graph is as it was."""
    return {"channels_last": True} if suggests(input.array) or suggests(weight.array) else {}


def batch_optional(batched_ndim):
    """Accept torch's unbatched input (one dim fewer than `batched_ndim`) by running a batch of one."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(input, *args, **kwargs):
            if input.ndim != batched_ndim - 1:
                return fn(input, *args, **kwargs)
            out = fn(input.unsqueeze(0), *args, **kwargs)
            return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)

        return call

    return wrap


def check_ranks_and_groups(op, input, weight, groups):
    """A 4-D input (a 3-D one is batched by `batch_optional`), a 4-D weight and a positive int `groups`."""
    if input.ndim != 4 or weight.ndim != 4:
        raise ShapeError(
            f"{op}: expected 3-D or 4-D input and 4-D weight, got input {tuple(input.shape)} and weight "
            f"{tuple(weight.shape)}"
        )
    if not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {groups!r}")


@batch_optional(4)
@autocast_op("conv2d")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight (O, C/groups, kh, kw)."""
    check_ranks_and_groups("conv2d", input, weight, groups)
    if weight.array.dtype != input.array.dtype or bias is not None and bias.array.dtype != input.array.dtype:
        same_dtype.conv(input, weight, bias)  # torch's words: it promotes nothing here
    n, c, h, w = input.array.shape
    o, cg, kh, kw = weight.array.shape
    if c % groups or o % groups or c // groups != cg:
        raise ShapeError(
            f"conv2d: input {tuple(input.shape)} with groups={groups} needs weight (O, {c // groups if groups else c}, kh, "
            f"kw) with O divisible by groups, got weight {tuple(weight.shape)}"
        )
    stride, dilation = _pair(stride, "stride", "conv2d"), _pair(dilation, "dilation", "conv2d")
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ShapeError("conv2d: padding='same' is not supported for strided convolutions")
        total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        if total[0] % 2 or total[1] % 2:  # even effective kernel: torch puts the odd pixel bottom/right
            input = pad(input, (0, total[1] % 2, 0, total[0] % 2))
            h, w = h + total[0] % 2, w + total[1] % 2
        padding = (total[0] // 2, total[1] // 2)
    elif isinstance(padding, str):
        raise ShapeError(f"conv2d: padding must be 'valid', 'same', an int or a pair of ints, got {padding!r}")
    padding = _pair(padding, "padding", "conv2d")
    oh = _out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = _out_size(w, kw, stride[1], padding[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"conv2d: input {tuple(input.shape)} is smaller than the kernel {(kh, kw)} (dilation {dilation}, "
            f"padding {padding}): output would be {(oh, ow)}"
        )
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, **layout(input, weight)}
    out = apply(_conv2d, (input, weight), attrs)
    if bias is not None:
        check_bias("conv2d", bias, weight, o)
        out = out + bias.reshape(1, o, 1, 1)
    return out


@batch_optional(3)
@autocast_op("conv1d")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d: input (N, C, L) or (C, L), weight (O, C/groups, k) — conv2d with height 1."""
    if input.ndim != 3 or weight.ndim != 3:
        raise ShapeError(
            f"conv1d: expected 2-D or 3-D input and 3-D weight, got input {tuple(input.shape)} and weight "
            f"{tuple(weight.shape)}"
        )
    check_bias("conv1d", bias, weight, weight.shape[0])
    same_dtype.conv(input, weight, bias)
    (s,), (d,) = ntuple(stride, 1, "stride", "conv1d"), ntuple(dilation, 1, "dilation", "conv1d")
    pad = padding if isinstance(padding, str) else (0, *ntuple(padding, 1, "padding", "conv1d"))
    out = conv2d(input.unsqueeze(2), weight.unsqueeze(2), None, (1, s), pad, (1, d), groups).squeeze(2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out


# ---- unfold / fold: im2col and col2im as ops of their own -------------------------------------------------------
@defop("im2col", kind="other", save=())
def _im2col(xp, x, *, kernel, stride, padding, dilation):
    n, c = x.shape[:2]
    cols, oh, ow = _columns(xp, x, (c, c, *kernel), stride, padding, dilation, 1)  # (1, C·kh·kw, N·L)
    return cols.reshape(-1, n, oh * ow).transpose(1, 0, 2)  # (N, C·kh·kw, L)


@defop("col2im", kind="other", save=())
def _col2im_op(xp, cols, *, output_size, kernel, stride, padding, dilation):
    n, ckk, _ = cols.shape
    (h, w), (kh, kw) = output_size, kernel
    oh, ow = _out_size(h, kh, stride[0], padding[0], dilation[0]), _out_size(w, kw, stride[1], padding[1], dilation[1])
    c = ckk // (kh * kw)
    gx = xp.zeros((c, n, h + 2 * padding[0], w + 2 * padding[1]), dtype=cols.dtype)
    _col2im(gx, cols.transpose(1, 0, 2).reshape(c, kh, kw, n, oh, ow), stride, dilation)
    return gx[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w].transpose(1, 0, 2, 3)


def _window_attrs(ctx):
    return {k: ctx.attrs[k] for k in ("kernel", "stride", "padding", "dilation")}


# each is the other's adjoint, so their derivatives are each other and every order of gradient is exact
_im2col.grad(lambda ctx, g: apply(_col2im_op, (g,), {**_window_attrs(ctx), "output_size": ctx.inputs[0].shape[2:]}))
_col2im_op.grad(lambda ctx, g: apply(_im2col, (g,), _window_attrs(ctx)))


def _window_args(op, kernel_size, dilation, padding, stride):
    return {
        "kernel": _pair(kernel_size, "kernel_size", op),
        "stride": _pair(stride, "stride", op),
        "padding": _pair(padding, "padding", op),
        "dilation": _pair(dilation, "dilation", op),
    }


@batch_optional(4)
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.unfold: sliding blocks of (N, C, H, W) or (C, H, W) as columns (N, C·kh·kw, L)."""
    if input.ndim != 4:
        raise ShapeError(f"unfold: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got {tuple(input.shape)}")
    a = _window_args("unfold", kernel_size, dilation, padding, stride)
    out = [
        _out_size(input.shape[2 + i], a["kernel"][i], a["stride"][i], a["padding"][i], a["dilation"][i]) for i in (0, 1)
    ]
    if min(out) <= 0:
        raise ShapeError(
            f"unfold: input {tuple(input.shape)} is smaller than the kernel {a['kernel']} (dilation {a['dilation']}, "
            f"padding {a['padding']}): there would be {tuple(out)} blocks"
        )
    return apply(_im2col, (input,), a)


@batch_optional(3)
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.fold: sum columns (N, C·kh·kw, L) or (C·kh·kw, L) back into (N, C, H, W) blocks;
    overlapping blocks add up (the adjoint of unfold)."""
    a = _window_args("fold", kernel_size, dilation, padding, stride)
    size = _pair(output_size, "output_size", "fold")
    (kh, kw), s, p, d = a["kernel"], a["stride"], a["padding"], a["dilation"]
    blocks = (_out_size(size[0], kh, s[0], p[0], d[0]), _out_size(size[1], kw, s[1], p[1], d[1]))
    if input.ndim != 3 or input.shape[1] % (kh * kw) or min(blocks) <= 0 or input.shape[2] != blocks[0] * blocks[1]:
        raise ShapeError(
            f"fold: input {tuple(input.shape)} must be (N, C·{kh}·{kw}, L) or (C·{kh}·{kw}, L) with L = "
            f"{blocks[0]}·{blocks[1]} blocks for output_size {size}, kernel {(kh, kw)}, dilation {d}, padding {p}, "
            f"stride {s}"
        )
    return apply(_col2im_op, (input,), {**a, "output_size": size})
