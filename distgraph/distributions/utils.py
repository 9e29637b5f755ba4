"""Helpers shared by the distributions (torch.distributions.utils): parameters broadcast together,
probabilities and logits converted into each other, sums over an event's dims."""

import functools

import distgraph as dg


def broadcast_all(*values):
    """Tensors of one shape: Python numbers become tensors of the tensors' dtype and device (the default
    dtype when every value is a number), then all broadcast."""
    tensors = [v for v in values if isinstance(v, dg.Tensor)]
    for v in values:
        if not isinstance(v, dg.Tensor | int | float):
            raise ValueError(f"Input arguments must all be instances of numbers.Number or Tensor, got {type(v)}")
    if not tensors:
        return tuple(dg.tensor(float(v), dtype=dg.get_default_dtype()) for v in values)
    dtype = functools.reduce(dg.promote_types, (t.dtype for t in tensors))
    ref = tensors[0]
    out = [v if isinstance(v, dg.Tensor) else dg.tensor(float(v), dtype=dtype, device=ref.device) for v in values]
    return tuple(dg.broadcast_tensors(*out))


def sum_rightmost(value, dim):
    """value summed over its `dim` rightmost dims."""
    for _ in range(dim):
        value = value.sum(-1)
    return value


def clamp_probs(probs):
    """probs kept inside (eps, 1 - eps) of their dtype, so their logits stay finite."""
    eps = dg.finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs, is_binary=False):
    ps = clamp_probs(probs)
    return dg.log(ps) - dg.log1p(-ps) if is_binary else dg.log(ps)


def logits_to_probs(logits, is_binary=False):
    return dg.sigmoid(logits) if is_binary else dg.softmax(logits, -1)


class lazy_property:  # noqa: N801  (torch's name)
    """A property computed once on first access and then stored on the instance: a distribution given
    `logits` computes its `probs` only if asked."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.__doc__ = wrapped.__doc__

    def __get__(self, instance, obj_type=None):
        if instance is None:
            return self
        value = self.wrapped(instance)
        setattr(instance, self.wrapped.__name__, value)
        return value
