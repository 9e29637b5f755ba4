"""dg.save: walk the object once into msgpack values, then stream header, tree and array bytes to disk.

Arrays are not copied (cuda ones are copied to the host once): their checksums are computed and their
buffers written in chunks straight from memory. A path is written to a temporary file and renamed over
the target only when complete.
"""

import io
import os
import secrets
import zlib
from collections import OrderedDict
from collections.abc import Mapping

import msgpack
import numpy as np

from distgraph.autograd.size import Size
from distgraph.autograd.storage import Spans, flat, is_row_major
from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, device_of_array, to_device
from distgraph.errors import FileFormatError
from distgraph.io.layout import (
    ALIGN,
    CHUNK,
    DTYPE_NAMES,
    EXT_ARRAY,
    EXT_COMPLEX,
    EXT_ORDERED_DICT,
    EXT_REF,
    EXT_SCALAR,
    EXT_SIZE,
    EXT_TENSOR,
    EXT_TUPLE,
    HEADER,
    INT_RANGE,
    MAGIC,
    MAX_DEPTH,
    array_crc,
    bytes_view,
    dtype_code,
    join,
    show,
)
from distgraph.io.objects import as_tree
from distgraph.io.torch_writer import TorchWriter
from distgraph.nn.parameter import Parameter


class Writer:
    """Turns the object into msgpack-native values (ExtType records) and remembers each array's buffer."""

    def __init__(self):
        self.blobs = []  # (offset, host array), in increasing offset order
        self.size = 0
        # Sharing, as torch.save keeps it: every tensor/array record gets the next index (in tree order,
        # which the reader follows); an object seen before is saved as EXT_REF to its index; a tensor whose
        # array an earlier tensor holds (t and t.detach(), tied weights in a state dict) as a record with
        # "data_of" that index instead of its bytes; and an array on the storage of an earlier record (a
        # slice, a transpose, a parameter in a flat buffer: autograd/storage.py) as "data_of" that record
        # with a "view": its offset, shape and strides there. A storage's first record holds the part of it
        # that the saved arrays read (`Spans`; see `tree`), with the view it needs.
        self.records = {}  # id(tensor or array) -> record index
        self.arrays = {}  # id(a tensor's array) -> index of the first tensor record holding it
        self.storages = {}  # id(a storage's root array) -> index of the record holding its bytes
        self.spans = Spans()
        self.keep = []  # the objects behind those ids, alive until the file is written
        self.version = 1  # 2 once a reference is written, 3 once a view or an OrderedDict

    def fail(self, path, what):
        raise FileFormatError(f"dg.save: {show(path)}: {what}")

    def tree(self, obj):
        """The packed tree of `obj`; written again where a later view widened a storage already queued."""
        tree = packb(self.encode(obj))
        if self.spans.grown:
            spans = self.spans
            self.__init__()
            self.spans = spans
            tree = packb(self.encode(obj))
        return tree

    def encode(self, obj, path="", depth=0):
        if depth > MAX_DEPTH:
            self.fail(path, f"structure nested deeper than {MAX_DEPTH} levels")
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, str):  # subclasses too (np.str_, StrEnum): saved, and loaded, as their text
            return str.__str__(obj)
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)
        if isinstance(obj, Tensor) or isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
            return self.array_or_ref(obj, path)
        if isinstance(obj, np.generic):
            code = dtype_code(obj.dtype)
            if code is None:
                self.fail(path, f"numpy scalar of dtype {obj.dtype} cannot be saved")
            return msgpack.ExtType(EXT_SCALAR, packb([code, obj.tobytes()]))
        if isinstance(obj, int):
            if not INT_RANGE[0] <= obj <= INT_RANGE[1]:
                self.fail(path, f"integer {obj} does not fit in 64 bits")
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, complex):
            return msgpack.ExtType(EXT_COMPLEX, packb([obj.real, obj.imag]))
        if isinstance(obj, Mapping):  # in order; an OrderedDict (a state_dict) loads as one, any other as a dict
            out = {}
            for k, v in obj.items():
                key = self.encode(k, path, depth + 1)
                out[key] = self.encode(v, join(path, k), depth + 1)
            if not isinstance(obj, OrderedDict):
                return out
            self.version = max(self.version, 3)
            return msgpack.ExtType(EXT_ORDERED_DICT, packb(out))
        if isinstance(obj, Size):  # a t.shape: loads as a Size, as torch's
            self.version = max(self.version, 3)
            return msgpack.ExtType(EXT_SIZE, packb(list(obj)))
        if isinstance(obj, tuple):
            items = [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
            return msgpack.ExtType(EXT_TUPLE, packb(items))
        if isinstance(obj, list):
            return [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        tree = as_tree(obj)  # a Graph, a Plan: their to_dict() trees
        if tree is not None:
            return self.encode(tree, path, depth)
        self.fail(
            path,
            f"cannot save an object of type {type(obj).__name__} (supported: tensors, arrays, dicts, lists, "
            "tuples, str, bytes, int, float, complex, bool, None, graphs and plans)",
        )

    def array_or_ref(self, obj, path):
        """A tensor or array record, or a reference to the earlier record of the same object, array or storage."""
        if id(obj) in self.records:
            self.version = max(self.version, 2)
            return msgpack.ExtType(EXT_REF, packb(self.records[id(obj)]))
        index = self.records[id(obj)] = len(self.records)
        self.keep.append(obj)
        tensor = isinstance(obj, Tensor)
        arr, code = (obj.array, EXT_TENSOR) if tensor else (obj, EXT_ARRAY)
        if tensor:
            extra = {"device": str(obj.device), "requires_grad": obj.requires_grad}
            if isinstance(obj, Parameter):
                extra["parameter"] = True  # torch.load gives a Parameter back; older readers ignore the key
        else:
            extra = {"device": str(device_of_array(obj))}
        if tensor:
            if id(arr) in self.arrays:  # t and t.detach(), tied weights: the array itself again
                self.version = max(self.version, 2)
                return msgpack.ExtType(code, packb({"data_of": self.arrays[id(arr)], **extra}))
            self.arrays[id(arr)] = index
            self.keep.append(arr)
        root, (first, end), offset, strides = self.spans.place(arr)
        view = [offset, list(arr.shape), list(strides)]
        if id(root) in self.storages:  # on the storage of an earlier record
            self.version = 3
            return msgpack.ExtType(code, packb({"data_of": self.storages[id(root)], "view": view, **extra}))
        self.storages[id(root)] = index
        self.keep.append(root)
        whole = offset == 0 and end - first == arr.size  # all its storage holds, row-major: a record as before
        if whole and (arr.flags.c_contiguous or is_row_major(arr.shape, strides)):
            return msgpack.ExtType(code, packb(self.array_record(arr, path, **extra)))
        self.version = 3
        return msgpack.ExtType(code, packb(self.array_record(flat(root)[first:end], path, view=view, **extra)))

    def array_record(self, arr, path, **extra):
        """Record an array's metadata and queue its host buffer; cuda arrays are copied to the host once."""
        code = dtype_code(arr.dtype)
        if code is None:
            self.fail(path, f"dtype {arr.dtype} cannot be saved (supported: {', '.join(DTYPE_NAMES)}, bfloat16)")
        host = to_device(arr, CPU) if device_of_array(arr) is not CPU else arr
        if not host.dtype.isnative:
            host = host.astype(host.dtype.newbyteorder("="))
        host = host if host.flags.c_contiguous else host.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        offset = -(-self.size // ALIGN) * ALIGN
        self.size = offset + host.nbytes
        self.blobs.append((offset, host))
        order = "<" if np.little_endian else ">"
        meta = {"dtype": code, "order": order, "shape": list(host.shape), "offset": offset, "nbytes": host.nbytes}
        return {**meta, "crc": array_crc(host), **extra}

    def write(self, fh, tree):
        fh.write(HEADER.pack(MAGIC, self.version, len(tree), zlib.crc32(tree)))
        fh.write(tree)
        pos = HEADER.size + len(tree)
        fh.write(b"\0" * (-pos % ALIGN))
        pos = 0  # now relative to the data region
        for offset, host in self.blobs:
            fh.write(b"\0" * (offset - pos))
            view = bytes_view(host)
            for start in range(0, len(view), CHUNK):
                fh.write(view[start : start + CHUNK])
            pos = offset + host.nbytes


def packb(obj):
    return msgpack.packb(obj, use_bin_type=True, strict_types=True)


def save(obj, f, format="distgraph"):
    """Save `obj` (tensors, arrays and nested dict/list/tuple/scalars/str/bytes) to a path or binary file.

    format="torch" writes torch's zip format instead, for torch.load(weights_only=True): tensors,
    Parameters and nested dicts/lists/tuples of str, bytes, int, float, bool and None (no arrays).
    A path is written atomically: to a temporary file in the same folder, flushed to disk, then renamed
    over `f`, so readers see the old file or the complete new one, never a partial one.
    """
    if format == "distgraph":
        writer = Writer()
        tree = writer.tree(obj)
    elif format == "torch":
        writer = TorchWriter()
        tree = writer.pickle(obj)
    else:
        raise FileFormatError(f"dg.save: unknown format {format!r} (expected 'distgraph' or 'torch')")
    if not isinstance(f, str | os.PathLike):
        if not callable(getattr(f, "write", None)) or isinstance(f, io.TextIOBase):  # a bare TypeError/AttributeError
            got = "a file opened in text mode (open it with 'wb')" if hasattr(f, "write") else type(f).__name__
            raise FileFormatError(f"dg.save: expected a path or a binary file object, got {got}")
        writer.write(f, tree)
        return
    path = os.fspath(f)
    if os.path.isdir(path):
        raise FileFormatError(f"dg.save: {path} is a folder; give the path of a file to write")
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except (FileNotFoundError, NotADirectoryError):  # name the target, not the temporary beside it
        raise FileFormatError(f"dg.save: {path}: its folder {os.path.dirname(path) or '.'} does not exist") from None
    except PermissionError:
        raise FileFormatError(f"dg.save: {path}: this user may not write in its folder") from None
    try:
        with open(fd, "wb") as fh:
            writer.write(fh, tree)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
