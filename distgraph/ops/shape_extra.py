"""Shape ops torch has beyond ops/shape.py: ravel, tensor_split and h/v/dsplit, split_with_sizes, rot90,
diag_embed, diagflat, sum_to_size, the aliases (moveaxis, nelement, ndimension, unsafe_chunk/split), and the
memory layout questions (is_contiguous, stride, storage_offset, dim_order) answered from the array itself.

Every op here is built from recorded ops (slice views, flip, permute, the diagonal embed, sum_to), so their
gradients are theirs. Strides and offsets are counted in elements, as torch counts them, over the memory the
tensor's array really has: distgraph's layouts follow torch's for views (slices, permutes, expands), but an
op's result may be laid out differently from torch's.
"""

import builtins

import numpy as np

from distgraph import dtypes
from distgraph.autograd.formats import channels_last_order
from distgraph.autograd.tensor import Tensor
from distgraph.backend import address
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops.reduction import sum_to
from distgraph.ops.regions import _diagonal_embed, diag
from distgraph.ops.reorder import flip
from distgraph.ops.shape import (
    _dim,
    _shape_arg,
    _slice,
    chunk,
    flatten,
    movedim,
    permute,
    reshape,
    split,
    tile,
    transpose,
    view,
)


def ravel(input):
    """torch.ravel: the tensor as 1-d, a view of a row-major input, else a row-major copy (torch's
    contiguous().view(-1): no strided view even where reshape would find one)."""
    return reshape(input.contiguous(), (-1,))


def tensor_split(input, indices_or_sections, dim=0):
    """torch.tensor_split: `sections` near-equal pieces (the first n % sections one longer), or the pieces
    between `indices` (read as Python slices: clamped, negative from the end); each a view."""
    d = _dim(dim, input.ndim, "tensor_split", whole=True)
    n = input.shape[d]
    arg = indices_or_sections
    if isinstance(arg, Tensor):
        if arg.array.dtype.kind not in "iu" or arg.ndim > 1:
            raise DTypeError(
                f"tensor_split: expected a 0-d or 1-d integer tensor for indices_or_sections, got {arg.dtype.name} "
                f"of shape {tuple(arg.shape)}"
            )
        from distgraph.ops.counting import host_read

        host_read(arg, "tensor_split's indices_or_sections")  # where the pieces end: read on the host
        arg = int(arg.array) if arg.ndim == 0 else [int(i) for i in arg.array.tolist()]
    if isinstance(arg, bool) or not isinstance(arg, int | np.integer | list | tuple):
        raise DTypeError(
            f"tensor_split: indices_or_sections must be an int or a list of ints, not {type(arg).__name__}"
        )
    if isinstance(arg, int | np.integer):
        if arg <= 0:
            raise ShapeError(f"tensor_split: number of sections must be larger than 0, got {arg}")
        q, r = divmod(n, int(arg))
        bounds = np.cumsum([0] + [q + 1] * r + [q] * (int(arg) - r)).tolist()
        pairs = list(zip(bounds[:-1], bounds[1:]))
    else:
        edges = [0, *(int(i) for i in arg), None]
        pairs = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            start, stop, _ = slice(lo, hi).indices(n)
            pairs.append((start, builtins.max(start, stop)))
    return tuple(_slice(input, axis=d, start=a, stop=b) for a, b in pairs)


def _split_by(op, input, sections, dim, need):
    """hsplit/vsplit/dsplit: tensor_split along `dim`, an int needing to divide the dim exactly."""
    if input.ndim < need:
        raise ShapeError(
            f"torch.{op} requires a tensor with at least {need} dimension, but got a tensor with {input.ndim} dimensions!"
        )
    if isinstance(sections, int) and not isinstance(sections, bool):
        n = input.shape[dim]
        if sections <= 0 or n % sections:
            raise ShapeError(
                f"torch.{op} attempted to split along dimension {dim}, but the size of the dimension {n} is not "
                f"divisible by the split_size {sections}!"
            )
    elif not isinstance(sections, list | tuple):
        raise DTypeError(f"{op}(): expected an int or a list of ints, got {type(sections).__name__}")
    return tensor_split(input, sections, dim)


def hsplit(input, sections):
    return _split_by("hsplit", input, sections, 1 if input.ndim > 1 else 0, 1)


def vsplit(input, sections):
    return _split_by("vsplit", input, sections, 0, 2)


def dsplit(input, sections):
    return _split_by("dsplit", input, sections, 2, 3)


def split_with_sizes(input, split_sizes, dim=0):
    """Tensor.split_with_sizes: split with a list of sizes (which must add up to the dim's size)."""
    return split(input, list(split_sizes), dim)


def rot90(input, k=1, dims=(0, 1)):
    """torch.rot90: rotate by k quarter turns in the plane of `dims`, from the first dim towards the second."""
    dims = tuple(dims)
    if len(dims) != 2:
        raise ShapeError(f"rot90: expected total rotation dims == 2, but got dims = {len(dims)}")
    if input.ndim < 2:
        raise ShapeError(f"rot90: expected total dims >= 2, but got total dims = {input.ndim}")
    a, b = _dim(dims[0], input.ndim, "rot90"), _dim(dims[1], input.ndim, "rot90")
    if a == b:
        raise ShapeError(f"rot90: expected rotation dims to be different, but got dim0 = {a} and dim1 = {b}")
    k %= 4
    if k == 1:
        return transpose(flip(input, b), a, b)
    if k == 2:
        return flip(input, (a, b))
    if k == 3:
        return transpose(flip(input, a), a, b)
    return input.clone()


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """torch.diag_embed: the last dim of input laid on the `offset` diagonal of two new dims (dim1, dim2)."""
    if input.ndim < 1:
        raise ShapeError("diag_embed: expected a tensor with at least 1 dimension, got a 0-d tensor")
    a, b = _dim(dim1, input.ndim + 1, "diag_embed"), _dim(dim2, input.ndim + 1, "diag_embed")
    if a == b:
        raise ShapeError(f"diag_embed: diagonal dimensions cannot be identical {dim1}, {dim2}")
    m = input.shape[-1] + builtins.abs(offset)
    rest = iter(input.shape[:-1])
    shape = tuple(m if i in (a, b) else next(rest) for i in range(input.ndim + 1))
    return _diagonal_embed(input, shape=shape, offset=offset if a < b else -offset, axis1=min(a, b), axis2=max(a, b))


def diagflat(input, offset=0):
    """torch.diagflat: the flattened input on the `offset` diagonal of a square matrix."""
    return diag(flatten(input), offset)


def sum_to_size(input, *size):
    """Tensor.sum_to_size: summed down to `size`, which must expand to input's shape."""
    size = _shape_arg(size)
    have = tuple(input.shape)
    lead = len(have) - len(size)
    if lead < 0 or builtins.any(s not in (1, h) for s, h in zip(size, have[lead:])):
        raise ShapeError(f"sum_to_size: size {list(size)} is not expandable to size {list(have)}")
    return sum_to(input, size) if size != have else input


def _new_empty(self, *size, **kw):
    """Tensor.new_empty: a new tensor of `size` with self's dtype and device (zeros: numpy has no cheaper one)."""
    return self.new_zeros(*size, **kw)


# ---- memory layout ---------------------------------------------------------------------------------------------
def _strides(input):
    return tuple(s // input.array.itemsize for s in input.array.strides)


def stride(input, dim=None):
    """Tensor.stride: the steps between elements of each dim, in elements, in the array's own memory."""
    strides = _strides(input)
    return strides if dim is None else strides[_dim(dim, input.ndim, "stride", whole=True)]


def is_contiguous(input, memory_format=None):
    """Tensor.is_contiguous: row-major in memory (size-1 dims' strides do not count, as in torch), or laid out
    in `memory_format`'s order (channels_last: NHWC; autograd/formats.py)."""
    order = channels_last_order(input.ndim, memory_format, "is_contiguous")
    return bool((input.array if order is None else input.array.transpose(order)).flags.c_contiguous)


def storage_offset(input):
    """Tensor.storage_offset: where the tensor's first element sits in the memory its array views, in elements."""
    a, root = input.array, input.array
    while isinstance(getattr(root, "base", None), type(a)):
        root = root.base
    if not a.size:
        return 0
    return (address(a) - address(root)) // a.itemsize


def dim_order(input, *, ambiguity_check=False):
    """Tensor.dim_order: the dims from outermost to innermost in memory (largest stride first; ties in order)."""
    strides = _strides(input)
    order = tuple(sorted(range(input.ndim), key=lambda i: -strides[i]))
    if ambiguity_check and len(set(strides)) < len(strides):
        raise ShapeError(f"dim_order: the dim order is ambiguous for strides {strides} (shape {tuple(input.shape)})")
    return order


def check_broadcasts_to(have, want, op):
    """A source of shape `have` must broadcast to `want` (the tensor written into), as torch checks it: numpy
    names no op, and lets a leading size-1 dim through."""
    n = max(len(have), len(want))
    a, b = (1,) * (n - len(want)) + want, (1,) * (n - len(have)) + have
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y and 1 not in (x, y):
            raise ShapeError(
                f"{op}: The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton dimension "
                f"{k} (self {want}, source {have})"
            )
    if any(x != y and x == 1 for x, y in zip(a, b)) or len(have) > len(want):
        wide = [max(x, y) for x, y in zip(a, b)]
        raise ShapeError(f"{op}: output with shape {list(want)} doesn't match the broadcast shape {wide}")


def _dims_arg(op, args, kwargs, key="dims"):
    """A method's dims as torch's Tensor methods take them: ints, one sequence of them, or the keyword `key`."""
    if key in kwargs and not args and len(kwargs) == 1:
        return _shape_arg((kwargs[key],))
    if kwargs:
        raise TypeError(f"{op}() got unexpected keyword arguments {sorted(kwargs)} (with {len(args)} positional)")
    return _shape_arg(args)


def _tile_method(input, *dims, **kwargs):
    """Tensor.tile(*dims), tile(dims=...): ints or one sequence of them (torch.tile takes the sequence only)."""
    return tile(input, _dims_arg("tile", dims, kwargs))


def _flip_method(input, *dims, **kwargs):
    """Tensor.flip(*dims), flip(dims=...) (torch.flip takes the sequence only)."""
    return flip(input, _dims_arg("flip", dims, kwargs))


def _permute_method(input, *dims, **kwargs):
    """Tensor.permute(*dims), permute(dims=...)."""
    return permute(input, _dims_arg("permute", dims, kwargs))


def _split_method(input, split_size, dim=0):
    """Tensor.split(split_size, dim): torch's method names its first argument split_size (an int or sizes)."""
    return split(input, split_size, dim)


def _view_method(input, *shape, dtype=None):
    """Tensor.view(*shape), or view(dtype) / view(dtype=...): the same memory read as another dtype."""
    if dtype is None and len(shape) == 1 and isinstance(shape[0], dtypes.DType):
        shape, dtype = (), shape[0]
    if dtype is None:
        return view(input, *shape)
    if shape:
        raise TypeError(f"view() takes a shape or a dtype, not both (got shape {shape} and dtype {dtype})")
    return view_dtype(input, dtypes.from_any(dtype))


def view_dtype(input, dtype):
    """torch's Tensor.view(dtype): input's memory read as `dtype`, not differentiable (as torch's, the result never
    requires grad). A different element size scales the last dim, which must then be contiguous, of a size and
    offset that fit, with the other strides whole multiples of the new element size (torch's checks)."""
    a, old = input.array, input.dtype
    if dtype.itemsize != old.itemsize:
        what = f"to view {old.name} as {dtype.name} (different element sizes)"
        big, small = max(dtype.itemsize, old.itemsize), min(dtype.itemsize, old.itemsize)
        if a.ndim == 0:
            raise ShapeError(f"view: self.dim() cannot be 0 {what}")
        if a.strides[-1] != a.itemsize:
            raise ShapeError(f"view: self.stride(-1) must be 1 {what}, but got {a.strides[-1] // a.itemsize}")
        if dtype.itemsize > old.itemsize:
            ratio = big // small
            if a.shape[-1] % ratio:
                raise ShapeError(f"view: self.size(-1) must be divisible by {ratio} {what}, but got {a.shape[-1]}")
            if storage_offset(input) % ratio:
                raise ShapeError(f"view: self.storage_offset() must be divisible by {ratio} {what}")
            if builtins.any(s % dtype.itemsize for s in a.strides[:-1]):
                raise ShapeError(f"view: self.stride(i) must be divisible by {ratio} {what}, got {_strides(input)}")
    out = Tensor(a.view(dtype.np), device=input.device)
    out._vc = input._vc  # writes through either show in the other's version, as detach()'s
    return out


moveaxis = movedim

METHODS = {
    "ravel": ravel,
    "tile": _tile_method,
    "flip": _flip_method,
    "permute": _permute_method,
    "split": _split_method,
    "view": _view_method,
    "tensor_split": tensor_split,
    "hsplit": hsplit,
    "vsplit": vsplit,
    "dsplit": dsplit,
    "split_with_sizes": split_with_sizes,
    "moveaxis": movedim,
    "rot90": rot90,
    "diag_embed": diag_embed,
    "diagflat": diagflat,
    "sum_to_size": sum_to_size,
    "new_empty": _new_empty,
    "nelement": Tensor.numel,
    "ndimension": Tensor.dim,
    "unsafe_chunk": chunk,
    "unsafe_split": split,
    "is_contiguous": is_contiguous,
    "stride": stride,
    "storage_offset": storage_offset,
    "dim_order": dim_order,
}


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
