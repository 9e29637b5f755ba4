"""Activation functions beyond relu/sigmoid/tanh: leaky_relu, elu, gelu, silu, softplus, mish, ...

Each is either one elementwise op with its own derivative, or a one-line composition of existing ops.
"""

import math

import numpy as np

from distgraph.errors import ShapeError
from distgraph.ops import kernels
from distgraph.ops.compare import gt, le, logical_and, logical_not, lt
from distgraph.ops.elementwise import (
    EW,
    _erf_fwd,
    _zero_grad,
    add,
    clamp,
    const,
    div,
    erf,
    exp,
    mul,
    neg,
    pow,
    rsub,
    sigmoid,
    square,
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
    return xp.where(x > 0, x, x * negative_slope)


@_leaky_relu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    return mul(g, step_mask(gt(x, 0), x, outside=ctx.attrs.get("negative_slope", 0.01)))


def leaky_relu(input, negative_slope=0.01):
    return _leaky_relu(input, negative_slope=negative_slope)


@defop("elu", kind=EW)
def _elu(xp, x, alpha=1.0):
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)


# torch's elu_backward from the input (F.elu saves x, not its output, which may be written later): g times
# the slope, alpha·exp(x) below 0, alpha at 0, 1 above (and at a NaN x)
_elu.grad(lambda ctx, g: _elu_backward(g, ctx.inputs[0], alpha=ctx.attrs.get("alpha", 1.0)))


@defop("elu_backward", kind=EW, save=(0, 1), saved_for={0: 1})
def _elu_backward(xp, g, x, alpha):
    slope = xp.where(x < 0, alpha * xp.exp(xp.minimum(x, 0)), xp.where(x <= 0, alpha, 1.0))
    return (g * slope).astype(g.dtype, copy=False)


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


# silu and gelu are single ops with torch's backward formulas, g times one derivative: through the product
# rule of their compositions an inf g gave inf - inf = NaN where torch's gives ±inf
@defop("silu", kind=EW)
def _silu(xp, x):
    return x * kernels.sigmoid(xp, x)


@_silu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    s = sigmoid(x)
    return mul(g, mul(s, add(mul(x, rsub(s, 1)), 1)))  # torch's silu_backward: s · (1 + x · (1 - s))


def silu(input):
    return _silu(input)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


@defop("gelu", kind=EW)
def _gelu(xp, x, approximate):
    if approximate == "tanh":
        return (x * 0.5) * (xp.tanh((x + x**3 * 0.044715) * _SQRT_2_OVER_PI) + 1)
    return (x * 0.5) * (_erf_fwd(xp, x * (1 / math.sqrt(2))) + 1)


@_gelu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    if ctx.attrs["approximate"] == "tanh":  # torch's gelu_backward: the product rule summed before g
        t = tanh(mul(add(x, mul(pow(x, 3), 0.044715)), _SQRT_2_OVER_PI))
        slope = mul(mul(mul(x, 0.5), rsub(square(t), 1)), mul(add(mul(square(x), 3 * 0.044715), 1), _SQRT_2_OVER_PI))
        return mul(g, add(mul(add(t, 1), 0.5), slope))
    cdf = mul(add(erf(mul(x, 1 / math.sqrt(2))), 1), 0.5)
    pdf = mul(exp(mul(square(x), -0.5)), 1 / math.sqrt(2 * math.pi))
    return mul(g, add(cdf, mul(x, pdf)))


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _gelu(input, approximate=approximate)


@defop("softplus", kind=EW)
def _softplus(xp, x, beta=1.0, threshold=20.0):
    bx = x * beta
    return xp.where(bx > threshold, x, xp.logaddexp(0, bx) / beta).astype(x.dtype, copy=False)


@_softplus.grad
def _(ctx, g):
    x = ctx.inputs[0]
    beta, threshold = ctx.attrs.get("beta", 1.0), ctx.attrs.get("threshold", 20.0)
    bx = mul(x, beta)
    return mul(g, where(gt(bx, threshold), const(1, g), sigmoid(bx)))


def softplus(input, beta=1.0, threshold=20.0):
    return _softplus(input, beta=beta, threshold=threshold)


@defop("mish", kind=EW)
def _mish(xp, x):
    return x * xp.tanh(_softplus.forward(xp, x))


@_mish.grad
def _(ctx, g):
    x = ctx.inputs[0]
    t = tanh(softplus(x))
    return mul(g, add(t, mul(mul(x, sigmoid(x)), rsub(square(t), 1))))  # torch's mish_backward, one factor


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
    return neg(softplus(neg(input)))


def prelu(input, weight):
    """max(0, x) + w · min(0, x), one learned slope per channel (dim 1) or one shared slope."""
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
