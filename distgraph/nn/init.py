"""nn.init: torch's initializers, in place and without gradient tracking.

Values are drawn on the tensor's own device from distgraph's generator (seeded by
`dg.manual_seed`), or from `generator` when one (a dg.Generator, as torch's; or a numpy/cupy Generator) is
passed. The
distributions and bounds are torch's formulas; the random streams are distgraph's own. torch's old names
without the trailing underscore (uniform, normal, xavier_uniform, ...) still run them, with torch's
FutureWarning.
"""

import functools
import math
import warnings

from distgraph.autograd.grad_mode import no_grad
from distgraph.backend import on_its_device
from distgraph.errors import DeviceError
from distgraph.ops.rng import Generator
from distgraph.ops.rng import generator as _device_generator

_LINEAR_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity: 1 for linear/conv/sigmoid, 5/3 tanh, √2 relu, ..."""
    if nonlinearity in _LINEAR_GAIN or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, int | float) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    if tensor.ndim < 2:
        raise ValueError(
            f"Fan in and fan out can not be computed for tensor with fewer than 2 dimensions (shape {tuple(tensor.shape)})"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _write(tensor, values):
    """Copy `values` (an array of the tensor's namespace) into the tensor, in its dtype."""
    with no_grad():
        tensor.array[...] = values
        tensor._vc[0] += 1
    return tensor


def _gen(tensor, generator, op):
    """The stream a random fill of `tensor` draws from: `generator`'s (a dg.Generator, as torch's takes, or a
    numpy/cupy Generator), else the device's. A fill of an integer or bool tensor is refused, as torch's
    kernels refuse it: the draws cast to int would be silently truncated (normal_ on int64: all zeros)."""
    if not tensor.is_floating_point():
        raise NotImplementedError(
            f"nn.init.{op}: not implemented for {tensor.dtype} (a random fill needs a float tensor)"
        )
    if isinstance(generator, Generator):
        if generator.device.type != tensor.device.type:
            raise DeviceError(
                f"nn.init.{op}: a generator on {generator.device} cannot fill a tensor on {tensor.device}"
            )
        return generator.stream
    return generator if generator is not None else _device_generator(tensor.device)


@on_its_device
def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """U(a, b)."""
    return _write(tensor, a + (b - a) * _gen(tensor, generator, "uniform_").random(tensor.shape))


@on_its_device
def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """N(mean, std²)."""
    return _write(tensor, mean + std * _gen(tensor, generator, "normal_").standard_normal(tensor.shape))


def _erfinv(xp, x):
    if xp.__name__ == "numpy":
        from scipy.special import erfinv
    else:
        from distgraph.backend import cupy_special

        erfinv = cupy_special().erfinv
    return erfinv(x)


@on_its_device
def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std²) restricted to [a, b], by the inverse CDF (exact, no rejection loop, as torch)."""
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The distribution of values may be incorrect.",
            stacklevel=2,
        )
    xp = tensor.device.xp

    def cdf(v):
        return (1.0 + math.erf(v / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    u = (2 * lo - 1) + (2 * hi - 2 * lo) * _gen(tensor, generator, "trunc_normal_").random(tensor.shape)
    values = _erfinv(xp, u) * (std * math.sqrt(2.0)) + mean
    return _write(tensor, xp.clip(values, a, b))


@on_its_device
def constant_(tensor, val):
    return _write(tensor, val)


@on_its_device
def zeros_(tensor):
    return _write(tensor, 0)


@on_its_device
def ones_(tensor):
    return _write(tensor, 1)


@on_its_device
def eye_(tensor):
    """The identity matrix (2-D only), preserving the identity of the inputs in Linear layers."""
    if tensor.ndim != 2:
        raise ValueError(f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}")
    return _write(tensor, tensor.device.xp.eye(*tensor.shape))


@on_its_device
def dirac_(tensor, groups=1):
    """The Dirac delta for {3,4,5}-D conv weights: each output channel copies one input channel."""
    if tensor.ndim not in (3, 4, 5):
        raise ValueError(f"Only tensors with 3, 4, or 5 dimensions are supported, got shape {tuple(tensor.shape)}")
    out_per_group = tensor.shape[0] // groups
    if tensor.shape[0] % groups:
        raise ValueError("dim 0 must be divisible by groups")
    values = tensor.device.xp.zeros(tensor.shape, tensor.array.dtype)
    centre = tuple(s // 2 for s in tensor.shape[2:])
    for g in range(groups):
        for d in range(min(out_per_group, tensor.shape[1])):
            values[(g * out_per_group + d, d, *centre)] = 1
    return _write(tensor, values)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(−a, a) with a = gain · √(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std²) with std = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if 0 in tuple(tensor.shape):
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    return calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(−bound, bound) with bound = gain · √(3 / fan) (He et al.); Linear uses a=√5."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else uniform_(tensor, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std²) with std = gain / √fan."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else normal_(tensor, 0.0, std, generator)


@on_its_device
def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one (Saxe et al.)."""
    if tensor.ndim < 2:
        raise ValueError(f"Only tensors with 2 or more dimensions are supported, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    xp = tensor.device.xp
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    flat = _gen(tensor, generator, "orthogonal_").standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diag(r))
    if rows < cols:
        q = q.T
    return _write(tensor, gain * q.reshape(tensor.shape))


@on_its_device
def sparse_(tensor, sparsity, std=0.01, generator=None):
    """A 2-D matrix from N(0, std²) with a fraction `sparsity` of each column set to zero."""
    if tensor.ndim != 2:
        raise ValueError(f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}")
    rows, cols = tensor.shape
    gen = _gen(tensor, generator, "sparse_")
    values = std * gen.standard_normal((rows, cols))
    zeros = int(math.ceil(sparsity * rows))
    for c in range(cols):
        values[gen.permutation(rows)[:zeros], c] = 0
    return _write(tensor, values)


def _deprecated(init):
    """torch's old name of `init` (its name without the trailing underscore), which warns and then runs it."""
    old, new = init.__name__[:-1], init.__name__

    @functools.wraps(init)
    def deprecated_init(*args, **kwargs):
        warnings.warn(f"`nn.init.{old}` is now deprecated in favor of `nn.init.{new}`.", FutureWarning, stacklevel=2)
        return init(*args, **kwargs)

    deprecated_init.__name__ = deprecated_init.__qualname__ = old
    deprecated_init.__doc__ = f"{old}(...): deprecated, use nn.init.{new}."
    return deprecated_init


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
eye = _deprecated(eye_)
dirac = _deprecated(dirac_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)
