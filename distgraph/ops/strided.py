"""as_strided and empty_strided: tensors laid over memory by explicit sizes, strides and an offset.

`as_strided(input, size, stride, storage_offset)` reads `input`'s elements, in its contiguous order, as
torch reads a storage: element i of the result sits at offset + sum(i_k * stride_k). It is a view (a write
through it reaches `input`, registered as unfold's is), so windows may overlap. Its gradient is torch's:
each output gradient added at the input element it reads, overlapping reads summed; that rule is linear,
and its own gradient is as_strided again, so higher orders follow.

distgraph tensors have no storage apart from their array, so the positions count over `input` itself when
they fall inside it, else over its base (the tensor owning the memory, whose contiguous elements are torch's
storage); a base that is not contiguous, or a view read outside itself while autograd records (its gradient
would reach elements it does not show), is refused rather than read differently from torch.
"""

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import scatter_at
from distgraph.errors import AutogradError, InputRangeError, ShapeError
from distgraph.ops import tensor_extra
from distgraph.ops.creation import empty
from distgraph.ops.registry import defop


def _geometry(input, size, stride, storage_offset):
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride):
        raise ShapeError("as_strided: mismatch in length of strides and shape")
    if any(s < 0 for s in stride):
        raise ShapeError(f"as_strided: Negative strides are not supported at the moment, got strides: {list(stride)}")
    if any(n < 0 for n in size):
        raise ShapeError(f"as_strided: Trying to create tensor with negative dimension {min(size)}: {list(size)}")
    if offset < 0:
        raise InputRangeError(f"as_strided: invalid storage offset {offset}")
    need = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
    have, item = input.numel(), input.array.itemsize
    if need > have:
        raise InputRangeError(
            f"as_strided: sizes {list(size)}, strides {list(stride)}, storage offset {offset}, and itemsize {item} "
            f"requiring a storage size of {need * item} are out of bounds for storage of size {have * item}"
        )
    if not input.array.flags.c_contiguous:
        raise ShapeError(
            f"as_strided: the input (shape {tuple(input.shape)}) is not contiguous; distgraph lays size and stride "
            "over a contiguous input's own elements (call .contiguous() first)"
        )
    return size, stride, offset


def as_strided(input, size, stride, storage_offset=None):
    """torch.as_strided: a view of the elements at storage_offset + sum(i_k * stride_k) of `input`'s storage
    (see the module doc). torch counts `storage_offset` from the storage's start (None: `input`'s own offset);
    the positions are counted over `input` where they fall inside it, else over its base (`input._base`): a
    gradient would then have to reach the base's elements the view does not show, so that is refused when
    autograd records."""
    if storage_offset is None:
        return _over(input, size, stride, 0)
    relative = int(storage_offset) - input.storage_offset()
    base = input._base
    if base is None or _fits(input, size, stride, relative):
        return _over(input, size, stride, relative)
    if grad_mode.state.grad_enabled and input.requires_grad:
        raise AutogradError(
            f"as_strided: sizes {list(size)}, strides {list(stride)} at storage offset {storage_offset} read "
            f"elements of the storage outside the input view (shape {tuple(input.shape)}, storage offset "
            f"{input.storage_offset()}), which distgraph cannot differentiate; call it on the base tensor"
        )
    return _over(base, size, stride, int(storage_offset) - base.storage_offset())


def _fits(input, size, stride, offset):
    """Whether the positions lie within contiguous `input`'s own elements."""
    span = offset + 1 + sum((int(n) - 1) * int(s) for n, s in zip(size, stride))
    return input.array.flags.c_contiguous and offset >= 0 and span <= input.numel()


def _over(input, size, stride, offset):
    size, stride, offset = _geometry(input, size, stride, offset)
    return _as_strided(input, size=size, stride=stride, offset=offset)


@defop("as_strided", kind="other", save=(), view=True)
def _as_strided(xp, x, size, stride, offset):
    flat = x.reshape(-1)
    return xp.lib.stride_tricks.as_strided(flat[offset:], size, tuple(s * flat.itemsize for s in stride))


_as_strided.grad(lambda ctx, g: _as_strided_backward(g, shape=ctx.inputs[0].shape, **ctx.attrs))


@defop("as_strided_backward", kind="other", save=())
def _as_strided_backward(xp, g, shape, size, stride, offset):
    """Zeros of `shape`, each gradient added at the element its output read (overlaps add up)."""
    out = xp.zeros(int(np.prod(shape)), dtype=g.dtype)
    where = offset + sum(xp.arange(n).reshape((-1,) + (1,) * (len(size) - 1 - k)) * s
                         for k, (n, s) in enumerate(zip(size, stride)))  # fmt: skip
    where = xp.asarray(where)  # (a 0-d output's is the bare int offset: cupy's broadcast_to takes arrays only)
    scatter_at("add", out, xp.broadcast_to(where, size).reshape(-1), g.reshape(-1))
    return out.reshape(shape)


_as_strided_backward.grad(lambda ctx, g: _as_strided(g, **{k: v for k, v in ctx.attrs.items() if k != "shape"}))


def empty_strided(size, stride, *, dtype=None, device=None, requires_grad=False, **_):
    """torch.empty_strided: an uninitialized tensor of `size` whose elements lie `stride` elements apart."""
    return tensor_extra.strided_empty("empty_strided", empty(0, dtype=dtype, device=device), size, stride,
                                      requires_grad=requires_grad)  # fmt: skip


def install():
    Tensor.as_strided = as_strided
