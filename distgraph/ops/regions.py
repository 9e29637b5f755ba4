"""Ops that add or select regions of a tensor: pad, tril/triu, diagonal/diag, unfold (sliding windows)."""

import builtins

import numpy as np

from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.activation import step_mask
from distgraph.ops.registry import defop
from distgraph.ops.shape import _dim


# ---- pad ----------------------------------------------------------------------------------------------------
@defop("pad", kind="other", save=())
def _pad(xp, x, widths, value=0.0):
    # a filled array and one slice assignment: several times faster than xp.pad on small arrays, and the
    # backward of every narrow/chunk/split is this op
    out = xp.full(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, widths)), value, dtype=x.dtype)
    out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, widths))] = x
    return out


@_pad.grad
def _(ctx, g):
    index = tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(ctx.attrs["widths"]))
    from distgraph.ops.indexing import getitem

    return getitem(g, index)


def pad_nd(input, widths, value=0.0):
    """Constant padding with numpy-style `widths` ((before, after) per dim)."""
    return _pad(input, widths=tuple(tuple(w) for w in widths), value=value)


def pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: `pad` lists (left, right) pairs starting from the last dim."""
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ShapeError(f"pad: padding length {len(pad)} must be even and at most 2*ndim ({2 * input.ndim})")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        widths[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    # negative widths crop first, except in reflect mode, which torch mirrors about the uncropped input
    if mode != "reflect" and builtins.any(lo < 0 or hi < 0 for lo, hi in widths):
        from distgraph.ops.indexing import getitem

        index = tuple(slice(-lo if lo < 0 else 0, (hi if hi < 0 else None)) for lo, hi in widths)
        input = getitem(input, index)
        widths = [(builtins.max(lo, 0), builtins.max(hi, 0)) for lo, hi in widths]
    if mode == "constant":
        return pad_nd(input, widths, 0.0 if value is None else value)
    if mode not in _BORDER_INDEX:
        raise ShapeError(f"pad: mode {mode!r} is not one of constant, reflect, replicate, circular")
    k = len(pad) // 2  # torch pads k dims of a batch of them (one or none) only
    if len(pad) not in (2, 4, 6) or not k + 1 <= input.ndim <= k + 2:
        raise ShapeError(
            f"pad: {mode} padding of size {len(pad)} is not supported for a {input.ndim}-D input (size 2 takes "
            "2-D or 3-D input, 4 takes 3-D or 4-D, 6 takes 4-D or 5-D)"
        )
    if mode != "circular" and 0 in tuple(input.shape)[input.ndim - k - 1 :]:  # a batch dim may be empty
        raise ShapeError(
            f"pad: {mode} padding expects a {k + 1}-D or {k + 2}-D (batch mode) input with possibly 0 batch size "
            f"and other non-zero dims, got shape {tuple(input.shape)}"
        )
    from distgraph.ops.indexing import getitem

    xp, source = input.device.xp, input
    for d, (lo, hi) in enumerate(widths):
        if lo or hi:
            n = input.shape[d]
            limit = {"reflect": n - 1, "circular": n}.get(mode)
            if limit is not None and builtins.max(lo, hi) > limit:
                raise ShapeError(
                    f"pad: {mode} padding ({lo}, {hi}) of dim {d} must be at most {limit} for input shape "
                    f"{tuple(input.shape)}"
                )
            if n + lo + hi < 0:
                raise ShapeError(f"pad: {mode} padding ({lo}, {hi}) of dim {d} leaves nothing of input shape {tuple(input.shape)}")  # fmt: skip
            index = _BORDER_INDEX[mode](xp.arange(-lo, n + hi), n, xp)
            input = getitem(input, (slice(None),) * d + (index,))  # gathers; backward adds repeats up
    return input if mode == "circular" else _border_pad(input, source)


@defop("border_pad", kind="other", save=())
def _border_pad(xp, out, source):
    return out


# torch's reflection/replication pad backward takes the input too (its derivative there is 0), so under
# create_graph the input's gradient is a function of the input, as torch's (not of the output's gradient only)
_border_pad.grad(lambda ctx, g: (g, step_mask(cmp.ne(ctx.inputs[1], ctx.inputs[1]), ctx.inputs[1], 0.0, 0.0)))


# where position p (-lo <= p < n + hi) of a padded dim of size n reads from, per border mode
_BORDER_INDEX = {
    "reflect": lambda p, n, xp: (n - 1) - abs((n - 1) - abs(p) % (2 * (n - 1))) if n > 1 else p * 0,
    "replicate": lambda p, n, xp: xp.clip(p, 0, n - 1),
    "circular": lambda p, n, xp: p % n,
}


# ---- triangular / diagonal ------------------------------------------------------------------------------------
def _tri_mask(input, diagonal, upper):
    xp = input.device.xp
    n, m = input.shape[-2:]
    mask = xp.triu(xp.ones((n, m), dtype=bool), diagonal) if upper else xp.tril(xp.ones((n, m), dtype=bool), diagonal)
    return Tensor(mask, device=input.device)


def tril(input, diagonal=0):
    return named(ew.where(_tri_mask(input, diagonal, False), input, ew.const(0, input)), "TrilBackward0")


def triu(input, diagonal=0):
    return named(ew.where(_tri_mask(input, diagonal, True), input, ew.const(0, input)), "TriuBackward0")


@defop("diagonal", kind="other", save=(), view=True)
def _diagonal(xp, x, offset, axis1, axis2):
    """A view, as torch's: a write through it reaches `x`. numpy's diagonal is a read-only view, so the
    same strides are laid over `x` from the diagonal's first element (a writable view of `x`)."""
    d = xp.diagonal(x, offset=offset, axis1=axis1, axis2=axis2)
    if xp is not np or not d.size:
        return d if xp is not np else np.lib.stride_tricks.as_strided(x, d.shape, d.strides)
    start = [slice(None)] * x.ndim
    start[axis1], start[axis2] = slice(builtins.max(-offset, 0), None), slice(builtins.max(offset, 0), None)
    return np.lib.stride_tricks.as_strided(x[tuple(start)], d.shape, d.strides)


_diagonal.grad(lambda ctx, g: _diagonal_embed(g, shape=ctx.inputs[0].shape, **ctx.attrs))


@defop("diagonal_embed", kind="other", save=())
def _diagonal_embed(xp, g, shape, offset, axis1, axis2):
    """Zeros of `shape` with `g` written on the diagonal `diagonal(offset, axis1, axis2)` reads: diagonal's
    backward and diag's 1-D forward. Written, not multiplied in, so a NaN or inf stays on the diagonal."""
    out = xp.zeros(shape, dtype=g.dtype)
    _diagonal.forward(xp, out, offset=offset, axis1=axis1, axis2=axis2)[...] = g
    return out


_diagonal_embed.grad(lambda ctx, g: (_diagonal(g, **{k: v for k, v in ctx.attrs.items() if k != "shape"}),))


def diagonal(input, offset=0, dim1=0, dim2=1):
    a1, a2 = _dim(dim1, input.ndim, "diagonal"), _dim(dim2, input.ndim, "diagonal")
    return _diagonal(input, offset=offset, axis1=a1, axis2=a2)


def diag(input, diagonal=0):
    if input.ndim == 2:  # a copy, as torch's diag (diagonal is the view)
        return globals()["diagonal"](input, diagonal).clone()
    n = input.shape[0] + builtins.abs(diagonal)
    return _diagonal_embed(input, shape=(n, n), offset=diagonal, axis1=0, axis2=1)


# ---- unfold -----------------------------------------------------------------------------------------------------
def unfold(input, dimension, size, step):
    """Tensor.unfold: all slices of `size` along `dimension`, `step` apart, as a new last dim. A view, as
    torch's: a write through it reaches `input`. Where windows overlap, an in-place op reads every element
    before writing any (torch's result there depends on its loop order); fill_ and the like agree."""
    d = _dim(dimension, input.ndim, "unfold")
    length = input.shape[d] if input.ndim else 1
    if not 0 <= size <= length:
        raise ShapeError(f"unfold: maximum size for tensor at dimension {d} is {length} but size is {size} (>= 0)")
    if step <= 0:
        raise ShapeError(f"unfold: step is {step} but must be > 0")
    return _unfold(input, dim=d, size=size, step=step)


@defop("unfold", kind="other", save=(), view=True)
def _unfold(xp, x, dim, size, step):
    if not x.ndim:  # one element: its one window, without a dim of windows (as torch)
        return xp.lib.stride_tricks.as_strided(x, (size,), (x.itemsize,))
    n = (x.shape[dim] - size) // step + 1
    shape = x.shape[:dim] + (n,) + x.shape[dim + 1 :] + (size,)
    strides = x.strides[:dim] + (x.strides[dim] * step,) + x.strides[dim + 1 :] + (x.strides[dim],)
    return xp.lib.stride_tricks.as_strided(x, shape, strides)


_unfold.grad(lambda ctx, g: _unfold_backward(g, shape=ctx.inputs[0].shape, **ctx.attrs))


@defop("unfold_backward", kind="other", save=())
def _unfold_backward(xp, g, shape, dim, size, step):
    """Zeros of `shape` with every window's gradient added where the window reads (overlapping windows
    add up): element k of all windows is one strided slice of distinct positions, so k by k."""
    out = xp.zeros(shape, dtype=g.dtype)
    if not len(shape):
        out[...] = g.sum()
        return out
    last = step * (g.shape[dim] - 1) + 1
    for k in range(size):
        out[(slice(None),) * dim + (slice(k, k + last, step),)] += g[..., k]
    return out


_unfold_backward.grad(lambda ctx, g: _unfold(g, **{k: v for k, v in ctx.attrs.items() if k != "shape"}))
