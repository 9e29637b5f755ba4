"""Reductions: sum mean amax amin max min logsumexp argmax argmin any all (prod, cumsum, cumprod: products.py).

`dim` takes an int, a tuple of ints or None (all dims), and negative dims, as in PyTorch. Backward
rules re-expand the gradient over the reduced dims (`_unsqueeze_reduced`) and let broadcasting do
the rest.
"""

from collections import namedtuple

import numpy as np

from distgraph import dtypes
from distgraph.autograd.engine import sum_to_array
from distgraph.autograd.function import apply
from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.registry import defop

RED = "reduction"
F16 = np.dtype(np.float16)  # torch accumulates float16 in float32 and rounds once (a singleton: `is` compares)
MaxMin = namedtuple("MaxMin", ["values", "indices"])


def _tensor_dim(dim):
    """A 0-d integer tensor given as a dim, as its int (torch reads it through __index__); else `dim`."""
    if isinstance(dim, Tensor) and not dim.ndim and dim.dtype.category == 1:
        return int(dim.item())
    return dim


def normalize_dims(dim, ndim, op="op"):
    """`dim` (None, int or sequence) as a sorted tuple of non-negative axes; raises ShapeError if out of range.

    A 0-d tensor accepts dim 0 and -1 (as torch) but has no axis: its tuple is empty."""
    if dim is None:
        return tuple(range(ndim))
    if type(dim) is int and -ndim <= dim < ndim:  # the common case, checked
        return (dim % ndim,)
    dim = _tensor_dim(dim)
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    out = []
    for d in dims:
        lo, hi = (-ndim, ndim - 1) if ndim else (-1, 0)
        if not lo <= d <= hi:
            raise ShapeError(f"{op}: Dimension out of range (expected to be in range of [{lo}, {hi}], but got {d})")
        out.append(d % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: dim {dim} appears multiple times in the list of dims")
    return tuple(sorted(out)) if ndim else ()


def normalize_dim(dim, ndim, op="op"):
    """One `dim` as a non-negative axis (0 for a 0-d tensor, whose ops treat it as one element). A tuple is
    refused, as torch refuses it: these ops take one dim (sort(x, (-1,)) would otherwise sort along dim 0)."""
    dim = _tensor_dim(dim)
    if type(dim) is not int and not isinstance(dim, np.integer):
        raise TypeError(f"{op}(): argument 'dim' must be int, not {type(dim).__name__}")
    axes = normalize_dims(dim, ndim, op)
    return axes[0] if axes else 0


def _all_if_empty(dim):
    """torch reads an empty dim list of sum/mean/var/std/norm as 'every dim'."""
    return None if isinstance(dim, tuple | list) and not dim else dim


def _unsqueeze_reduced(g, axes, keepdim):
    """Put back size-1 dims for `axes` so `g` broadcasts against the input."""
    if keepdim or not axes:
        return g
    from distgraph.ops.shape import reshape

    shape = list(g.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(g, tuple(shape))


# ---- sum / mean ---------------------------------------------------------------------------------
@defop("sum", kind=RED, save=())
def _sum(xp, x, axes, keepdim=False, dtype=None):
    if dtype is F16 or (dtype is None and x.dtype is F16):  # numpy would accumulate in float16 (2048 + 1 is 2048)
        return _sum.forward(xp, x.astype(F16, copy=False), axes, keepdim, np.dtype(np.float32)).astype(F16)
    if xp is np:  # what the method runs, called from here: an inf - inf warns from this module, which
        return np.add.reduce(x, axes, dtype, None, keepdim)  # distgraph's warnings filter silences (as torch)
    return x.sum(axes, dtype, None, keepdim)  # the method skips np.sum's dispatch (2x on tiny arrays)


@_sum.grad
def _(ctx, g):
    x = ctx.inputs[0]
    from distgraph.ops.shape import _expand

    g = _unsqueeze_reduced(g, ctx.attrs["axes"], ctx.attrs.get("keepdim", False))
    return g if g.shape == x.shape else apply(_expand, (g,), {"shape": x.shape})  # shapes known valid: no checks


@_sum.array_grad
def _(ctx, g):
    x = ctx.inputs[0]
    axes = ctx.attrs["axes"]
    if axes and not ctx.attrs.get("keepdim", False):
        g = g.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.array.shape)))
    return broadcast_array(x.device.xp, g, x.array.shape)


def broadcast_array(xp, g, shape):
    """`g` broadcast to `shape` as a new array (an empty array filled by broadcasting is the cheapest
    way on tiny arrays, several times cheaper than xp.broadcast_to)."""
    if g.shape == shape:
        return g
    out = xp.empty(shape, g.dtype)
    out[...] = g
    return out


@autocast_op("sum")
def sum(input, dim=None, keepdim=False, dtype=None):
    axes = normalize_dims(_all_if_empty(dim), input.array.ndim, "sum")
    np_dtype = dtypes.from_any(dtype).np if dtype is not None else None
    if np_dtype is None and input.array.dtype.kind in "biu" and input.array.dtype != np.int64:
        np_dtype = np.dtype(np.int64)  # torch sums bool/int into int64 (numpy: uint8 into uint64)
    return apply(_sum, (input,), {"axes": axes, "keepdim": keepdim, "dtype": np_dtype})


def mean(input, dim=None, keepdim=False, dtype=None):
    if input.array.dtype.kind != "f" and dtype is None:
        from distgraph.errors import DTypeError

        raise DTypeError(
            f"mean(): could not infer output dtype. Input dtype must be either a floating point or complex "
            f"dtype. Got: {input.dtype.name}"
        )
    if (input.array.dtype if dtype is None else dtypes.from_any(dtype).np) is F16:
        # torch's: cast to float32, sum, divide, cast back (a float16 count would be inf above 65504)
        x = input if input.array.dtype is F16 else ew.cast(input, F16)
        return named(ew.cast(mean(ew.cast(x, np.float32), dim, keepdim), F16), _MEAN_NAMES[dim is None])
    axes = normalize_dims(_all_if_empty(dim), input.ndim, "mean")
    count = 1
    for a in axes:
        count *= input.array.shape[a]
    total = sum(input, dim=axes, keepdim=keepdim, dtype=dtype)
    return named(ew.div(total, count if count else float("nan")), _MEAN_NAMES[dim is None])


_MEAN_NAMES = ("MeanBackward1", "MeanBackward0")  # torch's, given dims or not


@defop("sum_to", kind=RED, save=())
def _sum_to(xp, x, shape):
    return sum_to_array(x, shape)


@_sum_to.grad
def _(ctx, g):
    from distgraph.ops.shape import expand

    return expand(g, ctx.inputs[0].shape)


_sum_to.array_grad(lambda ctx, g: broadcast_array(ctx.inputs[0].device.xp, g, ctx.inputs[0].array.shape))


def sum_to(input, shape):
    """Sum a broadcast tensor down to `shape` (the inverse of broadcasting)."""
    return _sum_to(input, shape=tuple(shape))


# ---- max / min ------------------------------------------------------------------------------------
def _extreme(name, fn):
    op = defop(name, kind=RED, saves_output=True)(
        lambda xp, x, axes, keepdim=False, evenly=False, nan_hit=False: getattr(xp, fn)(x, axis=axes, keepdims=keepdim)
    )

    @op.grad
    def _(ctx, g):
        # ties share the gradient evenly, as torch's amax/amin do (g times a 0/1 mask: a NaN g reaches every
        # element). `evenly`: max()/min() of all elements, torch's evenly_distribute_backward, which fills
        # only the hits (the others get an exact 0) and counts NaN elements as hits of a NaN result.
        # `nan_hit`: norm(p=±inf), whose torch backward counts NaN elements as hits too
        x = ctx.inputs[0]
        axes, keepdim = ctx.attrs["axes"], ctx.attrs.get("keepdim", False)
        out = _unsqueeze_reduced(ctx.out, axes, keepdim)
        hit = cmp.eq(x, out)
        if ctx.attrs.get("evenly") or ctx.attrs.get("nan_hit"):
            hit = cmp.logical_or(hit, cmp.logical_and(cmp.isnan(x), cmp.isnan(out)))
        mask = ew.cast(hit, x.array.dtype)
        share = ew.div(_unsqueeze_reduced(g, axes, keepdim), sum(mask, dim=axes, keepdim=True))
        return ew.where(hit, share, 0.0) if ctx.attrs.get("evenly") else ew.mul(share, mask)

    return op


_amax = _extreme("amax", "max")
_amin = _extreme("amin", "min")


def _check_nonempty(input, axes, name):
    for a in axes:
        if input.shape[a] == 0:
            raise ShapeError(
                f"{name}(): Expected reduction dim {a} to have non-zero size, input shape {tuple(input.shape)}"
            )
    if not axes and input.array.size == 0:
        raise ShapeError(f"{name}(): Expected reduction over a non-empty tensor, input shape {tuple(input.shape)}")


def amax(input, dim=None, keepdim=False):
    axes = normalize_dims(dim if dim != () else None, input.ndim, "amax")
    _check_nonempty(input, axes, "amax")
    return _amax(input, axes=axes, keepdim=keepdim)


def amin(input, dim=None, keepdim=False):
    axes = normalize_dims(dim if dim != () else None, input.ndim, "amin")
    _check_nonempty(input, axes, "amin")
    return _amin(input, axes=axes, keepdim=keepdim)


@defop("argmax", kind=RED, save=())
def _argmax(xp, x, axis=None, keepdim=False):
    return xp.argmax(x, axis=axis, keepdims=keepdim)


@defop("argmin", kind=RED, save=())
def _argmin(xp, x, axis=None, keepdim=False):
    return xp.argmin(x, axis=axis, keepdims=keepdim)


def _arg(input, dim, keepdim, op, name):
    axis = None if dim is None else normalize_dim(dim, input.ndim, name)
    axis = axis if input.ndim else None  # a 0-d tensor's only index is 0
    _check_nonempty(input, () if axis is None else (axis,), name)
    return op(input, axis=axis, keepdim=keepdim)  # dim None with keepdim: all dims of size 1, as torch


def argmax(input, dim=None, keepdim=False):
    if input.array.dtype == np.bool_:  # torch's argmax/argmin have no bool kernel (max/min along a dim do)
        raise DTypeError("argmax(): does not support bool input")
    return _arg(input, dim, keepdim, _argmax, "argmax")


def argmin(input, dim=None, keepdim=False):
    if input.array.dtype == np.bool_:
        raise DTypeError("argmin(): does not support bool input")
    return _arg(input, dim, keepdim, _argmin, "argmin")


def _max_min(input, dim, keepdim, other, reduce_all, arg, binary, name):
    if isinstance(dim, Tensor):
        return binary(input, dim)
    if other is not None:
        return binary(input, other)
    if dim is None:
        _check_nonempty(input, (), name)
        return reduce_all(input, axes=normalize_dims(None, input.ndim, name), evenly=True)
    from distgraph.ops.indexing import gather
    from distgraph.ops.shape import squeeze

    idx = _arg(input, dim, True, arg, name)
    values = gather(input, dim, idx)
    if not keepdim:
        values, idx = squeeze(values, dim), squeeze(idx, dim)
    return MaxMin(named(values, f"{name.title()}Backward0"), idx)


def max(input, dim=None, keepdim=False, other=None):
    """max(t) -> max value; max(t, dim) -> (values, indices); max(t, other) -> elementwise maximum."""
    return _max_min(input, dim, keepdim, other, _amax, _argmax, ew.maximum, "max")


def min(input, dim=None, keepdim=False, other=None):
    return _max_min(input, dim, keepdim, other, _amin, _argmin, ew.minimum, "min")


def logsumexp(input, dim, keepdim=False):
    axes = normalize_dims(dim, input.ndim, "logsumexp")
    if input.array.size == 0:  # nothing to shift by: sums over empty dims are 0, their log -inf (torch)
        m = ew.const(0, input)
    else:
        with_grad_free_max = amax(input.detach(), dim=axes, keepdim=True)
        m = ew.where(cmp.isfinite(with_grad_free_max), with_grad_free_max, ew.const(0, with_grad_free_max))
    out = ew.add(ew.log(sum(ew.exp(ew.sub(input, m)), dim=axes, keepdim=True)), m)
    if not keepdim:
        from distgraph.ops.shape import reshape

        out = reshape(out, tuple(s for i, s in enumerate(input.shape) if i not in axes))
    return out


@defop("vector_norm", kind=RED, saves_output=True)
def _vector_norm(xp, x, p, axes, keepdim=False):
    if p == 2:  # sums by _sum's forward, so an overflow warns from this module (distgraph's filter)
        return xp.sqrt(_sum.forward(xp, x * x, axes, keepdim))
    return _sum.forward(xp, xp.abs(x) ** p, axes, keepdim) ** (1.0 / p)


@_vector_norm.grad
def _(ctx, g):
    # torch's norm_backward: d||x||_p / dx = sign(x) |x|^(p-1) · g / ||x||^(p-1), the quotient masked to 0
    # where ||x|| = 0 (sqrt's infinite slope times 0 would give NaN, e.g. in clip_grad_norm_). Masked, not
    # divided by a safe 1: a second-order gradient through that quotient is 0 / 0 there, NaN, as torch's
    x, p = ctx.inputs[0], ctx.attrs["p"]
    axes, keepdim = ctx.attrs["axes"], ctx.attrs.get("keepdim", False)
    n = _unsqueeze_reduced(ctx.out, axes, keepdim)
    g = _unsqueeze_reduced(g, axes, keepdim)
    if p == 1:
        return ew.mul(ew.sign(x), g)
    if p == 2:
        return ew.mul(g, _zero_where_zero_norm(n, ew.div(x, n)))
    if p < 1:  # torch's form sign(x)|x|^(p-1)·‖x‖^(1-p): 0 where x = 0 (|x|^(p-1) is infinite there, so
        # sign(0) multiplies a finite 1) and everywhere when ‖x‖ = 0 (a p < 0 norm is 0 at any zero)
        zero = cmp.eq(x, 0)
        scaled = ew.mul(ew.sign(x), ew.pow(ew.where(zero, ew.const(1, x), ew.abs(x)), p - 1))
        return ew.mul(g, ew.mul(scaled, ew.pow(n, 1 - p)))
    if p < 2:
        scaled = ew.mul(ew.sign(x), ew.pow(ew.abs(x), p - 1))
    else:
        scaled = ew.mul(x, ew.pow(ew.abs(x), p - 2))
    return ew.mul(scaled, _zero_where_zero_norm(n, ew.div(g, ew.pow(n, p - 1))))


def _zero_where_zero_norm(n, t):
    return ew.where(cmp.eq(n, 0), ew.const(0, t), t)


# 1 where x != 0, else 0: piecewise constant, so the 0-norm has a zero gradient and (as torch's) requires grad
_nonzero_indicator = ew._unary(
    "nonzero_indicator", lambda xp, x: (x != 0).astype(x.dtype), ew._zero_grad, float_only=False, save=()
)


@autocast_op("norm")
def norm(input, p="fro", dim=None, keepdim=False):
    """torch.norm / linalg.vector_norm: p in fro, 2, 1, inf, -inf, 0 or any other number."""
    if p == "fro":
        p = 2
    if p == "nuc":  # torch's: the matrix norm over dim (every dim of a 2-d input), which must be two
        from distgraph.ops.linalg_norms import matrix_norm  # (a layer beside this one: imported when used)

        return matrix_norm(input, "nuc", dim=tuple(range(input.ndim)) if dim is None else dim, keepdim=keepdim)
    if not isinstance(p, int | float):
        raise TypeError(f"norm: p must be a number, 'fro' or 'nuc', got {p!r}")
    if input.array.dtype is F16:  # torch accumulates in float32 (a float16 x·x summed overflows at 65504)
        return ew.cast(norm(ew.cast(input, np.float32), p, dim, keepdim), F16)
    axes = normalize_dims(_all_if_empty(dim), input.ndim, "norm")
    if p in (float("inf"), float("-inf")):
        _check_nonempty(input, axes, "norm")
        return (_amax if p > 0 else _amin)(ew.abs(input), axes=axes, keepdim=keepdim, nan_hit=True)
    if p == 0:
        return sum(_nonzero_indicator(ew._float_operand(input)), dim=axes, keepdim=keepdim)
    return _vector_norm(ew._float_operand(input), p=p, axes=axes, keepdim=keepdim)


# ---- boolean --------------------------------------------------------------------------------------------
# torch's any/all give bool, but uint8 for a uint8 input (its legacy mask dtype)
@defop("any", kind=RED, save=())
def _any(xp, x, axes, keepdim=False):
    out = xp.any(x, axis=axes, keepdims=keepdim)
    return out.astype(x.dtype) if x.dtype == np.uint8 else out


@defop("all", kind=RED, save=())
def _all(xp, x, axes, keepdim=False):
    out = xp.all(x, axis=axes, keepdims=keepdim)
    return out.astype(x.dtype) if x.dtype == np.uint8 else out


def any(input, dim=None, keepdim=False):
    return _any(input, axes=normalize_dims(dim, input.ndim, "any"), keepdim=keepdim)


def all(input, dim=None, keepdim=False):
    return _all(input, axes=normalize_dims(dim, input.ndim, "all"), keepdim=keepdim)


def count_nonzero(input, dim=None):
    return sum(cmp.ne(input, 0), dim=dim)
