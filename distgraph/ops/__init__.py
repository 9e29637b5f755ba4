"""Every differentiable op, defined once (array forward + backward rule); see `registry`."""

from distgraph.ops import (  # noqa: F401
    activation,
    collective,
    compare,
    conv,
    creation,
    ctc,
    elementwise,
    gamma_sample,
    indexing,
    indexing_extra,
    layers,
    layers_extra,
    lerp,
    linalg,
    loss,
    methods,
    movement,
    polynomials,
    pool,
    products,
    recurrent,
    reduction,
    reduction_extra,
    regions,
    reorder,
    shape,
    shape_extra,
    special_fns,
    writers,
)
from distgraph.ops.registry import REGISTRY, Op, defop, get_op  # noqa: F401

reduction_extra.install()
methods.install()
indexing_extra.install()
shape_extra.install()
from distgraph.ops import math_names  # noqa: E402  (after methods.install: its in-place forms wrap core methods)

math_names.install()
from distgraph.ops import histogram, inplace_shape, strided, tensor_extra, tensor_legacy, tensor_protocol  # noqa: E402

inplace_shape.install()
tensor_extra.install()
histogram.install()
strided.install()
tensor_legacy.install()
tensor_protocol.install()
from distgraph.autograd.tensor import Tensor, View  # noqa: E402
from distgraph.ops.torch_keywords import install_methods  # noqa: E402

install_methods((Tensor, View))  # axis=, keepdims= (torch_keywords.py), after every install above
