"""torch.accelerator: the device-generic queries, answered from distgraph's one accelerator kind, cuda
(cupy). On a machine without it they answer as torch's CPU-only build: `is_available()` False,
`current_accelerator()` None, `device_count()` 0, and what needs a device raises DeviceError (a
RuntimeError, as torch's "Cannot access accelerator device when none is available.")."""

from distgraph import backend, cuda
from distgraph.errors import DeviceError


def is_available():
    return cuda.is_available()


def current_accelerator(check_available=False):
    """dg.device("cuda") where a GPU is usable, else None (check_available only matters where torch has
    several accelerator kinds built in; distgraph's cuda is usable exactly when it is available)."""
    return backend.device("cuda") if cuda.is_available() else None


def device_count():
    return cuda.device_count() if cuda.is_available() else 0


def _require():
    if not cuda.is_available():
        raise DeviceError("Cannot access accelerator device when none is available.")


def current_device_index():
    _require()
    return cuda.current_device()


def set_device_index(device):
    _require()
    cuda.set_device(device)


def synchronize(device=None):
    _require()
    cuda.synchronize(device)
