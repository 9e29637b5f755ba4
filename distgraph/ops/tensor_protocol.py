"""Python's protocols on a Tensor, as torch's Tensor answers them:

- `iter(t)`: the rows (`t.unbind(0)`, in the graph), and for a 0-d tensor torch's TypeError. Without it
  Python fell back to `__getitem__` until an IndexError, so `sum(tensor(5.))` was 0 and `list(tensor(5.))` [].
- `x in t`: whether any element equals `x` (a number or a tensor broadcast against `t`); anything else is
  torch's error. Python's fallback iterated rows and asked `bool()` of each, an error for a 2-D tensor.
- `format(t, spec)`: a 0-d tensor formats as its number (`f"{loss:.4f}"`); others take no spec, as torch.
- `t == None`, `t != None` (and any other object that is not a number, array or tensor): False / True, as
  Python's identity fallback gives torch's; `t < None` stays an error.
"""

import numbers

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.ops import compare as cmp


def _iter(self):
    if self.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return iter(self.unbind(0))


def _contains(self, element):
    if not isinstance(element, Tensor | numbers.Number | np.generic):
        raise TypeError(f"Tensor.__contains__ only supports Tensor or scalar, but you passed in a {type(element)}.")
    return bool((self == element).any().item())


def _format(self, spec):
    if self.ndim == 0:
        return self.item().__format__(spec)
    return object.__format__(self, spec)


def _comparable(other):
    return isinstance(other, Tensor | numbers.Number | np.ndarray | np.generic | list | tuple)


def _eq(self, other):
    return cmp.eq(self, other) if _comparable(other) else NotImplemented


def _ne(self, other):
    return cmp.ne(self, other) if _comparable(other) else NotImplemented


def install():
    Tensor.__iter__ = _iter
    Tensor.__contains__ = _contains
    Tensor.__format__ = _format
    Tensor.__eq__ = _eq
    Tensor.__ne__ = _ne
