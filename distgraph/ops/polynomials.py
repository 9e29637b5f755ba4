"""torch.special's orthogonal polynomials p_n(x): Chebyshev T, U, V, W (and their shifted forms on [0, 1]),
the physicists' and probabilists' Hermite H and He, Laguerre L and Legendre P.

Each follows torch's kernel (aten/src/ATen/native/Math.h) case by case, so edge values agree: n is
truncated to an integer (a non-finite n counts as negative), a negative n gives 0, |x| = 1 has its
closed form, Chebyshev's high orders inside (-1, 1) use the trigonometric form, Hermite's orders past
512 (float64; 128 in float32) give NaN, and everything else runs the three-term recurrence. The
recurrence runs for all elements at once, one step per order up to the largest n, stopping early once
every element still running is NaN (torch's loop stops there too).

torch defines no gradient for these: the outputs never require grad.
"""

import numpy as np

from distgraph.errors import DTypeError
from distgraph.ops import math_extra as mx
from distgraph.ops.registry import defop

EW = "elementwise"


def _orders(xp, n):
    """torch's static_cast<int64_t>(n), a non-finite n mapped to -1 (x86 gives INT64_MIN there)."""
    n = xp.asarray(n)
    if n.dtype.kind == "f":
        n = xp.where(xp.isfinite(n), n, -1)
    return n.astype(np.int64)


def _recurrence(xp, x, n, p0, p1, step):
    """p_n(x) from p_0 = p0, p_1 = p1 and p_{k} = step(k, p_{k-1}, p_{k-2}) for k = 2..n (0 for n < 0)."""
    x, n = xp.broadcast_arrays(x, n)
    p = xp.broadcast_to(xp.asarray(p0, dtype=x.dtype), x.shape).copy()
    q = xp.broadcast_to(xp.asarray(p1, dtype=x.dtype), x.shape).copy()
    out = xp.where(n == 0, p, q)
    top = int(n.max()) if n.size else 0
    for k in range(2, top + 1):
        running = n >= k
        if not bool((running & ~xp.isnan(q)).any()):
            break
        p, q = q, step(k, q, p)
        out = xp.where(running, q, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def _chebyshev(first, high, trig, at_one):
    """A Chebyshev family: p_0 = 1, p_1 = first(x), p_k = 2x·p_{k-1} - p_{k-2}; `trig(n, x)` for n > high
    inside (-1, 1); `at_one(n, x)` where |x| = 1."""

    def forward(xp, x, n):
        n = _orders(xp, n)
        out = _recurrence(xp, x, n, 1.0, first(x), lambda k, q, p: (x + x) * q - p)
        with np.errstate(all="ignore"):
            out = xp.where((n > high) & (xp.abs(x) < 1), trig(xp, n, x), out)
            return xp.where((xp.abs(x) == 1) & (n >= 0), at_one(xp, n, x), out).astype(x.dtype, copy=False)

    return forward


def _sign_unless(xp, keep, value):
    return xp.where(keep, value, -value)


def _t_trig(xp, n, x):
    return xp.cos(n * xp.arccos(x))


def _u_trig(xp, n, x):
    t = xp.arccos(x)
    s = xp.sin(t)
    return xp.where(s != 0, xp.sin((n + 1) * t) / s, (n + 1) * xp.cos((n + 1) * t) / x)


def _v_trig(xp, n, x):
    t = xp.arccos(x)
    return xp.where(
        xp.sin(t / 2) != 1, xp.cos((n + 0.5) * t) / xp.cos(t / 2), _sign_unless(xp, n % 2 == 0, 2 * n + 1.0)
    )


def _w_trig(xp, n, x):
    t = xp.arccos(x)
    edge = xp.where(x > 0, 2 * n + 1.0, _sign_unless(xp, n % 2 == 0, 1.0))
    return xp.where(xp.cos(t / 2) != 1, xp.sin((n + 0.5) * t) / xp.sin(t / 2), edge)


_T = _chebyshev(lambda x: x, 6, _t_trig, lambda xp, n, x: _sign_unless(xp, (x > 0) | (n % 2 == 0), 1.0))
_U = _chebyshev(lambda x: x + x, 8, _u_trig, lambda xp, n, x: _sign_unless(xp, (x > 0) | (n % 2 == 0), n + 1.0))
_V = _chebyshev(
    lambda x: x + x - 1,
    8,
    _v_trig,
    lambda xp, n, x: xp.where(x > 0, 1.0, _sign_unless(xp, n % 2 == 0, 2 * n + 1.0)),
)
_W = _chebyshev(
    lambda x: x + x + 1,
    8,
    _w_trig,
    lambda xp, n, x: xp.where(x > 0, 2 * n + 1.0, _sign_unless(xp, n % 2 == 0, 1.0)),
)


def _shifted(forward):
    """The shifted family on [0, 1]: p*_n(x) = p_n(2x - 1) (x = 0 and 1 land exactly on -1 and 1)."""
    return lambda xp, x, n: forward(xp, x + x - 1, n)


def _hermite_limit(x):
    return 128 if x.dtype == np.float32 else 512


def _hermite_h(xp, x, n):
    n = _orders(xp, n)
    out = _recurrence(xp, x, n, 1.0, x + x, lambda k, q, p: (x + x) * q - 2 * (k - 1) * p)
    return xp.where(n > _hermite_limit(x), np.nan, out).astype(x.dtype, copy=False)


def _hermite_he(xp, x, n):
    n = _orders(xp, n)
    out = _recurrence(xp, x, n, 1.0, x, lambda k, q, p: x * q - (k - 1) * p)
    return xp.where(n > _hermite_limit(x), np.nan, out).astype(x.dtype, copy=False)


def _laguerre_l(xp, x, n):
    n = _orders(xp, n)
    out = _recurrence(xp, x, n, 1.0, 1 - x, lambda k, q, p: ((2 * (k - 1) + (1 - x)) * q - (k - 1) * p) / k)
    return xp.where((x == 0) & (n >= 0), 1, out).astype(x.dtype, copy=False)


def _legendre_p(xp, x, n):
    n = _orders(xp, n)
    out = _recurrence(xp, x, n, 1.0, x, lambda k, q, p: ((2 * k - 1) * x * q - (k - 1) * p) / k)
    at_one = xp.where((x > 0) | (n % 2 == 0), 1.0, -1.0)
    return xp.where((xp.abs(x) == 1) & (n >= 0), at_one, out).astype(x.dtype, copy=False)


def _polynomial(name, forward):
    """The function `name(input, n)`: input and n Tensors or numbers, promoted as torch (integers to the
    default float dtype; no float16 kernel, as torch)."""
    op = defop(name, kind=EW, save=())(mx._quiet(forward))

    def fn(input, n):
        x, order = mx._pair(name, input, n, kinds="f", float_result=True)
        if x.array.dtype == np.float16:
            raise DTypeError(
                f"\"{name}\" not implemented for 'Half' (operands {mx._describe(input, n)}); use float32 or float64"
            )
        return op(x, order)

    fn.__name__ = name
    return fn


chebyshev_polynomial_t = _polynomial("chebyshev_polynomial_t", _T)
chebyshev_polynomial_u = _polynomial("chebyshev_polynomial_u", _U)
chebyshev_polynomial_v = _polynomial("chebyshev_polynomial_v", _V)
chebyshev_polynomial_w = _polynomial("chebyshev_polynomial_w", _W)
shifted_chebyshev_polynomial_t = _polynomial("shifted_chebyshev_polynomial_t", _shifted(_T))
shifted_chebyshev_polynomial_u = _polynomial("shifted_chebyshev_polynomial_u", _shifted(_U))
shifted_chebyshev_polynomial_v = _polynomial("shifted_chebyshev_polynomial_v", _shifted(_V))
shifted_chebyshev_polynomial_w = _polynomial("shifted_chebyshev_polynomial_w", _shifted(_W))
hermite_polynomial_h = _polynomial("hermite_polynomial_h", _hermite_h)
hermite_polynomial_he = _polynomial("hermite_polynomial_he", _hermite_he)
laguerre_polynomial_l = _polynomial("laguerre_polynomial_l", _laguerre_l)
legendre_polynomial_p = _polynomial("legendre_polynomial_p", _legendre_p)
