"""Padding modules with torch's names: Zero/Constant/Reflection/Replication/CircularPad 1d, 2d and 3d.

Each is F.pad with a fixed mode; `padding` is an int (every side) or (left, right[, top, bottom[,
front, back]]), last dim first, and is stored as that full tuple, as torch does.
"""

from distgraph.nn.module import Module
from distgraph.ops.regions import pad


class _PadNd(Module):
    _dims = 1
    _mode = "constant"

    def __init__(self, padding):
        super().__init__()
        sides = 2 * self._dims
        padding = (padding,) * sides if isinstance(padding, int) else tuple(padding)
        if len(padding) != sides or not all(isinstance(p, int) for p in padding):
            raise ValueError(f"{type(self).__name__}: padding must be an int or {sides} ints, got {padding!r}")
        self.padding = padding

    def forward(self, input):
        return pad(input, self.padding, self._mode)

    def extra_repr(self):
        return f"{self.padding}"


class _ZeroPadNd(_PadNd):
    value = 0.0

    def forward(self, input):
        return pad(input, self.padding, "constant", 0.0)


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ZeroPad1d(_ZeroPadNd):
    _dims = 1


class ZeroPad2d(_ZeroPadNd):
    _dims = 2


class ZeroPad3d(_ZeroPadNd):
    _dims = 3


class ConstantPad1d(_ConstantPadNd):
    _dims = 1


class ConstantPad2d(_ConstantPadNd):
    _dims = 2


class ConstantPad3d(_ConstantPadNd):
    _dims = 3


class ReflectionPad1d(_PadNd):
    _dims = 1
    _mode = "reflect"


class ReflectionPad2d(_PadNd):
    _dims = 2
    _mode = "reflect"


class ReflectionPad3d(_PadNd):
    _dims = 3
    _mode = "reflect"


class ReplicationPad1d(_PadNd):
    _dims = 1
    _mode = "replicate"


class ReplicationPad2d(_PadNd):
    _dims = 2
    _mode = "replicate"


class ReplicationPad3d(_PadNd):
    _dims = 3
    _mode = "replicate"


class CircularPad1d(_PadNd):
    _dims = 1
    _mode = "circular"


class CircularPad2d(_PadNd):
    _dims = 2
    _mode = "circular"


class CircularPad3d(_PadNd):
    _dims = 3
    _mode = "circular"
