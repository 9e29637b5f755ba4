"""Explicit moves: between devices (`t.to(device)`, the only op that copies between host and GPU) and
into row-major memory (`t.contiguous()`)."""

from distgraph.autograd.formats import channels_last_order
from distgraph.autograd.function import apply
from distgraph.backend import device as as_device
from distgraph.backend import to_device
from distgraph.ops.registry import defop


@defop("to_device", kind="other", save=())
def _to_device(xp, x, device):
    return to_device(x, device)


@_to_device.grad
def _(ctx, g):
    return to_device_op(g, ctx.inputs[0].device)


def to_device_op(input, device):
    from distgraph.autograd.function import apply

    dev = as_device(device)
    out = apply(_to_device, (input,), {"device": str(dev)})
    out.device = dev
    return out


@defop("contiguous", kind="other", save=())
def _contiguous(xp, x, order=None):
    """A row-major copy, or with `order` (the dims slowest first: formats.channels_last_order) one laid out so."""
    if order is None:
        return x.copy(order="C")
    back = tuple(order.index(d) for d in range(x.ndim))  # (the inverse permutation)
    return xp.ascontiguousarray(x.transpose(order)).transpose(back)


_contiguous.grad(lambda ctx, g: g)
_contiguous.array_grad(lambda ctx, g: g)


def contiguous(input, memory_format=None):
    """`input` itself when its memory is laid out in order, else a row-major copy (not a view, as torch).
    Not clone(): that keeps the input's strides as torch's does, so a reshape of it would copy again
    and a write through that reshape would miss the copy. `memory_format=dg.channels_last` (channels_last_3d):
    the same, in NHWC (NDHWC) order (autograd/formats.py)."""
    order = channels_last_order(input.ndim, memory_format, "contiguous")
    if order is None:
        return input if input.array.flags.c_contiguous else apply(_contiguous, (input,), {})
    return input if input.array.transpose(order).flags.c_contiguous else apply(_contiguous, (input,), {"order": order})
