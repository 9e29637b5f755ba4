"""torch.special's functions that had no distgraph op: the Bessel and Airy functions, erfcx, entr, the
exponentially scaled Bessel functions (i0e, i1e), the normal distribution's ndtr/log_ndtr/ndtri, xlog1py,
the Hurwitz zeta and the regularized incomplete gamma functions (gammainc, gammaincc).

Forwards come from scipy.special (a runtime dependency; cupyx.scipy.special on the GPU) through
math_extra's `_special`. Gradients are torch's (tools/autograd/derivatives.yaml), written with
differentiable ops. Where torch has none, distgraph has none either, in torch's two ways: the Bessel and
Airy functions (torch.special's "modified_bessel_*", "bessel_*", "airy_ai", "spherical_bessel_j0") give
outputs that do not require grad at all; zeta's and the incomplete gammas' first argument raise torch's
"the derivative for ... is not implemented" when a backward reaches it.
"""

import math

import numpy as np

from distgraph.errors import DerivativeNotImplementedError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import math_extra as mx
from distgraph.ops.registry import defop

EW = "elementwise"
_SQRT_2PI = math.sqrt(2 * math.pi)


def _not_implemented(what):
    raise DerivativeNotImplementedError(f"the derivative for '{what}' is not implemented.")


# ---- no gradient, as torch's: the output does not require grad ---------------------------------
def _nondiff(name, forward):
    """A unary op without a backward rule: its output never requires grad (torch's outputs for these
    have no grad_fn either)."""
    return ew._unary(name, mx._quiet(forward), None)


def _scipy(name):
    return lambda xp, x: mx._special(xp, name)(x).astype(x.dtype, copy=False)


def _spherical_j0(xp, x):
    """sin(x)/x: 1 at 0 (the limit), 0 at ±inf, as torch's."""
    safe = xp.where(x == 0, 1, x)
    return xp.where(xp.isinf(x), 0, xp.where(x == 0, 1, xp.sin(safe) / safe)).astype(x.dtype, copy=False)


airy_ai = _nondiff("airy_ai", lambda xp, x: mx._special(xp, "airy")(x)[0].astype(x.dtype, copy=False))
bessel_j0 = _nondiff("bessel_j0", _scipy("j0"))
bessel_j1 = _nondiff("bessel_j1", _scipy("j1"))
bessel_y0 = _nondiff("bessel_y0", _scipy("y0"))
bessel_y1 = _nondiff("bessel_y1", _scipy("y1"))
modified_bessel_i0 = _nondiff("modified_bessel_i0", _scipy("i0"))
modified_bessel_i1 = _nondiff("modified_bessel_i1", _scipy("i1"))
modified_bessel_k0 = _nondiff("modified_bessel_k0", _scipy("k0"))
modified_bessel_k1 = _nondiff("modified_bessel_k1", _scipy("k1"))
scaled_modified_bessel_k0 = _nondiff("scaled_modified_bessel_k0", _scipy("k0e"))
scaled_modified_bessel_k1 = _nondiff("scaled_modified_bessel_k1", _scipy("k1e"))
spherical_bessel_j0 = _nondiff("spherical_bessel_j0", _spherical_j0)


# ---- unary, with torch's gradients --------------------------------------------------------------
erfcx = ew._unary(  # torch's: (2x·erfcx(x) - 2/√π)·g
    "special_erfcx",
    mx._special_fwd("erfcx"),
    lambda ctx, g: ew.mul(g, ew.sub(ew.mul(ew.mul(ctx.inputs[0], ctx.out), 2.0), 2 / math.sqrt(math.pi))),
    saves_output=True,
)
entr = ew._unary(  # -x·log x (0 at 0, -inf below); torch's gradient -(1 + log x)·g
    "special_entr",
    mx._special_fwd("entr"),
    lambda ctx, g: ew.mul(g, ew.neg(ew.add(ew.log(ctx.inputs[0]), 1.0))),
)
ndtr = ew._unary(  # the standard normal's CDF; its density is the gradient
    "special_ndtr",
    mx._special_fwd("ndtr"),
    lambda ctx, g: ew.mul(g, ew.div(ew.exp(ew.mul(ew.square(ctx.inputs[0]), -0.5)), _SQRT_2PI)),
)
log_ndtr = ew._unary(  # torch's: g/√(2π)·exp(-(log_ndtr(x) + x²/2)), stable where ndtr underflows
    "special_log_ndtr",
    mx._special_fwd("log_ndtr"),
    lambda ctx, g: ew.mul(ew.div(g, _SQRT_2PI), ew.exp(ew.neg(ew.add(ctx.out, ew.div(ew.square(ctx.inputs[0]), 2.0))))),
    saves_output=True,
)
ndtri = ew._unary(  # ndtr's inverse; torch's: g·√(2π)·exp(ndtri(p)²/2)
    "special_ndtri",
    mx._special_fwd("ndtri"),
    lambda ctx, g: ew.mul(ew.mul(g, _SQRT_2PI), ew.exp(ew.div(ew.square(ctx.out), 2.0))),
    saves_output=True,
    save=(),
)


def _i1e_rule(ctx, g):
    """torch's i1e_backward: i0e(x) - i1e(x)·(sgn x + 1/x), and its limit 0.5 where |x| is below eps."""
    x = ctx.inputs[0]
    eps = float(np.finfo(x.array.dtype).eps)
    not_tiny = cmp.gt(ew.abs(x), eps)
    safe = ew.where(not_tiny, x, eps)
    d = ew.sub(i0e(safe), ew.mul(ctx.out, ew.add(ew.sign(safe), ew.reciprocal(safe))))
    return ew.mul(g, ew.where(not_tiny, d, 0.5))


i1e = ew._unary("special_i1e", mx._special_fwd("i1e"), _i1e_rule, saves_output=True)
i0e = ew._unary(  # torch's: (i1e(x) - sgn(x)·i0e(x))·g
    "special_i0e",
    mx._special_fwd("i0e"),
    lambda ctx, g: ew.mul(g, ew.sub(i1e(ctx.inputs[0]), ew.mul(ew.sign(ctx.inputs[0]), ctx.out))),
    saves_output=True,
)
i1 = mx._i1  # math_extra's, i0's gradient


# ---- binary -------------------------------------------------------------------------------------
@defop("special_xlog1py", kind=EW, save=(0, 1))
@mx._quiet
def _xlog1py(xp, x, y):
    return xp.where((x == 0) & ~xp.isnan(y), 0, x * xp.log1p(y)).astype(x.dtype, copy=False)


@_xlog1py.grad
def _(ctx, g):
    """torch's: xlog1py(g, y), 0 where x == 0 and y <= -1; and g·x / (1 + y)."""
    x, y = ctx.inputs
    gx = None
    if ctx.next[0] is not None:
        gx = ew.where(cmp.logical_and(cmp.eq(x, 0), cmp.le(y, -1)), 0.0, xlog1py(g, y))
    gy = ew.div(ew.mul(g, x), ew.add(y, 1.0)) if ctx.next[1] is not None else None
    return gx, gy


@defop("special_zeta", kind=EW, save=(0, 1))
@mx._quiet
def _zeta(xp, x, q):
    """scipy's, but NaN at q = +inf for x > 1, as torch's, whose series meets 0·inf there (scipy gives the limit 0)."""
    out = mx._special(xp, "zeta")(x, q)
    return xp.where((q == xp.inf) & (x > 1), xp.nan, out).astype(x.dtype, copy=False)


@_zeta.grad
def _(ctx, g):
    """torch's: none for x (the exponent); -x·zeta(x + 1, q)·g for q."""
    x, q = ctx.inputs
    if ctx.next[0] is not None:
        _not_implemented("zeta")
    return None, ew.mul(g, ew.neg(ew.mul(x, zeta(ew.add(x, 1.0), q))))


def _incomplete_gamma(name, scipy_name, torch_name, sign):
    """gammainc (sign 1) or gammaincc (-1): torch's gradient in x, the density x^(a-1)·e^-x / Γ(a); none
    in a."""
    op = defop(name, kind=EW, save=(0, 1))(
        mx._quiet(lambda xp, a, x: mx._special(xp, scipy_name)(a, x).astype(a.dtype, copy=False))
    )

    @op.grad
    def _(ctx, g):
        a, x = ctx.inputs
        if ctx.next[0] is not None:
            _not_implemented(f"{torch_name}: input")
        log_density = ew.sub(ew.sub(ew.mul(ew.sub(a, 1.0), ew.log(x)), x), mx.lgamma(a))
        return None, ew.mul(g, ew.mul(ew.exp(log_density), float(sign)))

    def fn(input, other):
        return op(*mx._pair(name.removeprefix("special_"), input, other, kinds="f", tensors_only=True))

    fn.__name__ = name.removeprefix("special_")
    return fn


xlog1py = mx._binary(_xlog1py, "xlog1py", float_result=True)
zeta = mx._binary(_zeta, "zeta", float_result=True)
gammainc = _incomplete_gamma("special_gammainc", "gammainc", "igamma", 1)
gammaincc = _incomplete_gamma("special_gammaincc", "gammaincc", "igammac", -1)
