"""dg.save / dg.load: a msgpack container that never runs code and never returns wrong data.

Layout of a file:

    header   magic b"\\x89DGRAPH\\n" · format version (u32) · tree length (u64) · tree crc32 (u32)
    tree     msgpack: the saved object; tensors/arrays are ExtType records {dtype, shape, byte order,
             device, requires_grad, offset, nbytes, crc32} pointing into the data region
    data     each array's raw bytes at its offset (64-byte aligned), written straight from the
             array's buffer and read straight into a preallocated array (one copy in memory)

Loading validates everything before it allocates: lengths against the file size, dtypes against an
allow-list, shape × itemsize against nbytes, every checksum. Any problem is a FileFormatError that
names the file and what is wrong. Writes go to a temporary file renamed into place, so a crash never
leaves a half-written checkpoint under the final name.
"""

import io
import math
import os
import struct
import zlib
from collections import OrderedDict

import msgpack
import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, device_of_array, to_device
from distgraph.backend import device as as_device
from distgraph.errors import DeviceError, FileFormatError

MAGIC = b"\x89DGRAPH\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQI")
_ALIGN = 64
_EXT_TENSOR, _EXT_ARRAY, _EXT_TUPLE, _EXT_SCALAR, _EXT_COMPLEX = 1, 2, 3, 4, 5
_DTYPES = {
    np.dtype(n).str[1:]: np.dtype(n)
    for n in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    + ("float16", "float32", "float64", "complex64", "complex128")
}
_CHUNK = 1 << 24  # checksum/write granularity for huge arrays: keeps the working set small


# ---- save ---------------------------------------------------------------------------------------------
class _Writer:
    """Walks the object once, turning arrays into ExtType records and remembering their buffers."""

    def __init__(self):
        self.blobs = []  # (offset, host array)
        self.size = 0

    def _array_record(self, arr, extra):
        host = to_device(arr, CPU) if device_of_array(arr) is not CPU else arr
        host = host if host.flags.c_contiguous else host.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        if not host.dtype.isnative:
            host = host.astype(host.dtype.newbyteorder("="))
        if host.dtype.str[1:] not in _DTYPES:
            raise FileFormatError(f"dg.save: dtype {host.dtype} cannot be saved (supported: {sorted(_DTYPES)})")
        offset = -(-self.size // _ALIGN) * _ALIGN
        self.size = offset + host.nbytes
        self.blobs.append((offset, host))
        meta = {
            "dtype": host.dtype.str[1:],
            "order": "<" if np.little_endian else ">",
            "shape": list(host.shape),
            "offset": offset,
            "nbytes": host.nbytes,
            "crc": _crc(host),
            **extra,
        }
        return meta

    def default(self, obj):
        if isinstance(obj, Tensor):
            meta = self._array_record(obj.array, {"device": str(obj.device), "requires_grad": obj.requires_grad})
            return msgpack.ExtType(_EXT_TENSOR, _packb(meta, self))
        if isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
            return msgpack.ExtType(
                _EXT_ARRAY, _packb(self._array_record(obj, {"device": str(device_of_array(obj))}), self)
            )
        if isinstance(obj, tuple):
            return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj), self))
        if isinstance(obj, np.generic):
            return msgpack.ExtType(_EXT_SCALAR, _packb([obj.dtype.str[1:], obj.tobytes()], self))
        if isinstance(obj, complex):
            return msgpack.ExtType(_EXT_COMPLEX, _packb([obj.real, obj.imag], self))
        if isinstance(obj, OrderedDict):
            return dict(obj)
        raise FileFormatError(
            f"dg.save: cannot save an object of type {type(obj).__name__} (supported: tensors, arrays, dicts, "
            "lists, tuples, str, bytes, int, float, bool, None)"
        )


def _packb(obj, writer):
    return msgpack.packb(obj, default=writer.default, use_bin_type=True, strict_types=True)


def _crc(arr):
    view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
    crc = 0
    for start in range(0, len(view), _CHUNK):
        crc = zlib.crc32(view[start : start + _CHUNK], crc)
    return crc


def save(obj, f):
    """Save `obj` (tensors, arrays and nested dict/list/tuple/scalars/str) to a path or binary file."""
    writer = _Writer()
    tree = _packb(obj, writer)
    if isinstance(f, str | os.PathLike):
        path = os.fspath(f)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                _write(fh, tree, writer)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        _write(f, tree, writer)


def _write(fh, tree, writer):
    fh.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(tree), zlib.crc32(tree)))
    fh.write(tree)
    base = _HEADER.size + len(tree)
    pad = -base % _ALIGN
    fh.write(b"\0" * pad)
    pos = 0
    for offset, host in writer.blobs:
        if offset > pos:
            fh.write(b"\0" * (offset - pos))
        view = memoryview(host.reshape(-1).view(np.uint8)) if host.size else memoryview(b"")
        for start in range(0, len(view), _CHUNK):
            fh.write(view[start : start + _CHUNK])
        pos = offset + host.nbytes


# ---- load ---------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, fh, name, data_start, data_size, map_location):
        self.fh, self.name, self.data_start, self.data_size = fh, name, data_start, data_size
        self.map_location = map_location

    def fail(self, what):
        raise FileFormatError(f"{self.name}: {what}")

    def ext_hook(self, code, data):
        if code in (_EXT_TENSOR, _EXT_ARRAY):
            meta = self.unpack(data)
            arr = self.read_array(meta)
            if code == _EXT_ARRAY:
                return to_device(arr, self.target_device(meta.get("device", "cpu")))
            dev = self.target_device(meta.get("device", "cpu"))
            t = Tensor(to_device(arr, dev), device=as_device(dev))
            if meta.get("requires_grad"):
                t.requires_grad_(True)
            return t
        if code == _EXT_TUPLE:
            value = self.unpack(data)
            if not isinstance(value, list):
                self.fail("corrupt tuple record")
            return tuple(value)
        if code == _EXT_SCALAR:
            value = self.unpack(data)
            if not (
                isinstance(value, list) and len(value) == 2 and value[0] in _DTYPES and isinstance(value[1], bytes)
            ):
                self.fail("corrupt scalar record")
            dt = _DTYPES[value[0]]
            if len(value[1]) != dt.itemsize:
                self.fail("corrupt scalar record (wrong byte count)")
            return np.frombuffer(value[1], dt)[0]
        if code == _EXT_COMPLEX:
            value = self.unpack(data)
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)):
                self.fail("corrupt complex record")
            return complex(*value)
        self.fail(f"unknown record type {code}")

    def unpack(self, data):
        try:
            return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=False)
        except FileFormatError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as exc:
            self.fail(f"corrupt structure ({type(exc).__name__}: {exc})")

    def read_array(self, meta):
        if not isinstance(meta, dict):
            self.fail("corrupt tensor record")
        dt = _DTYPES.get(meta.get("dtype"))
        shape, offset, nbytes = meta.get("shape"), meta.get("offset"), meta.get("nbytes")
        if dt is None:
            self.fail(f"unsupported dtype {meta.get('dtype')!r} in a tensor record")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape) and len(shape) <= 64):
            self.fail(f"corrupt tensor shape {shape!r}")
        if not (isinstance(offset, int) and isinstance(nbytes, int) and offset >= 0 and nbytes >= 0):
            self.fail("corrupt tensor offset/length")
        if math.prod(shape) * dt.itemsize != nbytes:
            self.fail(f"tensor of shape {tuple(shape)} and dtype {dt} cannot have {nbytes} bytes")
        if offset + nbytes > self.data_size:
            self.fail(
                f"file is truncated: a tensor of {nbytes} bytes at offset {offset} ends past the data region "
                f"({self.data_size} bytes)"
            )
        arr = np.empty(shape, dt.newbyteorder(meta.get("order", "<")))
        view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(bytearray())
        self.fh.seek(self.data_start + offset)
        got = 0
        while got < nbytes:
            n = self.fh.readinto(view[got : got + _CHUNK])
            if not n:
                self.fail(f"file is truncated inside a tensor of shape {tuple(shape)}")
            got += n
        if _crc(arr) != meta.get("crc"):
            self.fail(f"checksum mismatch in a tensor of shape {tuple(shape)} and dtype {dt} (data corrupted)")
        return arr.astype(dt, copy=False) if arr.dtype != dt else arr

    def target_device(self, saved):
        loc = self.map_location
        if loc is None:
            target = saved
        elif callable(loc) and not isinstance(loc, str):
            target = loc(saved)
        elif isinstance(loc, dict):
            target = loc.get(saved, saved)
        else:
            target = str(loc)
        try:
            return as_device(target)
        except DeviceError as exc:
            raise DeviceError(
                f"{self.name}: tensor saved on {saved!r} cannot be loaded there ({exc}); pass map_location='cpu'"
            ) from None


def load(f, map_location=None):
    """Load what `save` wrote. `map_location`: None (as saved), a device, a {saved: target} dict or a callable."""
    if isinstance(f, str | os.PathLike):
        name = os.fspath(f)
        try:
            fh = open(name, "rb")
        except FileNotFoundError:
            raise FileFormatError(f"{name}: no such file") from None
        with fh:
            return _load(fh, name, map_location)
    return _load(f, getattr(f, "name", "<stream>"), map_location)


def _load(fh, name, map_location):
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
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
    return reader.unpack(tree)
