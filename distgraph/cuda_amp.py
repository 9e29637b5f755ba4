"""torch.cuda.amp's deprecated spellings, `dg.cuda.amp.GradScaler(init_scale, ...)` and
`dg.cuda.amp.autocast(enabled, dtype, cache_enabled)`: scripts written before torch.amp still run, with
torch's FutureWarning naming the spelling that replaces each.

This module is `dg.cuda.amp` (and `import distgraph.cuda.amp` finds it): it attaches itself to dg.cuda, a
layer below amp that may not import it; the package imports it."""

import sys
import warnings

from distgraph import amp, cuda
from distgraph.dtypes import float16


class GradScaler(amp.GradScaler):
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
        warnings.warn(
            "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use `torch.amp.GradScaler('cuda', args...)` "
            "instead.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def autocast(enabled=True, dtype=float16, cache_enabled=True):
    warnings.warn(
        "`torch.cuda.amp.autocast(args...)` is deprecated. Please use `torch.amp.autocast('cuda', args...)` instead.",
        FutureWarning,
        stacklevel=2,
    )
    return amp.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


cuda.amp = sys.modules["distgraph.cuda.amp"] = sys.modules[__name__]
