"""The array namespace of each device: numpy on "cpu", cupy on "cuda[:N]".

This is the only module that imports cupy, and only when a cuda device is asked for, so distgraph
imports and runs on machines without it. Devices are interned: `device("cuda:0") is device("cuda:0")`,
which lets hot paths compare devices by identity.
"""

import contextlib
import functools
import re

import numpy as np

from distgraph.errors import DeviceError

_cupy = None
_devices = {}


class Device:
    """A device: type "cpu" or "cuda" with an index. Holds the array namespace (`xp`) it uses."""

    __slots__ = ("type", "index", "xp")

    def __init__(self, type_, index):
        self.type = type_
        self.index = index
        # numpy or cupy: the module whose functions operate on this device's arrays (a plain
        # attribute, read on every op). cuda Devices are only built after cupy imported.
        self.xp = np if type_ == "cpu" else cupy_module()

    def __repr__(self):
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __reduce__(self):
        return (device, (str(self),))


DEVICE_STRING = re.compile(r"(cpu|cuda)(?::(0|[1-9][0-9]*))?")  # torch's: no sign, no leading zero, no space


def device(spec="cpu", index=None):
    """Parse and intern a device: "cpu", "cuda", "cuda:N", ("cuda", N), or a Device; None is the default
    device (`set_default_device`), where factories given no device create. Checks cuda availability.

    "cpu:N" (or ("cpu", N)) is the one cpu device: torch's tensors made there report plain "cpu" too, and
    distgraph's ops compare devices by identity, so the index is not kept. A malformed string ("cuda:-1",
    "cuda:01") raises torch's "Invalid device string"."""
    if index is not None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"device(): argument 'index' (position 2) must be int, not {type(index).__name__}")
        if index < 0:
            raise DeviceError("Device index must not be negative")
        if ":" in str(spec):
            raise DeviceError(f"type (string) must not include an index because index was passed explicitly: {spec}")
        spec = f"{spec}:{index}"
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return _default[0]
    key = str(spec)
    found = _devices.get(key)
    if found is not None:
        return found
    parsed = DEVICE_STRING.fullmatch(key)
    if parsed is None and re.fullmatch(r"(cpu|cuda):.*", key):
        raise DeviceError(f"Invalid device string: {key!r}")
    if parsed is not None and parsed[1] == "cpu":
        if key != "cpu":
            return device("cpu")
        dev = Device("cpu", None)
    elif parsed is not None:
        index = int(parsed[2] or 0)
        cp = cupy_module()
        count = cp.cuda.runtime.getDeviceCount()
        if index >= count:
            raise DeviceError(f"device {key!r} requested but this machine has {count} CUDA device(s)")
        dev = _devices.get(f"cuda:{index}") or Device("cuda", index)  # "cuda" and "cuda:0": one Device
        _devices[f"cuda:{index}"] = dev
        if key == "cuda":
            _devices["cuda"] = dev
        return dev
    else:
        raise DeviceError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    _devices[key] = dev
    return dev


def cupy_module():
    """Import cupy lazily; say clearly whether cupy or the GPU is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError:
        raise DeviceError(
            "a cuda device was requested but cupy is not installed: pip install 'distgraph[cuda]'"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy raises CUDARuntimeError without a driver
        raise DeviceError(f"a cuda device was requested but no CUDA GPU is usable: {exc}") from None
    if count == 0:
        raise DeviceError("a cuda device was requested but no CUDA GPU is present")
    _cupy = cupy
    return cupy


def cuda_is_available():
    """True when cupy imports and sees at least one GPU (never raises)."""
    try:
        cupy_module()
    except DeviceError:
        return False
    return True


def cudnn_version():
    """cuDNN's version as an int (90100 for 9.1.0, as torch.backends.cudnn.version()), or None where cupy's cuDNN
    bindings do not load or no GPU is there."""
    if not cuda_is_available():
        return None
    try:
        from cupy.cuda import cudnn
    except ImportError:
        return None
    return int(cudnn.getVersion())


CPU = device("cpu")
_default = [CPU]


def get_default_device():
    """torch.get_default_device: where factories (zeros, rand, tensor of Python data, ...) create when given no
    device."""
    return _default[0]


def set_default_device(device_spec):
    """torch.set_default_device: factories given no device create on `device_spec` from now on (None: back to cpu).
    A cuda device is checked here, so a machine without cupy or a GPU refuses it at once, not at the next factory."""
    _default[0] = CPU if device_spec is None else device(device_spec)


def device_of_array(array):
    """The Device an array lives on (numpy arrays and scalars are on cpu)."""
    if isinstance(array, np.ndarray | np.generic):
        return CPU
    dev = getattr(array, "device", None)
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return device(f"cuda:{dev.id}")
    if type(array).__module__.startswith("cupy"):
        cupy_module()
        return device(f"cuda:{array.device.id}")
    return CPU


_ON_CPU = contextlib.nullcontext()  # (reentrant, shared: entering it does nothing)


def on(dev):
    """The context in which cupy allocates and runs on `dev`'s GPU (`cupy.cuda.Device(index)`: cupy works on its
    current GPU, GPU 0 unless set, whatever device a tensor names); on cpu one that does nothing. Hot paths test
    `dev.index is None` (cpu) first and enter this only on cuda. A fresh cupy Device each time: its stack of
    devices to restore is per object, so one shared between threads could restore another thread's."""
    return _ON_CPU if dev.index is None else dev.xp.cuda.Device(dev.index)


def on_its_device(fn):
    """`fn(tensor, ...)` (an in-place fill or init: its draws, the math on them and the write) run on its first
    argument's GPU, where cupy then allocates and runs; on cpu within the shared no-op context."""

    @functools.wraps(fn)
    def run(tensor, *args, **kwargs):
        with on(tensor.device):
            return fn(tensor, *args, **kwargs)

    return run


def mixed_devices(op, *devices):
    """The DeviceError for an op given tensors on two devices (an in-place one writing a GPU value into a cpu
    tensor), in torch's words."""
    found = " and ".join(str(d) for d in devices)
    return DeviceError(f"{op}: Expected all tensors to be on the same device, but found at least two devices, {found}!")


def to_device(array, dev):
    """Copy `array` onto `dev` (no copy when it is already there)."""
    dev = device(dev)
    src = device_of_array(array)
    if src is dev:
        return array
    if dev.type == "cpu":
        return array.get()
    cp = dev.xp
    with cp.cuda.Device(dev.index):
        return cp.asarray(array)


def from_dlpack_capsule(capsule):
    """The array a DLPack capsule holds (what a producer's `to_dlpack` returns), zero-copy: host memory as a numpy
    array, CUDA memory as a cupy one (read by cupy, which takes a capsule as it is; numpy reads one only through a
    producer's __dlpack__)."""
    if capsule_device_type(capsule) == 2:  # kDLCUDA
        return cupy_module().from_dlpack(capsule)
    return np.from_dlpack(_HostCapsule(capsule))


def capsule_device_type(capsule):
    """The DLDeviceType (1 host, 2 CUDA, ...) of the tensor in a DLPack capsule, read from its DLManagedTensor
    (the legacy "dltensor" capsule) or DLManagedTensorVersioned ("dltensor_versioned", DLPack 1.0)."""
    import ctypes

    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    name = api.PyCapsule_GetName(capsule)
    if name not in (b"dltensor", b"dltensor_versioned"):
        raise DeviceError(f"from_dlpack: a DLPack capsule named {name!r} (one already consumed?) cannot be read")
    word = ctypes.sizeof(ctypes.c_void_p)
    # versioned: DLPackVersion (2 x uint32), manager_ctx, deleter, uint64 flags, then the DLTensor; legacy: the
    # DLTensor first. In a DLTensor the DLDevice (int32 device_type, int32 device_id) follows the data pointer.
    tensor_at = 8 + 2 * word + 8 if name == b"dltensor_versioned" else 0
    return ctypes.c_int32.from_address(api.PyCapsule_GetPointer(capsule, name) + tensor_at + word).value


class _HostCapsule:
    """A DLPack capsule of host memory as a producer (numpy's from_dlpack asks for __dlpack__)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


def to_host(data):
    """A numpy array of `data`: an array (numpy's, cupy's), a list, or a tensor (distgraph's, torch's) on any
    device, requiring grad or not (what a user hands in as data or weights)."""
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    return np.asarray(to_device(data, "cpu"))


def synchronize(dev=None):
    """torch.cuda.synchronize: wait until every kernel queued on a cuda device has finished (nothing to wait
    for on cpu, where every op has finished when it returns). What a timer around GPU work needs: cupy's
    calls return once their kernels are queued."""
    dev = device(dev)
    if dev.type == "cuda":
        dev.xp.cuda.Device(dev.index).synchronize()


def cuda_device_count():
    """How many GPUs cupy sees (0 without cupy or a driver: never raises)."""
    return cupy_module().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def cuda_device_name(dev):
    """The GPU's name as its driver gives it ("NVIDIA H100 80GB HBM3")."""
    dev = device(dev)
    name = dev.xp.cuda.runtime.getDeviceProperties(dev.index)["name"]
    return name.decode() if isinstance(name, bytes) else name


def cuda_memory(dev):
    """(bytes held by live arrays, bytes the allocator holds) on a GPU: cupy's memory pool, torch's caching
    allocator's counterpart (memory_allocated, memory_reserved)."""
    dev = device(dev)
    with dev.xp.cuda.Device(dev.index):
        pool = dev.xp.get_default_memory_pool()
        return pool.used_bytes(), pool.total_bytes()


_peak = {}  # GPU index -> the most bytes live arrays held since peak tracking began or was last reset


def cuda_peak_memory(dev, reset=False):
    """The most bytes live arrays held on a GPU (torch.cuda.max_memory_allocated), or, with `reset`, start
    anew from what they hold now. cupy's pool keeps no peak: the first call wraps cupy's allocator so that
    every allocation from then on records it (usage is highest right after an allocation), so the peak
    counts from that first call: call it with reset=True before the work to measure."""
    dev = device(dev)
    cp = dev.xp
    if not _peak:
        inner = cp.cuda.get_allocator()

        def malloc_tracking_peak(size):
            mem = inner(size)
            used = cp.get_default_memory_pool().used_bytes()  # of the current device: the one allocated on
            if used > _peak.get(mem.device_id, 0):
                _peak[mem.device_id] = used
            return mem

        cp.cuda.set_allocator(malloc_tracking_peak)
    used = cuda_memory(dev)[0]
    if reset or dev.index not in _peak:
        _peak[dev.index] = used
    return max(_peak[dev.index], used)


def cuda_current_device():
    """The index of cupy's current GPU (torch.cuda.current_device)."""
    return cupy_module().cuda.runtime.getDevice()


def cuda_set_device(dev):
    """Make a GPU cupy's current one (torch.cuda.set_device); distgraph's "cuda" still names cuda:0."""
    dev = device(dev)
    dev.xp.cuda.runtime.setDevice(dev.index)


def cuda_is_initialized():
    """Whether a cuda Device has been made in this process (torch.cuda.is_initialized)."""
    return any(d.type == "cuda" for d in _devices.values())


def cuda_empty_cache():
    """Give the blocks no array uses back to the driver (torch.cuda.empty_cache)."""
    if _cupy is not None:
        _cupy.get_default_memory_pool().free_all_blocks()


def address(array):
    """Where an array's first element lies in memory (numpy's and cupy's differ in how they say it)."""
    return array.data.ptr if hasattr(array.data, "ptr") else array.__array_interface__["data"][0]


def linalg_errors_raised(xp):
    """A context in which a singular or non-positive-definite matrix raises numpy's LinAlgError: numpy raises by
    itself (its float warnings silenced here); cupy returns NaNs unless cupyx.errstate asks it to check."""
    if xp is np:
        return np.errstate(all="ignore")
    import cupyx

    return cupyx.errstate(linalg="raise")


def writeable(array):
    """numpy's WRITEABLE flag (off for arrays out of Ray's object store or a read-only file mapping); cupy's
    flags have no such field (cupy#2616): a GPU array is always writeable."""
    return getattr(array.flags, "writeable", True)


def namespace(array):
    """numpy or cupy for an array."""
    return device_of_array(array).xp


_SCATTER_DTYPES = {  # what cupyx's scatter kernels take (cupy's _scatter_op raises TypeError for the rest)
    "add": {"int32", "uint32", "uint64", "float16", "float32", "float64"},
    "maximum": {"int32", "uint32", "uint64", "float32", "float64"},
    "minimum": {"int32", "uint32", "uint64", "float32", "float64"},
}


def scatter_at(ufunc, out, index, values):
    """numpy's `ufunc.at(out, index, values)` (repeated positions all taking part) on either device. On a GPU
    cupyx's scatter kernels do add / maximum / minimum for the dtypes they take; anything else (a product,
    int64, bool, complex) is done on the host and copied back: slow, but right, where cupy has no kernel."""
    if isinstance(out, np.ndarray):
        getattr(np, ufunc).at(out, index, values)
        return
    import cupyx

    if out.dtype.name in _SCATTER_DTYPES.get(ufunc, ()):
        {"add": cupyx.scatter_add, "maximum": cupyx.scatter_max, "minimum": cupyx.scatter_min}[ufunc](
            out, index, values
        )
        return
    host = lambda a: to_device(a, "cpu")
    on_host = out.get()
    getattr(np, ufunc).at(on_host, tuple(map(host, index)) if isinstance(index, tuple) else host(index), host(values))
    out[...] = cupy_module().asarray(on_host)


def cupy_special():
    """cupyx.scipy.special (erf and friends on the GPU), imported lazily."""
    cupy_module()
    import cupyx.scipy.special

    return cupyx.scipy.special


def scipy_linalg(xp, name, op):
    """scipy.linalg's function `name` for numpy arrays, cupyx.scipy.linalg's for cupy ones (LAPACK routines
    numpy.linalg lacks: getrf, expm, gelsy); a DeviceError naming `op` and the device where cupyx has none."""
    if xp is np:
        import scipy.linalg

        return getattr(scipy.linalg, name)
    cupy_module()
    import cupyx.scipy.linalg

    fn = getattr(cupyx.scipy.linalg, name, None)
    if fn is None:
        raise DeviceError(f"{op}: not available on cuda devices (cupyx.scipy.linalg has no {name})")
    return fn
