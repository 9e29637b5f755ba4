"""What the pickle of a torch file may name, and the inert placeholders it builds (torch_format.py reads them).

Trust model, as torch.load(weights_only=True): `_Unpickler.find_class` hands out stand-ins for an allow-list
(`ALLOWED`) and refuses any other global with a FileFormatError naming the file and the global. The allowed
functions are wrapped (`_Call`), so pickle's BUILD cannot set their attributes; the placeholders refuse BUILD
too. The dtype tables say which storages and dtypes a file may hold and how distgraph loads them.
"""

import _compat_pickle
import pickle
from collections import Counter, OrderedDict

import numpy as np

from distgraph.autograd.size import Size
from distgraph.errors import FileFormatError

STORAGE_DTYPES = {
    "BoolStorage": "bool",
    "ByteStorage": "uint8",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
# torch.<name> dtype globals (the dtype argument of _rebuild_tensor_v3) -> numpy dtype name
TORCH_DTYPES = {n: n for n in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")}
TORCH_DTYPES |= {n: n for n in ("float16", "float32", "float64", "bfloat16", "complex64", "complex128")}
TORCH_DTYPES |= {"half": "float16", "float": "float32", "double": "float64", "short": "int16", "int": "int32"}
TORCH_DTYPES |= {"long": "int64", "cfloat": "complex64", "cdouble": "complex128"}
LOADABLE = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bfloat16")
ITEMSIZE = {"bfloat16": 2} | {n: np.dtype(n).itemsize for n in set(STORAGE_DTYPES.values()) - {"bfloat16"}}
ITEMSIZE |= {n: np.dtype(n).itemsize for n in ("uint16", "uint32", "uint64")}


class _Inert:
    """Objects the pickle names but may not change: BUILD (`__setstate__`) on them is a damaged file."""

    __slots__ = ()
    what = "object"

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"a {self.what} cannot be given extra state")


class _Call(_Inert):
    """An allowed function as the pickle gets it: callable, but BUILD cannot set its attributes (on the function
    itself, `__defaults__` from one file would break every later load in the process)."""

    what = "function"
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _Marker(_Inert):
    """A storage type (torch.FloatStorage) or a dtype (torch.uint16), named by the pickle."""

    what = "storage type or dtype"

    __slots__ = ("dtype", "name")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Storage(_Inert):
    """One storage: its dtype, location and element count from the pickle, its host array once read."""

    what = "storage"

    __slots__ = ("array", "dtype", "key", "location", "numel", "placed")

    def __init__(self, key, dtype, location, numel):
        self.key, self.dtype, self.location, self.numel = key, dtype, location, numel
        self.array = None
        self.placed = {}  # dtype read as -> (array on its device, device)


class _TensorRef(_Inert):
    """What the pickle builds for a tensor; the final walk makes it a Tensor (a Parameter)."""

    what = "tensor"

    __slots__ = ("dtype", "offset", "parameter", "requires_grad", "shape", "storage", "strides")


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuilt on {type(storage).__name__}, not on a storage")
    ref = _TensorRef()
    ref.storage, ref.offset, ref.shape, ref.strides = storage, offset, size, stride
    ref.requires_grad, ref.parameter, ref.dtype = requires_grad, False, storage.dtype
    return ref


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    """v2 with the dtype given apart: the storage is untyped (bytes), read as `dtype`."""
    if not (isinstance(dtype, _Marker) and not dtype.name.endswith("Storage")):
        raise pickle.UnpicklingError(f"tensor rebuilt with dtype {dtype!r}")
    ref = _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata)
    ref.dtype = dtype.dtype
    return ref


def _rebuild_parameter(data, requires_grad, hooks=None, state=None):
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"Parameter rebuilt on {type(data).__name__}, not on a tensor")
    ref = _TensorRef()
    for slot in _TensorRef.__slots__:
        setattr(ref, slot, getattr(data, slot))
    ref.requires_grad, ref.parameter = requires_grad, True
    return ref


def _encode(text, encoding="utf-8"):
    """_codecs.encode as protocol 2 uses it for bytes: text -> bytes, nothing else."""
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8")):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not bytes data")
    return text.encode(encoding)


def _device(kind, index=None):
    """torch.device("cuda", 0) as its name, "cuda:0": what a checkpoint's device entry means here."""
    if not (isinstance(kind, str) and (index is None or type(index) is int)):
        raise pickle.UnpicklingError(f"torch.device({kind!r:.40}, {index!r:.40}) is not a device")
    return kind if index is None else f"{kind}:{index}"


def _counter(*args):
    """collections.Counter(mapping): a dict subclass (the class itself is not handed to the pickle, whose BUILD
    could set its attributes)."""
    if len(args) > 1 or (args and not isinstance(args[0], dict)):
        raise pickle.UnpicklingError("collections.Counter rebuilt from something other than a dict")
    return Counter(*args)


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _Call(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v3"): _Call(_rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Call(_rebuild_parameter),
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): Size,
    ("_codecs", "encode"): _Call(_encode),
    ("torch", "device"): _Call(_device),
    ("collections", "Counter"): _Call(_counter),
    # torch's weights_only allows these too; builtin types (immutable: BUILD cannot change them)
    ("builtins", "set"): set,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("torch.storage", "UntypedStorage"): _Marker("UntypedStorage", "uint8"),
}
ALLOWED |= {("torch", name): _Marker(name, dt) for name, dt in STORAGE_DTYPES.items()}
ALLOWED |= {("torch", name): _Marker(name, dt) for name, dt in TORCH_DTYPES.items()}


class _Unpickler(pickle.Unpickler):
    """pickle restricted to ALLOWED globals; storages come from `storage(pid)` (persistent ids)."""

    def __init__(self, fh, name, storage):
        super().__init__(fh)
        self.name, self.storage = name, storage

    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol 2 names Python 2's modules
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = ALLOWED.get((module, name))
        if found is None:
            raise FileFormatError(
                f"{self.name}: refuses to load the global {module}.{name} (a torch file may only hold tensors, "
                "Parameters, OrderedDicts and plain Python containers and scalars; loading runs no code)"
            )
        return found

    def persistent_load(self, pid):
        return self.storage(pid)
