"""Reordering ops: flip (and fliplr, flipud) and roll, each its own inverse in backward."""

from distgraph.autograd import memory_format
from distgraph.errors import ShapeError
from distgraph.ops.int_args import as_ints
from distgraph.ops.reduction import normalize_dims
from distgraph.ops.registry import defop
from distgraph.ops.shape import _dim, flatten, reshape


@defop("flip", kind="other", save=())
def _flip(xp, x, axes):
    # copied: xp.flip is a view, and a write into flip's output must not reach its input (as torch); laid out
    # as torch's empty_like(x) (order K undoes the negative strides; `like` fixes an expanded x's)
    return memory_format.like(xp, xp.flip(x, axis=axes).copy(order="K"), x)


_flip.grad(lambda ctx, g: _flip(g, axes=ctx.attrs["axes"]))


def flip(input, dims):
    axes = normalize_dims(dims, input.ndim, "flip")
    return _flip(input, axes=axes)


def fliplr(input):
    if input.ndim < 2:
        raise ShapeError(f"fliplr: Input must be >= 2-d, got shape {tuple(input.shape)}")
    return flip(input, 1)


def flipud(input):
    if input.ndim < 1:
        raise ShapeError("flipud: Input must be >= 1-d, got a 0-d tensor")
    return flip(input, 0)


@defop("roll", kind="other", save=())
def _roll(xp, x, shifts, axes):
    return xp.roll(x, shifts, axis=axes)


_roll.grad(lambda ctx, g: _roll(g, shifts=tuple(-s for s in ctx.attrs["shifts"]), axes=ctx.attrs["axes"]))


def roll(input, shifts, dims=None):
    if dims is None:
        return reshape(roll(flatten(input), shifts, 0), input.shape)
    shifts, dims = as_ints(shifts, "roll", "shifts"), as_ints(dims, "roll", "dims")
    if len(shifts) != len(dims):
        raise ShapeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    axes = tuple(_dim(d, input.ndim, "roll") for d in dims)
    return _roll(input, shifts=shifts, axes=axes)
