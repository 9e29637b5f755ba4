"""The 3-d functional forms built on other ops: lp_pool3d, max_unpool3d and the `*_with_indices` names.

conv3d, conv_transpose3d and the 3-d max, average and adaptive pools are ops (`ops.conv3d`,
`ops.pool3d`); power-average pooling and unpooling are written once for every rank in
`pooling_extra`, and these are their 3-d entry points.
"""

from distgraph.nn.functional import pooling_extra as P
from distgraph.ops import pool3d


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over windows of the last three dims."""
    return P._lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 3)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool3d: each value at its flat index in a zero (D, H, W) volume."""
    return P._max_unpool(input, indices, kernel_size, stride, padding, output_size, 3)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):  # fmt: skip
    """torch's name for max_pool3d(..., return_indices=True); its return_indices flag is ignored, as torch's."""
    return pool3d.max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    return pool3d.adaptive_max_pool3d(input, output_size, True)
