"""Decompositions with torch's gradients: svd / svdvals, eigh / eigvalsh, qr, householder_product (and the
refusal of eig / eigvals, whose results are complex).

An op returns one array, so a decomposition's factors leave its op packed: each flattened over its
matrix dims and concatenated along one last axis (`_pack`); the public function cuts them back out
with narrow + reshape (`_unpack`), which are differentiable, so the factors' gradients arrive at the
op as one packed gradient that the backward rule cuts the same way. A factor the loss never read
arrives as zeros; the rules treat an all-zero block as torch treats an undefined gradient (svdvals'
and eigvalsh's cheaper formula, which stays finite at repeated values).

The backward rules are torch's (FunctionsManual.cpp) for real inputs, written with differentiable ops
(so double backward works): svd_backward, linalg_eig_backward (hermitian), linalg_qr_backward.
"""

import math
from collections import namedtuple

from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, DTypeError, ShapeError
from distgraph.ops import creation, regions, shape
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg as products
from distgraph.ops.linalg_matrix import _lapack, _mT, _square
from distgraph.ops.linalg_solvers import solve_triangular
from distgraph.ops.registry import defop
from distgraph.ops.shape_extra import diag_embed

SVD = namedtuple("SVD", ["U", "S", "Vh"])
SVDOld = namedtuple("SVD", ["U", "S", "V"])
EigH = namedtuple("EigH", ["eigenvalues", "eigenvectors"])
QR = namedtuple("QR", ["Q", "R"])

mm = products.matmul


def float_matrices(name, a):
    """`a` must be a float tensor of (batches of) matrices (torch's checks for the rectangular ops)."""
    if not isinstance(a, Tensor):
        raise DTypeError(f"{name}: expected a Tensor, got {type(a).__name__}")
    if a.array.dtype.kind != "f":
        raise DTypeError(f"{name}: Expected a floating point tensor as input. Got {a.dtype.name}")
    if a.ndim < 2:
        raise ShapeError(f"{name}: The input tensor A must have at least 2 dimensions, got shape {tuple(a.shape)}")
    return a


def _pack(xp, batch, *arrays):
    """Matrices go in transposed, so that `_unpack` hands them out column-major, as LAPACK leaves torch's."""
    flat = [  # (the trailing size spelled out: -1 cannot be inferred in an empty batch)
        (xp.swapaxes(x, -1, -2) if x.ndim - len(batch) == 2 else x).reshape(batch + (math.prod(x.shape[len(batch) :]),))
        for x in arrays
    ]
    return xp.concatenate(flat, axis=-1)


def _unpack(t, batch, shapes):
    """The factors of trailing `shapes` cut out of packed `t` (differentiable views/copies)."""
    out, start = [], 0
    for s in shapes:
        size = math.prod(s)
        part = shape.narrow(t, -1, start, size)
        out.append(_mT(shape.reshape(part, batch + s[::-1])) if len(s) == 2 else shape.reshape(part, batch + s))
        start += size
    return out


def _given(g):
    """None for a gradient block that is all zeros (a factor the loss did not read), as torch's undefined."""
    return g if g.device.xp.any(g.array) else None


def _eye_mask(x):
    n = x.shape[-1]
    return Tensor(x.device.xp.eye(n, dtype=bool), device=x.device)


def _skew(x):
    return ew.sub(x, _mT(x))


def _gaps(values):
    """E[j, k] = values[k] - values[j], 1 on the diagonal (it only divides zeros there)."""
    e = ew.sub(shape.unsqueeze(values, -2), shape.unsqueeze(values, -1))
    return ew.where(_eye_mask(e), ew.const(1, e), e)


# ---- svd ----------------------------------------------------------------------------------------
def _svd_shapes(m, n, full):
    k = min(m, n)
    return [(m, m if full else k), (k,), (n if full else k, n)]


@defop("linalg_svd", kind="other", save=(), saves_output=True)
def _svd(xp, a, full_matrices=False):
    u, s, vh = _lapack("linalg.svd", lambda x: xp.linalg.svd(x, full_matrices=full_matrices), a)
    return _pack(xp, a.shape[:-2], u, s, vh)


@_svd.grad
def _(ctx, g):
    """torch's svd_backward; with full_matrices the extra columns of U (rows of Vh) take no part, as torch
    narrows them away."""
    batch, (m, n) = tuple(ctx.inputs[0].shape[:-2]), tuple(ctx.inputs[0].shape[-2:])
    shapes = _svd_shapes(m, n, ctx.attrs.get("full_matrices", False))
    k = min(m, n)
    u, s, vh = _unpack(ctx.out, batch, shapes)
    gu, gs, gvh = _unpack(g, batch, shapes)
    u, gu = shape.narrow(u, -1, 0, k), shape.narrow(gu, -1, 0, k)
    vh, gvh = shape.narrow(vh, -2, 0, k), shape.narrow(gvh, -2, 0, k)
    return svd_backward(_given(gu), _given(gs), _given(gvh), u, s, vh)


def svd_backward(gu, gs, gvh, u, s, vh):
    m, n = u.shape[-2], vh.shape[-1]
    if gu is None and gvh is None:
        if gs is None:
            return ew.mul(mm(u, vh), 0)
        return mm(u, ew.mul(shape.unsqueeze(gs, -1), vh)) if m >= n else mm(ew.mul(u, shape.unsqueeze(gs, -2)), vh)
    e = _gaps(ew.mul(s, s))
    s_row, s_col = shape.unsqueeze(s, -2), shape.unsqueeze(s, -1)
    uhgu = _skew(mm(_mT(u), gu)) if gu is not None else None
    vhgv = _skew(mm(vh, _mT(gvh))) if gvh is not None else None
    if uhgu is not None and vhgv is not None:
        ga = ew.div(ew.add(ew.mul(uhgu, s_row), ew.mul(s_col, vhgv)), e)
    elif uhgu is not None:
        ga = ew.mul(ew.div(uhgu, e), s_row)
    else:
        ga = ew.mul(s_col, ew.div(vhgv, e))
    if gs is not None:
        ga = ew.add(ga, diag_embed(gs))
    if m > n and gu is not None:
        ga = mm(u, ga)
        gu_sinv = ew.div(gu, s_row)
        ga = ew.sub(ew.add(ga, gu_sinv), mm(u, mm(_mT(u), gu_sinv)))
        return mm(ga, vh)
    if m < n and gvh is not None:
        ga = mm(ga, vh)
        sinv_gvh = ew.div(gvh, s_col)
        ga = ew.sub(ew.add(ga, sinv_gvh), mm(mm(sinv_gvh, _mT(vh)), vh))
        return mm(u, ga)
    return mm(u, mm(ga, vh)) if m >= n else mm(mm(u, ga), vh)


@defop("linalg_svdvals", kind="other", save=())
def _svdvals(xp, a):
    return _lapack("linalg.svdvals", lambda x: xp.linalg.svd(x, compute_uv=False), a)


def svd(A, full_matrices=True, *, driver=None):
    """torch.linalg.svd: (U, S, Vh), S descending; `driver` (a cuSOLVER choice in torch) is accepted only
    as None."""
    float_matrices("linalg.svd", A)
    if driver is not None:
        raise ValueError(f"linalg.svd: driver= is only supported on CUDA in torch; got {driver!r}")
    batch, (m, n) = tuple(A.shape[:-2]), tuple(A.shape[-2:])
    packed = _svd(A, full_matrices=bool(full_matrices))
    return SVD(*_unpack(packed, batch, _svd_shapes(m, n, bool(full_matrices))))


def svdvals(A, *, driver=None):
    """The singular values; with a gradient to take, from svd (its S gradient is U diag(gS) Vh)."""
    float_matrices("linalg.svdvals", A)
    if A.requires_grad:
        return svd(A, full_matrices=False, driver=driver).S
    return _svdvals(A)


def svd_old(input, some=True, compute_uv=True):
    """torch.svd: (U, S, V) with V, not Vh; some=False gives the full U and V; compute_uv=False returns
    zero U and V of the full shapes, as torch."""
    float_matrices("svd", input)
    if not compute_uv:
        m, n = input.shape[-2:]
        batch = tuple(input.shape[:-2])
        s = svdvals(input)
        zeros = [creation.zeros(*batch, r, r, dtype=input.dtype, device=input.device) for r in (m, n)]
        return SVDOld(zeros[0], s, zeros[1])
    u, s, vh = svd(input, full_matrices=not some)
    return SVDOld(u, s, _mT(vh))


# ---- eigh ---------------------------------------------------------------------------------------
def _uplo(name, UPLO):
    """'L' or 'U', in either case (as torch)."""
    if not isinstance(UPLO, str) or UPLO.upper() not in ("L", "U"):
        raise ValueError(f"{name}: Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    return UPLO.upper()


@defop("linalg_eigh", kind="other", save=(), saves_output=True)
def _eigh(xp, a, UPLO="L"):
    w, v = _lapack("linalg.eigh", lambda x: xp.linalg.eigh(x, UPLO=UPLO), a)
    return _pack(xp, a.shape[:-2], w, v)


@_eigh.grad
def _(ctx, g):
    """torch's linalg_eig_backward (hermitian): gA = V (skew(VᵀgV)/2 / E, diagonal gL) Vᵀ; with gV unused,
    V diag(gL) Vᵀ (finite at repeated eigenvalues)."""
    batch, n = tuple(ctx.inputs[0].shape[:-2]), ctx.inputs[0].shape[-1]
    w, v = _unpack(ctx.out, batch, [(n,), (n, n)])
    gw, gv = (_given(x) for x in _unpack(g, batch, [(n,), (n, n)]))
    if gv is None:
        if gw is None:
            return ew.mul(mm(v, _mT(v)), 0)
        return mm(ew.mul(v, shape.unsqueeze(gw, -2)), _mT(v))
    vhgv = ew.mul(_skew(mm(_mT(v), gv)), 0.5)
    ga = ew.div(vhgv, _gaps(w))
    diag = gw if gw is not None else ew.mul(w, 0)
    ga = ew.where(_eye_mask(ga), diag_embed(diag), ga)
    return mm(v, mm(ga, _mT(v)))


@defop("linalg_eigvalsh", kind="other", save=())
def _eigvalsh(xp, a, UPLO="L"):
    return _lapack("linalg.eigvalsh", lambda x: xp.linalg.eigvalsh(x, UPLO=UPLO), a)


def eigh(A, UPLO="L"):
    """torch.linalg.eigh: ascending eigenvalues and orthonormal eigenvectors of the symmetric matrix whose
    UPLO triangle A holds (the other triangle is not read)."""
    _square("linalg.eigh", A)
    batch, n = tuple(A.shape[:-2]), A.shape[-1]
    w, v = _unpack(_eigh(A, UPLO=_uplo("linalg.eigh", UPLO)), batch, [(n,), (n, n)])
    return EigH(w, v)


def eigvalsh(A, UPLO="L"):
    _square("linalg.eigvalsh", A)
    if A.requires_grad:
        return eigh(A, UPLO).eigenvalues
    return _eigvalsh(A, UPLO=_uplo("linalg.eigvalsh", UPLO))


def eig(A):
    raise NotImplementedError(
        "linalg.eig: the eigenvalues and eigenvectors of a general real matrix are complex, and distgraph has no "
        f"complex dtype (input {tuple(A.shape)}); for a symmetric matrix use linalg.eigh"
    )


def eigvals(A):
    raise NotImplementedError(
        "linalg.eigvals: the eigenvalues of a general real matrix are complex, and distgraph has no complex "
        f"dtype (input {tuple(A.shape)}); for a symmetric matrix use linalg.eigvalsh"
    )


# ---- qr -----------------------------------------------------------------------------------------
def _qr_shapes(m, n, mode):
    k = min(m, n)
    if mode == "r":
        return [(k, n)]
    return [(m, m), (m, n)] if mode == "complete" else [(m, k), (k, n)]


@defop("linalg_qr", kind="other", save=(), saves_output=True)
def _qr(xp, a, mode="reduced"):
    factors = _lapack("linalg.qr", lambda x: xp.linalg.qr(x, mode=mode), a)
    return _pack(xp, a.shape[:-2], *((factors,) if mode == "r" else factors))


@_qr.grad
def _(ctx, g):
    """torch's linalg_qr_backward; like torch, mode='r' and mode='complete' with m > n are refused."""
    mode = ctx.attrs.get("mode", "reduced")
    batch, (m, n) = tuple(ctx.inputs[0].shape[:-2]), tuple(ctx.inputs[0].shape[-2:])
    if mode == "r":
        raise AutogradError(
            "The derivative of linalg.qr depends on Q, which is not computed when mode='r'. Please use "
            "linalg.qr(A, mode='reduced') if you are going to differentiate through linalg.qr."
        )
    if mode == "complete" and m > n:
        raise AutogradError("The QR decomposition is not differentiable when mode='complete' and nrows > ncols.")
    q, r = _unpack(ctx.out, batch, _qr_shapes(m, n, mode))
    gq, gr = (_given(x) for x in _unpack(g, batch, _qr_shapes(m, n, mode)))
    return qr_backward(gq, gr, q, r)


def qr_backward(gq, gr, q, r):
    m, n = q.shape[-2], r.shape[-1]
    if gq is None and gr is None:
        return ew.mul(mm(q, r), 0)
    if gq is not None:
        ga = ew.neg(mm(_mT(q), gq)) if gr is None else ew.sub(mm(gr, _mT(r)), mm(_mT(q), gq))
    else:
        ga = mm(gr, _mT(r))
    if m >= n:
        upper = regions.triu(ga)
        sym = ew.add(upper, _mT(upper))
        sym = ew.sub(sym, ew.mul(diag_embed(regions.diagonal(sym, 0, -2, -1)), 0.5))
        ga = mm(q, sym)
        if gq is not None:
            ga = ew.add(ga, gq)
        return solve_triangular(_mT(r), ga, upper=False, left=False)
    ga = mm(q, regions.tril(ew.sub(ew.neg(ga), _mT(ew.neg(ga)))))
    ga = solve_triangular(_mT(shape.narrow(r, -1, 0, m)), ga, upper=False, left=False)
    ga = shape.cat([ga, creation.zeros(*ga.shape[:-1], n - m, dtype=ga.dtype, device=ga.device)], -1)
    return ew.add(ga, mm(q, gr)) if gr is not None else ga


def qr(A, mode="reduced"):
    """torch.linalg.qr: mode 'reduced' (Q m×k, R k×n), 'complete' (Q m×m, R m×n) or 'r' (R only, Q empty)."""
    float_matrices("linalg.qr", A)
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(
            f"qr received unrecognized mode '{mode}' but expected one of 'reduced' (default), 'r', or 'complete'"
        )
    batch, (m, n) = tuple(A.shape[:-2]), tuple(A.shape[-2:])
    factors = _unpack(_qr(A, mode=mode), batch, _qr_shapes(m, n, mode))
    if mode == "r":
        return QR(creation.zeros(0, dtype=A.dtype, device=A.device), factors[0])
    return QR(*factors)


def qr_old(input, some=True):
    """torch.qr: some=True is mode 'reduced', some=False 'complete'."""
    return qr(input, mode="reduced" if some else "complete")


# ---- householder_product ------------------------------------------------------------------------
def householder_product(A, tau):
    """The first n columns of H_1 ⋯ H_k, H_i = I - tau_i v_i v_iᵀ with v_i column i of A below the diagonal
    and 1 on it (LAPACK's orgqr). Built from differentiable ops, reflector by reflector from the last, so
    its gradient is the exact derivative (torch's householder_product_backward computes the same)."""
    name = "torch.linalg.householder_product"
    float_matrices(name, A)
    m, n = A.shape[-2:]
    if m < n:
        raise ShapeError(
            f"{name}: input.shape[-2] must be greater than or equal to input.shape[-1] (got {tuple(A.shape)})"
        )
    if not isinstance(tau, Tensor) or tau.ndim != A.ndim - 1 or tuple(tau.shape[:-1]) != tuple(A.shape[:-2]):
        raise ShapeError(
            f"{name}: expected tau of shape input.shape[:-2] + (k,), got {tuple(getattr(tau, 'shape', ()))} "
            f"for input {tuple(A.shape)}"
        )
    if tau.shape[-1] > n:
        raise ShapeError(
            f"{name}: input.shape[-1] must be greater than or equal to tau.shape[-1] ({n} < {tau.shape[-1]})"
        )
    if tau.array.dtype != A.array.dtype:
        raise DTypeError(f"{name}: tau dtype {tau.dtype.name} does not match input dtype {A.dtype.name}")
    eye = Tensor(A.device.xp.eye(m, n, dtype=A.array.dtype), device=A.device)
    v = ew.add(regions.tril(A, -1), eye)
    q = shape.expand(eye, tuple(A.shape))
    for i in reversed(range(tau.shape[-1])):
        vi = shape.narrow(v, -1, i, 1)
        ti = shape.unsqueeze(shape.narrow(tau, -1, i, 1), -1)
        q = ew.sub(q, ew.mul(ti, mm(vi, mm(_mT(vi), q))))
    return q
