"""torch's further elementwise math: special functions (erfc, erfinv, lgamma, digamma, polygamma, i0),
binary ops (xlogy, logaddexp, hypot, copysign, fmax/fmin, nextafter, gcd/lcm, shifts, heaviside) and
composites (addcmul, addcdiv, float_power, ldexp, logit, deg2rad, ...), each with torch's gradient.

Kept apart from elementwise.py (the hot, core ops): these build on its helpers (`_unary`, `_operands`)
and on scipy.special for the functions numpy lacks (cupyx.scipy.special on the GPU). Forwards run under
np.errstate: an inf or NaN they make (lgamma(0), logit(1)) is a value, as in torch, not a warning.
"""

import math
from collections import namedtuple

import numpy as np

from distgraph import dtypes
from distgraph.autograd import memory_format
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, DTypeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.promotion import _float_operand, _float_operands, _operands, cast, refuse
from distgraph.ops.registry import defop

EW = "elementwise"
Frexp = namedtuple("Frexp", ["mantissa", "exponent"])


def _quiet(forward):
    """`forward` with numpy's floating-point warnings off (see the module docstring)."""

    def run(xp, *arrays, **attrs):
        with np.errstate(all="ignore"):
            return forward(xp, *arrays, **attrs)

    run.__name__ = forward.__name__
    return run


def _special(xp, name):
    """scipy.special's function `name` for numpy arrays, cupyx.scipy.special's for cupy ones; where cupyx has
    none (airy), scipy's on a host copy, the results sent back."""
    import scipy.special

    if xp is np:
        return getattr(scipy.special, name)
    from distgraph.backend import cupy_special, to_device

    on_gpu = getattr(cupy_special(), name, None)
    if on_gpu is not None:
        return on_gpu

    def on_host(*args):
        out = getattr(scipy.special, name)(*(to_device(a, "cpu") for a in args))
        return tuple(map(xp.asarray, out)) if isinstance(out, tuple) else xp.asarray(out)

    return on_host


def _special_fwd(name):
    return _quiet(lambda xp, x: _special(xp, name)(x).astype(x.dtype, copy=False))


def _describe(*xs):
    return " and ".join(f"{x.array.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__ for x in xs)


def _pair(name, input, other, kinds="biuf", float_result=False, tensors_only=False):
    """Two operands of torch's promoted dtype for binary op `name`. `kinds`: the numpy kinds the op
    computes in (else a DTypeError naming the op, as torch's "not implemented for 'Long'"); `float_result`:
    integer operands compute in the default float dtype; `tensors_only`: torch's signature takes no number."""
    if tensors_only and not (isinstance(input, Tensor) and isinstance(other, Tensor)):
        raise DTypeError(f"{name}(): expected two Tensors, got {_describe(input, other)}")
    # float_result: integer tensors turn float before a number meets them (copysign(uint8 t, -1) is negative)
    a, b = _float_operands(input, other) if float_result else _operands(input, other)
    if a.array.dtype.kind not in kinds:
        raise DTypeError(f"{name}: not implemented for {a.array.dtype} (operands {_describe(input, other)})")
    return a, b


def _unary_kinds(name, input, kinds):
    if not isinstance(input, Tensor):
        raise DTypeError(f"{name}(): expected a Tensor, got {type(input).__name__}")
    if input.array.dtype.kind not in kinds:
        refuse(DTypeError, name, input, "not implemented for this dtype")
    return input


def _zeros(g):
    """torch's zeros_like(grad) for an input whose gradient is defined as zero (copysign's sign)."""
    return Tensor(g.device.xp.zeros(g.shape, dtype=g.array.dtype), device=g.device)


# ---- special functions --------------------------------------------------------------------------
erfc = ew._unary(
    "erfc",
    _special_fwd("erfc"),
    lambda ctx, g: ew.mul(g, ew.mul(ew.exp(ew.neg(ew.square(ctx.inputs[0]))), -2 / math.sqrt(math.pi))),
)
erfinv = ew._unary(  # the rule recomputes erfinv from the input, as torch's: a later write to the output
    "erfinv",  # leaves the gradient as it was, where a saved output would refuse it
    _special_fwd("erfinv"),
    lambda ctx, g: ew.mul(g, ew.mul(ew.exp(ew.square(erfinv(ctx.inputs[0]))), math.sqrt(math.pi) / 2)),
)


@_quiet
def _lgamma_fwd(xp, x):
    """scipy's gammaln, but +inf at -inf as torch's (|Γ| grows without bound there)."""
    return xp.where(x == -xp.inf, xp.inf, _special(xp, "gammaln")(x)).astype(x.dtype, copy=False)


@_quiet
def _digamma_fwd(xp, x):
    """scipy's digamma, but NaN at -inf as torch's (no limit there)."""
    return xp.where(x == -xp.inf, xp.nan, _special(xp, "digamma")(x)).astype(x.dtype, copy=False)


lgamma = ew._unary("lgamma", _lgamma_fwd, lambda ctx, g: ew.mul(g, digamma(ctx.inputs[0])))
digamma = ew._unary("digamma", _digamma_fwd, lambda ctx, g: ew.mul(g, polygamma(1, ctx.inputs[0])))


@defop("polygamma", kind=EW)
@_quiet
def _polygamma(xp, x, n):
    """digamma for n = 0; otherwise scipy's but for torch's values where the two part. torch's trigamma (n = 1)
    reflects x < 0.5 through π²/sin²(πx): at a negative integer sin(πx) is not quite 0 (π is rounded), so it
    gives that large finite value there (digamma's gradient at its poles), and NaN at -inf (sin(-inf));
    scipy gives inf at both. For n ≥ 2 torch's is ±n!·zeta(n + 1, x): NaN at +inf (its zeta series meets
    0·inf) and (-1)^(n+1)·inf at -inf (zeta's pole); scipy gives 0 and NaN."""
    if n == 0:
        return _digamma_fwd(xp, x)
    out = _special(xp, "polygamma")(xp.asarray(n), x)  # cupyx's broadcasts n with x: an array, not an int
    if n == 1:
        out = xp.where((x < 0) & (x == xp.floor(x)), xp.pi * xp.pi / xp.square(xp.sin(xp.pi * x)), out)
    else:
        out = xp.where(xp.isinf(x), xp.where(x > 0, xp.nan, (-1.0) ** (n + 1) * xp.inf), out)
    return out.astype(x.dtype, copy=False)


_polygamma.grad(lambda ctx, g: ew.mul(g, polygamma(ctx.attrs["n"] + 1, ctx.inputs[0])))


def polygamma(n, input):
    if type(n) is not int or n < 0:
        raise ValueError(f"polygamma(n, x): n must be a non-negative int, got {n!r}")
    return _polygamma(_float_operand(input), n=n)


def mvlgamma(input, p):
    """The multivariate log-gamma: Σ_j<p lgamma(x - j/2) + p(p-1)/4·log π (inf at and below (p-1)/2's
    poles, as torch 2.13, which no longer refuses that domain)."""
    if type(p) is not int or p < 1:
        raise ValueError(f"mvlgamma: p has to be greater than or equal to 1, got {p!r}")
    x = _float_operand(input)
    steps = Tensor(x.device.xp.arange(p, dtype=x.array.dtype) / 2, device=x.device)
    terms = lgamma(ew.sub(x.unsqueeze(-1), steps))  # (..., p)
    return ew.add(terms.sum(-1), p * (p - 1) / 4 * math.log(math.pi)).contiguous()  # row-major, as torch's


def _i1_rule(ctx, g):
    """torch's i1_backward: i0(x) - i1(x)/x, and its limit 0.5 where |x| is below the dtype's epsilon."""
    x = ctx.inputs[0]
    eps = float(np.finfo(x.array.dtype).eps)
    not_tiny = cmp.gt(ew.abs(x), eps)
    safe = ew.where(not_tiny, x, eps)
    return ew.mul(g, ew.where(not_tiny, ew.sub(i0(safe), ew.div(ctx.out, safe)), 0.5))


_i1 = ew._unary("special_i1", _special_fwd("i1"), _i1_rule, saves_output=True)
i0 = ew._unary("i0", _special_fwd("i0"), lambda ctx, g: ew.mul(g, _i1(ctx.inputs[0])))


def _sinc_rule(ctx, g):
    """torch's sinc_backward, rounded as its: g·((πx·cos(πx) - sin(πx)) / (x·x·π)), 0 (chosen, so at a NaN g too)
    where x·x·π is 0, as it is for an x whose square underflows."""
    x = ctx.inputs[0]
    px, den = ew.mul(x, math.pi), ew.mul(ew.mul(x, x), math.pi)
    d = ew.div(ew.sub(ew.mul(px, ew.cos(px)), ew.sin(px)), den)
    return ew.where(cmp.eq(den, 0), 0.0, ew.mul(g, d))


@_quiet
def _sinc_fwd(xp, x):
    """numpy's sinc; a float16 one computed in float32 and rounded once, as torch's (half's π·x loses bits)."""
    return xp.sinc(x.astype(np.float32)).astype(x.dtype) if x.dtype == np.float16 else xp.sinc(x)


sinc = ew._unary("sinc", _sinc_fwd, _sinc_rule)


# ---- logit, nan_to_num --------------------------------------------------------------------------
@defop("logit", kind=EW)
@_quiet
def _logit(xp, x, eps=None):
    z = x if eps is None else xp.clip(x, eps, 1 - eps)
    return xp.log(z / (1 - z))


@_logit.grad
def _(ctx, g):
    """torch's logit_backward: g / (x(1 - x)), g·inf at x = 0 or 1 (whatever 0's sign); outside [0, 1] NaN,
    or, with eps, 0 outside [eps, 1 - eps]."""
    x, eps = ctx.inputs[0], ctx.attrs.get("eps")
    d = ew.div(g, ew.mul(x, ew.rsub(x, 1)))
    if eps is None:  # g times inf only where x is 0 or 1: g·inf everywhere would make g's own gradient 0·inf
        edge = cmp.logical_or(cmp.eq(x, 0), cmp.eq(x, 1))
        d = ew.where(edge, ew.mul(g, ew.where(edge, math.inf, 0.0)), d)
    lo, hi, fill = (0, 1, math.nan) if eps is None else (eps, 1 - eps, 0.0)
    return ew.where(cmp.logical_or(cmp.lt(x, lo), cmp.gt(x, hi)), fill, d)


def logit(input, eps=None):
    """log(x / (1 - x)), x clamped to [eps, 1 - eps] when eps is given (a negative eps: no clamp, as torch)."""
    eps = None if eps is None or eps < 0 else float(eps)
    return _logit(_float_operand(input), eps=eps)


@defop("nan_to_num", kind=EW)
def _nan_to_num(xp, x, nan=0.0, posinf=None, neginf=None):
    x = memory_format.clone(xp, x)  # laid out as torch's result (preserve_format)
    return xp.nan_to_num(x, copy=False, nan=nan, posinf=posinf, neginf=neginf)


_nan_to_num.grad(lambda ctx, g: ew.mul(g, cast(cmp.isfinite(ctx.inputs[0]), g.array.dtype)))


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced (infinities by the dtype's extremes by default); torch's gradient
    g · isfinite(x)."""
    return _nan_to_num(input, nan=0.0 if nan is None else nan, posinf=posinf, neginf=neginf)


# ---- predicates (bool outputs, no gradient) -----------------------------------------------------
signbit = cmp._predicate("signbit", lambda xp, x: xp.signbit(x) if x.dtype.kind != "b" else xp.zeros(x.shape, bool))
isposinf = cmp._predicate("isposinf", lambda xp, x: x == xp.inf if x.dtype.kind == "f" else xp.zeros(x.shape, bool))
isneginf = cmp._predicate("isneginf", lambda xp, x: x == -xp.inf if x.dtype.kind == "f" else xp.zeros(x.shape, bool))
# no complex dtypes: every value is real; laid out as torch's empty_like(x)
isreal = cmp._predicate("isreal", lambda xp, x: memory_format.like(xp, xp.ones_like(x, bool), x))


# ---- unary composites and aliases ---------------------------------------------------------------
def deg2rad(input):
    return ew.mul(_float_operand(input), math.pi / 180)


def rad2deg(input):
    return ew.mul(_float_operand(input), 180 / math.pi)


def positive(input):
    if input.array.dtype == np.bool_:
        refuse(DTypeError, "positive", input, "The `+` operator, on a bool tensor is not supported")
    return input


def fix(input):
    """trunc's alias; a bool tensor is refused, as torch's trunc does."""
    if input.array.dtype == np.bool_:
        refuse(DTypeError, "fix", input, "\"trunc\" not implemented for 'Bool'")
    return ew.trunc(input)


sgn = ew.sign


# ---- binary ops ---------------------------------------------------------------------------------
def _binary(op, name, **checks):
    """The function of a binary op: promote and check with `_pair`, then apply `op`."""

    def fn(input, other):
        return op(*_pair(name, input, other, **checks))

    fn.__name__ = name
    return fn


@defop("xlogy", kind=EW, save=(0, 1))
@_quiet
def _xlogy(xp, x, y):
    return xp.where((x == 0) & ~xp.isnan(y), 0, x * xp.log(y)).astype(x.dtype, copy=False)


@_xlogy.grad
def _(ctx, g):
    x, y = ctx.inputs  # torch's: xlogy(g, y), 0 where x == 0 and y <= 0 (a zero g gives 0 where log y is
    gx = None  # NaN or -inf: floor_divide's gradient reaching it); and g·x / y
    if ctx.next[0] is not None:
        gx = ew.where(cmp.logical_and(cmp.eq(x, 0), cmp.le(y, 0)), 0.0, xlogy(g, y))
    gy = ew.div(ew.mul(g, x), y) if ctx.next[1] is not None else None
    return gx, gy


xlogy = _binary(_xlogy, "xlogy", float_result=True)


def _logaddexp_rule(power):
    def rule(ctx, g):  # torch's: g / (1 + e^(b - a)) and g / (1 + e^(a - b)), e the base
        a, b = ctx.inputs
        return ew.div(g, ew.add(power(ew.sub(b, a)), 1)), ew.div(g, ew.add(power(ew.sub(a, b)), 1))

    return rule


_logaddexp = defop("logaddexp", kind=EW, save=(0, 1))(_quiet(lambda xp, a, b: xp.logaddexp(a, b)))
_logaddexp.grad(_logaddexp_rule(ew.exp))
_logaddexp2 = defop("logaddexp2", kind=EW, save=(0, 1))(_quiet(lambda xp, a, b: xp.logaddexp2(a, b)))
_logaddexp2.grad(_logaddexp_rule(lambda d: ew.pow(2, d)))
logaddexp = _binary(_logaddexp, "logaddexp", kinds="f", tensors_only=True)
logaddexp2 = _binary(_logaddexp2, "logaddexp2", kinds="f", tensors_only=True)

_hypot = defop("hypot", kind=EW, save=(0, 1), saves_output=True, saved_for={0: 0, 1: 1})(
    _quiet(lambda xp, a, b: xp.hypot(a, b))
)
_hypot.grad(lambda ctx, g: tuple(ew.div(ew.mul(g, x), ctx.out) for x in ctx.inputs))
hypot = _binary(_hypot, "hypot", kinds="f", tensors_only=True)

_copysign = defop("copysign", kind=EW, save=(0,), saves_output=True)(lambda xp, a, b: xp.copysign(a, b))
# torch's: g · result / a (0 where a is 0); the sign's gradient is zero
_copysign.grad(
    lambda ctx, g: (ew.mul(g, ew.where(cmp.eq(ctx.inputs[0], 0), 0.0, ew.div(ctx.out, ctx.inputs[0]))), _zeros(g))
)
copysign = _binary(_copysign, "copysign", float_result=True)


def _fminmax(name, forward, keeps):
    """fmax/fmin: a NaN loses to a number; a gets g where it wins or ties (or b is NaN), b elsewhere."""
    op = defop(name, kind=EW, save=(0, 1))(forward)

    @op.grad
    def _(ctx, g):
        a, b = ctx.inputs
        a_wins = cmp.logical_or(keeps(a, b), cmp.isnan(b))
        return ew.where(a_wins, g, 0.0), ew.where(a_wins, 0.0, g)

    return _binary(op, name, kinds="biuf", tensors_only=True)


fmax = _fminmax("fmax", lambda xp, a, b: xp.fmax(a, b), cmp.ge)
fmin = _fminmax("fmin", lambda xp, a, b: xp.fmin(a, b), cmp.le)

_nextafter = defop("nextafter", kind=EW, save=())(lambda xp, a, b: xp.nextafter(a, b))
_nextafter.grad(lambda ctx, g: (g, _zeros(g)))  # torch's: the step is ignored
nextafter = _binary(_nextafter, "nextafter", kinds="f", tensors_only=True)


@defop("heaviside", kind=EW, save=())
def _heaviside(xp, x, values):
    return xp.where(x == 0, values, x > 0).astype(x.dtype, copy=False)


@_heaviside.grad
def _(ctx, g):
    raise AutogradError("heaviside: the derivative for 'heaviside' is not implemented (as in torch)")


def heaviside(input, values):
    if not (isinstance(input, Tensor) and isinstance(values, Tensor)):
        raise DTypeError(f"heaviside(): expected two Tensors, got {_describe(input, values)}")
    if input.array.dtype != values.array.dtype:
        raise DTypeError(
            f"heaviside is not yet implemented for tensors with different dtypes ({_describe(input, values)})"
        )
    return _heaviside(input, values)


_gcd = defop("gcd", kind=EW, save=())(lambda xp, a, b: xp.gcd(a, b))
_lcm = defop("lcm", kind=EW, save=())(lambda xp, a, b: xp.lcm(a, b))
gcd = _binary(_gcd, "gcd", kinds="iu", tensors_only=True)
lcm = _binary(_lcm, "lcm", kinds="iu", tensors_only=True)

_left_shift = defop("bitwise_left_shift", kind=EW, save=())(lambda xp, a, b: xp.left_shift(a, b))
_right_shift = defop("bitwise_right_shift", kind=EW, save=())(lambda xp, a, b: xp.right_shift(a, b))
bitwise_left_shift = _binary(_left_shift, "bitwise_left_shift", kinds="iu")
bitwise_right_shift = _binary(_right_shift, "bitwise_right_shift", kinds="iu")


def _bitwise(name, fn):
    """compare.py's bitwise op, refusing float operands by name (numpy's TypeError was bare)."""

    def checked(input, other):
        return fn(*_pair(name, input, other, kinds="biu"))

    checked.__name__ = name
    return checked


bitwise_and = _bitwise("bitwise_and", cmp.bitwise_and)
bitwise_or = _bitwise("bitwise_or", cmp.bitwise_or)
bitwise_xor = _bitwise("bitwise_xor", cmp.bitwise_xor)


def bitwise_not(input):
    return cmp.bitwise_not(_unary_kinds("bitwise_not", input, "biu"))


# ---- binary composites --------------------------------------------------------------------------
def _quietly(fn):
    """A composite whose ops may overflow or divide by zero (pow, div): their numpy warnings off, as
    torch gives none (the backward already runs under the engine's errstate)."""

    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


@_quietly
def ldexp(input, other):
    """input · 2^other, as torch computes it (mul of pow(2.0, other)): float, differentiable in both."""
    _pair("ldexp", input, other, tensors_only=True)
    return ew.mul(input, ew.pow(2.0, other))


@_quietly
def float_power(input, exponent):
    """pow in float64 whatever the operands' dtypes (their gradients come back through the casts)."""
    if not (isinstance(input, Tensor) or isinstance(exponent, Tensor)):
        raise DTypeError(f"float_power(): expected a Tensor operand, got {_describe(input, exponent)}")
    a, b = (
        (cast(x, np.float64) if x.array.dtype != np.float64 else x) if isinstance(x, Tensor) else float(x)
        for x in (input, exponent)
    )
    return ew.pow(a, b)


def clamp_min(input, min):
    return ew.clamp(input, min=min)


def clamp_max(input, max):
    return ew.clamp(input, max=max)


def _scalar_of(value, operands):
    """`value` in the dtype torch computes addcmul/addcdiv in: an integer result truncates a float value."""
    kind = dtypes.result_np_dtype(operands).kind
    return bool(value) if kind == "b" else int(value) if kind in "iu" else value


@autocast_op("addcmul")
def addcmul(input, tensor1, tensor2, *, value=1):
    """input + value · tensor1 · tensor2 (torch's order: value times tensor1 first); no bool kernel, as torch."""
    if dtypes.result_np_dtype((input, tensor1, tensor2)).kind == "b":
        raise DTypeError(f"addcmul: not implemented for bool (operands {_describe(input, tensor1, tensor2)})")
    value = _scalar_of(value, (input, tensor1, tensor2))
    tensor1 = _in_result_dtype(tensor1, (input, tensor1, tensor2))
    scaled = tensor1 if value == 1 else ew.mul(tensor1, value)
    return ew.add(input, ew.mul(scaled, tensor2))


def _in_result_dtype(tensor1, operands):
    """tensor1 cast to the dtype of all three operands together, as torch's kernel computes in: scaling a
    bool tensor1 by a float value alone gives float32, which then outranks a float64 that only 0-d
    operands bring (addcmul(float64 0-d, bool (3, 4), float64 0-d) is float64)."""
    rdt = dtypes.result_np_dtype(operands)
    return cast(tensor1, rdt) if isinstance(tensor1, Tensor) and tensor1.array.dtype != rdt else tensor1


@_quietly
@autocast_op("addcdiv")
def addcdiv(input, tensor1, tensor2, *, value=1):
    """input + value · tensor1 / tensor2; integer tensor1 and tensor2 are refused, as in torch."""
    if all(isinstance(t, Tensor) and t.array.dtype.kind in "biu" for t in (tensor1, tensor2)):
        raise DTypeError(
            f"addcdiv: Integer division with addcdiv is no longer supported (tensor1 and tensor2: "
            f"{_describe(tensor1, tensor2)}); use addcmul(input, tensor1, 1 / tensor2) or true division"
        )
    tensor1 = _in_result_dtype(tensor1, (input, tensor1, tensor2))
    scaled = tensor1 if value == 1 else ew.mul(tensor1, value)
    return ew.add(input, ew.div(scaled, tensor2))


def frexp(input):
    """(mantissa, exponent): input = mantissa · 2^exponent, |mantissa| in [0.5, 1); the mantissa's
    gradient is g / 2^exponent, as torch's."""
    _unary_kinds("frexp", input, "f")
    return Frexp(_mantissa(input), _exponent(input))


_mantissa = defop("frexp_mantissa", kind=EW)(lambda xp, x: xp.frexp(x)[0])
_exponent = defop("frexp_exponent", kind=EW, save=())(lambda xp, x: xp.frexp(x)[1].astype(np.int32, copy=False))
_mantissa.grad(lambda ctx, g: ew.div(g, ew.exp2(cast(_exponent(ctx.inputs[0]), g.array.dtype))))
