"""Activation functions under torch.nn.functional's names: the registered ops, and compositions of them."""

import warnings

from distgraph.errors import InputRangeError, ShapeError
from distgraph.ops import activation as act
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg
from distgraph.ops.methods import inplace_variant
from distgraph.ops.shape import chunk

sigmoid = ew.sigmoid
tanh = ew.tanh
gelu = act.gelu
softplus = act.softplus
logsigmoid = act.logsigmoid


def _maybe_inplace(fn, input, inplace, name, *args):
    """fn(input, *args), or with inplace=True (torch's flag) the result written into `input`, which is
    returned: recorded by autograd as torch records `relu_`, refused on a leaf that requires grad."""
    if not inplace:
        return fn(input, *args)
    return inplace_variant(lambda x: fn(x, *args), name + "_")(input)


def relu(input, inplace=False):
    return _maybe_inplace(ew.relu, input, inplace, "relu")


def relu6(input, inplace=False):
    return _maybe_inplace(act.relu6, input, inplace, "relu6")


def elu(input, alpha=1.0, inplace=False):
    return _maybe_inplace(act.elu, input, inplace, "elu", alpha)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _maybe_inplace(act.leaky_relu, input, inplace, "leaky_relu", negative_slope)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return _maybe_inplace(act.hardtanh, input, inplace, "hardtanh", min_val, max_val)


def silu(input, inplace=False):
    return _maybe_inplace(act.silu, input, inplace, "silu")


def mish(input, inplace=False):
    return _maybe_inplace(act.mish, input, inplace, "mish")


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace=False):
    """scale · elu(x, α) with the self-normalizing constants of Klambauer et al."""
    return _maybe_inplace(lambda x: ew.mul(act.elu(x, _SELU_ALPHA), _SELU_SCALE), input, inplace, "selu")


def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, α·(exp(x/α) − 1)), i.e. α · elu(x/α)."""
    if alpha == 0:
        raise ZeroDivisionError("celu: alpha cannot be 0")
    return _maybe_inplace(lambda x: ew.mul(act.elu(ew.div(x, alpha)), alpha), input, inplace, "celu")


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6: a piecewise-linear sigmoid."""
    return _maybe_inplace(act.hardsigmoid, input, inplace, "hardsigmoid")


def hardswish(input, inplace=False):
    return _maybe_inplace(act.hardswish, input, inplace, "hardswish")


def softsign(input):
    return ew.div(input, ew.add(ew.abs(input), 1))


def _implicit_dim(name, input, dim, stacklevel):
    """torch's legacy rule for dim=None, with its deprecation warning: dim 0 for 0-, 1- and 3-D input, else 1."""
    if dim is not None:
        return dim
    picked = 0 if input.ndim in (0, 1, 3) else 1
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return picked


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    return linalg.softmax(input, _implicit_dim("softmax", input, dim, _stacklevel), dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return linalg.log_softmax(input, _implicit_dim("log_softmax", input, dim, _stacklevel), dtype)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    return linalg.softmax(ew.neg(input), _implicit_dim("softmin", input, dim, _stacklevel), dtype)


def tanhshrink(input):
    return ew.sub(input, ew.tanh(input))


def threshold(input, threshold, value, inplace=False):
    """value where x ≤ threshold, else x (so a NaN input stays NaN, as torch)."""
    return _maybe_inplace(act.threshold, input, inplace, "threshold", threshold, value)


def hardshrink(input, lambd=0.5):
    """x where |x| > λ, else 0; a NaN input stays NaN (with zero gradient), as torch."""
    return act.shrink(input, lambd=lambd, soft=False)


def softshrink(input, lambd=0.5):
    """x − sign(x)·λ where |x| > λ, else 0 (NaN stays NaN); λ must be non-negative, as torch requires."""
    if lambd < 0:
        raise InputRangeError(f"softshrink: lambda must be non-negative, got {lambd}")
    return act.shrink(input, lambd=lambd, soft=True)


def glu(input, dim=-1):
    """a · σ(b) where (a, b) are the two halves of the input along `dim`."""
    if input.shape[dim] % 2:
        raise ShapeError(f"glu: halving dimension {dim} must be even, got size {input.shape[dim]}")
    a, b = chunk(input, 2, dim)
    return ew.mul(a, sigmoid(b))


prelu = act.prelu  # an op, so that Tensor.prelu is the same function
