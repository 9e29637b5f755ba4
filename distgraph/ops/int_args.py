"""Integer arguments (a split size, a chunk count, a roll shift, a difference order) as torch reads them:
anything with `__index__` (a Python int, a numpy integer, a 0-d integer tensor) is that int; a float, or
a float tensor, is refused with a TypeError naming the op, instead of being truncated."""

import operator

from distgraph.autograd.tensor import Tensor


def is_single(value):
    """Whether `value` is one count rather than a sequence of them (a 0-d tensor is one; a 1-d is many)."""
    return value.ndim == 0 if isinstance(value, Tensor) else not hasattr(value, "__iter__")


def as_int(value, op, name):
    """`value` as a Python int, through `__index__`; a float or a float tensor raises a TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        kind = (
            f"a {value.dtype.name} tensor of shape {tuple(value.shape)}"
            if isinstance(value, Tensor)
            else type(value).__name__
        )
        raise TypeError(f"{op}: {name} must be an int (or a 0-d integer tensor), got {kind}") from None


def as_ints(value, op, name):
    """One count or a sequence of them, as a tuple of Python ints."""
    return (as_int(value, op, name),) if is_single(value) else tuple(as_int(v, op, name) for v in value)
