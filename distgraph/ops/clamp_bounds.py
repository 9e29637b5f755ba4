"""clamp with Tensor bounds: torch's values (a NaN anywhere gives NaN) and gradients
(clamp_backward_min_max), built from elementwise ops so they stay differentiable."""

from distgraph.ops import compare as cmp
from distgraph.ops.elementwise import add, maximum, minimum, sub, where


def clamp_by_tensors(x, lo, hi):
    """clamp with Tensor bounds and torch's gradients (clamp_backward_min_max): x's where lo <= x <= hi,
    lo's where x < lo < hi, hi's where x > hi or hi < lo (a NaN lo included, though the value is NaN
    there), nobody's where x < lo == hi or x is NaN. The cases exclude each other, so each is a where on
    the operand that gets it, falling back to the value without a gradient."""
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
    # hi's where x > hi or hi < lo, a NaN lo included: the value there is NaN (torch), the gradient hi's
    hi_valued = add(hi, sub(out, hi).detach())
    out = where(cmp.logical_or(cmp.gt(x, hi), cmp.lt(hi, lo)), hi_valued, out)
    out = where(cmp.logical_and(cmp.lt(x, lo), cmp.lt(lo, hi)), lo, out)
    return where(cmp.logical_and(cmp.ge(x, lo), cmp.le(x, hi)), x, out)
