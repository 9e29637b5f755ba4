"""dg.save(obj, f, format="torch"): a zip file that torch.load(weights_only=True) reads, written without torch.

The layout is torch's own (see torch_format): <prefix>/data.pkl, one <prefix>/data/<key> per storage
(64-byte aligned, as torch aligns them for mmap), byteorder, version. The pickle is emitted opcode by
opcode (protocol 2, as torch.save) because the globals it names — torch._utils._rebuild_tensor_v2,
torch.FloatStorage, ... — cannot be pickled by reference without importing torch. Only what
weights_only accepts is written: tensors and Parameters, dicts (OrderedDicts stay OrderedDicts), lists,
tuples, str, bytes, int, float, bool and None; anything else is a FileFormatError naming where it is.

Sharing as torch.save keeps it: a tensor met twice is pickled once (a memo reference), tensors on one
array (tied weights, t and t.detach()) name one storage, and a view of a host array (a slice, a transpose,
an expand) names its base's storage with its own offset and strides (found by autograd/storage.py, as for
dg.save's own format and copy.deepcopy), so torch.load gives views again and the bytes are written once.
Views torch cannot describe (negative strides, another dtype) are copied.
"""

import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pickle import encode_long

import numpy as np

from distgraph.autograd.size import Size
from distgraph.autograd.storage import Spans, flat
from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, device_of_array, to_device
from distgraph.dtypes import DType
from distgraph.errors import FileFormatError
from distgraph.io.layout import ALIGN, CHUNK, MAX_DEPTH, bytes_view, join, show
from distgraph.io.torch_pickle import STORAGE_DTYPES
from distgraph.nn.parameter import Parameter

STORAGE_OF = {dt: name for name, dt in STORAGE_DTYPES.items()}  # numpy dtype name -> torch.<X>Storage
REBUILD_TENSOR = b"ctorch._utils\n_rebuild_tensor_v2\n"
REBUILD_PARAMETER = b"ctorch._utils\n_rebuild_parameter\n"
ORDERED_DICT = b"ccollections\nOrderedDict\n"
EMPTY_ORDERED_DICT = ORDERED_DICT + b")R"  # OrderedDict(): torch's backward_hooks argument
TUPLE_N = {0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}


class TorchWriter:
    """Emits the pickle of one object and collects the storages its tensors name."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = {}  # id(tensor or container) -> memo index
        self.memo_slots = 0  # memo indices handed out (not len(memo): one object, e.g. (), may be put twice)
        self.keep = []  # the objects behind those ids, alive until written
        self.storages = {}  # id(a storage's root array: autograd/storage.py) -> (key, contiguous host array)
        self.spans = Spans()  # the part of each storage its saved views use

    def fail(self, path, what):
        raise FileFormatError(f"dg.save(format='torch'): {show(path)}: {what}")

    def pickle(self, obj):
        """The pickle of `obj`. A storage holds the part of its base array that its views use (`Spans`): a
        view of a large buffer (a parameter in a flat bucket) writes its own elements, not the buffer; where
        a later view widened a storage already queued, the object is pickled again knowing every span."""
        self.encode(obj)
        if self.spans.grown:
            spans = self.spans
            self.__init__()
            self.spans = spans
            self.encode(obj)
        self.out += b"."  # STOP
        return bytes(self.out)

    def encode(self, obj, path="", depth=0):
        if depth > MAX_DEPTH:
            self.fail(path, f"structure nested deeper than {MAX_DEPTH} levels")
        out = self.out
        if obj is None:
            out += b"N"
        elif obj is True or obj is False:
            out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            self.int(int(obj))
        elif isinstance(obj, float):
            out += b"G" + struct.pack(">d", obj)
        elif isinstance(obj, str):
            self.str(str.__str__(obj))
        elif isinstance(obj, bytes):  # protocol 2 has no bytes opcode: _codecs.encode(text, "latin1"), as torch
            out += b"c_codecs\nencode\n"
            self.str(obj.decode("latin1"))
            self.str("latin1")
            out += b"\x86R"
        elif id(obj) in self.memo:
            self.get(self.memo[id(obj)])
        elif isinstance(obj, Tensor):
            self.tensor(obj, path)
        elif isinstance(obj, np.ndarray):  # an optimizer's state holds arrays where torch's holds tensors
            self.tensor(Tensor(obj), path, memo=obj)
        elif isinstance(obj, Mapping):
            self.mapping(obj, path, depth)
        elif isinstance(obj, list):
            out += b"]"
            self.put(obj)
            self.items(b"(", obj, b"e", path, depth)  # MARK items APPENDS
        elif isinstance(obj, Size):  # torch.Size((2, 3)), as torch pickles one (weights_only reads it)
            out += b"ctorch\nSize\n"
            self.tuple(tuple(obj), path, depth)
            out += b"\x85R"  # TUPLE1, REDUCE
            self.put(obj)
        elif isinstance(obj, tuple):
            self.tuple(obj, path, depth)
        elif isinstance(obj, set):  # set(list): what pickle writes, and torch's weights_only reads (not frozenset)
            out += b"c__builtin__\nset\n"
            self.items(b"]" + b"(", list(obj), b"e", path, depth)
            out += b"\x85R"  # TUPLE1, REDUCE
        elif isinstance(obj, DType):  # a dtype value, as torch.float32 is pickled (dg.load reads it back)
            out += f"ctorch\n{obj.name}\n".encode()
        else:
            self.fail(
                path,
                f"cannot save an object of type {type(obj).__name__} in a torch file (supported: tensors, "
                "Parameters, numpy arrays (as tensors), dicts, lists, tuples, sets, dtypes, str, bytes, int, float, "
                "bool, None)",
            )

    def int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            data = encode_long(value)
            if len(data) > 255:
                self.fail("", f"integer {value} is too large")
            self.out += b"\x8a" + bytes([len(data)]) + data

    def str(self, text):
        data = text.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def put(self, obj):
        """Memoize the object on top of the stack, so a second meeting is a reference to it. Each put takes
        a fresh index: a shared object put twice (the empty shape and stride tuples of a 0-d tensor are one
        object) must not hand its index to the next one, which would overwrite that slot."""
        index = self.memo[id(obj)] = self.memo_slots
        self.memo_slots += 1
        self.keep.append(obj)
        self.out += b"r" + struct.pack("<I", index)  # LONG_BINPUT

    def get(self, index):
        self.out += b"j" + struct.pack("<I", index)  # LONG_BINGET

    def items(self, start, values, end, path, depth):
        self.out += start
        for i, v in enumerate(values):
            self.encode(v, f"{path}[{i}]", depth + 1)
        self.out += end

    def tuple(self, obj, path, depth):
        if len(obj) in TUPLE_N:
            for i, v in enumerate(obj):
                self.encode(v, f"{path}[{i}]", depth + 1)
            self.out += TUPLE_N[len(obj)]
        else:
            self.items(b"(", obj, b"t", path, depth)
        self.put(obj)

    def mapping(self, obj, path, depth):
        self.out += EMPTY_ORDERED_DICT if isinstance(obj, OrderedDict) else b"}"
        self.put(obj)
        self.out += b"("  # MARK key value ... SETITEMS
        for k, v in obj.items():
            if not (k is None or isinstance(k, bool | int | float | str | bytes | tuple)):
                self.fail(path, f"dict key of type {type(k).__name__} cannot be saved in a torch file")
            self.encode(k, path, depth + 1)
            self.encode(v, join(path, k), depth + 1)
        self.out += b"u"

    def tensor(self, t, path, memo=None):
        """_rebuild_tensor_v2(storage, 0, size, contiguous stride, requires_grad, OrderedDict()), in a
        _rebuild_parameter(tensor, requires_grad, OrderedDict()) for a Parameter. `memo`: the object a
        second meeting refers to (an array wrapped for this call), else `t`."""
        arr = t.array
        name = STORAGE_OF.get(arr.dtype.name)
        if name is None or name.startswith("Complex"):
            self.fail(path, f"tensor of dtype {arr.dtype} cannot be saved in a torch file")
        root, (first, end), offset, strides = self.spans.place(arr)
        key = self.storage(root, first, end)
        size = end - first
        location = "cpu" if t.device is CPU else str(t.device)
        if isinstance(t, Parameter):
            self.out += REBUILD_PARAMETER + b"("
        self.out += REBUILD_TENSOR + b"(("  # MARK (the arguments) MARK (the storage's persistent id)
        self.str("storage")
        self.out += b"ctorch\n" + name.encode() + b"\n"
        self.str(key)
        self.str(location)
        self.int(size)
        self.out += b"tQ"  # TUPLE, BINPERSID
        self.int(offset)
        self.tuple(tuple(int(n) for n in arr.shape), path, 0)
        self.tuple(strides, path, 0)
        self.out += b"\x88" if t.requires_grad and not isinstance(t, Parameter) else b"\x89"
        self.out += EMPTY_ORDERED_DICT + b"tR"
        if isinstance(t, Parameter):
            self.out += (b"\x88" if t.requires_grad else b"\x89") + EMPTY_ORDERED_DICT + b"tR"
        self.put(t if memo is None else memo)

    def storage(self, root, first, end):
        """The key of the storage holding elements [first, end) of `root`'s (one per root: `Spans`), its
        bytes queued C-contiguous."""
        if id(root) not in self.storages:
            arr = flat(root)[first:end]
            host = to_device(arr, CPU) if device_of_array(arr) is not CPU else arr
            host = (
                host
                if host.flags.c_contiguous and host.dtype.isnative
                else np.array(host, host.dtype.newbyteorder("="), order="C")
            )
            self.storages[id(root)] = (str(len(self.storages)), host)
            self.keep.append(root)
        return self.storages[id(root)][0]

    def write(self, fh, data_pkl, prefix="archive"):
        """The zip file, in torch's member order, into the binary file `fh`."""
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as archive:
            _write(archive, f"{prefix}/data.pkl", [data_pkl])
            _write(archive, f"{prefix}/.format_version", [b"1"])
            _write(archive, f"{prefix}/.storage_alignment", [str(ALIGN).encode()])
            _write(archive, f"{prefix}/byteorder", [sys.byteorder.encode()])
            for key, host in self.storages.values():
                view = bytes_view(host)
                chunks = [view[i : i + CHUNK] for i in range(0, len(view), CHUNK)]
                _write(archive, f"{prefix}/data/{key}", chunks, aligned=True)
            _write(archive, f"{prefix}/version", [b"3\n"])


def _write(archive, name, chunks, aligned=False):
    """One stored member; `aligned` pads its local header (an extra field) so its data starts at 64 bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = sum(len(c) for c in chunks)
    zip64 = info.file_size > 0x7FFFFFFF
    if aligned and not zip64:
        start = archive.start_dir + 30 + len(name.encode()) + 4  # local header, name, extra field header
        info.extra = b"FB" + struct.pack("<H", -start % ALIGN) + b"Z" * (-start % ALIGN)
    with archive.open(info, "w", force_zip64=zip64) as member:
        for chunk in chunks:
            member.write(chunk)
