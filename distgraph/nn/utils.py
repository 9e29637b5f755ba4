"""nn.utils: gradient clipping and flat parameter vectors (torch's names and semantics)."""

import math

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so their joint norm is at most max_norm; returns the norm before clipping."""
    grads = _grads(parameters)
    if not grads:
        from distgraph.ops.creation import tensor

        return tensor(0.0)
    xp = grads[0].device.xp
    norm_type = float(norm_type)
    with no_grad():
        if math.isinf(norm_type):
            total = max(float(xp.abs(g.array).max()) for g in grads)
        else:
            total = float(sum(float((xp.abs(g.array) ** norm_type).sum()) for g in grads)) ** (1.0 / norm_type)
        if error_if_nonfinite and not math.isfinite(total):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite")
        coef = min(max_norm / (total + 1e-6), 1.0)
        if coef < 1.0:
            for g in grads:
                g.array *= coef
                g._vc[0] += 1
    return Tensor(xp.asarray(total, dtype=grads[0].array.dtype))


def clip_grad_value_(parameters, clip_value):
    with no_grad():
        for g in _grads(parameters):
            g.device.xp.clip(g.array, -clip_value, clip_value, out=g.array)
            g._vc[0] += 1


def parameters_to_vector(parameters):
    from distgraph.ops.shape import cat

    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
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
