"""Array kernels for hot elementwise steps: the same bits as the plain numpy expression, faster.

numpy's `where` branches per element, so on a random mask (a ReLU's sign pattern, a masked where) it
runs ~12x slower than a branch-free pass at (256, 1024) float32, 2x at (64, 128); and `maximum`
against a scalar runs a slower loop than against an array of zeros (2x at (256, 1024)). The kernels
below avoid both from `BIG` elements on; below that the extra calls cost more than they save, and
the plain expression runs. They take the backend's namespace (cupy has the same functions).
"""

import numpy as np

BIG = 4096
_INT_OF_SIZE = {2: np.int16, 4: np.int32, 8: np.int64}


def keep_or_zero(xp, keep, g):
    """`where(keep, g, 0)` for a float `g`: g's bits times the 0/1 mask in integers, which is exact
    (a dropped NaN or -0 gives +0, as `where` does)."""
    if g.size < BIG:
        return xp.where(keep, g, 0).astype(g.dtype, copy=False)
    return (g.view(_INT_OF_SIZE[g.dtype.itemsize]) * keep).view(g.dtype)


def select(xp, keep, a, other):
    """`where(keep, a, other)` for float arrays of one dtype and shape, written into `other` (a fresh
    array): from BIG elements on a branch-free blend of the bits, other ^= (other ^ a) · keep (3x faster
    than `where` on a random mask, the same bits)."""
    if other.size < BIG or a.dtype != other.dtype or a.shape != other.shape or keep.shape != other.shape:
        return xp.where(keep, a, other).astype(other.dtype, copy=False)
    ints = _INT_OF_SIZE[other.dtype.itemsize]
    o = other.view(ints)
    d = xp.bitwise_xor(o, a.view(ints))
    d *= keep
    o ^= d
    return other


def relu(xp, x):
    """`maximum(x, 0)`: NaN stays NaN, -0 gives +0, against zeros as against the scalar."""
    if x.size < BIG or x.dtype.kind != "f":
        return xp.maximum(x, 0)
    return xp.maximum(x, xp.zeros_like(x))


def int_pow(xp, a, b):
    """torch's integer a^b, which numpy refuses for b < 0: 1 for a == 1, ±1 for a == -1 (b even/odd),
    else 0 (0^-1 too)."""
    negative = b < 0
    whole = a ** xp.where(negative, 0, b)
    minus_one = xp.where(b % 2 == 0, 1, -1).astype(whole.dtype)
    small = xp.where(a == 1, 1, xp.where(a == -1, minus_one, 0)).astype(whole.dtype)
    return xp.where(negative, small, whole)


EXPIT = []  # scipy.special.expit, looked up once (scipy.special's lazy attribute access is slow)


def sigmoid(xp, x, out=None):
    """sigmoid's forward: torch's 1 / (1 + exp(-x)) for float32/float64 (see `_sigmoid_torch`; 3.5x faster
    than scipy's expit in float32), written into `out` where given (it may be x); other dtypes: stable for
    both tails (scipy's expit on numpy)."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        if out is not None:
            return _sigmoid_torch(xp, x, out)
        return _sigmoid_torch(xp, x.reshape(1)).reshape(()) if x.ndim == 0 else _sigmoid_torch(xp, x)
    if out is not None:
        xp.copyto(out, sigmoid(xp, x), casting="unsafe")
        return out
    if x.dtype.itemsize == 2 and x.dtype.kind in "fV":  # float16, bfloat16: in float32, as torch (expit gave float64)
        return sigmoid(xp, x.astype(np.float32)).astype(x.dtype)
    if xp is np:  # scipy's expit: one stable ufunc, 10x cheaper than the split below on tiny arrays
        if not EXPIT:
            from scipy.special import expit

            EXPIT.append(expit)
        return EXPIT[0](x)
    # split by sign so exp never overflows (exact for both tails)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def remainder(xp, a, b, out=None):
    """torch's remainder: fmod(a, b), moved by b where its sign differs from b's. numpy's remainder gives
    a zero the divisor's sign (-1.0 % 1.0 is +0.0) where torch keeps fmod's (-0.0), so 1 / result and
    copysign differ; integers have no signed zero and keep numpy's."""
    if a.dtype.kind != "f":
        return xp.remainder(a, b, out=out)
    mod = xp.fmod(a, b)
    mod = xp.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod)
    if out is None:
        return mod
    out[...] = mod
    return out


def sign(xp, x, out=None):
    """torch's sign: numpy's, but 0 for NaN (torch computes (0 < x) - (x < 0)); a bool tensor is itself."""
    if x.dtype == np.bool_:
        if out is None:
            return x.copy()
        xp.copyto(out, x)
        return out
    res = xp.sign(x, out=out)
    if res.dtype.kind != "f":
        return res
    if out is None:  # a 0-d x gives a numpy scalar, which copyto cannot write
        return xp.where(xp.isnan(res), 0, res)
    xp.copyto(out, 0, where=xp.isnan(out))
    return out


POW_SPECIAL = frozenset((0.0, 1.0, 2.0, 3.0, -2.0, 0.5, -0.5, -1.0))  # the exponents `pow` computes as torch does


def pow(xp, a, b):
    """`a ** b` with torch's CPU pow(tensor, scalar) for a float32/float64 base and a 0-d exponent: 0 gives
    ones, 1 a copy, 2 x·x, 3 x·x·x, -2 1/(x·x), 0.5 sqrt, -0.5 1/sqrt, -1 1/x (so sqrt(-0.0) is -0.0);
    other exponents, dtypes and shapes: numpy's power."""
    if b.ndim != 0 or a.dtype.kind != "f" or a.dtype.itemsize < 4 or b.dtype.kind not in "fiu":
        return a**b
    e = float(b)
    if e not in POW_SPECIAL:
        return a**b
    if e == 2.0 or e == 3.0 or e == -2.0:
        r = a * a
        if e == 3.0:
            r = xp.multiply(r, a, out=r) if a.ndim else r * a
        return r if e != -2.0 else _reciprocal(xp, r)
    if e == 0.5 or e == -0.5:
        r = xp.sqrt(a)
        return r if e == 0.5 else _reciprocal(xp, r)
    if e == -1.0:
        return _reciprocal(xp, a * 1)  # a * 1: a fresh array, the same bits
    if e == 0.0 or e == 1.0:  # a ufunc's copy: laid out as a**b is (ones_like orders an expanded a otherwise)
        r = xp.positive(a)
        if e == 0.0 and a.ndim:
            r[...] = 1
        return r if e == 1.0 or a.ndim else xp.ones_like(a)
    return a**b


def _reciprocal(xp, r):
    """1 / r, written into r (a fresh array) where it is not 0-d."""
    return xp.divide(1, r, out=r) if r.ndim else 1 / r


# ---- gelu and silu: torch's CPU kernels (GeluKernel.cpp, Activation.cpp) step for step, in place -----------
_M_SQRT2, _M_2_SQRTPI, _M_SQRT1_2 = 1.4142135623730951, 1.1283791670955126, 0.7071067811865476
# torch's float erf inside gelu (Vectorized<float>::erf): Abramowitz-Stegun 7.1.26, |error| < 1.5e-7
_AS_P, _AS_COEFS = 0.3275911, (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _consts(dtype, *values):
    return tuple(dtype.type(v) for v in values)


def _scratch(xp, x, scratch, i):
    """Work array i: scratch[i] where given (a block's, reused: ops/cache_blocks.py), else a fresh one like x."""
    return scratch[i] if scratch else xp.empty_like(x)


def _gelu_erf(xp, x, scratch=None):
    """erf(x / sqrt(2)), in scratch[3] where given (3 more work arrays below it): torch's float32 approximation
    for float32 (4x faster than scipy's erf, which computes float32 in double), scipy's (cupy's) erf otherwise."""
    (alpha,) = _consts(x.dtype, _M_SQRT1_2)
    z = xp.multiply(x, alpha, out=_scratch(xp, x, scratch, 0))
    if x.dtype != np.float32:
        from distgraph.ops.elementwise import _erf_fwd

        return _erf_fwd(xp, z)
    one, p = _consts(x.dtype, 1, _AS_P)
    t = xp.abs(z, out=_scratch(xp, x, scratch, 1))
    t *= p
    t += one
    xp.divide(one, t, out=t)  # t = 1 / (1 + p·|z|)
    coefs = _consts(x.dtype, *_AS_COEFS)
    r = xp.multiply(t, coefs[0], out=_scratch(xp, x, scratch, 2))
    for c in coefs[1:]:
        r += c
        if c is not coefs[-1]:
            r *= t
    e = xp.multiply(z, z, out=_scratch(xp, x, scratch, 3))
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    e *= t
    e *= r
    xp.subtract(one, e, out=e)  # 1 - r·t·exp(-z²), its sign flipped where z's is set (copysign: 4x slower)
    bits = xp.bitwise_and(z.view(np.int32), np.int32(-(2**31)), out=t.view(np.int32))
    xp.bitwise_xor(e.view(np.int32), bits, out=e.view(np.int32))
    return e


def _gelu_step(xp, x, approximate, scratch=None, kept=None):
    """What gelu's backward reads besides x: 1 + erf(x·√½), or tanh(β·(x + κ·x³)); into `kept` where given,
    else into a work array (scratch[3] for erf, scratch[2] for tanh: gelu_backward_kept uses 0 and 1)."""
    if approximate == "tanh":
        beta, kappa = _consts(x.dtype, _M_SQRT2 * _M_2_SQRTPI * 0.5, 0.044715)
        c = xp.multiply(x, x, out=_scratch(xp, x, scratch, 2))
        c *= x
        c *= kappa
        c += x
        c *= beta
        return xp.tanh(c, out=c if kept is None else kept)
    c = _gelu_erf(xp, x, scratch)
    return xp.add(c, x.dtype.type(1), out=c if kept is None else kept)


def gelu(xp, x, approximate, out=None, scratch=None, kept=None):
    """torch's gelu: x·0.5·(1 + erf(x·√½)), or 0.5·x·(1 + tanh(β·(x + κ·x³))), into `out` where given (and
    its steps in `scratch`, 4 work arrays like x, where given). Where `kept` (an array like x) is given, the
    step gelu_backward recomputes is left in it for `gelu_backward_kept` (`_gelu_step`: the same operations,
    written there instead of in place, so no extra pass)."""
    half, one = _consts(x.dtype, 0.5, 1)
    c = _gelu_step(xp, x, approximate, scratch, kept)
    if approximate == "tanh":  # 1 + tanh, in place unless the tanh is kept
        c = xp.add(c, one, out=c if kept is None else _scratch(xp, x, scratch, 2))
    h = xp.multiply(x, half, out=out)
    h *= c
    return h


def gelu_backward(xp, g, x, approximate, out=None, scratch=None):
    """torch's gelu_backward: `gelu_backward_kept` from the step recomputed (`_gelu_step`), into `out` where
    given (and its steps in `scratch`, 4 work arrays like x, where given)."""
    return gelu_backward_kept(xp, g, _gelu_step(xp, x, approximate, scratch), x, approximate, out, scratch)


def gelu_backward_kept(xp, g, kept, x, approximate, out=None, scratch=None):
    """torch's gelu_backward from what `gelu` left in `kept` (1 + erf, or the tanh), not written: g·(cdf +
    x·pdf), or g·(0.5·(1 + t) + 0.5·x·(1 - t²)·β·(1 + 3κ·x²)); its work arrays scratch[0] and [1]."""
    half, one = _consts(x.dtype, 0.5, 1)
    if approximate == "tanh":
        beta, kappa, three = _consts(x.dtype, _M_SQRT2 * _M_2_SQRTPI * 0.5, 0.044715, 3)
        s = xp.multiply(x, x, out=_scratch(xp, x, scratch, 0))
        d = xp.multiply(kept, kept, out=_scratch(xp, x, scratch, 1))
        xp.subtract(one, d, out=d)  # tanh's derivative
        s *= three * kappa
        s += one
        s *= beta  # inner's derivative
        out = xp.multiply(x, half, out=out)
        out *= d
        out *= s
        c = xp.add(kept, one, out=d)
        c *= half
    else:
        (beta,) = _consts(x.dtype, _M_2_SQRTPI * _M_SQRT1_2 * 0.5)
        out = xp.multiply(x, x, out=out)
        out *= -half
        xp.exp(out, out=out)
        out *= beta  # pdf
        out *= x
        c = xp.multiply(kept, half, out=_scratch(xp, x, scratch, 0))  # cdf
    out += c
    out *= g
    return out


def _sigmoid_torch(xp, x, out=None):
    """1 / (1 + exp(-x)), torch's sigmoid (and silu's), as a fresh array or into `out` (which may be x): 4
    passes, 3.5x faster than scipy's expit in float32 (an exp overflowing to inf gives 0, as torch's: so
    sigmoid(-100) is 0 in float32, where expit gives 3.7e-44)."""
    e = xp.negative(x, out=out)
    with np.errstate(over="ignore"):
        xp.exp(e, out=e)
    e += x.dtype.type(1)
    return xp.divide(x.dtype.type(1), e, out=e)


def silu(xp, x):
    """torch's silu: x / (1 + exp(-x))."""
    e = xp.negative(x)
    with np.errstate(over="ignore"):
        xp.exp(e, out=e)
    e += x.dtype.type(1)
    return xp.divide(x, e, out=e)


def silu_backward(xp, g, x, out=None, scratch=None):
    """torch's silu_backward: g·s·(1 + x·(1 - s)), s = 1 / (1 + exp(-x)), into `out` where given (and its
    one work array in `scratch[0]`)."""
    one = x.dtype.type(1)
    s = _sigmoid_torch(xp, x, out)
    t = xp.subtract(one, s, out=_scratch(xp, x, scratch, 0))
    t *= x
    t += one
    s *= g
    s *= t
    return s


# ---- sigmoid/tanh backward, softplus, mish: torch's CPU kernels (Activation.cpp, BinaryOpsKernel.cpp) -------
def _fast_pair(g, y):
    """Whether the in-place backward kernels take (g, y): float32/float64 arrays of one dtype, shape and layout
    (the layout of g·(...) follows both: another would change the bits of a later reduction over it)."""
    fast = y.dtype == np.float32 or y.dtype == np.float64
    return fast and y.ndim and g.dtype == y.dtype and g.shape == y.shape and g.strides == y.strides


def sigmoid_backward(xp, g, y):
    """torch's sigmoid_backward from the output y: g·(1 - y)·y (the differentiable rule's steps)."""
    if not _fast_pair(g, y):
        return g * (1 - y) * y
    t = xp.subtract(y.dtype.type(1), y)
    t *= g
    t *= y
    return t


def tanh_backward(xp, g, y):
    """torch's tanh_backward from the output y: g·(1 - y·y), with one temporary."""
    if not _fast_pair(g, y):
        return g * (1 - y * y)
    t = xp.multiply(y, y)
    xp.subtract(y.dtype.type(1), t, out=t)
    t *= g
    return t


def softplus(xp, x, beta, threshold):
    """torch's softplus: x where x·β > threshold, else log1p(exp(x·β)) / β (float32/float64, not 0-d); at β = 1
    x·1 and z / 1, which are x and z, are not computed."""
    beta, threshold = _consts(x.dtype, beta, threshold)
    bx = x if beta == 1 else x * beta
    with np.errstate(over="ignore"):
        z = xp.exp(bx)
    xp.log1p(z, out=z)
    if beta != 1:
        z /= beta
    return _over(xp, bx > threshold, x, z)


def softplus_backward(xp, g, x, beta, threshold):
    """torch's softplus_backward: g where x·β > threshold, else g·z / (z + 1), z = exp(x·β) (x·1 is x, not
    computed)."""
    beta, threshold = _consts(x.dtype, beta, threshold)
    bx = x if beta == 1 else x * beta
    with np.errstate(over="ignore", invalid="ignore"):
        z = xp.exp(bx)
        d = z + x.dtype.type(1)
        z *= g
        z /= d
    return _over(xp, bx > threshold, g.astype(z.dtype, copy=False), z)


def _over(xp, keep, a, out):
    """`select(xp, keep, a, out)`, skipped where no element is kept (softplus's threshold, the common case: an
    any() of 0.01 ms for a select of 0.18 on (256, 1024) float32)."""
    return select(xp, keep, a, out) if keep.any() else out


def _tanh_softplus(xp, x):
    """tanh(log1p(exp(x))), torch's mish inner term (no threshold), as a fresh array."""
    with np.errstate(over="ignore"):
        t = xp.exp(x)
    xp.log1p(t, out=t)
    return xp.tanh(t, out=t)


def mish(xp, x):
    """torch's mish: x·tanh(log1p(exp(x)))."""
    t = _tanh_softplus(xp, x)
    with np.errstate(invalid="ignore"):
        t *= x
    return t


def mish_backward(xp, g, x):
    """torch's mish_backward: g·(t + x·s·(1 - t·t)), s = 1 / (1 + exp(-x)), t = tanh(log1p(exp(x)))."""
    s = _sigmoid_torch(xp, x)
    t = _tanh_softplus(xp, x)
    u = xp.multiply(t, t)
    xp.subtract(x.dtype.type(1), u, out=u)
    with np.errstate(invalid="ignore"):
        s *= x
        s *= u
        s += t
        s *= g
    return s
