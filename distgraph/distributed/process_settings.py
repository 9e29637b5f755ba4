"""distgraph's process-wide settings, read as a new rank's process has them and put back before a later launch.

Why: with warm workers (`keep_workers_s`, worker_pool.py), `launch`'s ranks run in the processes of an earlier
launch. What a launched function set for the rest of its process — `set_default_device`,
`set_grad_enabled(False)`, `use_deterministic_algorithms`, a global module hook, a working directory, torch's
default process group (`init_process_group` a second time raises in torch) — would otherwise carry into the next
function run there, which torchrun (new processes per run) never shows. The default dtype, the BLAS threads and
the generator are set again by every actor's start (runtime.setup_process, worker_pool.reinit); the launch
modules' own state (hvd.init, a timeline) by `loop.on_new_launch`. A user's own modules keep their globals, as
in the task workers Ray reuses.
"""

import os
import sys

from distgraph.autograd import grad_mode
from distgraph.autograd.printing import set_printoptions
from distgraph.backend import get_default_device, set_default_device
from distgraph.nn import hooks
from distgraph.ops import torch_names

_as_new = None  # the settings read as this process's first launch began


def _read():
    return {
        "cwd": os.getcwd(),
        "device": get_default_device(),
        "grad": grad_mode.is_grad_enabled(),
        "anomaly": dict(grad_mode.anomaly),
        "deterministic": (
            torch_names.are_deterministic_algorithms_enabled(),
            torch_names.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "matmul_precision": torch_names.get_float32_matmul_precision(),
        "warn_always": torch_names.is_warn_always_enabled(),
    }


def as_new():
    """Read the settings at the process's first call (its first launch, before any function ran); put them
    back at every later one."""
    global _as_new
    if _as_new is None:
        _as_new = _read()
        return
    os.chdir(_as_new["cwd"])
    set_default_device(_as_new["device"])
    grad_mode.set_grad_enabled(_as_new["grad"])  # (a bare call switches it, as torch's)
    grad_mode.anomaly.update(_as_new["anomaly"])
    mode, warn_only = _as_new["deterministic"]
    torch_names.use_deterministic_algorithms(mode, warn_only=warn_only)
    torch_names.set_float32_matmul_precision(_as_new["matmul_precision"])
    torch_names.set_warn_always(_as_new["warn_always"])
    set_printoptions(profile="default")
    hooks.clear_global_hooks()
    tdist = sys.modules.get("torch.distributed")  # (only where the function imported it)
    if tdist is not None and tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
