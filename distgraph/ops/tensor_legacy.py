"""Tensor methods torch keeps for old code and for other layouts, on distgraph's dense tensors:

- `new`: the legacy constructor. `x.new()` is empty, `x.new(2, 3)` or `x.new(dg.Size(...))` an uninitialized
  (2, 3) tensor, `x.new(data)` a tensor of x's dtype holding `data` (a tuple is data, as torch reads it),
  `x.new(t)` an alias of a tensor `t` of x's dtype; all on x's device unless `device=` says otherwise.
- `resize` / `resize_as`: torch's deprecated out-of-place forms, a reshape of the row-major copy (or self,
  when row-major already) that keeps the element count (autograd's Resize), with torch's warning and error.
- `data_ptr`: the address of the first element in memory (numpy's or cupy's), so views of one memory
  differ by their offset in bytes, as torch's; 0 for an empty tensor, as torch's.
- `to_dense`: a tensor is already dense; with a dtype, the cast.
- `share_memory_`: returns self. Its purpose in torch is to let worker processes (torch.multiprocessing) map
  the storage; distgraph's workers get arrays through Ray's shared-memory object store or its own shm
  all-reduce, never by pickling a tensor's storage, so there is nothing to move.
- hardshrink, prelu, resolve_neg, resolve_conj: the functions of the same name as methods.

`as_subclass` is not offered: an alias keeps torch's in-place view semantics only as distgraph's View type
(autograd/tensor.py), which a user's Tensor subclass is not.
"""

import math
import warnings

from distgraph import dtypes
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import activation, creation, shape


def new(self, *args, device=None):
    dev = as_device(device) if device is not None else self.device
    if not args:
        return creation.empty(0, dtype=self.dtype, device=dev)
    data = args[0]
    if len(args) == 1 and isinstance(data, Tensor):
        if data.dtype != self.dtype:
            raise DTypeError(f"new: expected a tensor of dtype {self.dtype.name}, got {data.dtype.name}")
        return Tensor(data.array if device is None else data.to(dev).array, device=dev)
    sizes = tuple(data) if len(args) == 1 and isinstance(data, Size) else args
    if all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        return creation.empty(*sizes, dtype=self.dtype, device=dev)
    if len(args) > 1:
        raise TypeError(f"new: expected sizes (ints), a Size, a tensor or one sequence of data, got {args!r}")
    return creation.tensor(data, dtype=self.dtype, device=dev)


def _resize(self, size, name):
    warnings.warn(f"non-inplace {name} is deprecated", UserWarning, stacklevel=3)
    size = tuple(size)
    count = math.prod(size)
    if count != self.numel():
        raise ShapeError(
            f"requested resize to {'x'.join(map(str, size))} ({count} elements in total), but the given tensor has a "
            f"size of {'x'.join(map(str, self.shape))} ({self.numel()} elements). autograd's resize can only change "
            "the shape of a given tensor, while preserving the number of elements."
        )
    return shape.reshape(self.contiguous(), size)  # torch's Resize: a row-major result whatever self's layout


def resize(self, *sizes):
    return _resize(self, sizes[0] if len(sizes) == 1 and isinstance(sizes[0], tuple | list) else sizes, "resize")


def resize_as(self, tensor):
    return _resize(self, tensor.shape, "resize_as")


def data_ptr(self):
    if not self.numel():
        return 0
    a = self.array
    return a.data.ptr if self.device.type == "cuda" else a.__array_interface__["data"][0]


def to_dense(self, dtype=None, *, masked_grad=None):
    return self if dtype is None or dtypes.from_any(dtype) == self.dtype else self.to(dtypes.from_any(dtype))


def share_memory_(self):
    return self


def hardshrink(self, lambd=0.5):
    return activation.shrink(self, lambd=lambd, soft=False)


def install():
    for fn in (new, resize, resize_as, data_ptr, to_dense, share_memory_, hardshrink):
        setattr(Tensor, fn.__name__, fn)
    Tensor.prelu = activation.prelu
    Tensor.resolve_neg = Tensor.resolve_conj = lambda self: self
