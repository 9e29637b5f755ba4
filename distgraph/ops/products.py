"""Products and running scans: prod, cumprod, cumsum.

Their backward rules follow torch's (FunctionsManual.cpp) case for case, because the cases decide
where NaN and inf go: with no zero in the input the gradient divides by it (prod/x, reversed
cumsum of out·g over x), so a NaN or inf anywhere in a slice reaches the whole slice; with a zero,
products of the other factors are formed without dividing.
"""

import numpy as np

from distgraph import dtypes
from distgraph.autograd import grad_mode
from distgraph.ops import compare as cmp
from distgraph.ops import creation
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.reduction import F16, _unsqueeze_reduced, normalize_dim, normalize_dims, sum
from distgraph.ops.registry import defop
from distgraph.ops.reorder import flip
from distgraph.ops.shape import cat, flatten, movedim, narrow, reshape, stack


def _accumulator(input, dtype):
    """`input` in the dtype a product or running sum accumulates in: `dtype`, else int64 for
    bool/integer inputs as torch (numpy would give uint8 uint64, which distgraph does not hold)."""
    if dtype is not None:
        return ew.cast(input, dtypes.from_any(dtype))
    if input.array.dtype.kind in "biu" and input.array.dtype != np.int64:
        return ew.cast(input, np.int64)
    return input


def _has_zero(x):
    return bool((x.array == 0).any())


# ---- prod ---------------------------------------------------------------------------------------
@defop("prod", kind="reduction", saves_output=True)
def _prod(xp, x, axes, keepdim=False, whole=False):
    if xp is np:  # the ufunc np.prod runs, called from here: an inf · 0 warns from this module, which
        return np.multiply.reduce(x, axes, None, None, keepdim)  # distgraph's warnings filter silences (as torch)
    return xp.prod(x, axis=axes, keepdims=keepdim)


@_prod.grad
def _(ctx, g):
    # torch's prod_backward: g·prod/x_i when the input holds no zero (so NaN where prod/x_i is inf/inf
    # or prod is NaN, and its double backward differentiates prod too); with a zero, the product of the
    # others (torch's prod_safe_zeros_backward: exclusive running products from both ends, no division).
    # `whole` (prod of all elements, no dim): a 0-d input passes g on, and with two zeros and no graph of
    # the backward wanted the gradient is all zeros, as torch's
    x = ctx.inputs[0]
    axes, keepdim = ctx.attrs["axes"], ctx.attrs.get("keepdim", False)
    if x.ndim == 0:
        return g
    g = _unsqueeze_reduced(g, axes, keepdim)
    if not _has_zero(x):
        return ew.mul(g, ew.div(_unsqueeze_reduced(ctx.out, axes, keepdim), x))
    if ctx.attrs.get("whole") and not grad_mode.is_grad_enabled() and int((x.array == 0).sum()) > 1:
        return creation.zeros(*x.shape, dtype=x.dtype, device=x.device)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = movedim(x, list(axes), list(range(len(axes)))) if axes else x
    flat = flatten(moved, 0, len(axes) - 1) if len(axes) > 1 else moved if axes else reshape(x, (1,) + x.shape)
    others = ew.mul(_exclusive_cumprod(flat, 0), flip(_exclusive_cumprod(flip(flat, 0), 0), 0))
    others = reshape(others, tuple(x.shape[a] for a in axes) + tuple(x.shape[a] for a in rest))
    others = movedim(others, list(range(len(axes))), list(axes)) if axes else reshape(others, x.shape)
    return ew.mul(g, others)


def _exclusive_cumprod(t, axis):
    """[1, t_0, t_0·t_1, ...] along `axis`: a cumprod of `t` shifted by a one, as torch builds it."""
    return cumprod(cat([_ones_along(t, axis), narrow(t, axis, 0, t.shape[axis] - 1)], axis), axis)


def _ones_along(t, axis):
    """Ones shaped like one slice of `t` along `axis` (kept as a size-1 dim)."""
    shape = tuple(1 if a == axis else s for a, s in enumerate(t.shape))
    return creation.ones(*shape, dtype=t.dtype, device=t.device)


@autocast_op("prod")
def prod(input, dim=None, keepdim=False, dtype=None):
    input = _accumulator(input, dtype)
    if dim is not None and not isinstance(dim, int | np.integer):
        raise TypeError("prod: dim must be an int (as in PyTorch)")
    return _prod(input, axes=normalize_dims(dim, input.ndim, "prod"), keepdim=keepdim, whole=dim is None)


# ---- cumulative -----------------------------------------------------------------------------------
@defop("cumsum", kind="other", save=())
def _cumsum(xp, x, axis):
    """Row-major whatever x's layout (numpy's keeps x's): torch's scans return contiguous results."""
    if xp is np and x.ndim:  # what np.cumsum runs, called from here: its warnings meet distgraph's filter
        return np.ascontiguousarray(np.add.accumulate(x, axis))
    return xp.ascontiguousarray(xp.cumsum(x, axis=axis))


@_cumsum.grad
def _(ctx, g):
    return _reversed_cumsum(g, ctx.attrs["axis"])


def _reversed_cumsum(t, axis):
    """out_i = sum_{j >= i} t_j along `axis` (torch's reversed_cumsum: flip, cumsum, flip)."""
    return flip(cumsum(flip(t, axis), axis), axis)


@autocast_op("cumsum")
def cumsum(input, dim, dtype=None):
    return _cumulative(_cumsum, _accumulator(input, dtype), dim, "cumsum")


def _cumulative(op, input, dim, name):
    axis = normalize_dim(dim, input.ndim, name)
    if input.array.dtype is F16:  # torch accumulates float16 in float32 (a float16 running sum stops at 2048)
        return ew.cast(_cumulative(op, ew.cast(input, np.float32), axis, name), F16)
    if input.ndim == 0:  # numpy's cumsum would flatten a 0-d tensor into shape (1,)
        return reshape(op(reshape(input, (1,)), axis=0), ())
    return op(input, axis=axis)


@defop("cumprod", kind="other", saves_output=True)
def _cumprod(xp, x, axis):
    if xp is np and x.ndim:  # as _cumsum: the ufunc called from here, so an inf · 0 is not warned of
        return np.ascontiguousarray(np.multiply.accumulate(x, axis))
    return xp.ascontiguousarray(xp.cumprod(x, axis=axis))


@_cumprod.grad
def _(ctx, g):
    # torch's cumprod_backward, case for case: no zero anywhere in the input, the reversed cumsum of
    # out·g over x (a NaN or inf spreads over its slice, as torch's does); with a zero, the O(n)
    # masked formula when no graph of the backward is wanted, else the O(n^2) products of the other
    # factors, which are differentiable again
    x, axis = ctx.inputs[0], ctx.attrs["axis"]
    if x.array.size <= 1 or x.shape[axis] == 1:
        return g
    if not _has_zero(x):
        return ew.div(_reversed_cumsum(ew.mul(ctx.out, g), axis), x)
    if grad_mode.is_grad_enabled():
        return _omitted_products_grad(x, g, axis)
    return _first_zero_grad(x, g, ctx.out, axis)


def _omitted_products_grad(x, g, axis):
    """grad_k = sum_{j >= k} g_j · prod_{i <= j, i != k} x_i, one k at a time (torch's GradMode path)."""
    n = x.shape[axis]
    grads = []
    for k in range(n):
        if k == 0:
            omitted = cat([_ones_along(x, axis), cumprod(narrow(x, axis, 1, n - 1), axis)], axis)
        else:
            until = prod(narrow(x, axis, 0, k), axis, keepdim=True)
            if k == n - 1:
                omitted = until
            else:
                omitted = cat([until, ew.mul(until, cumprod(narrow(x, axis, k + 1, n - k - 1), axis))], axis)
        grads.append(sum(ew.mul(narrow(g, axis, k, n - k), omitted), axis))
    return stack(grads, axis)


def _first_zero_grad(x, g, out, axis):
    """torch's O(n) formula for an input with zeros. Before the first zero z1: the no-zero formula over
    that prefix; at z1: prod(x[:z1]) · sum_{z1 <= j < z2} g_j · prod(x[z1+1..j]) (z2 the second zero);
    after z1: 0."""
    is_zero = cmp.eq(x, 0)
    zeros_so_far = cumsum(is_zero, axis)
    before = cmp.eq(zeros_so_far, 0)
    prefix = ew.div(_reversed_cumsum(ew.where(before, ew.mul(out, g), 0.0), axis), ew.where(before, x, 1.0))
    span = cmp.eq(zeros_so_far, 1)  # [z1, z2)
    between = cmp.logical_and(span, cmp.logical_not(is_zero))  # (z1, z2)
    runs = cumprod(ew.where(between, x, 1.0), axis)
    at_zero = sum(ew.mul(runs, ew.where(span, g, 0.0)), axis, keepdim=True)
    out_before = cat([_ones_along(out, axis), narrow(out, axis, 0, x.shape[axis] - 1)], axis)  # out[z1 - 1]
    at_zero = ew.mul(at_zero, out_before)
    return ew.where(before, prefix, ew.where(cmp.logical_and(span, is_zero), at_zero, 0.0))


@autocast_op("cumprod")
def cumprod(input, dim, dtype=None):
    return _cumulative(_cumprod, _accumulator(input, dtype), dim, "cumprod")
