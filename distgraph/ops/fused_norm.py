"""Array helpers for the fused normalization and lookup ops (ops/layers.py): layer_norm's forward and array
backward (all three gradients from one recomputed centering) and embedding's scatter-add of gradient rows.

Both work on raw arrays (numpy or cupy) and make as few passes over the (M, N) data as they can: row sums
and products are matvecs, per-row dot products batched matmuls, and the rest in-place ufuncs. (A BLAS
rank-1 update through scipy centred rows faster, with the same bits, but put scipy.linalg's import (~120 ms)
on distgraph's start-up and a second BLAS thread pool, which `threadpool_limits` set before the import
misses, on every layer_norm: not taken.)
"""

import math

import numpy as np

from distgraph.backend import scatter_at


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


def normalized(xp, x, k, eps):
    """x̂ as (M, N) rows of the N normalized elements, and rstd (M, 1)."""
    xhat, _, rstd = centered(xp, x, k, eps)
    xhat *= rstd[:, None]
    return xhat, rstd[:, None]


def layer_norm_forward(xp, x, w, b, k, eps):
    """layer_norm's output, x̂ · w + b (w, b optional), shaped as x."""
    out, _ = normalized(xp, x, k, eps)
    if w is not None:
        out *= w.reshape(-1)
    if b is not None:
        out += b.reshape(-1)
    return out.reshape(x.shape)


def layer_norm_grads(xp, g, x, w, k, eps, need_x, need_w, need_b):
    """(gx, gw, gb) of layer_norm for the output gradient g (each None where not needed; gw None without w).

    With xc = x − mean and P = g·xc: gw = Σ_i rstd_i P_ij (a matvec), and
    gx = rstd · (ĝ − mean(ĝ)) − xc · rstd³ · mean(ĝ · xc) with ĝ = g·w (Σ_j ĝ·xc = P @ w), so x̂ is never
    formed. Each gradient's bits do not depend on which others are asked for (the Tensor rule's ops ask
    for one at a time)."""
    xc, _, rstd = centered(xp, x, k, eps)
    m, n = xc.shape
    g2 = g.reshape(xc.shape)
    tail = x.shape[x.ndim - k :]
    gb = (xp.ones(m, g2.dtype) @ g2).reshape(tail) if need_b else None
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
    return gx, gw, gb


def scatter_rows(xp, g, indices, num_weights):
    """(num_weights, D) zeros with each row of g (g: (*indices.shape, D)) added at its index: np.add.at's
    sums, in its order (each index's rows in the order they occur), without its per-element cost.

    numpy: a stable sort groups equal indices; the first occurrences are written at once, the k-th ones
    added at once for k = 1, 2, ... (each round's indices distinct), and the rest of an index that occurs
    more than _ROUNDS times goes through np.add.at, after its earlier occurrences as there."""
    d = g.shape[-1]
    out = xp.zeros((num_weights, d), g.dtype)
    flat_g, flat_i = g.reshape(-1, d), indices.reshape(-1)
    if not isinstance(out, np.ndarray) or flat_i.size < 2 or d == 0:
        scatter_at("add", out, flat_i, flat_g)
        return out
    if flat_i.min() < 0:  # a negative index and its positive twin name one row: normalize first
        flat_i = flat_i % num_weights
    order = np.argsort(flat_i, kind="stable")
    ids = flat_i[order]
    new = np.empty(ids.size, bool)
    new[0] = True
    np.not_equal(ids[1:], ids[:-1], out=new[1:])
    if new.all():  # no index repeats: one assignment (0 + g, as add.at: a -0.0 gradient gives +0.0)
        out[flat_i] = flat_g + out.dtype.type(0)
        return out
    starts = np.flatnonzero(new)
    rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.append(starts, ids.size)))
    out[ids[new]] = flat_g[order[new]] + out.dtype.type(0)
    top = int(rank.max())
    for r in range(1, min(top, _ROUNDS) + 1):
        sel = rank == r
        rows = ids[sel]
        out[rows] += flat_g[order[sel]]
    if top > _ROUNDS:
        rest = rank > _ROUNDS
        np.add.at(out, ids[rest], flat_g[order[rest]])
    return out


_ROUNDS = 16  # rounds of distinct-index adds before the remaining repeats go to np.add.at
