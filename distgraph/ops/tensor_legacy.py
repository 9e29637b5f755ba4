"""Tensor methods torch keeps for old code and for other layouts, on distgraph's dense tensors:

- `new`: the legacy constructor. `x.new()` is empty, `x.new(2, 3)` or `x.new(dg.Size(...))` an uninitialized
  (2, 3) tensor, `x.new(data)` a tensor of x's dtype holding `data` (a tuple is data, as torch reads it),
  `x.new(t)` an alias of a tensor `t` of x's dtype; all on x's device unless `device=` says otherwise.
- `resize` / `resize_as`: torch's deprecated out-of-place forms, a reshape of the row-major copy (or self,
  when row-major already) that keeps the element count (autograd's Resize), with torch's warning and error; sizes are ints only
  (`resize(2, 3)`: torch refuses `resize((2, 3))`, which in-place `resize_` takes).
- `data_ptr`: the address of the first element in memory (numpy's or cupy's), so views of one memory
  differ by their offset in bytes, as torch's; 0 for an empty tensor, as torch's.
- `to_dense`: a tensor is already dense; with a dtype, the cast.
- `pin_memory()`: torch's refusal where no GPU is there ("Cannot access accelerator device when none is
  available."); with one, a copy (autograd's identity, as torch's): cupy reads a host array to the GPU the same
  way pinned or not, so `is_pinned` stays False and the copy is what a script's `batch.pin_memory()` relies on.
- `share_memory_`: returns self. Its purpose in torch is to let worker processes (torch.multiprocessing) map
  the storage; distgraph's workers get arrays through Ray's shared-memory object store or its own shm
  all-reduce, never by pickling a tensor's storage, so there is nothing to move.
- `is_pinned` / `is_shared` / `is_neg` / `is_distributed`: False (no pinned host memory, no storage shared between
  processes, no lazy negation bit, no distributed tensor type); `is_set_to(t)`: whether both read the same memory
  the same way (first element, shape, strides, dtype), as torch's same storage, offset, sizes and strides.
- hardshrink, prelu, resolve_neg, resolve_conj, nonzero_static, unsafe_split_with_sizes: the functions of the
  same name as methods.
- `as_subclass(cls)`: an alias of the tensor (its memory, version counter and place in the graph: the gradient
  reaches the tensor) as an object of exactly class `cls`, a Tensor subclass, as torch's. Writes through it reach
  the tensor's values and graph. Unlike distgraph's own views (autograd/tensor.py's View, whose graph rebuilds
  itself after a write into the memory), a user's class has no such hook: after a write into the tensor, the
  alias holds the new values, but its graph is the one of the old ones (take as_subclass after the write).
"""

import functools
import operator
import warnings

from distgraph import dtypes
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import address, cuda_is_available
from distgraph.backend import device as as_device
from distgraph.errors import DeviceError, DTypeError, ShapeError
from distgraph.ops import activation, creation, inplace_shape, shape, torch_names


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


def _resize(self, sizes, name):
    warnings.warn(f"non-inplace {name} is deprecated", UserWarning, stacklevel=3)
    # torch's Resize: the element count is the product of the arguments, so one tuple or list (which multiplies
    # into a sequence, never a count) is refused; only ints pass, as for resize(2, 3)
    count = functools.reduce(operator.mul, sizes, 1)
    if count != self.numel():
        raise ShapeError(
            f"requested resize to {'x'.join(map(str, sizes))} ({count} elements in total), but the given tensor has a "
            f"size of {'x'.join(map(str, self.shape))} ({self.numel()} elements). autograd's resize can only change "
            "the shape of a given tensor, while preserving the number of elements."
        )
    if not all(map(inplace_shape.is_int, sizes)):
        raise TypeError(
            f"view() received an invalid combination of arguments - got ({', '.join(type(n).__name__ for n in sizes)}), "
            "but expected one of: (torch.dtype dtype), (tuple of ints size)"
        )
    return shape.reshape(self.contiguous(), tuple(map(int, sizes)))  # a row-major result whatever self's layout


def resize(self, *sizes):
    return _resize(self, sizes, "resize")


def resize_as(self, tensor):
    return _resize(self, tuple(tensor.shape), "resize_as")


def as_subclass(self, cls):
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a type (got {type(cls).__name__})")
    if not issubclass(cls, Tensor):
        raise TypeError(
            "Creating a Tensor subclass from a class that does not inherit from Tensor is not possible. Make sure "
            "your class inherits from Tensor."
        )
    alias = self[...]
    if cls is Tensor:
        return alias
    out = inplace_shape.state_copy(alias, cls)
    Tensor._own_requires_grad.__set__(out, alias.requires_grad)  # a view's (its base's, when made in no_grad mode)
    return out


def data_ptr(self):
    if not self.numel():
        return 0
    return address(self.array)


def to_dense(self, dtype=None, *, masked_grad=None):
    return self if dtype is None or dtypes.from_any(dtype) == self.dtype else self.to(dtypes.from_any(dtype))


def is_set_to(self, tensor):
    a, b = self.array, tensor.array
    if not a.size:  # (an empty tensor has no first element to compare: only the same memory object is)
        return a is b
    return (
        self.device == tensor.device
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.strides == b.strides
        and data_ptr(self) == data_ptr(tensor)
    )


def share_memory_(self):
    return self


def pin_memory(self, device=None):
    if not cuda_is_available():
        raise DeviceError("pin_memory: Cannot access accelerator device when none is available.")
    if self.device.type != "cpu":
        raise DeviceError(f"pin_memory: cannot pin a tensor on {self.device}: only dense CPU tensors can be pinned")
    return self.clone()


def hardshrink(self, lambd=0.5):
    return activation.shrink(self, lambd=lambd, soft=False)


def install():
    for fn in (
        new,
        resize,
        resize_as,
        as_subclass,
        data_ptr,
        to_dense,
        share_memory_,
        pin_memory,
        hardshrink,
        is_set_to,
    ):
        setattr(Tensor, fn.__name__, fn)
    for fn in (torch_names.nonzero_static, torch_names.unsafe_split_with_sizes):
        setattr(Tensor, fn.__name__, fn)
    Tensor.is_pinned = Tensor.is_shared = Tensor.is_neg = Tensor.is_distributed = lambda self: False
    Tensor.prelu = activation.prelu
    Tensor.resolve_neg = Tensor.resolve_conj = lambda self: self
