"""Activation functions under torch.nn.functional's names: the registered ops, and compositions of them."""

from distgraph.ops import activation as act
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg
from distgraph.ops.shape import chunk

relu = ew.relu
sigmoid = ew.sigmoid
tanh = ew.tanh
leaky_relu = act.leaky_relu
elu = act.elu
gelu = act.gelu
silu = act.silu
softplus = act.softplus
mish = act.mish
hardtanh = act.hardtanh
relu6 = act.relu6
logsigmoid = act.logsigmoid
softmax = linalg.softmax
log_softmax = linalg.log_softmax

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace=False):
    """scale · elu(x, α) with the self-normalizing constants of Klambauer et al."""
    return ew.mul(elu(input, _SELU_ALPHA), _SELU_SCALE)


def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, α·(exp(x/α) − 1)), i.e. α · elu(x/α)."""
    return ew.mul(elu(ew.div(input, alpha)), alpha)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6: a piecewise-linear sigmoid."""
    return ew.div(relu6(ew.add(input, 3.0)), 6.0)


def hardswish(input, inplace=False):
    return ew.mul(input, hardsigmoid(input))


def softsign(input):
    return ew.div(input, ew.add(ew.abs(input), 1))


def softmin(input, dim=None, dtype=None):
    return softmax(ew.neg(input), dim, dtype)


def tanhshrink(input):
    return ew.sub(input, ew.tanh(input))


def threshold(input, threshold, value, inplace=False):
    """x where x > threshold, else value."""
    return ew.where(cmp.gt(input, threshold), input, ew.const(value, input))


def hardshrink(input, lambd=0.5):
    return ew.where(cmp.gt(ew.abs(input), lambd), input, ew.const(0, input))


def softshrink(input, lambd=0.5):
    shrunk = ew.sub(input, ew.mul(ew.sign(input), lambd))
    return ew.where(cmp.gt(ew.abs(input), lambd), shrunk, ew.const(0, input))


def glu(input, dim=-1):
    """a · σ(b) where (a, b) are the two halves of the input along `dim`."""
    if input.shape[dim] % 2:
        from distgraph.errors import ShapeError

        raise ShapeError(f"glu: halving dimension {dim} must be even, got size {input.shape[dim]}")
    a, b = chunk(input, 2, dim)
    return ew.mul(a, sigmoid(b))


def prelu(input, weight):
    """max(0, x) + w · min(0, x), one learned slope per channel (dim 1) or one shared slope."""
    if weight.numel() > 1 and input.ndim >= 2:
        weight = weight.reshape(1, -1, *([1] * (input.ndim - 2)))
    return ew.where(cmp.gt(input, 0), input, ew.mul(weight, input))
