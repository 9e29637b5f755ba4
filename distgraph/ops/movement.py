"""Explicit moves: between devices (`t.to(device)`, the only op that copies between host and GPU), into
row-major memory (`t.contiguous()`), and copies (`t.clone()`)."""

from distgraph.autograd import memory_format as layouts
from distgraph.autograd.formats import channels_last_order, preserve_format
from distgraph.autograd.function import apply, get_tracer
from distgraph.autograd.tensor import Tensor
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


@defop("clone", kind="other", save=())
def _clone(xp, x, order=None):
    """A copy laid out as torch's clone lays it out (preserve_format: autograd/memory_format.py), or with
    `order` (the dims slowest first) laid out so — always a copy, where `_contiguous` may return its input."""
    if order is None:
        return layouts.clone(xp, x)
    back = tuple(order.index(d) for d in range(x.ndim))
    return xp.array(x.transpose(order), order="C", copy=True).transpose(back)


_clone.grad(lambda ctx, g: g)
_clone.array_grad(lambda ctx, g: g)


def clone(input, memory_format=None):
    """torch's clone: a copy (a -0.0 stays -0.0), in `memory_format` (None, preserve_format: laid out as
    `input`; contiguous_format: row-major; channels_last(_3d)). An op where autograd or a graph capture
    records it — a plain copy under capture was a constant of the graph holding the values of the capture,
    so a compiled model read a frozen weight's clone as it was then — else the copy alone (no op's cost)."""
    if memory_format is None or memory_format == preserve_format:
        attrs = {}
    else:
        order = channels_last_order(input.ndim, memory_format, "clone")
        attrs = {"order": order or tuple(range(input.ndim))}
    if input.requires_grad or get_tracer() is not None:
        return apply(_clone, (input,), attrs)
    return Tensor(_clone.forward(input.device.xp, input.array, **attrs), device=input.device)
