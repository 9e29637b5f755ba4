"""Chains of array passes run one cache-sized block at a time on large host arrays: gelu's forward and
gradient (erf and tanh forms), silu's gradient, softmax's gradient; and numpy's ufunc buffer cut to one row
(`row_buffer`).

numpy makes one pass over memory per operation. gelu's erf form is ~20 passes (torch's float32 erf
approximation, ops/kernels.py) over its input and three temporaries, softmax's backward four over as
many arrays; on a (256, 1024) float32 activation (1 MiB an array) they do not fit the core's 2 MiB L2,
so every pass streams from further out. As in optim/blocked.py, running the whole chain on a block of
about `BLOCK_BYTES` per array keeps the block in cache from its first pass to its last: the same
operations on the same elements, hence the same bits (softmax's reductions run along a row, so its
blocks are whole rows, slices of axis 0 when the reduction is along another). cupy arrays, chains under
`MIN_BYTES`, `x` not C-contiguous and operands of another dtype or shape run whole, as before.

Measured (`distgraph bench layers`' arrays, one thread, old and new alternated): gelu's forward 0.8x,
its gradient 0.85x, the tanh form's 0.87x and 0.77x, silu's gradient 0.87x (0.81x in float64), softmax's
gradient 0.8x. softmax's and log_softmax's forwards and log_softmax's gradient, two or three arrays, gained
0-5 % at 2-4 MiB an array (and lost as much with a broadcast gradient), so they run whole; so do the
chains of two or three arrays of sigmoid and silu's forwards (1.12x blocked), sigmoid's and tanh's
gradients (1.05x) and softplus's (exp and log1p bound: 1.0x). Each fresh work array costs (~5 us a block's
worth), so a kernel asks for the number it takes (`work`).

`row_buffer` is the other cache measure, for ufuncs with a per-row operand (x − mean[:, None]): numpy runs
such a ufunc through its ufunc buffer (np.getbufsize(), 8192 elements) whenever a row is shorter than the
buffer, 1.5-2.6x the time of its direct loop; cut to one row, the buffer is skipped. Elementwise results
are the same bits with any buffer; so are float32/float64 reductions along the last axis, BLAS, matmul
and einsum (checked), but not a reduction over another axis (slower, too) nor one that casts (float16
sums run in float32 through the buffer): callers wrap only what is elementwise or reduces along rows.
Taken by layer_norm (ops/fused_norm.py), softmax and log_softmax along the last dim and softmax's
gradient (ops/linalg.py), cross_entropy and its gradient (ops/loss.py), batch_norm's fused training op
(ops/fused_batch_norm.py: rows of H·W), and the forwards of eval batch_norm, instance_norm, group_norm,
rms_norm and normalize (nn/functional/layers.py). Measured, old and new alternated, float32: `bench
layers`' rows (forward + backward) softmax 0.91x, log_softmax 0.96x, cross_entropy 0.89x, batch_norm
(train) 0.83x; softmax's and log_softmax's forwards 0.74-0.89x at rows of 512-4096, cross_entropy's
gradient 0.82-0.88x, eval batch_norm 0.63-0.71x, group_norm, instance_norm, rms_norm and normalize's
forwards 0.77-0.92x. Not taken: log_softmax's gradient (0.94-1.06x), rows under ROW_MIN.
"""

import contextlib

import numpy as np

BLOCK_BYTES = 256 * 1024  # per array, as optim/blocked.py (measured: 128-512 KiB alike, 64 KiB slower)
MIN_BYTES = 4 * 1024 * 1024  # a chain's arrays together: smaller fit the cache whole (measured: 3 MiB no faster)
SCRATCH = 4  # work arrays of a block, by default: gelu's erf form takes 4 (fresh ones cost: 20 us for 4)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
ROW_MIN = 192  # shorter rows: the default buffer as fast or faster (measured: 128 1.05-1.2x, 160 0.9-1.1x)


def _row_blocks(x, arrays, axis=None):
    """Slices of axis 0 of about BLOCK_BYTES each where blocking applies to x, a chain through `arrays`
    arrays of its size (a reduction along `axis`, which then may not be 0), else None."""
    if type(x) is not np.ndarray or x.nbytes * arrays < MIN_BYTES or not x.flags.c_contiguous or x.ndim == 0:
        return None
    if axis == 0 or x.dtype not in _FLOATS:  # (float16's sums run in float32: sum's op, not here)
        return None
    step = max(1, BLOCK_BYTES * x.shape[0] // x.nbytes)
    return [slice(s, s + step) for s in range(0, x.shape[0], step)] if step < x.shape[0] else None


class _Buffer:
    """numpy's ufunc buffer `size` elements long inside a with-block, the old size restored on leaving."""

    def __init__(self, size):
        self.size = size

    def __enter__(self):
        self.old = np.setbufsize(self.size)

    def __exit__(self, *exc):
        np.setbufsize(self.old)


_UNCHANGED = contextlib.nullcontext()


def row_buffer(x, n):
    """A with-block context in which numpy's ufunc buffer is cut to one row of n elements (to a multiple of
    16, as numpy takes) where x, the op's array, is a C-contiguous float32/float64 numpy array (its rows lie
    in memory as they count) and ROW_MIN <= n < the buffer, else one that changes nothing. The old size
    comes back on leaving, on an exception too (numpy 2's buffer size is a context variable: per thread)."""
    size = n - n % 16
    rows = type(x) is np.ndarray and x.dtype in _FLOATS and x.flags.c_contiguous
    if not rows or n < ROW_MIN or size >= np.getbufsize():
        return _UNCHANGED
    return _Buffer(size)


def elementwise(kernel, xp, *arrays, work=SCRATCH, kept=False, **attrs):
    """`kernel(xp, *arrays, **attrs)`, an elementwise kernel with an `out=` for its result and `scratch=` for
    `work` work arrays, on arrays of one shape and dtype: block by block into one fresh array (a block's
    work arrays reused by the next) where blocking applies, else whole. Where `kept`, the kernel also fills
    a `kept=` array like x (what its backward reads: gelu's), and the call returns (result, that array)."""
    x = arrays[-1]
    same = all(type(a) is np.ndarray and a.shape == x.shape and a.dtype == x.dtype for a in arrays)
    if same and all(a.flags.c_contiguous for a in arrays):
        arrays = tuple(a.reshape(-1) for a in arrays)  # elements, not rows: a row may be larger than a block
    parts = _row_blocks(arrays[-1], len(arrays) + 1 + work + kept) if same else None
    keep = xp.empty_like(arrays[-1]) if kept else None
    if parts is None:
        out = kernel(xp, *arrays, **attrs, **({"kept": keep} if kept else {}))
    else:
        out = np.empty_like(arrays[-1])
        scratch = [np.empty_like(out[parts[0]]) for _ in range(work)]
        for part in parts:
            ob, more = out[part], ({"kept": keep[part]} if kept else {})
            kernel(xp, *(a[part] for a in arrays), out=ob, scratch=[w[: len(ob)] for w in scratch], **more, **attrs)
    return (out.reshape(x.shape), keep.reshape(x.shape)) if kept else out.reshape(x.shape)


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
    with row_buffer(y, y.shape[-1] if axis == y.ndim - 1 else 0):
        for part in parts:
            yb, ob = y[part], out[part]
            gy = np.multiply(g[part], yb, out=scratch[: yb.shape[0]])
            np.multiply(yb, np.add.reduce(gy, axis, keepdims=True), out=ob)
            np.subtract(gy, ob, out=ob)
    return out
