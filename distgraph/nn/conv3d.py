"""Conv3d and ConvTranspose3d with torch's arguments, parameter names, reprs and default initialization.

They are the 1-d/2-d layers of `nn.conv` with three spatial dims: the same constructor, padding modes
(a border padding_mode pads the input first, then convolves without padding), initialization and
`output_size` rule for the transposed layer; only the functional form differs.
"""

from distgraph.nn.conv import _ConvNd, _ConvTransposeNd
from distgraph.ops.conv3d import conv3d, conv_transpose3d


class Conv3d(_ConvNd):
    _dims = 3

    def forward(self, input):
        return self._conv(conv3d, input)


class ConvTranspose3d(_ConvTransposeNd):
    _dims = 3

    def forward(self, input, output_size=None):
        return self._conv_transpose(conv_transpose3d, input, output_size)
