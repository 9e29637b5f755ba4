"""lerp(start, end, weight) as one op with torch's formula and derivatives.

torch computes start + weight·(end - start) where |weight| < 0.5 and end - (end - start)·(1 - weight)
elsewhere (exact at weight 1, and where start is infinite the second branch gives ±inf, not inf - inf
= NaN); its gradients are g·(1 - weight), g·weight and g·(end - start).
"""

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.ops import elementwise as ew
from distgraph.ops.promotion import cast, const
from distgraph.ops.registry import defop


@defop("lerp", kind=ew.EW, save=(0, 1, 2), saved_for={0: 2, 1: 2})  # start, end: for weight's gradient
def _lerp(xp, start, end, weight):
    diff = end - start
    return xp.where(xp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


@_lerp.grad
def _(ctx, g):
    start, end, weight = ctx.inputs
    g_start = ew.mul(g, ew.rsub(weight, 1)) if ctx.next[0] is not None else None
    g_end = ew.mul(g, weight) if ctx.next[1] is not None else None
    g_weight = ew.mul(g, ew.sub(end, start)) if ctx.next[2] is not None else None
    return g_start, g_end, g_weight


def lerp(input, end, weight):
    dt = dtypes.result_np_dtype((input, end, weight))
    ref = input if isinstance(input, Tensor) else end
    start, end, weight = (
        (x if x.array.dtype == dt else cast(x, dt)) if isinstance(x, Tensor) else const(x, ref, dt)
        for x in (input, end, weight)
    )
    return _lerp(start, end, weight)
