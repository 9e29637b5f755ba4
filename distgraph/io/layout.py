"""The container's layout, shared by the writer and the reader: header, record codes, dtypes, checksums.

Changing anything here changes the file format: bump FORMAT_VERSION.
"""

import struct

import numpy as np

from distgraph.io import checksum

MAGIC = b"\x89DGRAPH\n"
# Version 2 adds references (EXT_REF, a tensor record's "data_of") so that shared tensors load back
# shared; version 3 views (a record's "view": offset, shape and strides in the storage of the record it
# names, or of its own bytes), so that views of one storage load back views of one array with their
# strides, OrderedDicts (EXT_ORDERED_DICT) and Sizes (EXT_SIZE, a `t.shape` kept as one). A file is written with the lowest version that holds it
# (one without references or views is still version 1, which every distgraph reads); all are read.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAX_DEPTH = 200  # nesting of containers; deep enough for any checkpoint, shallow enough for the C stack
HEADER = struct.Struct("<8sIQI")
ALIGN = 64
CHUNK = 1 << 24  # checksum / write granularity: big arrays never need a second buffer
READ_CHUNK = 1 << 20  # small enough to stay in cache between readinto and its checksum
EXT_TENSOR, EXT_ARRAY, EXT_TUPLE, EXT_SCALAR, EXT_COMPLEX, EXT_REF, EXT_ORDERED_DICT, EXT_SIZE = 1, 2, 3, 4, 5, 6, 7, 8
DTYPE_NAMES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPE_NAMES += ("float16", "float32", "float64", "complex64", "complex128")
DTYPES = {np.dtype(n).str[1:]: np.dtype(n) for n in DTYPE_NAMES}  # "f4" -> float32: the code stored in files
INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can store


def dtype_code(dt):
    """The code a dtype is stored under; bfloat16 (ml_dtypes) gets its own, numpy calls it void."""
    if dt.name == "bfloat16":
        return "bf16"
    code = dt.str[1:]
    return code if DTYPES.get(code) == dt.newbyteorder("=") else None


def dtype_of_code(code):
    if code == "bf16":
        try:
            return np.dtype("bfloat16")  # registered with numpy once ml_dtypes is imported
        except TypeError:
            return None
    return DTYPES.get(code) if isinstance(code, str) else None


def bytes_view(arr):
    """A flat uint8 memoryview of a C-contiguous array's buffer (no copy)."""
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")


def array_crc(arr):
    """The CRC-32 of a C-contiguous array's bytes (on two threads when large: io/checksum.py)."""
    return checksum.crc32(bytes_view(arr))


def join(path, key):
    """The dotted name of a dict entry, as state_dict keys read: 'model' + 'fc.weight' -> 'model.fc.weight'."""
    return f"{path}.{key}" if path else str(key)


def show(path):
    return f"at {path!r}" if path else "at the top level"
