"""Tensor methods torch has beyond the op table: in-place cumulative ops, dtype conversions, metadata."""

from distgraph.autograd.tensor import Tensor

METHODS = {}


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
