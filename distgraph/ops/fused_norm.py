"""Array helpers for layer_norm (ops/layers.py): its forward and its array backward (all three gradients from
one centering), on raw arrays (numpy or cupy). Where eager autograd records the op, the forward keeps its
(M,) mean and rstd, as torch's, and the backward centres x from the kept mean (one pass) instead of
recomputing mean and variance (three: at (256, 1024) float32 the array backward went from 425 to 377 µs,
`bench layers`' step from 1.08 to 1.03 ms); elsewhere it recomputes them, to the same bits. Keeping xc as well
would save that last pass (~55 µs) for an (M, N) array held per layer norm, which torch does not: not taken.

Both make as few passes over the (M, N) data as they can: row sums and products are matvecs, per-row dot
products batched matmuls, and the rest in-place ufuncs. Half of those ufuncs take a per-row operand
(x − mean[:, None]), and numpy runs such an operation through its ufunc buffer (8192 elements) when a row
is shorter than the buffer: 2.6x the time of its direct loop over each row (measured at (256, 1024)
float32). So on numpy both functions run with the buffer cut to one row (cache_blocks.row_buffer, rows of
192 and more): `bench layers`' layer_norm row went from 3.0x torch's time to 2.1x. Elementwise results are the same bits with any
buffer, and no reduction here runs through it (BLAS and matmul do those). Taking the rows a cache-sized
block at a time (as optim/blocked.py) measured no faster, with or without this: not taken. (A BLAS
rank-1 update through scipy centred rows faster, with the same bits, but put scipy.linalg's import (~120 ms)
on distgraph's start-up and a second BLAS thread pool, which `threadpool_limits` set before the import
misses, on every layer_norm: not taken.)
"""

import math

import numpy as np

from distgraph.ops import cache_blocks


def _rowdot(a, b):
    """Σ_j a_ij b_ij per row, as a batch of (1, N) @ (N, 1) products (a BLAS dot per row)."""
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(a.shape[0])


def centered(xp, x, k, eps):
    """(xc, mean, rstd) for x's rows of its last k dims: xc = x − mean as a fresh (M, N) array, mean and
    rstd = 1 / sqrt(var + eps) as (M,) vectors (two-pass variance, as torch's is stable)."""
    n = math.prod(x.shape[x.ndim - k :])
    x2 = x.reshape(-1, n)
    ones = xp.ones(n, x.dtype)
    mean = (x2 @ ones) * (1.0 / n)
    xc = x2 - mean[:, None]
    var = (_rowdot(xc, xc) if xp is np else xp.einsum("ij,ij->i", xc, xc)) * (1.0 / n)
    rstd = 1.0 / xp.sqrt(var + eps)
    return xc, mean, rstd


def layer_norm_forward(xp, x, w, b, k, eps, keep=False):
    """layer_norm's output, x̂ · w + b (w, b optional), shaped as x; with `keep`, (output, (mean, rstd)): the
    (M,) statistics layer_norm_grads reads as `stats`, the very arrays its own centering would compute."""
    with cache_blocks.row_buffer(x, math.prod(x.shape[x.ndim - k :])):
        out, mean, rstd = centered(xp, x, k, eps)
        out *= rstd[:, None]
        if w is not None:
            out *= w.reshape(-1)
        if b is not None:
            out += b.reshape(-1)
    out = out.reshape(x.shape)
    return (out, (mean, rstd)) if keep else out


def layer_norm_grads(xp, g, x, w, k, eps, need_x, need_w, stats=None):
    """(gx, gw) of layer_norm for the output gradient g (each None where not needed; gw None without w; the
    bias gradient is the sum op's, ops/layers.py). `stats`: the forward's (mean, rstd), kept where eager
    autograd recorded it (as torch's); without them they are recomputed, to the same bits.

    With xc = x − mean and P = g·xc: gw = Σ_i rstd_i P_ij (a matvec), and
    gx = rstd · (ĝ − mean(ĝ)) − xc · rstd³ · mean(ĝ · xc) with ĝ = g·w (Σ_j ĝ·xc = P @ w), so x̂ is never
    formed. Each gradient's bits do not depend on which others are asked for (the Tensor rule's ops ask
    for one at a time)."""
    with cache_blocks.row_buffer(x, math.prod(x.shape[x.ndim - k :])):
        return _layer_norm_grads(xp, g, x, w, k, eps, need_x, need_w, stats)


def _layer_norm_grads(xp, g, x, w, k, eps, need_x, need_w, stats):
    if stats is None:
        xc, _, rstd = centered(xp, x, k, eps)
    else:  # one pass from the kept mean, as centered's own subtraction
        mean, rstd = stats
        xc = x.reshape(-1, math.prod(x.shape[x.ndim - k :])) - mean[:, None]
    n = xc.shape[1]
    g2 = g.reshape(xc.shape)
    tail = x.shape[x.ndim - k :]
    gw = gx = None
    if need_w or need_x:
        p = g2 * xc
        if need_w:
            gw = (rstd @ p).reshape(tail)
        if need_x:
            wf = None if w is None else w.reshape(-1)
            wv = xp.ones(n, g2.dtype) if wf is None else wf
            s = p @ wv
            c1 = (g2 @ wv) * (1.0 / n)  # mean(ĝ) per row
            a = s * (rstd * rstd * (1.0 / n))  # rstd² · mean(ĝ · xc): xc's factor before the last · rstd
            gx = p  # (its last use above): the scratch for ĝ
            if wf is None:
                gx[...] = g2
            else:
                xp.multiply(g2, wf, out=gx)
            gx -= c1[:, None]
            xc *= a[:, None]
            gx -= xc
            gx *= rstd[:, None]
            gx = gx.reshape(x.shape)
    return gx, gw
