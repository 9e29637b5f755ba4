"""dg.save / dg.load: a msgpack container that never runs code and never returns wrong data.

Layout of a file:

    header   magic b"\\x89DGRAPH\\n" · format version (u32) · tree length (u64) · tree crc32 (u32)
    tree     msgpack: the saved object. Tensors, arrays, tuples and numpy scalars are ExtType records;
             a tensor/array record is {dtype, order, shape, offset, nbytes, crc, device[, requires_grad]}
    data     each array's raw bytes at its offset (64-byte aligned, in tree order), written straight
             from the array's buffer and read straight into a preallocated array (one copy in memory)

Saving and loading walk the object with the same depth-first order and the same rules (`_encode` and
`_Reader.decode` mirror each other), so whatever `save` accepts, `load` gives back: dict order,
tuples vs lists, dtypes (bfloat16 too when ml_dtypes is imported), requires_grad and byte order.

Trust model: a file is data, never code (no pickle). Loading validates before it allocates: the tree
is bounded by the file size (msgpack's max_*_len), nesting by MAX_DEPTH, each tensor's dtype by an
allow-list, its shape × itemsize against its byte count, and its bytes against the data region, with
tensors laid out in increasing, non-overlapping order, so a forged header can never make `load`
allocate more than the file holds. Every checksum is checked. Any problem is a FileFormatError naming
the file and the tensor. Writes go to a temporary file renamed into place (`os.replace`), so a crash
never leaves a half-written checkpoint under the final name.
"""

import inspect
import io
import math
import os
import secrets
import struct
import zlib
from collections.abc import Mapping

import msgpack
import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, device_of_array, to_device
from distgraph.backend import device as as_device
from distgraph.errors import DeviceError, DistgraphError, FileFormatError

MAGIC = b"\x89DGRAPH\n"
FORMAT_VERSION = 1
MAX_DEPTH = 200  # nesting of containers; deep enough for any checkpoint, shallow enough for the C stack
_HEADER = struct.Struct("<8sIQI")
_ALIGN = 64
_CHUNK = 1 << 24  # checksum / write granularity: big arrays never need a second buffer
_READ_CHUNK = 1 << 20  # small enough to stay in cache between readinto and its checksum
_EXT_TENSOR, _EXT_ARRAY, _EXT_TUPLE, _EXT_SCALAR, _EXT_COMPLEX = 1, 2, 3, 4, 5
_NAMES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_NAMES += ("float16", "float32", "float64", "complex64", "complex128")
_DTYPES = {np.dtype(n).str[1:]: np.dtype(n) for n in _NAMES}  # "f4" -> float32: the code stored in files
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can store


def _dtype_code(dt):
    """The code a dtype is stored under; bfloat16 (ml_dtypes) gets its own, numpy calls it void."""
    if dt.name == "bfloat16":
        return "bf16"
    code = dt.str[1:]
    return code if _DTYPES.get(code) == dt.newbyteorder("=") else None


def _dtype_of_code(code):
    if code == "bf16":
        try:
            return np.dtype("bfloat16")  # registered with numpy once ml_dtypes is imported
        except TypeError:
            return None
    return _DTYPES.get(code) if isinstance(code, str) else None


def _bytes_view(arr):
    """A flat uint8 memoryview of a C-contiguous array's buffer (no copy)."""
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")


def _crc(arr):
    view = _bytes_view(arr)
    crc = 0
    for start in range(0, len(view), _CHUNK):
        crc = zlib.crc32(view[start : start + _CHUNK], crc)
    return crc


def _join(path, key):
    """The dotted name of a dict entry, as state_dict keys read: 'model' + 'fc.weight' -> 'model.fc.weight'."""
    return f"{path}.{key}" if path else str(key)


def _show(path):
    return f"at {path!r}" if path else "at the top level"


# ---- save ---------------------------------------------------------------------------------------------
class _Writer:
    """Turns the object into msgpack-native values (ExtType records) and remembers each array's buffer."""

    def __init__(self):
        self.blobs = []  # (offset, host array), in increasing offset order
        self.size = 0

    def fail(self, path, what):
        raise FileFormatError(f"dg.save: {_show(path)}: {what}")

    def encode(self, obj, path="", depth=0):
        if depth > MAX_DEPTH:
            self.fail(path, f"structure nested deeper than {MAX_DEPTH} levels")
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, str):  # subclasses too (np.str_, StrEnum): saved, and loaded, as their text
            return str.__str__(obj)
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)
        if isinstance(obj, Tensor):
            meta = self.array_record(obj.array, path, device=str(obj.device), requires_grad=obj.requires_grad)
            return msgpack.ExtType(_EXT_TENSOR, _packb(meta))
        if isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
            meta = self.array_record(obj, path, device=str(device_of_array(obj)))
            return msgpack.ExtType(_EXT_ARRAY, _packb(meta))
        if isinstance(obj, np.generic):
            code = _dtype_code(obj.dtype)
            if code is None:
                self.fail(path, f"numpy scalar of dtype {obj.dtype} cannot be saved")
            return msgpack.ExtType(_EXT_SCALAR, _packb([code, obj.tobytes()]))
        if isinstance(obj, int):
            if not _INT_RANGE[0] <= obj <= _INT_RANGE[1]:
                self.fail(path, f"integer {obj} does not fit in 64 bits")
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, complex):
            return msgpack.ExtType(_EXT_COMPLEX, _packb([obj.real, obj.imag]))
        if isinstance(obj, Mapping):  # dict, OrderedDict, defaultdict: saved (and loaded) as a dict, in order
            out = {}
            for k, v in obj.items():
                key = self.encode(k, path, depth + 1)
                out[key] = self.encode(v, _join(path, k), depth + 1)
            return out
        if isinstance(obj, tuple):
            items = [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
            return msgpack.ExtType(_EXT_TUPLE, _packb(items))
        if isinstance(obj, list):
            return [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        self.fail(
            path,
            f"cannot save an object of type {type(obj).__name__} (supported: tensors, arrays, dicts, lists, "
            "tuples, str, bytes, int, float, complex, bool, None)",
        )

    def array_record(self, arr, path, **extra):
        """Record an array's metadata and queue its host buffer; cuda arrays are copied to the host once."""
        code = _dtype_code(arr.dtype)
        if code is None:
            self.fail(path, f"dtype {arr.dtype} cannot be saved (supported: {', '.join(_NAMES)}, bfloat16)")
        host = to_device(arr, CPU) if device_of_array(arr) is not CPU else arr
        if not host.dtype.isnative:
            host = host.astype(host.dtype.newbyteorder("="))
        host = host if host.flags.c_contiguous else host.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        offset = -(-self.size // _ALIGN) * _ALIGN
        self.size = offset + host.nbytes
        self.blobs.append((offset, host))
        order = "<" if np.little_endian else ">"
        meta = {"dtype": code, "order": order, "shape": list(host.shape), "offset": offset, "nbytes": host.nbytes}
        return {**meta, "crc": _crc(host), **extra}

    def write(self, fh, tree):
        fh.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(tree), zlib.crc32(tree)))
        fh.write(tree)
        pos = _HEADER.size + len(tree)
        fh.write(b"\0" * (-pos % _ALIGN))
        pos = 0  # now relative to the data region
        for offset, host in self.blobs:
            fh.write(b"\0" * (offset - pos))
            view = _bytes_view(host)
            for start in range(0, len(view), _CHUNK):
                fh.write(view[start : start + _CHUNK])
            pos = offset + host.nbytes


def _packb(obj):
    return msgpack.packb(obj, use_bin_type=True, strict_types=True)


def save(obj, f):
    """Save `obj` (tensors, arrays and nested dict/list/tuple/scalars/str/bytes) to a path or binary file.

    A path is written atomically: to a temporary file in the same folder, flushed to disk, then renamed
    over `f`, so readers see the old file or the complete new one, never a partial one.
    """
    writer = _Writer()
    tree = _packb(writer.encode(obj))
    if not isinstance(f, str | os.PathLike):
        writer.write(f, tree)
        return
    path = os.fspath(f)
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            writer.write(fh, tree)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---- load ---------------------------------------------------------------------------------------------
class _Reader:
    """Decodes the tree in the order `_Writer.encode` built it, reading each array as its record comes."""

    def __init__(self, fh, name, data_start, data_size, map_location):
        self.fh, self.name, self.data_start, self.data_size = fh, name, data_start, data_size
        self.map_location = map_location
        self.data_pos = 0  # end of the last array read: arrays must follow each other, never overlap

    def fail(self, what):
        raise FileFormatError(f"{self.name}: {what}")

    def unpack(self, data, path):
        """msgpack → plain values, ExtType records left undecoded; every length bounded by len(data)."""
        n = len(data)
        try:
            return msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                max_str_len=n,
                max_bin_len=n,
                max_array_len=n,
                max_map_len=n // 2,
                max_ext_len=n,
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self.fail(f"corrupt structure {_show(path)} ({type(exc).__name__}: {exc})")

    def decode(self, node, path="", depth=0):
        if depth > MAX_DEPTH:
            self.fail(f"structure nested deeper than {MAX_DEPTH} levels {_show(path)}")
        if node is None or isinstance(node, bool | int | float | str | bytes):
            return node
        if isinstance(node, list):
            return [self.decode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                key = self.decode(k, path, depth + 1)
                value = self.decode(v, _join(path, key), depth + 1)
                try:
                    out[key] = value
                except TypeError:
                    self.fail(f"corrupt structure: unhashable dict key of type {type(key).__name__} {_show(path)}")
            return out
        if isinstance(node, msgpack.ExtType):
            return self.decode_ext(node.code, node.data, path, depth)
        self.fail(f"corrupt structure: unexpected {type(node).__name__} {_show(path)}")

    def decode_ext(self, code, data, path, depth):
        value = self.unpack(data, path)
        if code in (_EXT_TENSOR, _EXT_ARRAY):
            return self.read_array(value, path, tensor=code == _EXT_TENSOR)
        if code == _EXT_TUPLE and isinstance(value, list):
            return tuple(self.decode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        if code == _EXT_SCALAR and isinstance(value, list) and len(value) == 2:
            dt = _dtype_of_code(value[0])
            if dt is not None and isinstance(value[1], bytes) and len(value[1]) == dt.itemsize:
                return np.frombuffer(value[1], dt)[0]
        if code == _EXT_COMPLEX and isinstance(value, list) and len(value) == 2:
            if all(isinstance(v, float) for v in value):
                return complex(*value)
        self.fail(f"corrupt record (type {code}) {_show(path)}")

    def read_array(self, meta, path, tensor):
        what = f"tensor {path!r}" if path else "the top-level tensor"
        if not isinstance(meta, dict):
            self.fail(f"{what}: corrupt record")
        dt, shape = _dtype_of_code(meta.get("dtype")), meta.get("shape")
        offset, nbytes, order = meta.get("offset"), meta.get("nbytes"), meta.get("order")
        if dt is None:
            self.fail(f"{what}: unsupported dtype {meta.get('dtype')!r}")
        if not (isinstance(shape, list) and len(shape) <= 32 and all(type(s) is int and 0 <= s < 2**48 for s in shape)):
            self.fail(f"{what}: corrupt shape {shape!r}")
        if type(offset) is not int or type(nbytes) is not int or order not in ("<", ">") or offset < self.data_pos:
            self.fail(f"{what}: corrupt offset/length/byte order")
        if math.prod(shape) * dt.itemsize != nbytes:
            self.fail(f"{what}: shape {tuple(shape)} of dtype {dt} cannot have {nbytes} bytes")
        if offset + nbytes > self.data_size:
            self.fail(f"file is truncated: {what} needs {nbytes} bytes at offset {offset}, data has {self.data_size}")
        self.data_pos = offset + nbytes
        # The checks above bound the allocation by the bytes actually present in the file.
        arr = np.empty(shape, dt.newbyteorder(order))
        view = _bytes_view(arr)
        self.fh.seek(self.data_start + offset)
        got = crc = 0
        while got < nbytes:  # checksum each chunk right after reading it, while it is still in cache
            n = self.fh.readinto(view[got : got + _READ_CHUNK])
            if not n:
                self.fail(f"file is truncated inside {what}")
            crc = zlib.crc32(view[got : got + n], crc)
            got += n
        if crc != meta.get("crc"):
            self.fail(f"{what} checksum mismatch (data corrupted)")
        if not arr.dtype.isnative:
            arr = arr.astype(dt)
        dev = self.target_device(meta.get("device"), what, arr)
        if isinstance(dev, np.ndarray) or hasattr(dev, "__cuda_array_interface__"):  # torch-style callable
            arr, dev = dev, device_of_array(dev)
        else:
            arr = to_device(arr, dev)
        if not tensor:
            return arr
        try:
            dtypes.from_numpy(arr.dtype)
            return Tensor(arr, requires_grad=meta.get("requires_grad") is True, device=dev)
        except DistgraphError as exc:
            self.fail(f"{what}: {exc}")

    def target_device(self, saved, what, arr):
        """Where map_location sends a tensor saved on `saved` (a Device, or an array from a torch-style callable)."""
        if not (isinstance(saved, str) and (saved in ("cpu", "cuda") or saved.startswith("cuda:"))):
            self.fail(f"{what}: corrupt device {saved!r}")
        loc = self.map_location
        if loc is None:
            target = saved
        elif isinstance(loc, dict):
            target = loc.get(saved, saved)
        elif callable(loc):
            target = loc(arr, saved) if _takes_two_args(loc) else loc(saved)
            if isinstance(target, np.ndarray) or hasattr(target, "__cuda_array_interface__"):
                return target
        else:
            target = loc
        try:
            return as_device(target)
        except DeviceError as exc:
            raise DeviceError(
                f"{self.name}: {what} was saved on {saved} and cannot be loaded on {target} ({exc}); "
                "pass map_location='cpu' to load it on the cpu"
            ) from None


def _takes_two_args(fn):
    """True for torch's `map_location(storage, location)` form, False for `map_location(location)`."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): use the one-argument form
        return False
    return True


def load(f, map_location=None):
    """Load what `save` wrote, from a path or a seekable binary file.

    `map_location` (as torch.load): None keeps each tensor on the device it was saved from; a device
    ("cpu", "cuda:1", a Device) moves all there; a dict maps saved device strings to targets
    ({"cuda:0": "cpu"}); a callable gets the saved device string (or, torch's form, the host array and
    the string) and returns a device, or an array to use as is (`lambda storage, loc: storage` → cpu).
    """
    if not isinstance(f, str | os.PathLike):
        return _load(f, getattr(f, "name", "<stream>"), map_location)
    name = os.fspath(f)
    try:
        fh = open(name, "rb")
    except FileNotFoundError:
        raise FileFormatError(f"{name}: no such file") from None
    with fh:
        return _load(fh, name, map_location)


def load_as(f, parse, what):
    """`parse(load(f))` for files holding one kind of object (a graph, a plan). A tree that `parse`
    cannot read (a missing key, a wrong type, an unknown op) is a damaged file like any other: a
    FileFormatError naming the file, never a KeyError from deep inside the parser."""
    tree = load(f)
    try:
        return parse(tree)
    except (DistgraphError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        name = os.fspath(f) if isinstance(f, str | os.PathLike) else getattr(f, "name", "<stream>")
        raise FileFormatError(f"{name}: not a valid distgraph {what} ({type(exc).__name__}: {exc})") from None


def _load(fh, name, map_location):
    if not fh.seekable():
        raise FileFormatError(f"{name}: dg.load needs a seekable binary file")
    size = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise FileFormatError(f"{name}: not a distgraph file (too short: {size} bytes)")
    magic, version, tree_len, tree_crc = _HEADER.unpack(head)
    if magic != MAGIC:
        raise FileFormatError(f"{name}: not a distgraph file (bad magic bytes {magic!r})")
    if version != FORMAT_VERSION:
        raise FileFormatError(
            f"{name}: format version {version} is not supported (this distgraph reads version {FORMAT_VERSION})"
        )
    if tree_len > size - _HEADER.size:
        raise FileFormatError(f"{name}: file is truncated (structure of {tree_len} bytes, file has {size})")
    tree = fh.read(tree_len)
    if zlib.crc32(tree) != tree_crc:
        raise FileFormatError(f"{name}: checksum mismatch in the structure (file corrupted)")
    data_start = _HEADER.size + tree_len
    data_start += -data_start % _ALIGN
    reader = _Reader(fh, name, data_start, max(size - data_start, 0), map_location)
    return reader.decode(reader.unpack(tree, ""))
