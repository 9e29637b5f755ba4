"""Chains of array passes run one cache-sized block at a time on large host arrays: gelu's forward and
gradient (erf and tanh forms), softmax's gradient.

numpy makes one pass over memory per operation. gelu's erf form is ~20 passes (torch's float32 erf
approximation, ops/kernels.py) over its input and three temporaries, softmax's backward four over as
many arrays; on a (256, 1024) float32 activation (1 MiB an array) they do not fit the core's 2 MiB L2,
so every pass streams from further out. As in optim/blocked.py, running the whole chain on a block of
about `BLOCK_BYTES` per array keeps the block in cache from its first pass to its last: the same
operations on the same elements, hence the same bits (softmax's reductions run along a row, so its
blocks are whole rows, slices of axis 0 when the reduction is along another). cupy arrays, chains under
`MIN_BYTES`, `x` not C-contiguous and operands of another dtype or shape run whole, as before.

Measured (`distgraph bench layers`' arrays, one thread, old and new alternated): gelu's forward 0.8x,
its gradient 0.85x, the tanh form's 0.87x and 0.77x, softmax's gradient 0.8x. softmax's and
log_softmax's forwards and log_softmax's gradient, two or three arrays, gained 0-5 % at 2-4 MiB an
array (and lost as much with a broadcast gradient), so they run whole.
"""

import numpy as np

BLOCK_BYTES = 256 * 1024  # per array, as optim/blocked.py (measured: 128-512 KiB alike, 64 KiB slower)
MIN_BYTES = 4 * 1024 * 1024  # a chain's arrays together: smaller fit the cache whole (measured: 3 MiB no faster)
SCRATCH = 4  # work arrays of a block, for gelu's erf
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _row_blocks(x, arrays, axis=None):
    """Slices of axis 0 of about BLOCK_BYTES each where blocking applies to x, a chain through `arrays`
    arrays of its size (a reduction along `axis`, which then may not be 0), else None."""
    if type(x) is not np.ndarray or x.nbytes * arrays < MIN_BYTES or not x.flags.c_contiguous or x.ndim == 0:
        return None
    if axis == 0 or x.dtype not in _FLOATS:  # (float16's sums run in float32: sum's op, not here)
        return None
    step = max(1, BLOCK_BYTES * x.shape[0] // x.nbytes)
    return [slice(s, s + step) for s in range(0, x.shape[0], step)] if step < x.shape[0] else None


def elementwise(kernel, xp, *arrays, **attrs):
    """`kernel(xp, *arrays, **attrs)`, an elementwise kernel with an `out=` for its result and `scratch=` for
    `SCRATCH` work arrays, on arrays of one shape and dtype: block by block into one fresh array (a block's
    work arrays reused by the next) where blocking applies, else whole."""
    x = arrays[-1]
    same = all(type(a) is np.ndarray and a.shape == x.shape and a.dtype == x.dtype for a in arrays)
    if same and all(a.flags.c_contiguous for a in arrays):
        arrays = tuple(a.reshape(-1) for a in arrays)  # elements, not rows: a row may be larger than a block
    parts = _row_blocks(arrays[-1], len(arrays) + 1 + SCRATCH) if same else None
    if parts is None:
        return kernel(xp, *arrays, **attrs).reshape(x.shape)
    out = np.empty_like(arrays[-1])
    scratch = [np.empty_like(out[parts[0]]) for _ in range(SCRATCH)]
    for part in parts:
        ob = out[part]
        kernel(xp, *(a[part] for a in arrays), out=ob, scratch=[w[: len(ob)] for w in scratch], **attrs)
    return out.reshape(x.shape)


def softmax_grad(y, g, axis):
    """softmax's array gradient, torch's g·y − y·Σ(g·y), on blocks of rows (g·y in one block's scratch, reused
    by the next) for g of y's shape and dtype in any layout; None where blocking does not apply."""
    if type(g) is not np.ndarray or g.shape != y.shape or g.dtype != y.dtype:
        return None
    parts = _row_blocks(y, 4 - (g.strides.count(0) == g.ndim), axis)  # y, g (unless broadcast), g·y, out
    if parts is None:
        return None
    out = np.empty_like(y)
    scratch = np.empty_like(y[parts[0]])
    for part in parts:
        yb, ob = y[part], out[part]
        gy = np.multiply(g[part], yb, out=scratch[: yb.shape[0]])
        np.multiply(yb, np.add.reduce(gy, axis, keepdims=True), out=ob)
        np.subtract(gy, ob, out=ob)
    return out
