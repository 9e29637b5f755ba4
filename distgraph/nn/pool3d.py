"""3-d pooling modules: MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, AdaptiveMaxPool3d, LPPool3d, MaxUnpool3d,
FractionalMaxPool3d.

Each keeps its base's constructor, attributes and repr (torch's) and calls the 3-d
functional form.
"""

from distgraph.nn.extra_layers import _LPPoolNd, _MaxUnpoolNd
from distgraph.nn.functional import extra3d, fractional
from distgraph.nn.pooling import FractionalMaxPool2d, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd
from distgraph.ops import pool3d


class MaxPool3d(_MaxPoolNd):
    def forward(self, input):
        return pool3d.max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                 self.return_indices)  # fmt: skip


class AvgPool3d(_AvgPoolNd):
    def forward(self, input):
        return pool3d.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                 self.count_include_pad, self.divisor_override)  # fmt: skip


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    def forward(self, input):
        return pool3d.adaptive_avg_pool3d(input, self.output_size)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    def forward(self, input):
        return pool3d.adaptive_max_pool3d(input, self.output_size, self.return_indices)


class LPPool3d(_LPPoolNd):
    _fn = staticmethod(extra3d.lp_pool3d)


class MaxUnpool3d(_MaxUnpoolNd):
    _dims, _fn = 3, staticmethod(extra3d.max_unpool3d)


class FractionalMaxPool3d(FractionalMaxPool2d):
    _dims, _fn = 3, staticmethod(fractional.fractional_max_pool3d)

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices=False, _random_samples=None):
        sides = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        if not all(k > 0 for k in sides):  # torch checks this here (its 2-d module does not)
            raise ValueError(f"kernel_size must be greater than 0, but got {kernel_size}")
        super().__init__(kernel_size, output_size, output_ratio, return_indices, _random_samples)
