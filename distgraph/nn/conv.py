"""Conv1d and Conv2d with torch's arguments, parameter names and default initialization.

A padding_mode other than zeros pads the input with that border mode first (as torch does), then
convolves without padding.
"""

import math

from distgraph.errors import ConfigError
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.ops.conv import conv1d, conv2d
from distgraph.ops.creation import empty
from distgraph.ops.regions import pad


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


class _ConvNd(Module):
    _dims = 2

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
        if padding == "same" and any(s != 1 for s in _tuple(stride, self._dims)):
            raise ConfigError(f"{type(self).__name__}: padding='same' is not supported for strided convolutions")
        n = self._dims
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _tuple(kernel_size, n), _tuple(stride, n), _tuple(dilation, n)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, n)
        self.padding_mode = padding_mode
        self.weight = Parameter(
            empty(out_channels, in_channels // groups, *self.kernel_size, device=device, dtype=dtype)
        )
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
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
