"""Activation functions beyond relu/sigmoid/tanh: leaky_relu, elu, gelu, silu, softplus, mish, ...

Each is either one elementwise op with its own derivative, or a one-line composition of existing ops.
"""

import functools
import math

import numpy as np

from distgraph.autograd.function import records
from distgraph.autograd.node_names import named
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import cache_blocks, kernels, same_dtype
from distgraph.ops.autocast import autocast_op
from distgraph.ops.compare import gt, le, logical_and, logical_not, lt
from distgraph.ops.elementwise import (
    EW,
    _erf_fwd,
    _zero_grad,
    add,
    clamp,
    const,
    div,
    exp,
    mul,
    neg,
    rsub,
    sigmoid,
    square,
    sub,
    tanh,
    where,
)
from distgraph.ops.elementwise import (
    abs as abs_,
)
from distgraph.ops.registry import defop


@defop("step_mask", kind=EW, save=())
def _step_mask(xp, cond, like, inside=1.0, outside=0.0):
    return xp.where(cond, inside, outside).astype(like.dtype, copy=False)


_step_mask.grad(lambda ctx, g: (None, _zero_grad(ctx, g)))  # torch's zeros_like(grad): 0 at a NaN g too


def step_mask(cond, like, inside=1.0, outside=0.0):
    """`inside` where cond holds, else `outside`, as a function of `like` whose derivative is 0.

    The gradient of a piecewise-linear op (leaky_relu, hardtanh) is g·step_mask(...): built on
    `like`, it stays in the graph under create_graph, as torch's does (relu's own: `relu_backward`), so a double
    backward through it is a zero gradient, not a tensor that does not require grad.
    """
    return _step_mask(cond, like, inside=inside, outside=outside)


@defop("masked_grad", kind=EW, save=())
def _masked_grad(xp, g, keep, like):
    return xp.where(keep, g, 0).astype(g.dtype, copy=False)


_masked_grad.grad(lambda ctx, gg: (masked_grad(gg, ctx.inputs[1], ctx.inputs[2]), None, _zero_grad(ctx, gg)))


def masked_grad(g, keep, like):
    """g where `keep` holds, else 0: chosen, not multiplied by a 0/1 mask, so an inf or NaN g gives 0
    outside, as torch's backward kernels (hardtanh's, hardswish's, threshold's) choose. A function of
    `like` with derivative 0, so under create_graph it stays in the graph (see step_mask)."""
    return _masked_grad(g, keep, like)


@defop("leaky_relu", kind=EW)
def _leaky_relu(xp, x, negative_slope=0.01):
    if x.dtype.kind != "f":
        return xp.where(x > 0, x, x * negative_slope)
    return kernels.select(xp, x > 0, x, x * negative_slope)


@_leaky_relu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    return mul(g, step_mask(gt(x, 0), x, outside=ctx.attrs.get("negative_slope", 0.01)))


@_leaky_relu.array_grad
def _(ctx, g):
    """The rule above on arrays: g where x > 0, else g · slope (g · 1 is g, bit for bit)."""
    x = ctx.inputs[0].array
    return kernels.select(ctx.inputs[0].device.xp, x > 0, g, g * ctx.attrs.get("negative_slope", 0.01))


def leaky_relu(input, negative_slope=0.01):
    return _leaky_relu(input, negative_slope=negative_slope)


@defop("elu", kind=EW)
def _elu(xp, x, alpha=1.0):
    curve = xp.expm1(xp.minimum(x, 0))  # +0 at x = -0 (torch: -0), as the writer (ops/writers.py) computes
    curve = xp.multiply(curve, alpha, out=curve) if curve.ndim else alpha * curve
    return kernels.select(xp, x > 0, x, curve.astype(x.dtype, copy=False))


# torch's elu_backward from the input (F.elu saves x, not its output, which may be written later): g times
# the slope, alpha·exp(x) below 0, alpha at 0, 1 above (and at a NaN x)
_elu.grad(lambda ctx, g: _elu_backward(g, ctx.inputs[0], alpha=ctx.attrs.get("alpha", 1.0)))


@defop("elu_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _elu_backward(xp, g, x, alpha):
    if g.shape != x.shape or g.dtype != x.dtype:
        slope = xp.where(x < 0, alpha * xp.exp(xp.minimum(x, 0)), xp.where(x <= 0, alpha, 1.0))
        return (g * slope).astype(g.dtype, copy=False)
    curve = xp.exp(xp.minimum(x, 0))  # alpha · exp(x) at x <= 0 (alpha at 0), 1 above and at a NaN
    curve = xp.multiply(curve, alpha, out=curve) if curve.ndim else alpha * curve
    return kernels.select(xp, ~(x <= 0), g, (g * curve).astype(g.dtype, copy=False))


_elu.array_grad(
    lambda ctx, g: _elu_backward.forward(
        ctx.inputs[0].device.xp, g, ctx.inputs[0].array, alpha=ctx.attrs.get("alpha", 1.0)
    )
)


@_elu_backward.grad
def _(ctx, gg):
    """torch's elu_double_backward: x's is elu_backward(gg·g) times the mask x < 0, a product, so an inf
    or NaN gg·g gives NaN at x >= 0 too (the slope is constant there: at 0 as well, though elu_backward
    takes x <= 0 for its curve)."""
    g, x = ctx.inputs
    alpha = ctx.attrs["alpha"]
    return _elu_backward(gg, x, alpha=alpha), mul(_elu_backward(mul(gg, g), x, alpha=alpha), step_mask(lt(x, 0), x))


def elu(input, alpha=1.0):
    return _elu(input, alpha=alpha)


_FAST = (np.dtype(np.float32), np.dtype(np.float64))  # dtypes the in-place kernels (torch's formulas) take
_TANH_BETA = 1.4142135623730951 * 1.1283791670955126 * 0.5  # torch's kBeta: M_SQRT2 · M_2_SQRTPI · 0.5
_SQRT1_2, _PDF_SCALE = math.sqrt(0.5), 1.1283791670955126 * 0.7071067811865476 * 0.5  # torch's M_SQRT1_2, kBeta


# silu's backward and gelu's kernels on large host arrays: a block at a time (ops/cache_blocks.py), the same bits
_silu_backward_blocks = functools.partial(cache_blocks.elementwise, kernels.silu_backward, work=1)
_gelu_blocks = functools.partial(cache_blocks.elementwise, kernels.gelu)
_gelu_backward_blocks = functools.partial(cache_blocks.elementwise, kernels.gelu_backward)
_gelu_kept_blocks = functools.partial(cache_blocks.elementwise, kernels.gelu, kept=True)
_gelu_backward_kept_blocks = functools.partial(cache_blocks.elementwise, kernels.gelu_backward_kept)


# silu and gelu are single ops with torch's backward formulas, g times one derivative: through the product
# rule of their compositions an inf g gave inf - inf = NaN where torch's gives ±inf
@defop("silu", kind=EW)
def _silu(xp, x):
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(kernels.silu, xp, x)
    return x * kernels.sigmoid(xp, x)


_silu.grad(lambda ctx, g: _silu_backward(g, ctx.inputs[0]))
_silu.array_grad(lambda ctx, g: _on_1d(_silu_backward_blocks, ctx.inputs[0].device.xp, g, ctx.inputs[0].array))


# the backward kernels are ops (as torch's silu_backward, gelu_backward), one kernel for the engine's fast
# mode and for a graph of the backward (create_graph, capture): the same bits in both
@defop("silu_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _silu_backward(xp, g, x):
    return _on_1d(_silu_backward_blocks, xp, g, x)


@_silu_backward.grad
def _(ctx, gg):
    """torch's silu double backward: g's is silu_backward(gg), x's gg · g · s(1 - s)(2 + x(1 - 2s))."""
    g, x = ctx.inputs
    s = sigmoid(x)
    d2 = mul(mul(s, rsub(s, 1)), add(mul(x, rsub(mul(s, 2), 1)), 2))
    return _silu_backward(gg, x), mul(mul(gg, g), d2)


def _is_half(x):
    return x.dtype.itemsize == 2 and x.dtype.kind in "fV"  # float16, bfloat16


def _on_1d(kernel, xp, *arrays, **attrs):
    """kernel(xp, *arrays) for float32/float64 arrays, a 0-d one as 1-d (its in-place steps need an array);
    a half-precision one computed in float32 and rounded back, as torch's kernels do (its opmath type)."""
    dtype = arrays[-1].dtype
    if dtype not in _FAST:
        arrays = tuple(a.astype(np.float32) for a in arrays)
    if arrays[-1].ndim:
        out = kernel(xp, *arrays, **attrs)
    else:
        out = kernel(xp, *(a.reshape(1) for a in arrays), **attrs)
        out = tuple(o.reshape(()) for o in out) if type(out) is tuple else out.reshape(())
    if type(out) is tuple:  # (result, what its backward keeps): that stays in the kernel's dtype
        return out[0] if out[0].dtype == dtype else out[0].astype(dtype), out[1]
    return out if out.dtype == dtype else out.astype(dtype)


def silu(input):
    return _silu(input)


@defop("gelu", kind=EW)
def _gelu(xp, x, approximate):
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(_gelu_blocks, xp, x, approximate=approximate)
    if approximate == "tanh":
        return (x * 0.5) * (xp.tanh((x + x * x * x * 0.044715) * _TANH_BETA) + 1)
    return (x * 0.5) * (_erf_fwd(xp, x * _SQRT1_2) + 1)


@defop("gelu_saving", kind=EW, saves_extra=True)
def _gelu_saving(xp, x, approximate):
    """`gelu`, keeping what its backward would recompute (kernels.gelu's `kept`: 1 + erf(x·√½), or the tanh;
    one array like x, float32 for a half x) for its array rule: (output, kept)."""
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(_gelu_kept_blocks, xp, x, approximate=approximate)
    return _gelu.forward(xp, x, approximate), None


@_gelu.grad
@_gelu_saving.grad
def _(ctx, g):
    return _gelu_backward(g, ctx.inputs[0], approximate=ctx.attrs["approximate"])


@_gelu.array_grad
@_gelu_saving.array_grad
def _(ctx, g):
    """The rule above on arrays: from what the forward kept where it kept it (ctx.saved), else recomputing."""
    x, approximate = ctx.inputs[0], ctx.attrs["approximate"]
    if ctx.saved is None:
        return _on_1d(_gelu_backward_blocks, x.device.xp, g, x.array, approximate=approximate)
    return _on_1d(_gelu_backward_kept_blocks, x.device.xp, g, ctx.saved, x.array, approximate=approximate)


@defop("gelu_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _gelu_backward(xp, g, x, approximate):
    return _on_1d(_gelu_backward_blocks, xp, g, x, approximate=approximate)


@_gelu_backward.grad
def _(ctx, gg):
    """torch's gelu_double_backward: g's is gelu_backward(gg), x's gg · g · gelu''(x)."""
    g, x = ctx.inputs
    approximate = ctx.attrs["approximate"]
    if approximate == "tanh":  # f = x/2, q = 1 - tanh(inner)², h = β(1 + 3κx²): (f·q·h)' + q·h/2
        t = tanh(mul(add(x, mul(mul(square(x), x), 0.044715)), _TANH_BETA))
        f, q = mul(x, 0.5), rsub(square(t), 1)
        h = mul(add(mul(square(x), 3 * 0.044715), 1), _TANH_BETA)
        q_prime_fh = mul(mul(f, h), mul(mul(mul(q, t), -2.0), h))
        h_prime_fq = mul(mul(f, q), mul(x, 6 * 0.044715 * _TANH_BETA))
        d2 = add(add(mul(mul(q, h), 1.0), q_prime_fh), h_prime_fq)
    else:  # pdf · (2 - x²)
        pdf = mul(exp(mul(square(x), -0.5)), _PDF_SCALE)
        d2 = mul(pdf, rsub(square(x), 2))
    return _gelu_backward(gg, x, approximate=approximate), mul(mul(gg, g), d2)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    # where eager autograd records it, the op that keeps its erf (tanh) for the backward (as recurrent.py's
    # rnn_layer_saving); under no_grad and in a captured graph the one that keeps nothing, as before. Not for a
    # half input: its kept array is float32 (twice the input's bytes, against torch's input alone)
    keeps = records((input,)) and not _is_half(input.array)
    return (_gelu_saving if keeps else _gelu)(input, approximate=approximate)


@defop("softplus", kind=EW)
def _softplus(xp, x, beta=1.0, threshold=20.0):
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(kernels.softplus, xp, x, beta=beta, threshold=threshold)
    bx = x * beta
    return xp.where(bx > threshold, x, xp.logaddexp(0, bx) / beta).astype(x.dtype, copy=False)


def _softplus_attrs(ctx):
    return {"beta": ctx.attrs.get("beta", 1.0), "threshold": ctx.attrs.get("threshold", 20.0)}


_softplus.grad(lambda ctx, g: _softplus_backward(g, ctx.inputs[0], **_softplus_attrs(ctx)))
_softplus.array_grad(
    lambda ctx, g: _on_1d(
        kernels.softplus_backward, ctx.inputs[0].device.xp, g, ctx.inputs[0].array, **_softplus_attrs(ctx)
    )
)


@defop("softplus_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _softplus_backward(xp, g, x, beta, threshold):
    """torch's softplus_backward: g where x·β > threshold, else g·z / (z + 1), z = exp(x·β)."""
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(kernels.softplus_backward, xp, g, x, beta=beta, threshold=threshold)
    bx = x * beta
    return xp.where(bx > threshold, g, g * (1 / (1 + xp.exp(-bx)))).astype(g.dtype, copy=False)


@_softplus_backward.grad
def _(ctx, gg):
    """torch's softplus_double_backward: g's is softplus_backward(gg); x's sigmoid_backward(gg·g, s)·β where
    x·β < threshold, else 0, s = sigmoid(x·β)."""
    g, x = ctx.inputs
    beta, threshold = ctx.attrs["beta"], ctx.attrs["threshold"]
    bx = mul(x, beta)
    s = sigmoid(bx)
    d2 = mul(mul(mul(mul(gg, g), rsub(s, 1)), s), step_mask(lt(bx, threshold), x, inside=beta))
    return _softplus_backward(gg, x, beta=beta, threshold=threshold), d2


def softplus(input, beta=1.0, threshold=20.0):
    return _softplus(input, beta=beta, threshold=threshold)


@defop("mish", kind=EW)
def _mish(xp, x):
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(kernels.mish, xp, x)  # torch's x·tanh(log1p(exp(x))), no threshold
    return x * xp.tanh(_softplus.forward(xp, x))


_mish.grad(lambda ctx, g: _mish_backward(g, ctx.inputs[0]))
_mish.array_grad(lambda ctx, g: _on_1d(kernels.mish_backward, ctx.inputs[0].device.xp, g, ctx.inputs[0].array))


@defop("mish_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _mish_backward(xp, g, x):
    """torch's mish_backward: g·(t + x·s·(1 - t²)), s = sigmoid(x), t = tanh(softplus(x))."""
    if x.dtype in _FAST or _is_half(x):
        return _on_1d(kernels.mish_backward, xp, g, x)
    t = xp.tanh(_softplus.forward(xp, x))
    return g * (t + x * (1 / (1 + xp.exp(-x))) * (1 - t * t))


@_mish_backward.grad
def _(ctx, gg):
    """g's is mish_backward(gg); x's gg · g · mish''(x), mish'' = s(1 - t²)(2 + x(1 - s) - 2x·s·t)."""
    g, x = ctx.inputs
    s, t = sigmoid(x), tanh(softplus(x))
    inner = sub(add(mul(x, rsub(s, 1)), 2), mul(mul(mul(x, s), t), 2))
    return _mish_backward(gg, x), mul(mul(gg, g), mul(mul(s, rsub(square(t), 1)), inner))


def mish(input):
    return _mish(input)


@defop("hardtanh", kind=EW)
def _hardtanh(xp, x, min_val=-1.0, max_val=1.0):
    return xp.clip(x, min_val, max_val).astype(x.dtype, copy=False)


@_hardtanh.grad
def _(ctx, g):
    """torch's hardtanh gradient: 1 strictly inside, 0 at the bounds (clamp's is 1 on the closed
    interval, which made relu6(0), and hardsigmoid/hardswish at x = ±3, differ from torch)."""
    x, a = ctx.inputs[0], ctx.attrs
    return masked_grad(g, logical_and(gt(x, a["min_val"]), lt(x, a["max_val"])), x)


def hardtanh(input, min_val=-1.0, max_val=1.0):
    """clamp(x, min_val, max_val), one op whose gradient stays differentiable (see step_mask)."""
    if input.array.dtype.kind != "f":
        return clamp(input, min_val, max_val)  # integer inputs have no gradient: clamp's dtype rules
    return _hardtanh(input, min_val=float(min_val), max_val=float(max_val))


@defop("hardswish", kind=EW)
def _hardswish(xp, x):
    return x * xp.clip(x + 3, 0, 6) / 6


@_hardswish.grad
def _(ctx, g):
    """torch's hardswish_backward: g times x/3 + 1/2 on (-3, 3), 0 at or below -3, 1 at or above 3 and at
    a NaN (so 1 at inf and 0 at -inf, where x·hardsigmoid'(x) was NaN)."""
    x = ctx.inputs[0]
    slope = where(logical_and(gt(x, -3.0), lt(x, 3.0)), add(div(x, 3.0), 0.5), const(1, x))
    return masked_grad(mul(g, slope), logical_not(le(x, -3.0)), x)


def hardswish(input):
    return _hardswish(input)


@defop("hardsigmoid", kind=EW)
def _hardsigmoid(xp, x):
    return xp.clip(x + 3, 0, 6).astype(x.dtype, copy=False) / 6


# torch's hardsigmoid_backward multiplies by 1/6 rounded to float32, in every dtype
_ONE_SIXTH = float(np.float32(1 / 6))
_hardsigmoid.grad(
    lambda ctx, g: masked_grad(
        mul(g, _ONE_SIXTH), logical_and(gt(ctx.inputs[0], -3.0), lt(ctx.inputs[0], 3.0)), ctx.inputs[0]
    )
)


def hardsigmoid(input):
    """relu6(x + 3) / 6, with torch's gradient: g · 1/6 strictly inside (-3, 3), else 0."""
    return _hardsigmoid(input)


@defop("threshold", kind=EW)
def _threshold(xp, x, threshold, value):
    return xp.where(x <= threshold, value, x).astype(x.dtype, copy=False)


_threshold.grad(lambda ctx, g: masked_grad(g, logical_not(le(ctx.inputs[0], ctx.attrs["threshold"])), ctx.inputs[0]))


def threshold(input, threshold, value):
    """value where x ≤ threshold, else x (a NaN input stays NaN, as torch); torch's threshold_backward."""
    return _threshold(input, threshold=threshold, value=value)


@defop("shrink", kind=EW)
def _shrink(xp, x, lambd, soft):
    if soft:  # torch's zero is x · 0 there (-0.0 for a negative x, NaN for NaN); hardshrink's a plain 0
        return xp.where(abs(x) > lambd, x - xp.sign(x) * lambd, x * 0).astype(x.dtype, copy=False)
    return xp.where(abs(x) > lambd, x, xp.where(x != x, x, 0)).astype(x.dtype, copy=False)  # NaN stays


_shrink.grad(lambda ctx, g: masked_grad(g, gt(abs_(ctx.inputs[0]), ctx.attrs["lambd"]), ctx.inputs[0]))


def shrink(input, lambd, soft):
    """hardshrink (x where |x| > λ, else 0) or softshrink (x − sign(x)·λ there): one op whose gradient is
    torch's (g where |x| > λ, else 0, NaN included), a function of x under create_graph, as torch's."""
    return _shrink(input, lambd=lambd, soft=soft)


def relu6(input):
    return hardtanh(input, 0.0, 6.0)


def logsigmoid(input):
    return named(neg(softplus(neg(input))), "LogSigmoidBackward0")


@autocast_op("prelu")
def prelu(input, weight):
    """max(0, x) + w · min(0, x), one learned slope per channel (dim 1) or one shared slope."""
    if input.array.dtype != weight.array.dtype:  # torch's words: it promotes nothing here
        names = same_dtype.scalar(input), same_dtype.scalar(weight)
        raise DTypeError(f"prelu: Type promoting not supported. Got {names[0]} and {names[1]}")
    channels = input.shape[1] if input.ndim >= 2 else 1  # torch: input below 2-D has one channel
    if weight.numel() not in (1, channels):
        raise ShapeError(
            f"prelu: mismatch of parameter numbers and input channel size: {weight.numel()} slopes for input "
            f"{tuple(input.shape)} with {channels} channel(s)"
        )
    if weight.numel() == 1:
        weight = weight.reshape(())  # one shared slope keeps the input's shape, 0-D included
    else:
        weight = weight.reshape(1, -1, *([1] * (input.ndim - 2)))
    return where(gt(input, 0), input, mul(weight, input))
