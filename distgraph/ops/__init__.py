"""Every differentiable op, defined once (array forward + backward rule); see `registry`."""

from distgraph.ops import creation, elementwise, indexing, linalg, methods, movement, reduction, shape  # noqa: F401
from distgraph.ops.registry import REGISTRY, Op, defop, get_op  # noqa: F401

methods.install()
