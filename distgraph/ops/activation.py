"""Activation functions beyond relu/sigmoid/tanh: leaky_relu, elu, gelu, silu, softplus, mish, ...

Each is either one elementwise op with its own derivative, or a one-line composition of existing ops.
"""

import math

from distgraph.ops.compare import gt
from distgraph.ops.elementwise import EW, add, clamp, const, erf, mul, neg, pow, sigmoid, tanh, where
from distgraph.ops.registry import defop


@defop("leaky_relu", kind=EW)
def _leaky_relu(xp, x, negative_slope=0.01):
    return xp.where(x > 0, x, x * negative_slope)


@_leaky_relu.writer
def _leaky_relu_into(xp):
    def leaky_relu_into(x, out=None, negative_slope=0.01):
        if out is None:
            return _leaky_relu.forward(xp, x, negative_slope)
        keep = xp.greater(x, 0)
        if out is x:  # in place: scale only the elements the forward does not keep
            return xp.multiply(x, negative_slope, out=out, where=xp.logical_not(keep))
        xp.multiply(x, negative_slope, out=out)
        xp.copyto(out, x, where=keep)
        return out

    return leaky_relu_into


@_leaky_relu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    return mul(g, where(gt(x, 0), const(1, g), const(ctx.attrs.get("negative_slope", 0.01), g)))


def leaky_relu(input, negative_slope=0.01):
    return _leaky_relu(input, negative_slope=negative_slope)


@defop("elu", kind=EW, saves_output=True)
def _elu(xp, x, alpha=1.0):
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)


@_elu.writer
def _elu_into(xp):
    def elu_into(x, out=None, alpha=1.0):
        if out is None:
            return _elu.forward(xp, x, alpha)
        rest = xp.logical_not(xp.greater(x, 0))  # the elements the forward does not keep
        if out is not x:
            xp.copyto(out, x)
        xp.minimum(out, 0, out=out, where=rest)  # as the forward: min(-0.0, 0) is +0.0 here
        xp.expm1(out, out=out, where=rest)
        return xp.multiply(out, alpha, out=out, where=rest)

    return elu_into


@_elu.grad
def _(ctx, g):
    x = ctx.inputs[0]
    alpha = ctx.attrs.get("alpha", 1.0)
    return mul(g, where(gt(x, 0), const(1, g), add(ctx.out, alpha)))


def elu(input, alpha=1.0):
    return _elu(input, alpha=alpha)


def silu(input):
    return mul(input, sigmoid(input))


def gelu(input, approximate="none"):
    if approximate == "tanh":
        inner = mul(add(input, mul(pow(input, 3), 0.044715)), math.sqrt(2 / math.pi))
        return mul(mul(input, 0.5), add(tanh(inner), 1))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return mul(mul(input, 0.5), add(erf(mul(input, 1 / math.sqrt(2))), 1))


@defop("softplus", kind=EW)
def _softplus(xp, x, beta=1.0, threshold=20.0):
    bx = x * beta
    return xp.where(bx > threshold, x, xp.logaddexp(0, bx) / beta).astype(x.dtype, copy=False)


@_softplus.writer
def _softplus_into(xp):
    def softplus_into(x, out=None, beta=1.0, threshold=20.0):
        if out is None:
            return _softplus.forward(xp, x, beta, threshold)
        if out is x:  # in place: the kept elements are x already; compute only the others
            bx = xp.multiply(x, beta)
            rest = xp.logical_not(xp.greater(bx, threshold))
            xp.logaddexp(0, bx, out=out, where=rest)
            return xp.divide(out, beta, out=out, where=rest)
        bx = xp.multiply(x, beta, out=out)
        keep = xp.greater(bx, threshold)
        xp.logaddexp(0, bx, out=out)
        xp.divide(out, beta, out=out)
        xp.copyto(out, x, where=keep)
        return out

    return softplus_into


@_softplus.grad
def _(ctx, g):
    x = ctx.inputs[0]
    beta, threshold = ctx.attrs.get("beta", 1.0), ctx.attrs.get("threshold", 20.0)
    bx = mul(x, beta)
    return mul(g, where(gt(bx, threshold), const(1, g), sigmoid(bx)))


def softplus(input, beta=1.0, threshold=20.0):
    return _softplus(input, beta=beta, threshold=threshold)


def mish(input):
    return mul(input, tanh(softplus(input)))


def hardtanh(input, min_val=-1.0, max_val=1.0):
    return clamp(input, min_val, max_val)


def relu6(input):
    return clamp(input, 0, 6)


def logsigmoid(input):
    return neg(softplus(neg(input)))
