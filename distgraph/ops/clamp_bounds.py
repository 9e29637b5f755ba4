"""clamp with Tensor bounds: torch's values (a NaN anywhere gives NaN) and gradients
(clamp_backward_min_max), built from elementwise ops so they stay differentiable."""

from distgraph.autograd.tensor import Tensor
from distgraph.ops import compare as cmp
from distgraph.ops.elementwise import add, clamp, maximum, minimum, sub, where


def _number_overload(lo, hi):
    """torch's overload choice: next to a Python number, a 0-d bound that needs no grad is taken as a
    number too (clamp(Tensor, Number, Number): a number's dtype promotion, no gradient to it)."""
    tensors = [b for b in (lo, hi) if isinstance(b, Tensor)]
    numbers = [b for b in (lo, hi) if isinstance(b, bool | int | float)]
    return len(tensors) == 1 and len(numbers) == 1 and tensors[0].ndim == 0 and not tensors[0].requires_grad


def clamp_by_tensors(x, lo, hi):
    """clamp with Tensor bounds and torch's gradients (clamp_backward_min_max): x's where lo <= x <= hi,
    lo's where x < lo < hi, hi's where x > hi or hi < lo (a NaN lo included, though the value is NaN
    there), nobody's where x < lo == hi or x is NaN. The cases exclude each other, so each is a where on
    the operand that gets it, falling back to the value without a gradient."""
    if _number_overload(lo, hi):
        return clamp(x, *(b.item() if isinstance(b, Tensor) else b for b in (lo, hi)))
    value = x
    if lo is not None:
        value = maximum(value, lo)  # propagates a NaN of either side, as torch's clamp
    if hi is not None:
        value = minimum(value, hi)
    out = value.detach()
    if lo is None:
        return where(cmp.gt(x, hi), hi, where(cmp.le(x, hi), x, out))
    if hi is None:
        return where(cmp.lt(x, lo), lo, where(cmp.ge(x, lo), x, out))
    # hi's where x > hi or hi < lo, a NaN lo included: the value there is NaN (torch), the gradient hi's.
    # Elsewhere the value is hi itself: hi + (out - hi) would be NaN for an infinite hi
    hi_valued = where(cmp.eq(out, hi), hi, add(hi, sub(out, hi).detach()))
    out = where(cmp.logical_or(cmp.gt(x, hi), cmp.lt(hi, lo)), hi_valued, out)
    out = where(cmp.logical_and(cmp.lt(x, lo), cmp.lt(lo, hi)), lo, out)
    return where(cmp.logical_and(cmp.ge(x, lo), cmp.le(x, hi)), x, out)
