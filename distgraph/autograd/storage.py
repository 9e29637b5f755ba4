"""Storages: the memory a view reads, found one way for copy.deepcopy and for both of dg.save's writers.

numpy has no storage object: a slice, a transpose or an expand is an ndarray whose `.base` chain ends at
the array that owns the memory (the root). torch keeps views of one storage views of one storage through
copy.deepcopy and torch.save, and keeps each tensor's strides; distgraph does the same by describing an
array as torch does — a storage (its root's memory, flat, in memory order), an offset into it and strides,
in elements (torch's storage_offset() and stride()) — and rebuilding it on a copy of that storage.

An array that cannot be described so (negative strides, a dtype other than its root's, a root with gaps,
an empty or a cuda array) is its own storage: it is copied row-major, as any array was before.
"""

import copy

import numpy as np

from distgraph.backend import device_of_array


def root_of(arr):
    """The array at the end of `arr`'s chain of `.base`: the one owning the memory."""
    root = arr
    while True:
        owner = root.base
        if not isinstance(owner, np.ndarray):  # numpy's as_strided (how views are rebuilt) wraps its source in
            owner = getattr(owner, "base", None)  # a DummyArray, whose `base` is the array
        if not isinstance(owner, np.ndarray):
            return root
        root = owner


def dense_order(arr):
    """The dims of a host array from slowest to fastest where its elements fill one block of memory with no
    gap or overlap (row-major, transposed, channels_last: torch's non-overlapping and dense), else None."""
    if arr.flags.c_contiguous:
        return list(range(arr.ndim))
    if any(st < 0 for st in arr.strides):
        return None
    dims = sorted(range(arr.ndim), key=lambda d: -arr.strides[d])
    step = arr.itemsize
    for d in reversed(dims):
        if arr.shape[d] != 1:
            if arr.strides[d] != step:
                return None
            step *= arr.shape[d]
    return dims


def row_major(shape):
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return tuple(strides)


def is_row_major(shape, strides):
    """Whether `strides` (in elements) lay `shape` out row-major (size-1 dims' strides do not count, as in torch)."""
    return all(n == 1 or st == want for n, st, want in zip(shape, strides, row_major(shape)))


def extent(shape, offset, strides):
    """[first, end): the elements of its storage that an array of `shape` at `offset` with `strides` reads."""
    if 0 in shape:
        return offset, offset
    return offset, offset + sum((n - 1) * st for n, st in zip(shape, strides)) + 1


def locate(arr):
    """(root, offset, strides): `arr` as `offset` and `strides` (in elements) into `flat(root)`. The root is
    the array owning arr's memory where that memory is one dense block, else arr itself where it is dense,
    else arr itself with row-major strides (its storage a row-major copy of it: `flat`)."""
    if arr.base is None and arr.flags.c_contiguous:  # (the common case: an array owning its memory)
        return arr, 0, row_major(arr.shape)
    if isinstance(arr, np.ndarray) and arr.size:
        for root in (root_of(arr), arr):
            where = _within(arr, root)
            if where is not None:
                return root, *where
    return arr, 0, row_major(arr.shape)


def _within(arr, root):
    size = arr.itemsize
    if root.dtype != arr.dtype or dense_order(root) is None or any(st < 0 or st % size for st in arr.strides):
        return None
    start = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if start < 0 or start % size:
        return None
    offset, strides = start // size, tuple(st // size for st in arr.strides)
    return (offset, strides) if extent(arr.shape, offset, strides)[1] <= root.size else None


def flat(root):
    """A root's storage: its elements in memory order, 1-d (a view of it); a row-major copy for an array
    `locate` gave as its own storage without a dense layout."""
    order = dense_order(root) if isinstance(root, np.ndarray) else None
    return root.reshape(-1) if order is None else root.transpose(order).reshape(-1)


def view(storage, offset, shape, strides):
    """The array of `shape` at `offset` with `strides` (in elements) in a 1-d storage, sharing its memory."""
    xp = device_of_array(storage).xp
    steps = tuple(st * storage.itemsize for st in strides)
    return xp.lib.stride_tricks.as_strided(storage[offset:], tuple(shape), steps)


def deepcopy_array(arr, memo):
    """copy.deepcopy of a tensor's array that keeps views views, as torch's deepcopy of its storages: each
    root is copied once per deepcopy (numpy's own deepcopy, memoized under the root's id, keeps its memory
    order), and a view is rebuilt on that copy at its offset with its strides."""
    if not isinstance(arr, np.ndarray):  # a cuda array: a copy on its device, its own storage
        if id(arr) not in memo:
            memo[id(arr)] = arr.copy()
        return memo[id(arr)]
    root, offset, strides = locate(arr)
    new = copy.deepcopy(root, memo)
    return new if root is arr else view(flat(new), offset, arr.shape, strides)


class Spans:
    """The part of each storage that the arrays a writer saves read, so that a file holds that part only (a
    view of a large buffer, a parameter of a flat bucket, writes its own elements, not the buffer's).

    A writer `place`s each array as it meets it and writes a storage's span with the first array on it. When
    a later array on that storage reads outside that span (a view met before another part of its buffer),
    `grown` is set: the writer then writes the object again, this time knowing every storage's whole span.
    """

    def __init__(self):
        self.spans = {}  # id(root) -> [first, end)
        self.keep = []  # the roots behind those ids, alive until written
        self.grown = False

    def place(self, arr):
        """(root, (first, end): the span of its storage to save, `flat(root)[first:end]`, arr's offset in
        that span, its strides)."""
        root, offset, strides = locate(arr)
        first, end = (0, arr.size) if root is arr else extent(arr.shape, offset, strides)  # (its own storage)
        span = self.spans.get(id(root))
        if span is None:
            span = self.spans[id(root)] = [first, end]
            self.keep.append(root)
        elif first < span[0] or end > span[1]:
            span[:] = min(span[0], first), max(span[1], end)
            self.grown = True
        return root, tuple(span), offset - span[0], strides
