"""3-d pooling modules: MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, AdaptiveMaxPool3d, LPPool3d, MaxUnpool3d,
FractionalMaxPool3d.

Each keeps its 2-d counterpart's constructor, attributes and repr (torch's) and calls the 3-d
functional form.
"""

from distgraph.nn.extra_layers import _LPPool, _MaxUnpool
from distgraph.nn.functional import extra3d, fractional
from distgraph.nn.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, FractionalMaxPool2d, MaxPool2d
from distgraph.ops import pool3d


class MaxPool3d(MaxPool2d):
    def forward(self, input):
        return pool3d.max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                 self.return_indices)  # fmt: skip


class AvgPool3d(AvgPool2d):
    def forward(self, input):
        return pool3d.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                 self.count_include_pad, self.divisor_override)  # fmt: skip


class AdaptiveAvgPool3d(AdaptiveAvgPool2d):
    def forward(self, input):
        return pool3d.adaptive_avg_pool3d(input, self.output_size)


class AdaptiveMaxPool3d(AdaptiveMaxPool2d):
    def forward(self, input):
        return pool3d.adaptive_max_pool3d(input, self.output_size, self.return_indices)


class LPPool3d(_LPPool):
    _fn = staticmethod(extra3d.lp_pool3d)


class MaxUnpool3d(_MaxUnpool):
    _dims, _fn = 3, staticmethod(extra3d.max_unpool3d)


class FractionalMaxPool3d(FractionalMaxPool2d):
    _dims, _fn = 3, staticmethod(fractional.fractional_max_pool3d)

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices=False, _random_samples=None):
        sides = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        if not all(k > 0 for k in sides):  # torch checks this here (its 2-d module does not)
            raise ValueError(f"kernel_size must be greater than 0, but got {kernel_size}")
        super().__init__(kernel_size, output_size, output_ratio, return_indices, _random_samples)
