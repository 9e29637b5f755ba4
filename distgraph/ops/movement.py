"""Explicit device moves (`t.to(device)`), the only op that copies between host and GPU."""

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
