"""rrelu, gumbel_softmax and torch's in-place functional activations (F.relu_, F.elu_, ...).

rrelu in training multiplies each non-positive element by a slope drawn uniformly from [lower, upper]
(distgraph's generator, so dg.manual_seed replays it; a recorded random op, so a compiled graph draws anew
each run) and its gradient is that slope, as torch's
noise; in eval it is leaky_relu with the mean slope. The `_` forms write into their input and return
it, recorded by autograd and refused on a leaf that requires grad, as torch's.
"""

import warnings

import numpy as np

from distgraph.errors import DTypeError, InputRangeError
from distgraph.nn.functional.activation import _maybe_inplace, celu, elu, hardtanh, leaky_relu, relu, selu, softmax
from distgraph.nn.functional.activation import threshold as _threshold
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing
from distgraph.ops import reduction as red
from distgraph.ops.creation import zeros
from distgraph.ops.layers_extra import uniform_noise

_LOWER, _UPPER = 1.0 / 8, 1.0 / 3


def rrelu(input, lower=_LOWER, upper=_UPPER, training=False, inplace=False):
    """x where x > 0, else a·x with a ~ U(lower, upper) per element (training) or a = (lower + upper) / 2."""
    if lower > upper:
        raise InputRangeError(f"rrelu: lower bound ({lower}) should be less than or equal to the upper bound ({upper})")
    if not input.is_floating_point():
        raise DTypeError(f"rrelu: input must be a floating-point tensor, got {input.dtype.name}")
    if not training:
        return leaky_relu(input, (lower + upper) / 2, inplace)
    noise = uniform_noise(input, lower, upper)
    slope = ew.where(cmp.le(input.detach(), 0), noise, ew.const(1, noise))
    return _maybe_inplace(lambda x: ew.mul(x, slope), input, inplace, "rrelu")


def rrelu_(input, lower=_LOWER, upper=_UPPER, training=False):
    return rrelu(input, lower, upper, training, inplace=True)


def relu_(input):
    return relu(input, inplace=True)


def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


def celu_(input, alpha=1.0):
    return celu(input, alpha, inplace=True)


def selu_(input):
    return selu(input, inplace=True)


def threshold_(input, threshold, value):
    return _threshold(input, threshold, value, inplace=True)


def gumbel_softmax(logits, tau=1, hard=False, eps=1e-10, dim=-1):
    """softmax((logits + g) / τ) with g = −log E, E ~ Exp(1) per element (distgraph's generator); hard=True
    returns the one-hot of its argmax with the soft sample's gradient (straight-through), as torch's."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    if not logits.is_floating_point():
        raise DTypeError(f"gumbel_softmax: logits must be a floating-point tensor, got {logits.dtype.name}")
    u = uniform_noise(logits, 0.0, 1.0)
    with np.errstate(divide="ignore"):  # u = 0 draws E = 0 (g = inf), as torch's exponential_ may
        gumbels = ew.neg(ew.log(ew.neg(ew.log1p(ew.neg(u)))))  # E = −log(1 − u)
    y_soft = softmax(ew.div(ew.add(logits, gumbels), tau), dim=dim)
    if not hard:
        return y_soft
    index = red.argmax(y_soft.detach(), dim=dim, keepdim=True)
    y_hard = indexing.scatter(zeros(*logits.shape, dtype=logits.dtype, device=logits.device), dim, index, value=1.0)
    return ew.add(ew.sub(y_hard, y_soft.detach()), y_soft)
