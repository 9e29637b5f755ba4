"""torch.cpu's names: the device queries a device-generic script calls (`is_available()`, `device_count()`,
`current_device()`, `synchronize()`), torch.cpu.amp's deprecated spellings `dg.cpu.amp.autocast(enabled,
dtype, cache_enabled)` and `dg.cpu.amp.GradScaler(...)` (with torch's FutureWarning naming the spelling
that replaces each), and torch's deprecated `get_autocast_cpu_dtype()` (`dg.get_autocast_cpu_dtype`).

autocast's default dtype is float16 where torch's is bfloat16: distgraph has no bfloat16. `dg.cpu.amp` is a
namespace registered here (`import distgraph.cpu.amp` finds it), as cuda_amp.py attaches dg.cuda.amp.
"""

import sys
import types
import warnings

from distgraph import amp as _amp
from distgraph.ops.autocast import get_autocast_dtype


def is_available():
    return True


def device_count():
    return 1


def current_device():
    return "cpu"


def synchronize(device=None):
    """cpu ops finish before they return: nothing to wait for."""


def get_autocast_cpu_dtype():
    warnings.warn(
        "torch.get_autocast_cpu_dtype() is deprecated. Please use torch.get_autocast_dtype('cpu') instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return get_autocast_dtype("cpu")


GradScaler, autocast = _amp.deprecated_spellings("cpu")


amp = sys.modules[f"{__name__}.amp"] = types.ModuleType(f"{__name__}.amp", "torch.cpu.amp's deprecated spellings.")
amp.autocast, amp.GradScaler = autocast, GradScaler
