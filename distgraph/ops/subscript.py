"""How torch reads a subscript `t[index]`, turned into two numpy indices that reproduce it.

torch does not index like numpy. It applies the ints, slices, None and Ellipsis first (a view: an int
is a `select`, so it never counts as an advanced index), then indexes that view with the tensors
("advanced" indices: integer tensors, boolean masks, Python bools). numpy instead treats an int as an
advanced index as soon as one array is present, which moves the result's dims elsewhere
(`x[0, :, idx]` is (3, 2) in torch and (2, 3) in numpy). So `parse` splits the subscript the way torch
does: `basic` (a numpy basic index: a view) and `adv` (a tuple over the view's dims: `slice(None)` or an
index array), and `t[index]` is `t[basic][adv]` in numpy.

The rest is torch's reading of each item, checked up front so errors name the dim, its size and the
index (never a bare numpy traceback):
- a list (or other sequence, not a tuple or array) holding a tensor, a sequence, a slice, None or
  Ellipsis is read as a tuple (deprecated in torch, with its warning); otherwise it is one index tensor;
- a list or numpy array becomes an int64 index (floats truncated), unless it holds bools or uint8;
- a 0-d integer tensor is an int; a 0-d bool (or uint8) tensor and a Python bool add a dim of size 1
  and index it with [0] (True) or [] (False);
- a uint8 tensor is a boolean mask (deprecated in torch, with its warning); other integer dtypes than
  int32/int64 and every float dtype are refused;
- slice steps must be positive; each Ellipsis spans the dims the other items leave (torch's rule, so a
  second one spans none after the first took them).

A tensor index's values are read here, on the host, and become part of the indexing op's attributes;
graph capture hears of the read (`_host_read`), so a traced index stops a capture instead of being
baked into the graph.
"""

import sys
import warnings
from collections import namedtuple

import numpy as np

from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.tensor import Tensor
from distgraph.backend import address
from distgraph.errors import DTypeError, IndexOutOfRangeError, ShapeError

Subscript = namedtuple("Subscript", ["basic", "adv", "lone_mask"])
# basic: a numpy basic index (tuple) or None; adv: a tuple of slice(None)/arrays over t[basic]'s dims or
# None; lone_mask: "bool" or "uint8" when the only advanced index is a mask of that dtype, else None
# (torch's index_put_ then writes a one-element value with masked_fill_: see ops/indexing.py)

_SEQUENCE_WARNING = (
    "Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed in pytorch "
    "2.9; use x[tuple(seq)] instead of x[seq]. In pytorch 2.9 this will be interpreted as tensor index, "
    "x[torch.tensor(seq)], which will result either in an error or a different result"
)
_BYTE_WARNING = "indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead."
_VALID = "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices"


def parse(shape, index, xp, op="getitem"):
    """torch's reading of `index` on a tensor of `shape`, as a Subscript (see the module docstring).
    Index arrays are put on `xp` (the indexed tensor's array namespace)."""
    plain = _plain(shape, index)
    if plain is not None:
        return plain
    items = _items(index)
    parsed = [_item(it, pos, op) for pos, it in enumerate(items)]
    return _layout(tuple(shape), parsed, xp, op)


def _plain(shape, index):
    """The common subscript of in-range ints and positive-step slices only, read in one pass (numpy reads
    it as torch does); None for anything else, which the full reading handles (and words the errors of)."""
    items = index if type(index) is tuple else (index,)
    if len(items) > len(shape):
        return None
    for n, it in zip(shape, items):
        kind = type(it)
        if kind is int:
            if not -n <= it < n:
                return None
        elif kind is not slice or not all(v is None or type(v) is int for v in (it.start, it.stop, it.step)):
            return None
        elif it.step is not None and it.step <= 0:
            return None
    return Subscript(items, None, None)


def _items(index):
    if isinstance(index, tuple):
        return index
    if isinstance(index, list | range) and _sequence_as_tuple(index):
        _warn(_SEQUENCE_WARNING)
        return tuple(index)
    return (index,)


def _warn(message):
    """A UserWarning pointing at the user's line: the first caller outside distgraph."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("distgraph."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _sequence_as_tuple(seq):
    """torch's treatSequenceAsTuple: a short sequence that holds a tensor, a sequence, a slice, None or
    Ellipsis is a tuple of indices; any other sequence is one index tensor."""
    if len(seq) >= 32:
        return False
    return any(
        isinstance(it, Tensor | list | tuple | range | np.ndarray | slice) or it is None or it is Ellipsis for it in seq
    )


def _item(it, pos, op):
    """One item as ("int", i) | ("slice", s) | ("none",) | ("ellipsis",) | ("bool", b) | ("array", a, was_byte)."""
    if it is None:
        return ("none",)
    if it is Ellipsis:
        return ("ellipsis",)
    if isinstance(it, bool):
        return ("bool", it)
    if isinstance(it, int | np.integer):
        return ("int", int(it))
    if isinstance(it, slice):
        return ("slice", _slice(it, op))
    if isinstance(it, Tensor):  # copied: the op keeps the index for backward, and a later write into the
        _host_read(it, op)  # tensor must not move the gradient; its values become the op's attribute
        return _array_item(it.array.copy() if it.ndim else it.array, pos, op)
    if isinstance(it, np.ndarray | list | tuple | range):
        return _array_item(_from_data(it, op), pos, op)
    if hasattr(it, "__cuda_array_interface__"):  # a cupy array (distgraph's own calls on cuda tensors)
        return _array_item(it, pos, op)
    raise IndexOutOfRangeError(f"{op}: {_VALID} (got {_type_name(it)})")


def _host_read(t, op):
    """Tell graph capture that a tensor index's values are read here: they become a number or an array
    in the op's attributes, which a graph would replay for every input (a traced index stops capture)."""
    if tensor_module.host_reads is not None:
        tensor_module.host_reads(t, f"{op} with a tensor index")


def _type_name(it):
    mod, name = type(it).__module__, type(it).__name__
    return name if mod == "builtins" else f"{mod.split('.')[0]}.{name}"


def _slice(s, op):
    try:
        start, stop, step = (None if v is None else v.__index__() for v in (s.start, s.stop, s.step))
    except (AttributeError, TypeError):
        raise DTypeError(
            f"{op}: slice indices must be integers or None or have an __index__ method (got {s})"
        ) from None
    if step == 0:
        raise ShapeError(f"{op}: slice step cannot be zero")
    if step is not None and step < 0:
        raise ShapeError(f"{op}: step must be greater than zero (got {s}; torch has no negative steps, use flip)")
    return slice(start, stop, step)


def _from_data(data, op):
    """torch's indexing_tensor_from_data: bool and uint8 data keep their dtype, anything else is int64."""
    try:
        arr = np.asarray(data.tolist() if isinstance(data, range) else data)
    except ValueError as exc:
        raise IndexOutOfRangeError(f"{op}: cannot build an index tensor from {data!r}: {exc}") from None
    if arr.dtype.kind in "bu" and arr.dtype.itemsize == 1:
        return arr
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise IndexOutOfRangeError(f"{op}: {_VALID} (got an index list of {arr.dtype})")
    return arr.astype(np.int64)


def _array_item(a, pos, op):
    dt = a.dtype
    if a.ndim == 0:
        if dt.kind == "b" or dt == np.uint8:
            return ("bool", bool(a))
        if dt.kind in "iu":
            return ("int", int(a))
    elif dt.kind == "b":
        return ("array", a, False)
    elif dt == np.uint8:
        _warn(_BYTE_WARNING)
        return ("array", a.astype(bool), True)
    elif dt == np.int64 or dt == np.int32:
        return ("array", a, False)
    raise IndexOutOfRangeError(
        f"{op}: tensors used as indices must be long, int, byte or bool tensors, got {dt.name} (index item {pos})"
    )


def _dims_taken(p):
    if p[0] in ("int", "slice"):
        return 1
    if p[0] == "array":
        return p[1].ndim if p[1].dtype.kind == "b" else 1
    return 0


def _layout(shape, parsed, xp, op):
    """Walk the items over the input's dims: build the basic index and the advanced one over its result."""
    ndim = len(shape)
    specified = sum(_dims_taken(p) for p in parsed)
    if specified > ndim:
        if ndim == 0 and parsed[0][0] == "int":
            raise IndexOutOfRangeError(
                f"{op}: invalid index of a 0-dim tensor. Use `tensor.item()` in Python to convert a 0-dim tensor "
                "to a number"
            )
        raise IndexOutOfRangeError(f"{op}: too many indices for tensor of dimension {ndim} (got {specified})")
    basic, adv, masks, out_of_range = [], {}, [], []
    dim = 0  # the input dim the next item indexes
    ellipsis_seen = False
    for k, p in enumerate(parsed):
        kind = p[0]
        if kind == "ellipsis":
            span = ndim - specified
            if ellipsis_seen and span and any(q[0] != "ellipsis" for q in parsed[k:]):
                raise IndexOutOfRangeError(f"{op}: a second ellipsis ('...') spans no dims; nothing can follow it")
            if not ellipsis_seen:
                basic.extend([slice(None)] * span)
                dim += span
            ellipsis_seen = True
        elif kind == "none":
            basic.append(None)
        elif kind == "slice":
            basic.append(p[1])
            dim += 1
        elif kind == "int":
            basic.append(_checked_int(p[1], dim, shape, op))
            dim += 1
        elif kind == "bool":  # a new dim of size 1, indexed by [0] or by nothing
            adv[_out_pos(basic)] = xp.zeros(1 if p[1] else 0, dtype=np.int64)
            basic.append(None)
        else:
            a, was_byte = p[1], p[2]
            if a.dtype.kind == "b":
                _check_mask(a, dim, shape, op)
                masks.append(was_byte)
                adv[_out_pos(basic)] = xp.asarray(a)
                basic.extend([slice(None)] * a.ndim)
                dim += a.ndim
            else:
                bad = _out_of_range(a, dim, shape, op)
                if bad:
                    out_of_range.append((_out_pos(basic), bad))
                adv[_out_pos(basic)] = xp.asarray(a)
                basic.append(slice(None))
                dim += 1
    if out_of_range:
        _drop_out_of_range(shape, basic, adv, out_of_range)
    adv_index = _adv_index(adv, op)
    basic_index = None if all(b == slice(None) for b in basic) else tuple(basic)
    lone_mask = ("uint8" if masks[0] else "bool") if len(adv) == 1 and len(masks) == 1 else None
    return Subscript(basic_index, adv_index, lone_mask)


def _out_pos(basic):
    """The dim of t[basic] that the next item lands on (ints remove a dim, None adds one)."""
    return sum(1 for b in basic if not isinstance(b, int))


def _checked_int(i, dim, shape, op):
    n = shape[dim]
    if not -n <= i < n:
        raise IndexOutOfRangeError(
            f"{op}: index {i} is out of bounds for dimension {dim} with size {n} (shape {shape})"
        )
    return i


def _out_of_range(a, dim, shape, op):
    """The error for the first index of `a` outside its dim, or None. torch always refuses a non-empty
    index into a dim of size 0; other ranges it checks only where elements are read (see below)."""
    n = shape[dim]
    if not a.size:
        return None
    lo, hi = int(a.min()), int(a.max())
    if -n <= lo and hi < n:
        return None
    return IndexOutOfRangeError(
        f"{op}: index {hi if hi >= n else lo} is out of bounds for dimension {dim} with size {n} (shape {shape})"
    )


def _drop_out_of_range(shape, basic, adv, out_of_range):
    """Raise the first out-of-range index, as torch does where it reads elements: unless the indexed
    result is empty (its kernel then checks nothing, and the indices become 0 here, which numpy would
    refuse) and no indexed dim of size 0 meets an index of elements (torch refuses that up front)."""
    view = np.broadcast_to(np.empty((), dtype=bool), shape)[tuple(basic)].shape
    spans = {p: (a.ndim if a.dtype.kind == "b" else 1) for p, a in adv.items()}
    covered = {p + k for p, w in spans.items() for k in range(w)}
    try:
        index_shape = np.broadcast_shapes(*[(int(a.sum()),) if a.dtype.kind == "b" else a.shape for a in adv.values()])
    except ValueError:
        index_shape = (1,)  # the broadcast error is raised after this
    empty = 0 in index_shape or any(view[d] == 0 for d in range(len(view)) if d not in covered)
    zero_indexed = any(view[d] == 0 for d in covered) and 0 not in index_shape
    if zero_indexed or not empty:
        raise out_of_range[0][1]
    for p, _ in out_of_range:
        adv[p] = adv[p] * 0


def _check_mask(a, dim, shape, op):
    want = shape[dim : dim + a.ndim]
    if tuple(a.shape) != tuple(want):
        raise IndexOutOfRangeError(
            f"{op}: The shape of the mask {list(a.shape)} does not match the shape of the indexed tensor "
            f"{list(shape)} at dimension {dim} (expected {list(want)})"
        )


def _adv_index(adv, op):
    """The advanced index over t[basic]'s dims, after checking the index arrays broadcast together."""
    if not adv:
        return None
    if len(adv) == 1:
        ((pos, a),) = adv.items()
        return (slice(None),) * pos + (a,)
    shapes = [(int(a.sum()),) if a.dtype.kind == "b" and a.ndim else tuple(a.shape) for a in adv.values()]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise IndexOutOfRangeError(
            f"{op}: shape mismatch: indexing tensors could not be broadcast together with shapes "
            + ", ".join(str(list(s)) for s in shapes)
        ) from None
    out, pos = [], 0
    for p in sorted(adv):
        out.extend([slice(None)] * (p - pos))
        out.append(adv[p])
        pos = p + (adv[p].ndim if adv[p].dtype.kind == "b" else 1)  # a mask spans its ndim dims
    return tuple(out)


def indexed_shape(shape, sub):
    """The shape of t[basic][adv] for a tensor of `shape`, computed without touching data."""
    probe = np.broadcast_to(np.empty((), dtype=bool), shape)
    if sub.basic is not None:
        probe = probe[sub.basic]
    if sub.adv is not None:
        probe = probe[tuple(a if isinstance(a, slice) else _host(a) for a in sub.adv)]
    return np.shape(probe)


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def memory_overlap(a, b):
    """torch's overlap status of two arrays: "full" (the same memory), "partial" (some shared) or None
    (disjoint, or too hard to tell: an array that is not dense, such as a broadcast or a strided view)."""
    if a.size == 0 or b.size == 0 or not (_dense(a) and _dense(b)):
        return None
    pa, pb = address(a), address(b)
    if pa == pb and a.nbytes == b.nbytes:  # the same block: the same elements only in the same layout
        return "full" if a.strides == b.strides else "partial"
    return "partial" if pa < pb + b.nbytes and pb < pa + a.nbytes else None


def _dense(a):
    """Non-overlapping and dense (torch's test): its elements fill one block, in any dim order."""
    step = a.itemsize
    for stride, size in sorted((st, n) for st, n in zip(a.strides, a.shape) if n != 1):
        if stride != step:
            return False
        step *= size
    return True
