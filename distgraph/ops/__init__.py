"""Every differentiable op, defined once (array forward + backward rule); see `registry`."""

from distgraph.ops import (  # noqa: F401
    activation,
    compare,
    conv,
    creation,
    elementwise,
    indexing,
    layers,
    lerp,
    linalg,
    loss,
    methods,
    movement,
    pool,
    products,
    recurrent,
    reduction,
    reduction_extra,
    regions,
    reorder,
    shape,
    writers,
)
from distgraph.ops.registry import REGISTRY, Op, defop, get_op  # noqa: F401

reduction_extra.install()
methods.install()
