"""Writers: the forwards that are not one numpy ufunc, computed into a given buffer (`Op.writer`).

Compiled graphs write every elementwise result into a preallocated buffer (graph/codegen.py,
graph/passes/fusion.py). An op whose forward is one ufunc needs nothing here (fusion.UFUNCS); the
ops below get `factory(xp) -> f(*arrays, out=None, **attrs)` that computes the forward's exact bits
into `out` (checked bit for bit against the forward in tests/graph/test_fusion.py, signed zeros,
infinities and NaN included). `out` may be one of the inputs (in-place execution): each writer reads
what it needs of an input before it writes over it, or works on the elements it must change only.
A factory returns None where `xp` has no such function (scipy's ufuncs on cupy).
"""

import numpy as np

from distgraph.ops import kernels
from distgraph.ops.activation import _elu, _leaky_relu, _softplus
from distgraph.ops.elementwise import (
    _check_int_divisor,
    _clamp,
    _floor_divide,
    _fmod,
    _remainder,
    _round,
    _where,
    erf,
    frac,
    relu,
    rsqrt,
    sigmoid,
    sign,
)
from distgraph.ops.promotion import _cast


@_cast.writer
def _cast_into(xp):
    def cast_into(x, out=None, dtype=None):
        if out is None:
            return x.astype(dtype)
        xp.copyto(out, x, casting="unsafe")  # the conversion astype makes, into the buffer
        return out

    return cast_into


@_round.writer
def _round_into(xp):
    def round_into(x, out=None, decimals=0):
        return xp.round(x, decimals, out=out)

    return round_into


@relu.op.writer
def _relu_into(xp):
    def relu_into(x, out=None):
        return xp.maximum(x, 0, out=out)

    return relu_into


@sigmoid.op.writer
def _sigmoid_into(xp):
    def sigmoid_into(x, out=None):
        return kernels.sigmoid(xp, x, out=out)  # torch's 1 / (1 + exp(-x)), the forward's steps into out

    return sigmoid_into


@frac.op.writer
def _frac_into(xp):
    def frac_into(x, out=None):
        whole = xp.trunc(x) if out is x else xp.trunc(x, out=out)  # x is read again below
        return xp.subtract(x, whole, out=out)

    return frac_into


@rsqrt.op.writer
def _rsqrt_into(xp):
    def rsqrt_into(x, out=None):
        out = xp.sqrt(x, out=out)
        return xp.divide(1, out, out=out)

    return rsqrt_into


@erf.op.writer
def _erf_into(xp):
    if xp is not np:
        return None
    from scipy.special import erf as erf_ufunc

    return erf_ufunc


@_clamp.writer
def _clamp_into(xp):
    def clamp_into(x, out=None, min=None, max=None):
        return xp.clip(x, min, max, out=out)

    return clamp_into


@_where.writer
def _where_into(xp):
    def where_into(cond, a, b, out=None):
        if out is None:
            return xp.where(cond, a, b)
        if out is a:  # in place over a: only b's elements move
            xp.copyto(out, b, where=xp.logical_not(cond))
        else:  # b first, then a over it (out may be b itself)
            if out is not b:
                xp.copyto(out, b)
            xp.copyto(out, a, where=cond)
        return out

    return where_into


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


@_softplus.writer
def _softplus_into(xp):
    def softplus_into(x, out=None, beta=1.0, threshold=20.0):
        res = _softplus.forward(xp, x, beta, threshold)  # its select needs x whole: computed, then copied
        if out is None:
            return res
        xp.copyto(out, res)
        return out

    return softplus_into


def _checked_division(name):
    """floor_divide, remainder and fmod are one ufunc each, but on integers they must first refuse a zero
    divisor as their forward does (numpy returns 0 with a warning): a bare ufunc in fusion.UFUNCS let a
    compiled graph return 0 where eager raises DivisionByZeroError. The check is the forward's own."""

    def factory(xp):
        ufunc = getattr(xp, name) if name != "remainder" else lambda a, b, out: kernels.remainder(xp, a, b, out)

        def divide_into(a, b, out=None):
            _check_int_divisor(name, a, b)
            return ufunc(a, b, out=out)

        return divide_into

    return factory


for _op in (_floor_divide, _remainder, _fmod):
    _op.writer(_checked_division(_op.name))


@sign.op.writer
def _sign_into(xp):
    return lambda x, out=None: kernels.sign(xp, x, out=out)  # numpy's sign but 0 for NaN: not one ufunc
