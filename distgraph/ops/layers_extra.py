"""Random noise for nn layers (rrelu's slopes, gumbel_softmax's uniforms), recorded as an op.

Like dropout's mask (ops/layers.py), the draw is an op marked `random`, so a captured graph draws anew
on every run instead of freezing the first draw as a constant (graph passes neither merge nor fold it).
It carries no gradient: the tensor passed in only gives the shape, dtype and device.
"""

from distgraph.backend import device_of_array
from distgraph.ops.registry import defop
from distgraph.ops.rng import generator


@defop("uniform_noise", kind="other", save=())
def _uniform_noise(xp, x, *, low, high):
    """U[low, high) per element of x's shape, in x's dtype, from the device's generator (dg.manual_seed)."""
    u = generator(device_of_array(x)).random(x.shape)
    return xp.asarray(low + (high - low) * u, dtype=x.dtype)


_uniform_noise.random = True


def uniform_noise(like, low, high):
    """A no-grad tensor of uniform draws in [low, high) shaped like `like`."""
    return _uniform_noise(like.detach(), low=float(low), high=float(high))
