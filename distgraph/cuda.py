"""torch.cuda's everyday names over the cupy backend, so that a PyTorch script's device checks and timers
read the same: `dg.cuda.is_available()`, `device_count()`, `synchronize()`, `get_device_name()`,
`memory_allocated()`, `memory_reserved()`, `empty_cache()`.

A device argument is an index, "cuda:N" or a Device; None is cuda:0. Where there is no cupy or no GPU, the
queries say so (False, 0) and the rest raise DeviceError naming what is missing, as torch raises."""

from distgraph import backend


def _cuda(device):
    if device is None:
        device = 0
    return backend.device(f"cuda:{device}" if isinstance(device, int) else device)


def is_available():
    return backend.cuda_is_available()


def device_count():
    return backend.cuda_device_count()


def synchronize(device=None):
    """Wait until every kernel queued on the GPU has finished: what a timer around GPU work needs."""
    backend.synchronize(_cuda(device))


def get_device_name(device=None):
    return backend.cuda_device_name(_cuda(device))


def memory_allocated(device=None):
    """Bytes held by live arrays on the GPU."""
    return backend.cuda_memory(_cuda(device))[0]


def memory_reserved(device=None):
    """Bytes the allocator holds on the GPU: live arrays and cached free blocks."""
    return backend.cuda_memory(_cuda(device))[1]


def empty_cache():
    """Give cached free blocks back to the driver (for other processes; live arrays are untouched)."""
    backend.cuda_empty_cache()
