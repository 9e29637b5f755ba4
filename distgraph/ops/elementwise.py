"""Elementwise ops: arithmetic, math functions, activations, where and clamp (lerp: lerp.py).

Binary ops broadcast as numpy does and promote dtypes as torch does (`_operands` and the cast op,
in promotion.py); the engine sums broadcast gradients back to each input's shape, so the rules
below are the textbook derivatives.
The commonest ops also have an array rule (`array_grad`), the same derivative on raw arrays for the
engine's fast mode.
"""

import math
import warnings

import numpy as np

from distgraph import dtypes
from distgraph.autograd.function import apply
from distgraph.autograd.tensor import TENSOR_TYPES, Tensor
from distgraph.errors import DivisionByZeroError, DTypeError, InputRangeError
from distgraph.ops import compare as cmp  # rules call comparisons at run time; no import cycle
from distgraph.ops import kernels
from distgraph.ops.promotion import _float_operand, _float_operands, _operands, cast, const, refuse
from distgraph.ops.registry import defop

EW = "elementwise"


# ---- arithmetic ---------------------------------------------------------------------------------
@defop("add", kind=EW, save=())
def _add(xp, a, b):
    return a + b


_add.grad(lambda ctx, g: (g, g))
_add.array_grad(lambda ctx, g: (g, g))


@defop("sub", kind=EW, save=())
def _sub(xp, a, b):
    return a - b


_sub.grad(lambda ctx, g: (g, neg(g) if ctx.next[1] is not None else None))
_sub.array_grad(lambda ctx, g: (g, -g if ctx.next[1] is not None else None))


@defop("mul", kind=EW, save=(0, 1), saved_for={0: 1, 1: 0})
def _mul(xp, a, b):
    return a * b


@_mul.grad
def _(ctx, g):
    a, b = ctx.inputs
    return (mul(g, b) if ctx.next[0] is not None else None, mul(g, a) if ctx.next[1] is not None else None)


@_mul.array_grad
def _(ctx, g):
    a, b = ctx.inputs
    return (g * b.array if ctx.next[0] is not None else None, g * a.array if ctx.next[1] is not None else None)


@defop("div", kind=EW, save=(0, 1), saved_for={0: 1})
def _div(xp, a, b):
    return a / b


@_div.grad
def _(ctx, g):
    a, b = ctx.inputs
    # torch's -g·((a / b) / b): no b·b to overflow, and the same rounding (float32) as torch
    ga = div(g, b) if ctx.next[0] is not None else None
    gb = mul(neg(g), div(div(a, b), b)) if ctx.next[1] is not None else None
    return ga, gb


@_div.array_grad
def _(ctx, g):
    a, b = ctx.inputs[0].array, ctx.inputs[1].array
    return (g / b if ctx.next[0] is not None else None, -g * ((a / b) / b) if ctx.next[1] is not None else None)


@defop("neg", kind=EW, save=())
def _neg(xp, a):
    return -a


_neg.grad(lambda ctx, g: neg(g))
_neg.array_grad(lambda ctx, g: -g)


@defop("pow", kind=EW, save=(0, 1), saves_output=True)
def _pow(xp, a, b):
    if a.dtype.kind == "b":  # bool ** a Python bool (torch's one bool pow) stays bool; numpy's is int8
        return a | ~b
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":  # numpy refuses a negative integer exponent;
        return kernels.int_pow(xp, a, b)  # torch (a tensor exponent) gives the integer part of a^b
    return kernels.pow(xp, a, b)  # torch's special exponents (2, 3, 0.5, -1, ...) as torch computes them


@_pow.grad
def _(ctx, g):
    # torch's pow_backward_self/_exponent term for term (NaN reaches double backward as in torch): b == 0
    # masked after g is multiplied in (0 where g is NaN); log(a) itself, masked where a == 0 and b >= 0
    a, b = ctx.inputs
    ga = gb = None
    if ctx.next[0] is not None:
        ga = where(cmp.eq(b, 0), const(0, a), mul(g, mul(b, pow(a, sub(b, 1)))))
    if ctx.next[1] is not None:
        zero_base = cmp.logical_and(cmp.eq(a, 0), cmp.ge(b, 0))
        gb = mul(g, where(zero_base, const(0, a), mul(ctx.out, log(a))))
    return ga, gb


@_pow.array_grad
def _(ctx, g):
    a, b = ctx.inputs[0].array, ctx.inputs[1].array
    xp = ctx.inputs[0].device.xp
    ga = xp.where(b == 0, 0, g * (b * kernels.pow(xp, a, b - 1))) if ctx.next[0] is not None else None
    if ctx.next[1] is None:
        return ga, None
    return ga, g * xp.where((a == 0) & (b >= 0), 0, ctx.out_array * xp.log(a))


@defop("maximum", kind=EW, save=(0, 1))
def _maximum(xp, a, b):
    return xp.maximum(a, b)


@defop("minimum", kind=EW, save=(0, 1))
def _minimum(xp, a, b):
    return xp.minimum(a, b)


def _extremum_grad(ctx, g, wins):
    """torch's rule: a tie splits g; an input gets g unless the other wins (so both get it at a NaN)."""
    a, b = ctx.inputs
    half = div(g, 2)
    tie = cmp.eq(a, b)
    zero = const(0, g)
    return where(tie, half, where(wins(b, a), zero, g)), where(tie, half, where(wins(a, b), zero, g))


_maximum.grad(lambda ctx, g: _extremum_grad(ctx, g, cmp.gt))
_minimum.grad(lambda ctx, g: _extremum_grad(ctx, g, cmp.lt))


def _check_int_divisor(op, a, b):
    """Integer // and % by zero raise, as in torch and Python: numpy returns 0 with only a warning."""
    if b.dtype.kind in "iu" and not b.all():
        raise DivisionByZeroError(
            f"{op}: integer division by zero (input {tuple(a.shape)} {a.dtype}, divisor {tuple(b.shape)} {b.dtype})"
        )


@defop("fmod", kind=EW, save=(0, 1), saved_for={0: 1, 1: 1})
def _fmod(xp, a, b):
    _check_int_divisor("fmod", a, b)
    return xp.fmod(a, b)


# torch's rules: the quotient is div with a rounding mode, of zero gradient (trunc(a / b) passes 0/0 on)
@_fmod.grad
def _(ctx, g):
    a, b = ctx.inputs
    gb = mul(neg(g), div(a, b, rounding_mode="trunc")) if ctx.next[1] is not None else None
    return g, gb


@defop("remainder", kind=EW, save=(0, 1), saved_for={0: 1, 1: 1})
def _remainder(xp, a, b):
    _check_int_divisor("remainder", a, b)
    return kernels.remainder(xp, a, b)


@_remainder.grad
def _(ctx, g):
    a, b = ctx.inputs
    gb = mul(neg(g), div(a, b, rounding_mode="floor")) if ctx.next[1] is not None else None
    return g, gb


@defop("atan2", kind=EW, save=(0, 1))
def _atan2(xp, a, b):
    return xp.arctan2(a, b)


@_atan2.grad
def _(ctx, g):
    a, b = ctx.inputs  # torch's: 1 / (a² + b²) with inf masked to 0, so the origin has a zero gradient
    recip = where(cmp.isinf(r := reciprocal(add(mul(a, a), mul(b, b)))), const(0, r), r)
    return mul(mul(g, b), recip), mul(mul(g, neg(a)), recip)


def _binary_fn(op, float_only=False):
    def fn(input, other):
        if float_only:
            a, b = _float_operands(input, other)
        elif type(input) in TENSOR_TYPES and type(other) in TENSOR_TYPES and input.array.dtype == other.array.dtype:
            a, b = input, other  # the common case, without the promotion logic
        else:
            a, b = _operands(input, other, op.name)
        return apply(op, (a, b))

    fn.__name__ = op.name
    return fn


_add_fn = _binary_fn(_add)
_sub_fn = _binary_fn(_sub)
mul = _binary_fn(_mul)
maximum = _binary_fn(_maximum)
minimum = _binary_fn(_minimum)
fmod = _binary_fn(_fmod)
remainder = _binary_fn(_remainder)
atan2 = _binary_fn(_atan2, float_only=True)


def _is_bool(x):
    return isinstance(x, Tensor) and x.array.dtype == np.bool_


def _scaled(name, input, other, alpha):
    """other·alpha for add/sub's `alpha`: a Python number is scaled in Python (mul needs a Tensor).
    torch applies alpha in the result's dtype, so with two bool operands it is a bool: other ∧ alpha.
    torch's deprecated `name(alpha, other)` (a Number, then the Tensor) is taken, with torch's warning."""
    if isinstance(alpha, Tensor):
        if isinstance(other, Tensor):
            raise TypeError(f"{name}(): alpha must be a Number, not a Tensor: {name}(input, other, *, alpha=1)")
        msg = f"This overload of {name} is deprecated:\n\t{name}(Number alpha, Tensor other)\nConsider using one of the"
        warnings.warn(f"{msg} following signatures instead:\n\t{name}(Tensor other, *, Number alpha = 1)", stacklevel=3)
        other, alpha = alpha, other
    if alpha == 1:
        return other
    if (type(other) is bool or _is_bool(other)) and (type(input) is bool or _is_bool(input)):
        return mul(other, bool(alpha)) if isinstance(other, Tensor) else other and bool(alpha)
    return mul(other, alpha) if isinstance(other, Tensor) else other * alpha


def add(input, other, alpha=1):
    return _add_fn(input, _scaled("add", input, other, alpha))


def sub(input, other, alpha=1):
    return _sub_fn(input, other if type(other) is bool or _is_bool(other) else _scaled("sub", input, other, alpha))


def div(input, other, rounding_mode=None):
    if rounding_mode is None:
        return apply(_div, _float_operands(input, other))
    a, b = _operands(input, other)
    if rounding_mode == "floor":
        return floor_divide(a, b)
    if rounding_mode == "trunc":  # integers exactly, with no float detour (float32 holds integers to 2**24)
        q = _trunc_divide(*((a, b) if a.array.dtype.kind in "iuf" else (_float_operand(a), _float_operand(b))))
        return q if q.array.dtype == a.array.dtype else cast(q, a.array.dtype)
    raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")


@defop("floor_divide", kind=EW, save=())
def _floor_divide(xp, a, b):
    _check_int_divisor("floor_divide", a, b)
    return a // b


# Piecewise constant: a zero gradient wherever defined, so a float result still requires grad, as torch's
# div(rounding_mode="floor") (torch's floor_divide itself raises "not implemented" in backward).
_floor_divide.grad(lambda ctx, g: tuple(_zero_grad(ctx, g) if n is not None else None for n in ctx.next))


@defop("trunc_divide", kind=EW, save=())
def _trunc_divide(xp, a, b):
    """div(rounding_mode="trunc"), one op of zero gradient (0 where b is 0 too); integers: floor, moved toward 0."""
    if a.dtype.kind not in "iu":
        return xp.trunc(a / b)
    _check_int_divisor("div", a, b)
    return (q := a // b) + ((q * b != a) & ((a < 0) != (b < 0))).astype(q.dtype)


_trunc_divide.grad(_floor_divide.backward)


def floor_divide(input, other):
    return _floor_divide(*_operands(input, other))


true_divide = div


def neg(x):
    return _neg(x)


def pow(input, exponent):
    if isinstance(input, Tensor) and not isinstance(exponent, Tensor):
        if input.array.dtype.kind in "iub" and isinstance(exponent, float):
            input = _float_operand(input)
        elif input.array.dtype.kind in "iub" and isinstance(exponent, int) and exponent < 0:
            refuse(InputRangeError, "pow", input, f"Integers to negative integer powers are not allowed ({exponent})")
    a, b = _operands(input, exponent)
    if isinstance(exponent, Tensor) and _is_bool(a) and _is_bool(b):  # torch has no bool ** bool tensor
        refuse(DTypeError, "pow", b, "\"pow\" not implemented for 'Bool' with a bool tensor exponent")
    return _pow(a, b)


def rsub(input, other, alpha=1):
    return sub(other, mul(input, alpha) if alpha != 1 else input)


# ---- unary math ---------------------------------------------------------------------------------
def _unary(name, forward, rule, saves_output=False, float_only=True, save=(0,), kinds=None):
    op = defop(name, kind=EW, save=save, saves_output=saves_output)(forward)
    op.grad(rule)

    def fn(input):
        if kinds is not None and input.array.dtype.kind not in kinds:  # dtypes torch has no kernel for
            refuse(DTypeError, name, input, "not implemented for this dtype")
        if float_only and input.array.dtype.kind != "f":
            input = _float_operand(input)
        return apply(op, (input,))

    fn.__name__ = name
    fn.op = op
    return fn


def _zero_grad(ctx, g):
    """torch's zeros_like(grad): 0 where g is NaN too, and a constant, so no second order flows back."""
    return Tensor(g.device.xp.zeros(g.shape, dtype=g.array.dtype), device=g.device)


exp = _unary("exp", lambda xp, x: xp.exp(x), lambda ctx, g: mul(g, ctx.out), saves_output=True, save=())
exp2 = _unary("exp2", lambda xp, x: xp.exp2(x), lambda ctx, g: mul(g, mul(ctx.out, math.log(2))), True, save=())
expm1 = _unary("expm1", lambda xp, x: xp.expm1(x), lambda ctx, g: mul(g, add(ctx.out, 1)), True, save=())
log = _unary("log", lambda xp, x: xp.log(x), lambda ctx, g: div(g, ctx.inputs[0]))
log2 = _unary("log2", lambda xp, x: xp.log2(x), lambda ctx, g: div(g, mul(ctx.inputs[0], math.log(2))))
log10 = _unary("log10", lambda xp, x: xp.log10(x), lambda ctx, g: div(g, mul(ctx.inputs[0], math.log(10))))
log1p = _unary("log1p", lambda xp, x: xp.log1p(x), lambda ctx, g: div(g, add(ctx.inputs[0], 1)))
sqrt = _unary("sqrt", lambda xp, x: xp.sqrt(x), lambda ctx, g: div(g, mul(ctx.out, 2)), True, save=())
rsqrt = _unary("rsqrt", lambda xp, x: 1 / xp.sqrt(x), lambda ctx, g: mul(g, mul(pow(ctx.out, 3), -0.5)), True, save=())
_square = _unary("square", lambda xp, x: x * x, lambda ctx, g: mul(g, mul(ctx.inputs[0], 2)), float_only=False)


def square(input):
    """x·x; a bool tensor squares as int64, as in torch (numpy's bool·bool stays bool)."""
    return _square(cast(input, np.int64) if input.array.dtype == np.bool_ else input)


square.op = _square.op
reciprocal = _unary("reciprocal", lambda xp, x: 1 / x, lambda ctx, g: neg(mul(g, mul(ctx.out, ctx.out))), True, save=())
abs = _unary("abs", lambda xp, x: xp.abs(x), lambda ctx, g: mul(g, sign(ctx.inputs[0])), float_only=False, kinds="iuf")
sign = _unary("sign", kernels.sign, _zero_grad, float_only=False, save=())
sin = _unary("sin", lambda xp, x: xp.sin(x), lambda ctx, g: mul(g, cos(ctx.inputs[0])))
cos = _unary("cos", lambda xp, x: xp.cos(x), lambda ctx, g: neg(mul(g, sin(ctx.inputs[0]))))
tan = _unary("tan", lambda xp, x: xp.tan(x), lambda ctx, g: mul(g, add(mul(ctx.out, ctx.out), 1)), True, save=())
asin = _unary("asin", lambda xp, x: xp.arcsin(x), lambda ctx, g: mul(g, rsqrt(rsub(square(ctx.inputs[0]), 1))))
acos = _unary("acos", lambda xp, x: xp.arccos(x), lambda ctx, g: neg(mul(g, rsqrt(rsub(square(ctx.inputs[0]), 1)))))
atan = _unary("atan", lambda xp, x: xp.arctan(x), lambda ctx, g: div(g, add(square(ctx.inputs[0]), 1)))
sinh = _unary("sinh", lambda xp, x: xp.sinh(x), lambda ctx, g: mul(g, cosh(ctx.inputs[0])))
cosh = _unary("cosh", lambda xp, x: xp.cosh(x), lambda ctx, g: mul(g, sinh(ctx.inputs[0])))
tanh = _unary("tanh", lambda xp, x: xp.tanh(x), lambda ctx, g: mul(g, rsub(mul(ctx.out, ctx.out), 1)), True, save=())
asinh = _unary("asinh", lambda xp, x: xp.arcsinh(x), lambda ctx, g: mul(g, rsqrt(add(square(ctx.inputs[0]), 1))))
acosh = _unary("acosh", lambda xp, x: xp.arccosh(x), lambda ctx, g: mul(g, rsqrt(sub(square(ctx.inputs[0]), 1))))
atanh = _unary("atanh", lambda xp, x: xp.arctanh(x), lambda ctx, g: div(g, rsub(square(ctx.inputs[0]), 1)))
floor = _unary("floor", lambda xp, x: xp.floor(x), _zero_grad, float_only=False, save=(), kinds="iuf")
ceil = _unary("ceil", lambda xp, x: xp.ceil(x), _zero_grad, float_only=False, save=(), kinds="iuf")
trunc = _unary("trunc", lambda xp, x: xp.trunc(x), _zero_grad, float_only=False, save=(), kinds="iuf")
frac = _unary("frac", lambda xp, x: x - xp.trunc(x), lambda ctx, g: g, save=(), kinds="f")


_round = defop("round", kind=EW, save=())(lambda xp, x, decimals=0: xp.round(x, decimals))
_round.grad(_zero_grad)


def round(input, decimals=0):
    kind = input.array.dtype.kind
    if kind == "b" or (decimals != 0 and kind != "f"):  # as torch: no rounding kernel for these
        refuse(DTypeError, "round", input, f"not implemented for this dtype (decimals={decimals})")
    return _round(input, decimals=decimals)


def _erf_fwd(xp, x):
    if xp is np:
        from scipy.special import erf as _erf

        return _erf(x)
    from distgraph.backend import cupy_special

    return cupy_special().erf(x)


erf = _unary("erf", _erf_fwd, lambda ctx, g: mul(g, mul(exp(neg(square(ctx.inputs[0]))), 2 / math.sqrt(math.pi))))


# ---- activations --------------------------------------------------------------------------------
sigmoid = _unary(
    "sigmoid", kernels.sigmoid, lambda ctx, g: mul(mul(g, rsub(ctx.out, 1)), ctx.out), saves_output=True, save=()
)


@defop("relu_backward", kind=EW, save=(1,))
def _relu_backward(xp, g, out):
    """0 where relu's output is ≤ 0, else g (a NaN output passes g): torch's threshold_backward, one op."""
    return kernels.keep_or_zero(xp, ~(out <= 0), g)


_relu_backward.grad(lambda ctx, gg: (_relu_backward(gg, ctx.inputs[1]), _zero_grad(ctx, gg)))
_relu = _unary("relu", kernels.relu, lambda ctx, g: _relu_backward(g, ctx.out), True, False, save=())


def relu(input):
    if input.array.dtype == np.bool_:  # as torch
        refuse(DTypeError, "relu", input, "Boolean inputs not supported for relu")
    return _relu(input)


relu.op = _relu.op


# array rules (the engine's fast mode) of the unary ops the hot paths use: the formulas above on arrays
exp.op.array_grad(lambda ctx, g: g * ctx.out_array)
log.op.array_grad(lambda ctx, g: g / ctx.inputs[0].array)
log1p.op.array_grad(lambda ctx, g: g / (ctx.inputs[0].array + 1))
sqrt.op.array_grad(lambda ctx, g: g / (ctx.out_array * 2))
square.op.array_grad(lambda ctx, g: g * (ctx.inputs[0].array * 2))
sin.op.array_grad(lambda ctx, g: g * ctx.inputs[0].device.xp.cos(ctx.inputs[0].array))
cos.op.array_grad(lambda ctx, g: -(g * ctx.inputs[0].device.xp.sin(ctx.inputs[0].array)))
tanh.op.array_grad(lambda ctx, g: kernels.tanh_backward(ctx.inputs[0].device.xp, g, ctx.out_array))
sigmoid.op.array_grad(lambda ctx, g: kernels.sigmoid_backward(ctx.inputs[0].device.xp, g, ctx.out_array))
# relu's output is >= 0 or NaN, so `out != 0` is `not out <= 0` in one comparison
relu.op.array_grad(lambda ctx, g: kernels.keep_or_zero(ctx.inputs[0].device.xp, ctx.out_array != 0, g))


# ---- clamp, where -----------------------------------------------------------------------------
@defop("clamp", kind=EW)
def _clamp(xp, x, min=None, max=None):
    return xp.clip(x, min, max)


@_clamp.grad
def _(ctx, g):
    x = ctx.inputs[0]
    lo, hi = ctx.attrs.get("min"), ctx.attrs.get("max")
    keep = None if lo is None else cmp.ge(x, lo)
    if hi is not None:
        keep = cmp.le(x, hi) if keep is None else cmp.logical_and(keep, cmp.le(x, hi))
    return g if keep is None else where(keep, g, const(0, g))  # (torch's where: a NaN g clamped off is 0)


def clamp(input, min=None, max=None):
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        from distgraph.ops.clamp_bounds import clamp_by_tensors  # (it builds on this module's ops)

        return clamp_by_tensors(input, min, max)
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    if input.array.dtype.kind != "f" and (type(min) is float or type(max) is float):
        input = _float_operand(input)  # an integer tensor clamped to float bounds is float, as in torch
    return _clamp(input, min=min, max=max)


clip = clamp


@defop("where", kind=EW, save=(0,))
def _where(xp, cond, a, b):
    return xp.where(cond, a, b)


@_where.grad
def _(ctx, g):
    cond = ctx.inputs[0]
    zero = const(0, g)
    ga = where(cond, g, zero) if ctx.next[1] is not None else None
    gb = where(cond, zero, g) if ctx.next[2] is not None else None
    return None, ga, gb


@_where.array_grad
def _(ctx, g):
    cond, xp = ctx.inputs[0].array, ctx.inputs[0].device.xp
    ga = kernels.keep_or_zero(xp, cond, g) if ctx.next[1] is not None else None
    gb = kernels.keep_or_zero(xp, ~cond, g) if ctx.next[2] is not None else None
    return None, ga, gb


def where(condition, input=None, other=None):
    if input is None and other is None:
        from distgraph.ops.indexing import nonzero

        return nonzero(condition, as_tuple=True)
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        a, b = _operands(input, other)
    else:  # two Python scalars, as torch: of their promoted dtype (floats: the default dtype)
        dt = dtypes.result_np_dtype((input, other))
        a, b = const(input, condition, dt), const(other, condition, dt)
    if condition.array.dtype.kind != "b":
        condition = cast(condition, np.bool_)
    return _where(condition, a, b)
