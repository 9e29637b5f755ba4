"""Conv1d, Conv2d, ConvTranspose1d and ConvTranspose2d with torch's arguments, parameter names and default
initialization.

A padding_mode other than zeros pads the input with that border mode first (as torch does), then
convolves without padding. A transposed layer's weight is (in_channels, out_channels/groups, *kernel),
and its forward takes torch's `output_size`, which picks the output_padding.
"""

import math

from distgraph.errors import ConfigError
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.ops.conv import conv1d, conv2d, ntuple
from distgraph.ops.conv_transpose import conv_transpose1d, conv_transpose2d
from distgraph.ops.creation import empty
from distgraph.ops.regions import pad


def _tuple(v, n, name="output_padding", op="ConvTranspose"):
    """n ints from an int or a sequence of exactly n (ntuple: a wrong length raises, naming `name` and `op`)."""
    return ntuple(v, n, name, op)


class _ConvNd(Module):
    _dims = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):  # fmt: skip
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")  # fmt: skip
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{type(self).__name__}: padding_mode must be one of zeros, reflect, replicate, circular, "
                             f"got {padding_mode!r}")  # fmt: skip
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ConfigError(f"{type(self).__name__}: invalid padding string {padding!r}, should be 'same' or 'valid'")
        n, name = self._dims, type(self).__name__
        self.kernel_size, self.stride = _tuple(kernel_size, n, "kernel_size", name), _tuple(stride, n, "stride", name)
        self.dilation = _tuple(dilation, n, "dilation", name)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, n, "padding", name)
        if padding == "same" and any(s != 1 for s in self.stride):
            raise ConfigError(f"{name}: padding='same' is not supported for strided convolutions")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode, self.transposed = padding_mode, self._transposed
        self.output_padding = (0,) * n
        channels = (in_channels, out_channels // groups) if self._transposed else (out_channels, in_channels // groups)
        self.weight = Parameter(empty(*channels, *self.kernel_size, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)  # as torch: weight dim 1 times the kernel
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._dims:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def _border(self):
        """F.pad widths (last dim first) for a border padding_mode; 'same' puts an odd pixel at the end."""
        if self.padding == "valid":
            return (0, 0) * self._dims
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return tuple(w for t in reversed(totals) for w in (t // 2, t - t // 2))
        return tuple(w for p in reversed(self.padding) for w in (p, p))

    def _conv(self, fn, input):
        if self.padding_mode == "zeros":
            return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        input = pad(input, self._border(), mode=self.padding_mode)
        return fn(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Conv2d(_ConvNd):
    _dims = 2

    def forward(self, input):
        return self._conv(conv2d, input)


class Conv1d(_ConvNd):
    _dims = 1

    def forward(self, input):
        return self._conv(conv1d, input)


class _ConvTransposeNd(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):  # fmt: skip
        if padding_mode != "zeros":
            raise ValueError(f'{type(self).__name__}: only "zeros" padding mode is supported, got {padding_mode!r}')
        if isinstance(padding, str):
            raise ConfigError(f"{type(self).__name__}: padding must be an int or a tuple of ints, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype)  # fmt: skip
        self.output_padding = _tuple(output_padding, self._dims, "output_padding", type(self).__name__)

    def _output_padding(self, input, output_size):
        """torch's rule: an output_size (spatial, or with the batch and channel dims) picks the output_padding
        that reaches it, which must lie within stride - 1 of the smallest output."""
        if output_size is None:
            return self.output_padding
        n, lead = self._dims, input.ndim - self._dims
        output_size = tuple(output_size)[lead:] if len(output_size) == n + lead else tuple(output_size)
        if len(output_size) != n:
            raise ValueError(f"{type(self).__name__}: for {input.ndim}D input, output_size must have {n} or {n + lead} "
                             f"elements (got {len(output_size)})")  # fmt: skip
        spatial = input.shape[lead:]
        least = [(spatial[d] - 1) * self.stride[d] - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1)
                 + 1 for d in range(n)]  # fmt: skip
        most = [m + s - 1 for m, s in zip(least, self.stride)]
        if any(not lo <= size <= hi for size, lo, hi in zip(output_size, least, most)):
            raise ValueError(f"{type(self).__name__}: requested an output size of {list(output_size)}, but valid sizes "
                             f"range from {least} to {most} (for an input of {tuple(spatial)})")  # fmt: skip
        return tuple(size - lo for size, lo in zip(output_size, least))

    def _conv_transpose(self, fn, input, output_size):
        extra = self._output_padding(input, output_size)
        return fn(input, self.weight, self.bias, self.stride, self.padding, extra, self.groups, self.dilation)


class ConvTranspose2d(_ConvTransposeNd):
    _dims = 2

    def forward(self, input, output_size=None):
        return self._conv_transpose(conv_transpose2d, input, output_size)


class ConvTranspose1d(_ConvTransposeNd):
    _dims = 1

    def forward(self, input, output_size=None):
        return self._conv_transpose(conv_transpose1d, input, output_size)
