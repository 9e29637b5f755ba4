"""torch.cuda.amp's deprecated spellings, `dg.cuda.amp.GradScaler(init_scale, ...)` and
`dg.cuda.amp.autocast(enabled, dtype, cache_enabled)`: scripts written before torch.amp still run, with
torch's FutureWarning naming the spelling that replaces each.

This module is `dg.cuda.amp` (and `import distgraph.cuda.amp` finds it): it attaches itself to dg.cuda, a
layer below amp that may not import it; the package imports it."""

import sys

from distgraph import amp, cuda

GradScaler, autocast = amp.deprecated_spellings("cuda")

cuda.amp = sys.modules["distgraph.cuda.amp"] = sys.modules[__name__]
