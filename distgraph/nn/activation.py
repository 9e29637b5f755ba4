"""Activation modules: thin wrappers over nn.functional with torch's names, arguments and repr.

`inplace=True` writes the result into the input and returns it, as torch (refused on a leaf that requires grad).
"""

from distgraph.nn import functional as F
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.ops.creation import empty


class _Elementwise(Module):
    """An activation without hyper-parameters other than `inplace`."""

    _fn = None

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return type(self)._fn(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


def _elementwise(name, fn, doc, repr_inplace=True):
    """An _Elementwise class; repr_inplace=False for the ones whose torch repr never shows inplace."""
    attrs = {"_fn": staticmethod(fn), "__doc__": doc, "__module__": __name__}
    if not repr_inplace:
        attrs["extra_repr"] = lambda self: ""
    return type(name, (_Elementwise,), attrs)


ReLU = _elementwise("ReLU", F.relu, "max(x, 0)")
ReLU6 = _elementwise("ReLU6", F.relu6, "min(max(x, 0), 6)")
SELU = _elementwise("SELU", F.selu, "scale · elu(x, α), self-normalizing")
Hardsigmoid = _elementwise("Hardsigmoid", F.hardsigmoid, "relu6(x + 3) / 6", repr_inplace=False)
Hardswish = _elementwise("Hardswish", F.hardswish, "x · relu6(x + 3) / 6", repr_inplace=False)
SiLU = _elementwise("SiLU", F.silu, "x · σ(x)")
Mish = _elementwise("Mish", F.mish, "x · tanh(softplus(x))")


def _stateless(name, fn, doc):
    return type(name, (Module,), {"forward": lambda self, input: fn(input), "__doc__": doc, "__module__": __name__})


Sigmoid = _stateless("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _stateless("Tanh", F.tanh, "tanh(x)")
LogSigmoid = _stateless("LogSigmoid", F.logsigmoid, "log σ(x)")
Softsign = _stateless("Softsign", F.softsign, "x / (1 + |x|)")
Tanhshrink = _stateless("Tanhshrink", F.tanhshrink, "x − tanh(x)")


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class CELU(ELU):
    def forward(self, input):
        return F.celu(input, self.alpha, self.inplace)


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        if max_val <= min_val:
            raise ValueError(f"Hardtanh: max_val ({max_val}) must be greater than min_val ({min_val})")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class Threshold(Module):
    def __init__(self, threshold, value, inplace=False):
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def forward(self, input):
        return F.threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}" + (", inplace=True" if self.inplace else "")


class Hardshrink(Module):
    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def forward(self, input):
        return F.hardshrink(input, self.lambd)

    def extra_repr(self):
        return f"{self.lambd}"


class Softshrink(Hardshrink):
    def forward(self, input):
        return F.softshrink(input, self.lambd)


class GLU(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class PReLU(Module):
    """leaky_relu with a learned slope: one shared, or one per channel (num_parameters=C)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(empty(num_parameters, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        init.constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim, _stacklevel=5)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, input):
        return F.log_softmax(input, self.dim, _stacklevel=5)


class Softmin(Softmax):
    def forward(self, input):
        return F.softmin(input, self.dim, _stacklevel=5)
