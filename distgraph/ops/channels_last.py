"""torch's layout rule for the results of convolution, pooling and resampling, which are not elementwise
(autograd/memory_format.py does not reach them): channels_last (NHWC in memory; channels_last_3d, NDHWC)
when the input suggests it — its strides put the channels fastest, torch's suggest_memory_format — else
row-major. A row-major input answers in one flag read, so the default path pays nothing."""

from distgraph.autograd.memory_format import dim_order


def suggests(a):
    """torch's suggest_memory_format(a) is channels_last(_3d): a 4-d (5-d) array whose dims, ordered by
    stride as TensorIterator orders them, run N, spatial..., C."""
    if a.ndim not in (4, 5) or a.flags.c_contiguous:
        return False
    return dim_order(a.shape, (a,)) == [0, *range(2, a.ndim), 1]


def laid_out(xp, a, channels_last):
    """`a` channels_last when `channels_last` is true (itself where it already is, else a copy), else `a`."""
    if not channels_last:
        return a
    order = (0, *range(2, a.ndim), 1)
    if a.transpose(order).flags.c_contiguous:
        return a
    back = tuple(order.index(d) for d in range(a.ndim))  # (the inverse permutation)
    return xp.ascontiguousarray(a.transpose(order)).transpose(back)
