"""dg.load: validate, then decode the tree in the order the writer built it, reading each array as it comes.

Nothing is allocated before it is checked against the bytes the file really holds (see the package
docstring for the trust model); every failure is a FileFormatError naming the file and the tensor.
"""

import functools
import inspect
import io
import math
import os
import re
import zlib
from collections import OrderedDict

import msgpack
import numpy as np

from distgraph import dtypes
from distgraph.autograd.size import Size
from distgraph.autograd.storage import extent
from distgraph.autograd.storage import view as as_view
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import device_of_array, to_device
from distgraph.errors import ConfigError, DeviceError, DistgraphError, FileFormatError, MissingFileError
from distgraph.io import checksum, mapped, torch_format
from distgraph.io.layout import (
    ALIGN,
    EXT_ARRAY,
    EXT_COMPLEX,
    EXT_ORDERED_DICT,
    EXT_REF,
    EXT_SCALAR,
    EXT_SIZE,
    EXT_TENSOR,
    EXT_TUPLE,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    MAX_DEPTH,
    READ_CHUNK,
    READABLE_VERSIONS,
    bytes_view,
    dtype_of_code,
    join,
    show,
)
from distgraph.io.objects import revive
from distgraph.nn.parameter import Parameter


class Reader:
    """Decodes the tree in the order `Writer.encode` built it, reading each array as its record comes."""

    def __init__(self, fh, name, data_start, data_size, map_location, mapped=None):
        self.fh, self.name, self.data_start, self.data_size = fh, name, data_start, data_size
        self.map_location, self.mapped = map_location, mapped  # mapped: the file's pages (mmap=True)
        self.data_pos = 0  # end of the last array read: arrays must follow each other, never overlap
        self.records = []  # the tensors and arrays decoded so far, in record order (what references name)
        self.storages = {}  # record index -> the array of the bytes that record read (what a "view" is of)

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
            self.fail(f"corrupt structure {show(path)} ({type(exc).__name__}: {exc})")

    def decode(self, node, path="", depth=0):
        if depth > MAX_DEPTH:
            self.fail(f"structure nested deeper than {MAX_DEPTH} levels {show(path)}")
        if node is None or isinstance(node, bool | int | float | str | bytes):
            return node
        if isinstance(node, list):
            return [self.decode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, dict):
            return self.mapping(node, path, depth, dict)
        if isinstance(node, msgpack.ExtType):
            return self.decode_ext(node.code, node.data, path, depth)
        self.fail(f"corrupt structure: unexpected {type(node).__name__} {show(path)}")

    def mapping(self, node, path, depth, cls):
        out = cls()
        for k, v in node.items():
            key = self.decode(k, path, depth + 1)
            value = self.decode(v, join(path, key), depth + 1)
            try:
                out[key] = value
            except TypeError:
                self.fail(f"corrupt structure: unhashable dict key of type {type(key).__name__} {show(path)}")
        return out

    def decode_ext(self, code, data, path, depth):
        value = self.unpack(data, path)
        if code in (EXT_TENSOR, EXT_ARRAY):
            if isinstance(value, dict) and "data_of" in value:
                obj = self.shared(value, path, tensor=code == EXT_TENSOR)
            else:
                obj = self.read_array(value, path, tensor=code == EXT_TENSOR)
            self.records.append(obj)
            return obj
        if code == EXT_ORDERED_DICT and isinstance(value, dict):
            return self.mapping(value, path, depth, OrderedDict)
        if code == EXT_REF:
            if type(value) is not int or not 0 <= value < len(self.records):
                self.fail(f"corrupt reference {value!r} {show(path)} ({len(self.records)} tensors before it)")
            return self.records[value]
        if code == EXT_SIZE and isinstance(value, list) and all(type(v) is int for v in value):
            return Size(value)
        if code == EXT_TUPLE and isinstance(value, list):
            return tuple(self.decode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        if code == EXT_SCALAR and isinstance(value, list) and len(value) == 2:
            dt = dtype_of_code(value[0])
            if dt is not None and isinstance(value[1], bytes) and len(value[1]) == dt.itemsize:
                return np.frombuffer(value[1], dt)[0]
        if code == EXT_COMPLEX and isinstance(value, list) and len(value) == 2:
            if all(isinstance(v, float) for v in value):
                return complex(*value)
        self.fail(f"corrupt record (type {code}) {show(path)}")

    def read_array(self, meta, path, tensor):
        what = _what(path)
        if not isinstance(meta, dict):
            self.fail(f"{what}: corrupt record")
        dt, shape = dtype_of_code(meta.get("dtype")), meta.get("shape")
        offset, nbytes, order = meta.get("offset"), meta.get("nbytes"), meta.get("order")
        if dt is None:
            self.fail(f"{what}: unsupported dtype {meta.get('dtype')!r}")
        if not _sizes(shape):
            self.fail(f"{what}: corrupt shape {shape!r}")
        if math.prod(s or 1 for s in shape) * dt.itemsize >= 2**62:  # numpy refuses it even with a 0 in it
            self.fail(f"{what}: corrupt shape {shape!r} (too large)")
        if type(offset) is not int or type(nbytes) is not int or order not in ("<", ">") or offset < self.data_pos:
            self.fail(f"{what}: corrupt offset/length/byte order")
        if math.prod(shape) * dt.itemsize != nbytes:
            self.fail(f"{what}: shape {tuple(shape)} of dtype {dt} cannot have {nbytes} bytes")
        if offset + nbytes > self.data_size:
            self.fail(f"file is truncated: {what} needs {nbytes} bytes at offset {offset}, data has {self.data_size}")
        self.data_pos = offset + nbytes
        if self.mapped is not None:  # a view of the file's pages: nothing read, the checksum left (mapped.py)
            arr = mapped.view(self.mapped, dt.newbyteorder(order), shape, self.data_start + offset)
        else:  # the checks above bound the allocation by the bytes actually present in the file
            arr = self.read_bytes(np.empty(shape, dt.newbyteorder(order)), offset, meta.get("crc"), what)
        if not arr.dtype.isnative:
            arr = arr.astype(dt)
        dev = self.target_device(meta.get("device"), what, arr)
        if isinstance(dev, np.ndarray) or hasattr(dev, "__cuda_array_interface__"):  # torch-style callable
            arr, dev = dev, device_of_array(dev)
        else:
            arr = to_device(arr, dev)
        self.storages[len(self.records)] = arr
        if "view" in meta:  # the bytes are a storage, the record's array a view of them
            arr = self.view(arr, meta["view"], what)
        if not tensor:
            return arr
        try:
            dtypes.from_numpy(arr.dtype)
            return self.tensor(arr, dev, meta)
        except DistgraphError as exc:
            self.fail(f"{what}: {exc}")

    def read_bytes(self, arr, offset, expected_crc, what):
        """`arr` filled from the data region at `offset`, its checksum checked."""
        view, nbytes = bytes_view(arr), arr.nbytes
        self.fh.seek(self.data_start + offset)
        whole = nbytes >= checksum.PARALLEL_BYTES  # large: read it all, then checksum both halves at once
        got = crc = 0
        while got < nbytes:  # else checksum each chunk right after reading it, while it is still in cache
            n = self.fh.readinto(view[got : got + READ_CHUNK])
            if not n:
                self.fail(f"file is truncated inside {what}")
            if not whole:
                crc = zlib.crc32(view[got : got + n], crc)
            got += n
        if whole:
            crc = checksum.crc32(view)
        if crc != expected_crc:
            self.fail(f"{what} checksum mismatch (data corrupted)")
        return arr

    def tensor(self, arr, dev, meta):
        """A Tensor on `arr`, or a Parameter when one was saved (torch.load gives back Parameters)."""
        t = Tensor(arr, requires_grad=meta.get("requires_grad") is True, device=dev)
        return Parameter(t, requires_grad=t.requires_grad) if meta.get("parameter") is True else t

    def shared(self, meta, path, tensor):
        """A tensor on the array of an earlier tensor record ("data_of"), or a tensor or array viewing the bytes
        of an earlier record ("data_of" and "view"): the sharing the saver had."""
        source = meta["data_of"]
        if type(source) is not int or not 0 <= source < len(self.records):
            self.fail(f"tensor {path!r}: corrupt reference to shared data {source!r}")
        if "view" in meta:
            if source not in self.storages:
                self.fail(f"tensor {path!r}: corrupt reference to shared data {source!r} (a record without bytes)")
            arr = self.view(self.storages[source], meta["view"], _what(path))
            return self.tensor(arr, device_of_array(arr), meta) if tensor else arr
        shared = self.records[source]
        if not (tensor and isinstance(shared, Tensor)):
            self.fail(f"tensor {path!r}: corrupt reference to shared data {source!r}")
        return self.tensor(shared.array, shared.device, meta)

    def view(self, storage, spec, what):
        """The view a record's "view" ([offset, shape, strides], in elements) names in a storage's bytes,
        checked to lie inside them."""
        if not (isinstance(spec, list) and len(spec) == 3):
            self.fail(f"{what}: corrupt view {spec!r}")
        offset, shape, strides = spec
        if not (
            type(offset) is int and offset >= 0 and _sizes(shape) and _sizes(strides) and len(shape) == len(strides)
        ):
            self.fail(f"{what}: corrupt view {spec!r}")
        flat = storage.reshape(-1)
        if math.prod(shape) >= 2**62 // flat.itemsize or extent(shape, offset, strides)[1] > flat.size:
            self.fail(f"{what}: corrupt view {spec!r} (outside its storage of {flat.size} elements)")
        return as_view(flat, offset, shape, strides)

    def target_device(self, saved, what, arr):
        """Where map_location sends a tensor saved on `saved` (a Device, or an array from a torch-style callable)."""
        if not (isinstance(saved, str) and _LOCATION.fullmatch(saved)):  # any device's name: torch's mps,
            self.fail(f"{what}: corrupt device {saved!r}")  # xpu... load wherever map_location sends them
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


def _what(path):
    return f"tensor {path!r}" if path else "the top-level tensor"


def _sizes(values):
    """A shape or strides as a file may give them: a list of at most 32 non-negative ints."""
    return isinstance(values, list) and len(values) <= 32 and all(type(n) is int and n >= 0 for n in values)


_LOCATION = re.compile(r"[a-z_]+(:[0-9]+)?")  # a device as torch names it: "cpu", "cuda:1", "mps"


def _takes_two_args(fn):
    """True for torch's `map_location(storage, location)` form, False for `map_location(location)`."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): use the one-argument form
        return False
    return True


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **pickle_load_args):
    """Load what `save` wrote, from a path or a seekable binary file.

    `map_location` (as torch.load): None keeps each tensor on the device it was saved from; a device
    ("cpu", "cuda:1", a Device) moves all there; a dict maps saved device strings to targets
    ({"cuda:0": "cpu"}); a callable gets the saved device string (or, torch's form, the host array and
    the string) and returns a device, or an array to use as is (`lambda storage, loc: storage` → cpu).

    A file torch.save wrote (zip or legacy) is read without torch, as torch.load(weights_only=True)
    would: see distgraph.io.torch_format. `weights_only` is accepted either way: no file ever runs code here.
    `mmap=True` (torch's): the arrays are copy-on-write views of the file's pages (mapped.py).
    """
    if pickle_module is not None or pickle_load_args:
        raise ConfigError(
            "dg.load: pickle_module and pickle load arguments are not taken (no pickle runs: files are data)"
        )
    tree, native = _load_tree(f, map_location, functools.partial(_load_any, mmap=bool(mmap)))
    if not native:
        return tree
    try:
        return revive(tree)  # graphs and plans saved whole come back as themselves
    except (DistgraphError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise FileFormatError(f"{_name(f)}: holds a damaged graph or plan ({type(exc).__name__}: {exc})") from None


def _name(f):
    return os.fspath(f) if isinstance(f, str | os.PathLike) else getattr(f, "name", "<stream>")


def _load_tree(f, map_location=None, loader=None):
    """`loader(fh, name, map_location)` (a distgraph file's tree by default) on a path or file object."""
    loader = loader or _load
    if not isinstance(f, str | os.PathLike):
        return loader(f, _name(f), map_location)
    name = os.fspath(f)
    try:
        fh = open(name, "rb")
    except FileNotFoundError:
        raise MissingFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(f"{name}: is a folder, not a file saved by dg.save") from None
    except PermissionError:
        raise FileFormatError(f"{name}: this user may not read it") from None
    with fh:
        return loader(fh, name, map_location)


def load_as(f, parse, what):
    """`parse(load(f))` for files holding one kind of object (a graph, a plan). A tree that `parse`
    cannot read (a missing key, a wrong type, an unknown op) is a damaged file like any other: a
    FileFormatError naming the file, never a KeyError from deep inside the parser."""
    tree = _load_tree(f)
    try:
        return parse(tree)
    except (DistgraphError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise FileFormatError(f"{_name(f)}: not a valid distgraph {what} ({type(exc).__name__}: {exc})") from None


def _load_any(fh, name, map_location, mmap=False):
    """(tree, True) for a distgraph file, (object, False) for a torch one, told apart by the first bytes."""
    if isinstance(fh, io.TextIOBase):  # its first read decoded the bytes as text: a bare UnicodeDecodeError
        raise FileFormatError(f"{name}: dg.load needs a binary file: open it with 'rb', not in text mode")
    if hasattr(fh, "seekable") and hasattr(fh, "read") and fh.seekable():
        base = fh.tell()
        head = fh.read(4)
        fh.seek(base)
        if torch_format.is_torch_file(head):
            place = Reader(fh, name, 0, 0, map_location).target_device
            return torch_format.load(fh, name, lambda arr, loc, what: place(loc, what, arr), mmap), False
    return _load(fh, name, map_location, mmap), True


def _load(fh, name, map_location, mmap=False):
    """Read the record that starts at the stream's current position (as torch.load), and leave the stream
    just past it, so several objects saved one after another into one stream load back in turn."""
    if not (hasattr(fh, "seekable") and hasattr(fh, "read")):
        raise FileFormatError(f"dg.load: expected a path or a binary file object, got {type(fh).__name__}")
    if not fh.seekable():
        raise FileFormatError(f"{name}: dg.load needs a seekable binary file")
    base = fh.tell()
    size = fh.seek(0, io.SEEK_END) - base
    fh.seek(base)
    head = fh.read(HEADER.size)
    if len(head) < HEADER.size:
        raise FileFormatError(f"{name}: not a distgraph file (too short: {size} bytes)")
    magic, version, tree_len, tree_crc = HEADER.unpack(head)
    if magic != MAGIC:
        raise FileFormatError(f"{name}: not a distgraph file (bad magic bytes {magic!r})")
    if version not in READABLE_VERSIONS:
        raise FileFormatError(
            f"{name}: format version {version} is not supported (this distgraph reads versions 1 to {FORMAT_VERSION})"
        )
    if tree_len > size - HEADER.size:
        raise FileFormatError(f"{name}: file is truncated (structure of {tree_len} bytes, file has {size})")
    tree = fh.read(tree_len)
    if zlib.crc32(tree) != tree_crc:
        raise FileFormatError(f"{name}: checksum mismatch in the structure (file corrupted)")
    data_start = HEADER.size + tree_len  # relative to the record's start, as the writer padded it
    data_start += -data_start % ALIGN
    pages = mapped.map_file(fh, name) if mmap else None
    reader = Reader(fh, name, base + data_start, max(size - data_start, 0), map_location, pages)
    obj = reader.decode(reader.unpack(tree, ""))
    fh.seek(base + data_start + reader.data_pos)
    return obj
