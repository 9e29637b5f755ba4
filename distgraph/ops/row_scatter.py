"""np.add.at(out, index, values) with add.at's bits and without its per-element loop: the scatter-add behind
x[ids]'s backward and index_put's accumulate (ops/indexing.py, ops/index_put.py) and embedding's backward
(ops/layers.py).

add.at adds each value in index order, one element at a time. For one integer array indexing dim 0 the same
sums come from rounds: a stable sort groups equal ids, and round r adds each id's r-th row (in index order)
with one fancy-index add, whose ids are distinct. Into zeros (`fresh`, a gradient being made) the first round
is a write of 0 + v, so a −0.0 gradient turns +0.0 as add.at turns it. After `ROUNDS` rounds the rows left
(an id that occurs more often) go through add.at, after their id's earlier rows, as there. Any other index,
narrow rows (add.at's own loop is as fast), an out-of-range id (add.at raises) or a cupy array: add.at itself
(backend.scatter_at).
"""

import numpy as np

from distgraph.backend import scatter_at

ROUNDS = 16  # rounds of distinct-id adds before the remaining repeats go to add.at


def add_at(xp, out, index, values, fresh=False):
    """out[index] += values in place, repeated positions adding up (numpy's `+=` keeps one of them).
    `fresh`: out is all zeros (a gradient being made), so rows may be written into it rather than added."""
    ids = index[0] if type(index) is tuple and len(index) == 1 else index
    if type(ids) is np.ndarray and ids.dtype.kind in "iu":
        target = ids.shape + out.shape[1:]
    else:
        target = xp.broadcast_to(xp.empty((), dtype=bool), out.shape)[index].shape
    if values.shape != target:  # numpy 2's ufunc.at adds a value of lower rank wrongly (also on the host
        values = xp.broadcast_to(values, target)  # path of scatter_at): broadcast first
    if xp is np and _add_rows(out, ids, values, fresh):
        return
    scatter_at("add", out, index, values)


def _add_rows(out, index, values, fresh):
    """add_at by rounds (module docstring) for one integer array on dim 0; False (nothing done) where that
    does not apply."""
    if type(index) is not np.ndarray or index.dtype.kind not in "iu" or index.size < 2 or out.ndim < 2:
        return False
    if out.dtype.kind not in "fc" or values.dtype != out.dtype or out.size < 8 * len(out):  # (narrow rows)
        return False
    flat = index.reshape(-1).astype(np.int64, copy=False)
    n, k = out.shape[0], flat.size
    lo, hi = flat.min(), flat.max()
    if lo < -n or hi >= n or n * k >= 2**62:  # out of range (add.at raises), or too large for the sort keys
        return False
    if lo < 0:  # a negative id and its positive twin name one row
        flat = np.where(flat < 0, flat + n, flat)
    rows = values.reshape((k, *out.shape[1:]))
    ids, order = np.divmod(np.sort(flat * k + np.arange(k)), k)  # the ids sorted, and a stable argsort of them
    new = ids[1:] != ids[:-1]
    if new.all():  # each row once
        if fresh:  # out is zeros: 0 + v, as add.at (−0.0 turns +0.0), written in one go
            out[flat] = rows + out.dtype.type(0)
        else:
            out[flat] += rows
        return True
    starts = np.flatnonzero(np.concatenate(([True], new)))
    rank = np.arange(k) - np.repeat(starts, np.diff(np.append(starts, k)))  # occurrence number of each row's id
    counts = np.bincount(rank)
    by_rank = order[np.argsort(rank, kind="stable")]  # round 0's rows, then round 1's, ... each in id order
    ends = np.cumsum(counts)
    for r, end in enumerate(ends[:ROUNDS]):
        seg = by_rank[end - counts[r] : end]
        if fresh and r == 0:  # into zeros: as above
            out[flat[seg]] = rows[seg] + out.dtype.type(0)
        else:
            out[flat[seg]] += rows[seg]
    if len(counts) > ROUNDS:  # the rest, ordered by id and then by position: add.at's order for each id
        rest = order[rank > ROUNDS - 1]
        np.add.at(out, flat[rest], rows[rest])
    return True
