"""Array helpers for the fused normalization and lookup ops (ops/layers.py): layer_norm's array backward
(all three gradients from one recomputed x̂) and embedding's scatter-add of gradient rows.

Both work on raw arrays (numpy or cupy) and make as few passes over the (M, N) data as they can:
products into scratch arrays updated in place, row sums as BLAS matvecs.
"""

import math

import numpy as np

from distgraph.backend import scatter_at


def normalized(xp, x, k, eps):
    """x̂ as (M, N) rows of the N normalized elements, and rstd (M, 1); row sums go through BLAS matvecs."""
    n = math.prod(x.shape[x.ndim - k :])
    x2 = x.reshape(-1, n)
    mean = (x2 @ xp.ones(n, x.dtype)) * (1.0 / n)
    xhat = x2 - mean[:, None]
    var = xp.einsum("ij,ij->i", xhat, xhat) * (1.0 / n)
    rstd = (1.0 / xp.sqrt(var + eps))[:, None]
    xhat *= rstd
    return xhat, rstd


def layer_norm_grads(xp, g, x, w, k, eps, need_x, need_w, need_b):
    """(gx, gw, gb) of layer_norm for the output gradient g (each None where not needed; gw None without w).

    gx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)) with ĝ = g·w, gw = Σ g·x̂ and gb = Σ g over the leading
    dims; Σ ĝ·x̂ per row is (g·x̂)·w, so g·x̂ is formed once for both gw and gx. Each gradient's bits do
    not depend on which others are asked for (the Tensor rule's ops ask for one at a time)."""
    xhat, rstd = normalized(xp, x, k, eps)
    m, n = xhat.shape
    g2 = g.reshape(xhat.shape)
    tail = x.shape[x.ndim - k :]
    gb = (xp.ones(m, g2.dtype) @ g2).reshape(tail) if need_b else None
    gw = gx = None
    if need_w or need_x:
        gxh = g2 * xhat
        if need_w:
            gw = (xp.ones(m, gxh.dtype) @ gxh).reshape(tail)
        if need_x:
            wf = xp.ones(n, g2.dtype) if w is None else w.reshape(-1)
            c2 = (gxh @ wf) * (1.0 / n)  # mean(ĝ · x̂) per row
            c1 = (g2 @ wf) * (1.0 / n)  # mean(ĝ) per row
            xhat *= c2[:, None]
            xhat += c1[:, None]
            gx = gxh  # (its last use above): the scratch for ĝ
            if w is None:
                xp.subtract(g2, xhat, out=gx)
            else:
                xp.multiply(g2, wf, out=gx)
                gx -= xhat
            gx *= rstd
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
    if new.all():  # no index repeats: one assignment
        out[flat_i] = flat_g
        return out
    starts = np.flatnonzero(new)
    rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.append(starts, ids.size)))
    out[ids[new]] = flat_g[order[new]]
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
