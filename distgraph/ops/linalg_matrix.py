"""Functions of square matrices (batched over leading dims) with torch's gradients: inverse, det,
slogdet, logdet, solve, cholesky, matrix_power, pinverse.

Each forward is the backend's LAPACK call (numpy.linalg or cupy.linalg); each backward is written with
differentiable ops (matmul, the inverse itself), so double backward and captured graphs work. A
singular matrix where the op needs an inverse raises LinAlgError naming the op (`dg.linalg.LinAlgError`,
a RuntimeError as torch's); the gradients are the formulas for invertible inputs (det's is 0 at an exactly singular
one, as torch 2.13's).
"""

from collections import namedtuple

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import linalg_errors_raised, namespace
from distgraph.errors import DTypeError, LinAlgError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import creation, linalg, regions, shape
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.registry import defop

SLogDet = namedtuple("SLogDet", ["sign", "logabsdet"])


def _mT(x):
    return shape.transpose(x, -2, -1)


def _square(name, a):
    """`a` must be a float tensor of (batches of) square matrices, as torch's checks."""
    if not isinstance(a, Tensor):
        raise DTypeError(f"{name}: expected a Tensor, got {type(a).__name__}")
    if a.array.dtype.kind != "f":
        raise DTypeError(f"{name}: Expected a floating point tensor as input. Got {a.dtype.name}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{name}: A must be batches of square matrices, but they are {tuple(a.shape)}")
    return a


def _lapack(name, fn, *arrays):
    """numpy's LinAlgError (a singular matrix) as InputRangeError naming the op."""
    try:
        with linalg_errors_raised(namespace(arrays[0])):
            return fn(*arrays)
    except np.linalg.LinAlgError as exc:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise LinAlgError(f"{name}: {exc} (input {shapes}): the matrix is singular or not positive-definite") from exc


def _column_major(xp, r):
    """r laid out as LAPACK leaves torch's results (inverse, solve, cholesky): each matrix column-major
    (strides (.., 1, rows)), so is_contiguous(), view() and reshape()'s copy-or-view answer as torch's."""
    return xp.swapaxes(xp.ascontiguousarray(xp.swapaxes(r, -1, -2)), -1, -2)


def _unsq2(x):
    """A batch of scalars as a batch of 1×1 matrices, to scale matrices."""
    return shape.unsqueeze(shape.unsqueeze(x, -1), -1)


# ---- inverse, solve -----------------------------------------------------------------------------
@defop("inverse", kind="other", save=(), saves_output=True)
def _inverse(xp, a):
    return _column_major(xp, _lapack("inverse", xp.linalg.inv, a))


_inverse.grad(lambda ctx, g: ew.neg(linalg.matmul(linalg.matmul(_mT(ctx.out), g), _mT(ctx.out))))


@autocast_op("inverse")
def inverse(input):
    return _inverse(_square("inverse", input))


@defop("solve", kind="other", save=(0,), saves_output=True)
def _solve(xp, a, b, vector=False):
    """`vector`: b is a batch of vectors as (..., n, 1); torch's result (..., n) then has each matrix of its
    last two dims (the last batch dim by n) column-major, the layout torch's batched vector solve leaves."""
    r = _lapack("solve", xp.linalg.solve, a, b)
    return _column_major(xp, r[..., 0])[..., None] if vector and r.ndim >= 3 else _column_major(xp, r)


@_solve.grad
def _(ctx, g):
    """X = A⁻¹B: gB = A⁻ᵀ G, gA = -gB Xᵀ."""
    gb = solve(_mT(ctx.inputs[0]), g)
    ga = ew.neg(linalg.matmul(gb, _mT(ctx.out))) if ctx.next[0] is not None else None
    return ga, gb


def right_hand_side(A, B):
    """(B as a (batch of) matrices, whether it was a vector): torch's rule for solve and lstsq, a B of one dim
    fewer than A with A's leading shape is a (batch of) vector(s)."""
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    return (shape.unsqueeze(B, -1) if vector else B), vector


def broadcast_batches(name, A, b, b_batch=None):
    """A and b expanded to their common batch shape (the dims before the last two; `b_batch` where the op
    reads b's otherwise); batches that do not broadcast are a ShapeError in torch's words, naming the
    first dim (from the right) that differs."""
    a_batch, b_batch = tuple(A.shape[:-2]), tuple(b.shape[:-2] if b_batch is None else b_batch)
    ndim = max(len(a_batch), len(b_batch))
    padded = [(1,) * (ndim - len(s)) + s for s in (a_batch, b_batch)]
    for i in range(ndim - 1, -1, -1):
        da, db = padded[0][i], padded[1][i]
        if da != db and 1 not in (da, db):
            raise ShapeError(
                f"{name}: The size of tensor a ({da}) must match the size of tensor b ({db}) at non-singleton "
                f"dimension {i} (A {tuple(A.shape)}, B {tuple(b.shape)})"
            )
    batch = tuple(max(da, db) if 1 in (da, db) else da for da, db in zip(*padded))
    return shape.expand(A, batch + tuple(A.shape[-2:])), shape.expand(b, batch + tuple(b.shape[-2:]))


def solve(A, B, *, left=True):
    """X with A X = B (left) or X A = B; a B of one dim fewer than A is a (batch of) vector(s), as torch."""
    _square("solve", A)
    if not left:
        return _mT(solve(_mT(A), _mT(B)))
    if not isinstance(B, Tensor) or B.array.dtype != A.array.dtype:
        raise DTypeError(f"solve: B must be a Tensor of A's dtype {A.dtype.name}, got {getattr(B, 'dtype', B)!r}")
    b, vector = right_hand_side(A, B)
    if b.ndim < 2 or b.shape[-2] != A.shape[-1]:
        raise ShapeError(f"solve: incompatible shapes of A {tuple(A.shape)} and B {tuple(B.shape)}")
    a, b = broadcast_batches("solve", A, b)
    x = _solve(a, b, vector=vector)
    return shape.squeeze(x, -1) if vector else x


# ---- determinants -------------------------------------------------------------------------------
@defop("det", kind="other", save=(0,), saves_output=True)
def _det(xp, a):
    return _lapack("det", xp.linalg.det, a)


@_det.grad
def _(ctx, g):
    """g·det·A⁻ᵀ; torch 2.13 gives 0 where det is exactly 0 (not the cofactor matrix), and so does this:
    such a matrix is inverted as the identity, whose inverse the zero det then scales away."""
    a, d = ctx.inputs[0], _unsq2(ctx.out)
    singular = cmp.eq(d, 0)
    eye = creation.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return ew.mul(ew.mul(_unsq2(g), d), _mT(inverse(ew.where(singular, eye, a))))


def det(input):
    return _det(_square("det", input))


@defop("slogdet_logabsdet", kind="other", save=(0,))
def _logabsdet(xp, a):
    return _lapack("slogdet", xp.linalg.slogdet, a)[1]


_logabsdet.grad(lambda ctx, g: ew.mul(_unsq2(g), _mT(inverse(ctx.inputs[0]))))


@defop("slogdet_sign", kind="other", save=())
def _det_sign(xp, a):
    """LAPACK's sign, but 0 where log|det| is NaN (a NaN in the matrix): torch's sign is the product of
    the LU diagonal's x/|x|, which a NaN pivot makes 0; numpy's stays ±1."""
    sign, logabs = _lapack("slogdet", xp.linalg.slogdet, a)
    return xp.where(xp.isnan(logabs), sign * 0, sign)


# torch's sign output requires grad (one node for both outputs) and passes back zero
_det_sign.grad(lambda ctx, g: Tensor(g.device.xp.zeros(ctx.inputs[0].shape, g.array.dtype), device=g.device))


def slogdet(input):
    """(sign, log|det|): the sign has no gradient; log|det|'s is A⁻ᵀ."""
    _square("slogdet", input)
    return SLogDet(_det_sign(input), _logabsdet(input))


def logdet(input):
    """log det: NaN where det < 0, -inf where it is 0, as torch."""
    sign, logabs = slogdet(input)
    return ew.where(cmp.lt(sign, 0), float("nan"), logabs)


# ---- cholesky -----------------------------------------------------------------------------------
@defop("cholesky", kind="other", save=(), saves_output=True)
def _cholesky(xp, a, upper=False):
    """LAPACK's potrf reads one triangle: the upper for upper=True (as torch's), the lower otherwise."""
    read = xp.swapaxes(a, -1, -2) if upper else a
    _refuse_non_finite_factor(xp, read)
    low = _lapack("cholesky", xp.linalg.cholesky, read)
    if xp.isnan(low).any():  # a NaN pivot (an overflow): torch's potrf fails there
        raise LinAlgError(f"cholesky: the input {a.shape} is not positive-definite (a NaN pivot)")
    return _column_major(xp, xp.swapaxes(low, -1, -2) if upper else low)


def _refuse_non_finite_factor(xp, low):
    """A NaN in the triangle read, or an infinite entry off its diagonal, makes a pivot NaN or -inf, where
    torch's potrf fails (numpy's returns NaNs or, for inf, a diagonal matrix): refuse as torch. An infinite
    diagonal alone factors (L has inf there, as torch's)."""
    off = xp.tril(low, -1)
    if (~xp.isfinite(off)).any() or xp.isnan(xp.diagonal(low, 0, -2, -1)).any():
        raise LinAlgError(
            f"cholesky: the input {low.shape} is not positive-definite: it holds NaN, or an infinite entry off "
            "the diagonal, in the triangle the factorization reads"
        )


@_cholesky.grad
def _(ctx, g):
    """torch's cholesky_backward: L⁻ᵀ Φ(Lᵀ gL) L⁻¹, symmetrized; Φ keeps the lower triangle, half diagonal."""
    upper = ctx.attrs.get("upper", False)
    low, gl = (_mT(ctx.out), _mT(g)) if upper else (ctx.out, g)
    low_inv = inverse(low)
    phi = linalg.matmul(_mT(low), gl)
    phi = ew.sub(regions.tril(phi), ew.mul(_diag_part(phi), 0.5))
    grad = linalg.matmul(linalg.matmul(_mT(low_inv), phi), low_inv)
    return ew.mul(ew.add(grad, _mT(grad)), 0.5)


def _diag_part(x):
    """x with everything but its (batched) diagonal zeroed."""
    eye = creation.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return ew.mul(x, eye)


def cholesky(input, upper=False):
    return _cholesky(_square("cholesky", input), upper=bool(upper))


# ---- matrix_power, pinverse ---------------------------------------------------------------------
def matrix_power(input, n):
    """A^n by repeated squaring (n < 0: of the inverse, float only); n = 0 gives the identity, as torch,
    with a zero gradient to A."""
    if not isinstance(n, int):
        raise TypeError(f"matrix_power: n must be an int, got {type(n).__name__}")
    if input.ndim < 2 or input.shape[-1] != input.shape[-2]:
        raise ShapeError(f"matrix_power: expected (batches of) square matrices, got {tuple(input.shape)}")
    if n == 0:
        eye = creation.eye(input.shape[-1], dtype=input.dtype, device=input.device)
        everywhere = Tensor(input.device.xp.ones(input.shape, dtype=bool), device=input.device)
        return ew.where(everywhere, eye, input)
    if n < 0:
        _square("matrix_power", input)
    base = inverse(input) if n < 0 else input
    result, n = None, abs(n)
    while n:
        if n & 1:
            result = base if result is None else linalg.matmul(result, base)
        n >>= 1
        if n:
            base = linalg.matmul(base, base)
    return result


@defop("pinverse", kind="other", save=(0,), saves_output=True)
def _pinverse(xp, a, rcond=1e-15, atol=0.0, hermitian=False):
    """Singular values (|eigenvalues| of the lower triangle if hermitian) at most max(atol, rcond·σ_max)
    are cut, as torch.linalg.pinv's; numpy's pinv where it is the same (no atol, not hermitian)."""

    def pinv(m):
        if (atol == 0 and not hermitian) or m.size == 0:
            return xp.linalg.pinv(m, rcond=rcond)
        if hermitian:  # A = V diag(w) Vᵀ, so A⁺ = V diag(1/w) Vᵀ over the kept w
            s, u = xp.linalg.eigh(m)
            vt = xp.swapaxes(u, -1, -2)
        else:
            u, s, vt = xp.linalg.svd(m, full_matrices=False)
        cutoff = xp.maximum(atol, rcond * xp.abs(s).max(-1, keepdims=True))
        kept = xp.abs(s) > cutoff
        inv = xp.where(kept, 1 / xp.where(kept, s, 1), 0)
        return xp.swapaxes(vt, -1, -2) * inv[..., None, :] @ xp.swapaxes(u, -1, -2)

    return _lapack("pinverse", pinv, a)


_pinverse.grad(lambda ctx, g: pinv_backward(g, ctx.out, ctx.inputs[0]))


def pinv_backward(g, p, a):
    """torch's pinv_backward (for an input of constant rank), in the smaller of the two products (lstsq's
    gradient reuses it)."""
    ph, gh = _mT(p), _mT(g)
    mm = linalg.matmul
    if a.shape[-2] <= a.shape[-1]:
        k = mm(gh, p)
        kph = mm(k, ph)
        first = ew.add(ew.neg(_mT(mm(p, k))), ew.sub(kph, mm(mm(a, p), kph)))
        return ew.add(first, mm(mm(ph, p), ew.sub(gh, mm(k, a))))
    k = mm(p, gh)
    phk = mm(ph, k)
    first = ew.add(ew.neg(_mT(mm(k, p))), mm(mm(ew.sub(gh, mm(a, k)), p), ph))
    return ew.sub(ew.add(first, phk), mm(mm(phk, p), a))


def pinverse(input, rcond=1e-15, *, atol=0.0, hermitian=False):
    """torch.pinverse; `atol` and `hermitian` for linalg.pinv (distgraph/linalg.py)."""
    if not isinstance(input, Tensor) or input.array.dtype.kind != "f" or input.ndim < 2:
        what = f"{input.dtype.name} {tuple(input.shape)}" if isinstance(input, Tensor) else type(input).__name__
        raise DTypeError(f"pinverse: expected a float tensor of (batches of) matrices, got {what}")
    if hermitian and input.shape[-1] != input.shape[-2]:
        raise ShapeError(f"linalg.pinv(hermitian=True): expected square matrices, got shape {tuple(input.shape)}")
    return _pinverse(input, rcond=float(rcond), atol=float(atol), hermitian=bool(hermitian))
