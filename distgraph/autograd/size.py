"""torch.Size: what `Tensor.size()` returns. A tuple, so it equals, unpacks and hashes as the tuple of the same
sizes; torch's repr and numel(), and slicing or adding another tuple gives a Size again, as torch's does.

`Tensor.shape` is one too (a Size per read: ~0.1 µs; ~0.3 µs for `shape[i]`, the override below), so
distgraph's own ops read `t.array.shape` where they run per call.
"""

import math
import operator

new_size = tuple.__new__  # new_size(Size, shape): a Size of ints without the check (Tensor.shape's, ~0.1 µs)


class Size(tuple):
    __slots__ = ()

    def __new__(cls, sizes=()):
        """torch's check: ints (numpy's and 0-d integer tensors read as theirs). `Tensor.shape` and `size()` build
        theirs with tuple.__new__, numpy's shape being ints already."""
        sizes = tuple(sizes)
        if not all(type(n) is int for n in sizes):
            for i, n in enumerate(sizes):
                if not hasattr(n, "__index__"):
                    raise TypeError(f"torch.Size() takes an iterable of 'int' (item {i} is '{type(n).__name__}')")
            sizes = tuple(operator.index(n) for n in sizes)
        return tuple.__new__(cls, sizes)

    def __repr__(self):
        return f"torch.Size({list(self)})"

    def numel(self):
        return math.prod(self)

    def __getitem__(self, key):
        out = tuple.__getitem__(self, key)
        return Size(out) if isinstance(key, slice) else out

    def __add__(self, other):
        return Size(tuple.__add__(self, other))

    def __radd__(self, other):  # (1,) + x.shape, as torch's
        return Size(tuple.__add__(tuple(other), self))

    def __mul__(self, n):
        return Size(tuple.__mul__(self, n))

    __rmul__ = __mul__
