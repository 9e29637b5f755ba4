"""nn.utils gradient clipping (torch's names and semantics).

Clipping works on the gradient arrays in place, on their device, with no host round trip: the
total norm stays a device scalar, and the scale factor min(1, max_norm / (norm + 1e-6)) is applied
unconditionally, as torch does, so a step never waits on the GPU.
"""

import math
import warnings

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import NonFiniteError


class NonFiniteNormError(NonFiniteError, RuntimeError):
    """The total gradient norm is NaN or Inf under error_if_nonfinite=True: a distgraph NonFiniteError that is
    also the RuntimeError torch raises, so torch-style `except RuntimeError` keeps working."""


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(xp, a, p):
    """torch.linalg.vector_norm(a, p) of an array: max/min of |a| for ±inf, the count of nonzero elements for
    p = 0 (|a|**0 would count the zeros too), else (sum |a|**p)**(1/p); an empty array's norm is 0."""
    if p == 0:
        return xp.asarray(xp.count_nonzero(a), dtype=a.dtype)
    if math.isinf(p):
        if not a.size:
            return xp.zeros((), dtype=a.dtype)
        return xp.abs(a).max() if p > 0 else xp.abs(a).min()
    return (xp.abs(a) ** p).sum() ** (1.0 / p)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of the norms of `tensors` (as if all were concatenated into one vector)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if not tensors:
        from distgraph.ops.creation import tensor

        return tensor(0.0)
    xp = tensors[0].device.xp
    norm_type = float(norm_type)
    with no_grad():  # as torch: each tensor's norm, then the norm of those norms
        total = _vector_norm(xp, xp.stack([_vector_norm(xp, t.array, norm_type) for t in tensors]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise NonFiniteNormError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return Tensor(xp.asarray(total, dtype=tensors[0].array.dtype), device=tensors[0].device)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale gradients in place by min(1, max_norm / (total_norm + 1e-6))."""
    grads = _grads(parameters)
    if not grads:
        return
    xp = grads[0].device.xp
    coef = xp.minimum(max_norm / (total_norm.array + 1e-6), 1.0)
    with no_grad():
        for g in grads:
            g.array *= coef.astype(g.array.dtype)
            g._vc[0] += 1


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale gradients in place so their joint norm is at most max_norm; returns the norm before clipping."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """torch's deprecated spelling of `clip_grad_norm_` (same in-place clipping), warning as torch's does."""
    warnings.warn(
        "`distgraph.nn.utils.clip_grad_norm` is now deprecated in favor of `distgraph.nn.utils.clip_grad_norm_`.",
        FutureWarning,
        stacklevel=2,
    )
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.device.xp.clip(g.array, -clip_value, clip_value, out=g.array)
            g._vc[0] += 1
