"""instance_norm and local_response_norm, as torch.nn.functional's.

instance_norm normalizes each (sample, channel) plane over its spatial dims. ATen runs it as a batch
norm of a (1, N·C, ...) input whose running statistics are N copies of the given ones, then stores
their mean over the batch: so each running statistic moves by `momentum` towards the batch mean of
the per-instance statistics (the unbiased variance, as batch norm's), which is what is computed here.
"""

import math

from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.grad_mode import no_grad
from distgraph.errors import ConfigError, InputRangeError, ShapeError
from distgraph.nn.functional.layers import normalize_affine
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops import same_dtype
from distgraph.ops.regions import pad_nd
from distgraph.ops.shape import narrow


def _update_running(running_mean, running_var, mean, var, n, momentum):
    """running ← (1 − m)·running + m·(statistic averaged over the batch), as ATen's instance_norm."""
    if tensor_module.host_reads is not None:  # being captured: a graph cannot carry this update
        tensor_module.host_reads(mean, "instance_norm's running-statistics update (training mode)")
    c = running_mean.shape[0]
    with no_grad():
        batch_mean = mean.array.reshape(-1, c).mean(axis=0)
        running_mean.array[...] = (1 - momentum) * running_mean.array + momentum * batch_mean
        running_mean._vc[0] += 1
        if running_var is not None:
            unbiased = var.array.reshape(-1, c) * (n / (n - 1))  # n > 1: checked by the caller
            running_var.array[...] = (1 - momentum) * running_var.array + momentum * unbiased.mean(axis=0)
            running_var._vc[0] += 1


def instance_norm(
    input,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """(x − mean) / √(var + eps) per sample and channel of (N, C, ...), then weight and bias per channel;
    with use_input_stats=False the running statistics normalize instead (eval mode with tracking)."""
    if input.ndim < 2:
        raise ShapeError(f"instance_norm: expected input of shape (N, C, ...), got {tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ShapeError(f"instance_norm: {name} shape {tuple(t.shape)} does not match the {c} channels of input "
                             f"{tuple(input.shape)}")  # fmt: skip
    same_dtype.norm(input, weight, bias)  # (running statistics of another dtype pass, as in torch)
    shape = (1, c) + (1,) * (input.ndim - 2)
    if use_input_stats:
        n = math.prod(input.shape[2:])
        if n == 1:
            raise ShapeError(
                f"instance_norm: expected more than 1 spatial element when training, got input size {tuple(input.shape)}"
            )
        dims = tuple(range(2, input.ndim))
        mean = red.mean(input, dim=dims, keepdim=True)
        var = red.mean(ew.square(ew.sub(input, mean)), dim=dims, keepdim=True)
        if running_mean is not None:
            _update_running(running_mean, running_var, mean, var, n, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ConfigError("instance_norm: use_input_stats=False needs running_mean and running_var")
        mean, var = running_mean.reshape(*shape), running_var.reshape(*shape)
    return normalize_affine(input, mean, var, eps, weight, bias, shape)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + α · mean of x² over `size` neighbouring channels)^β, the window zero-padded at the
    channel edges (size // 2 before, (size − 1) // 2 after) and always divided by `size`, as torch's."""
    if input.ndim < 3:
        raise ShapeError(
            f"local_response_norm: expected 3D or higher dimensionality input, got shape {tuple(input.shape)}"
        )
    if size < 1:
        raise InputRangeError(f"local_response_norm: size must be positive, got {size}")
    if input.numel() == 0:
        return input
    c = input.shape[1]
    widths = [(0, 0)] * input.ndim
    widths[1] = (size // 2, (size - 1) // 2)
    sq = pad_nd(ew.mul(input, input), widths)
    window = narrow(sq, 1, 0, c)
    for i in range(1, size):
        window = ew.add(window, narrow(sq, 1, i, c))
    div = ew.pow(ew.add(ew.mul(ew.div(window, size), alpha), k), beta)
    return ew.div(input, div)
