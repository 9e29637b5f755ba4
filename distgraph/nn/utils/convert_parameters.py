"""nn.utils flat parameter vectors: parameters_to_vector and its inverse (torch's names and semantics)."""

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops.shape import cat


def parameters_to_vector(parameters):
    """All parameters flattened and concatenated (differentiable, like torch)."""
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of a 1-D vector into the parameters, in order."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected a Tensor, but got: {type(vec).__name__}")
    if vec.ndim != 1:
        raise ShapeError(f"vector_to_parameters: expected a 1-D vector, got shape {tuple(vec.shape)}")
    parameters = list(parameters)
    total = sum(p.numel() for p in parameters)
    if vec.numel() != total:
        raise ShapeError(f"vector_to_parameters: vector has {vec.numel()} elements, parameters need {total}")
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.array[...] = vec.array[offset : offset + n].reshape(p.shape)
            p._vc[0] += 1
            offset += n
