"""torch.cuda's everyday names over the cupy backend, so that a PyTorch script's device checks, seeds and
timers read the same: `dg.cuda.is_available()`, `device_count()`, `current_device()`, `set_device()`,
`is_initialized()`, `is_bf16_supported()`, `manual_seed()`, `synchronize()`, `get_device_name()`,
`memory_allocated()`, `max_memory_allocated()`, `reset_peak_memory_stats()`, `memory_reserved()`, `empty_cache()`; `dg.cuda.amp`
(torch.cuda.amp's deprecated spellings, distgraph/cuda_amp.py: attached by the package, a layer above this one).

A device argument is an index, "cuda:N" or a Device; None is cuda:0. Where there is no cupy or no GPU each
answers as torch's CPU-only build does: the queries say so (False, 0 devices, 0 bytes), the seeds are no-ops,
and the rest raise DeviceError naming what is missing (torch raises "Torch not compiled with CUDA enabled").

distgraph has a generator per GPU (ops/rng.py's, which `dg.manual_seed` seeds along with the cpu one):
`manual_seed` seeds the current GPU's, `manual_seed_all` every GPU's, and both leave the cpu generator as it is.
"""

from distgraph import backend
from distgraph.ops import rng


def _cuda(device):
    if device is None:
        device = 0
    return backend.device(f"cuda:{device}" if isinstance(device, int) else device)


def is_available():
    return backend.cuda_is_available()


def device_count():
    return backend.cuda_device_count()


def is_bf16_supported(including_emulation=True):
    """False, always: distgraph has no bfloat16 dtype (numpy and cupy have none), so no device supports
    it here, whatever the GPU. (torch's CPU-only build answers False too; the argument is torch's.)"""
    return False


def is_initialized():
    """Whether this process has used a GPU yet (made a cuda device)."""
    return backend.cuda_is_initialized()


def current_device():
    """The index of the current GPU."""
    backend.cupy_module()  # DeviceError without cupy or a GPU
    return backend.cuda_current_device()


def set_device(device):
    """Make `device` the current GPU (a negative index: nothing, as torch). distgraph's "cuda" without an
    index still names cuda:0; tensors go where their device says."""
    if isinstance(device, int) and device < 0:
        return
    dev = _cuda(device) if isinstance(device, int) else backend.device(device)
    if dev.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {dev}")
    backend.cuda_set_device(dev)


def manual_seed(seed):
    """Seed the current GPU's generator (distgraph has one per GPU, as torch); without a GPU, nothing, as torch."""
    seed = int(seed) % 2**64  # negative seeds map into uint64 as dg.manual_seed's
    if backend.cuda_is_available():
        rng.seed_gpus(seed, [_cuda(backend.cuda_current_device())])


def manual_seed_all(seed):
    """Seed every GPU's generator; without a GPU, nothing."""
    seed = int(seed) % 2**64
    if backend.cuda_is_available():
        rng.seed_gpus(seed, [_cuda(i) for i in range(backend.cuda_device_count())])


def synchronize(device=None):
    """Wait until every kernel queued on the GPU has finished: what a timer around GPU work needs."""
    backend.synchronize(_cuda(device))


def get_device_name(device=None):
    return backend.cuda_device_name(_cuda(device))


def memory_allocated(device=None):
    """Bytes held by live arrays on the GPU (0 without one, as torch)."""
    return backend.cuda_memory(_cuda(device))[0] if is_available() else 0


def max_memory_allocated(device=None):
    """The most bytes live arrays held on the GPU since the last reset_peak_memory_stats (0 without one).
    cupy keeps no peak: it counts from this process's first call of either (backend.cuda_peak_memory)."""
    return backend.cuda_peak_memory(_cuda(device)) if is_available() else 0


def reset_peak_memory_stats(device=None):
    """Start max_memory_allocated anew from what live arrays hold now."""
    backend.cuda_peak_memory(_cuda(device), reset=True)


def memory_reserved(device=None):
    """Bytes the allocator holds on the GPU: live arrays and cached free blocks (0 without one)."""
    return backend.cuda_memory(_cuda(device))[1] if is_available() else 0


def empty_cache():
    """Give cached free blocks back to the driver (for other processes; live arrays are untouched)."""
    backend.cuda_empty_cache()
