"""Reading the files torch.save writes, without importing torch: `dg.load` hands them here.

Two layouts exist, and `is_torch_file` tells them from distgraph's own by their first bytes:

    zip     (torch >= 1.6, the default)  PK\\x03\\x04 · <prefix>/data.pkl (the object, pickle protocol 2)
            · <prefix>/data/<key> (each storage's raw bytes) · <prefix>/byteorder ("little" / "big")
            · <prefix>/version
    legacy  (`_use_new_zipfile_serialization=False`)  pickles one after another: a magic number, the
            protocol version 1001, sys_info ({"little_endian": ...}), the object, the list of storage
            keys; then, per key, its element count (int64 little-endian) and its raw bytes

In both, a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
hooks)` (v3 adds a dtype, for uint16/32/64) over a storage named by a persistent id
`("storage", torch.<X>Storage, key, location, numel)`; an nn.Parameter wraps one with
`_rebuild_parameter[_with_state]`.

Trust model, as torch.load(weights_only=True; the allow-list and placeholders are torch_pickle.py's): pickle
runs code only through the globals it names, so `find_class` hands out stand-ins for an allow-list — the tensor and Parameter rebuild functions, the
storage and dtype names, collections.OrderedDict, torch.Size (a tuple) and _codecs.encode (how protocol 2
stores bytes) — and any other global is a FileFormatError naming the file and the global. The stand-ins
build inert placeholders; once the pickle is read, one walk checks that the tree holds only plain
containers, scalars and placeholders, and turns each placeholder into a distgraph Tensor (a Parameter for
an nn.Parameter), naming the key of any bad one. A storage is allocated only after its size is checked
against the bytes the file holds; each tensor's offset, shape and strides are checked against its
storage; zip members are checksummed by zipfile.

Sharing as torch: every tensor is a view (offset, strides) of its storage's one array, so two tensors
on one storage share memory, and an object met twice in the pickle is one object. A storage moves to
its device once (map_location as for distgraph files) and its tensors are views of the moved array.

Dtypes: float16/32/64, int8/16/32/64, uint8 and bool load as themselves; bfloat16 loads as float32
(exactly: its bits are float32's upper half) with a warning, as distgraph has no bfloat16 tensors;
complex and unsigned 16/32/64-bit tensors are a FileFormatError naming the key and the dtype.
Big-endian files (byteorder "big", or sys_info little_endian False) are converted to native order.
"""

import io
import math
import pickle
import warnings
import zipfile
from collections import Counter, OrderedDict

import numpy as np

from distgraph import dtypes
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device_of_array, to_device
from distgraph.errors import FileFormatError
from distgraph.io import mapped
from distgraph.io.layout import MAX_DEPTH, READ_CHUNK, join, show
from distgraph.io.torch_pickle import (
    ITEMSIZE,
    LOADABLE,
    _Marker,
    _Storage,
    _TensorRef,
    _Unpickler,
)
from distgraph.nn.parameter import Parameter

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


# torch.<X>Storage -> numpy dtype name of its elements
def is_torch_file(head):
    """True when a file's first bytes are a zip archive or a pickle (what torch.save writes)."""
    return head.startswith(ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


class TorchReader:
    """Reads one torch file: the pickle into placeholders, the storages, then the tree into Tensors."""

    def __init__(self, name, place):
        self.name, self.place = name, place  # place(host array, location, what) -> Device or array
        self.storages = {}  # key -> _Storage
        self.done = {}  # id(container or placeholder) -> what it became
        self.bfloat16 = False  # whether a bfloat16 tensor was loaded as float32 (warned once, by `load`)

    def fail(self, what):
        raise FileFormatError(f"{self.name}: {what}")

    def unpickle(self, fh, size, damaged="corrupt pickle"):
        """One pickle from `fh`, reading at most `size` bytes (a forged frame length allocates nothing)."""
        try:
            return _Unpickler(_Bounded(fh, size), self.name, self.storage).load()
        except FileFormatError:
            raise
        except RecursionError:
            self.fail(f"{damaged} (nested too deeply)")
        except Exception as exc:  # a damaged pickle fails in any builtin's way: all are a damaged file
            self.fail(f"{damaged} ({type(exc).__name__}: {exc})")

    def storage(self, pid):
        """The storage a persistent id names; one object per key, as torch shares it."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        kind, key, location, numel = pid[1:5]
        if not (isinstance(kind, _Marker) and kind.name.endswith("Storage")):
            raise pickle.UnpicklingError(f"storage of type {kind!r:.80}")
        if len(pid) == 6 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views of torch < 0.4 files are not supported")
        if not (isinstance(key, str) and isinstance(location, str) and type(numel) is int and numel >= 0):
            raise pickle.UnpicklingError(f"corrupt storage id {pid!r:.200}")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, kind.dtype, location, numel)
        elif (known.dtype, known.numel) != (kind.dtype, numel):
            raise pickle.UnpicklingError(f"storage {key!r} named with two types or sizes")
        return known

    def build(self, node, path="", depth=0):
        """The loaded object: placeholders made Tensors, containers checked (and kept, in place)."""
        if depth > MAX_DEPTH:
            self.fail(f"structure nested deeper than {MAX_DEPTH} levels {show(path)}")
        if node is None or type(node) in (bool, int, float, complex, str, bytes, bytearray):
            return node
        if type(node) is _Marker and not node.name.endswith("Storage"):  # a dtype value (torch.float32)
            found = getattr(dtypes, "bool_" if node.dtype == "bool" else node.dtype, None)
            if found is None:
                self.fail(f"the dtype torch.{node.name} {show(path)} has no distgraph dtype")
            return found
        if id(node) in self.done:
            return self.done[id(node)]
        kind = type(node)
        if kind is _TensorRef:
            out = self.done[id(node)] = self.tensor(node, path)
        elif kind is list:
            self.done[id(node)] = node
            node[:] = [self.build(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
            out = node
        elif kind in (dict, OrderedDict, Counter):
            self.done[id(node)] = node
            for k in list(node):
                if not _plain(k):
                    self.fail(f"unexpected dict key of type {type(k).__name__} {show(path)}")
                node[k] = self.build(node[k], join(path, k), depth + 1)
            for attr, v in vars(node).items() if kind is OrderedDict else ():  # state_dict()._metadata
                setattr(node, attr, self.build(v, join(path, attr), depth + 1))
            out = node
        elif kind is tuple:
            out = self.done[id(node)] = tuple(self.build(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
        elif kind is Size and all(type(v) is int for v in node):  # torch.Size((2, 3))
            out = node
        elif kind in (set, frozenset) and all(_plain(v) for v in node):
            out = node
        else:
            self.fail(f"unexpected object of type {kind.__name__} {show(path)}")
        return out

    def tensor(self, ref, path):
        """A Tensor viewing its storage's (placed) array; a Parameter when an nn.Parameter was saved."""
        what = f"tensor {path!r}" if path else "the top-level tensor"
        if ref.dtype not in LOADABLE:
            self.fail(f"{what} has dtype {ref.dtype}, which distgraph cannot load ({', '.join(LOADABLE)} can)")
        offset, shape, strides = ref.offset, ref.shape, ref.strides
        ok = isinstance(shape, tuple) and isinstance(strides, tuple) and len(shape) == len(strides) <= 32
        ok = ok and all(type(v) is int and v >= 0 for v in (offset, *shape, *strides))
        if not ok:
            self.fail(f"{what}: corrupt size {shape!r:.80}, stride {strides!r:.80} or offset {offset!r:.40}")
        arr, dev = self.placed(ref.storage, ref.dtype, what)
        numel = arr.shape[0]
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides)) if math.prod(shape) else offset - 1
        if last >= numel:
            self.fail(f"{what}: size {shape}, stride {strides} at offset {offset} run past its storage of {numel}")
        size = arr.dtype.itemsize
        view = dev.xp.lib.stride_tricks.as_strided(arr[offset:], shape, tuple(s * size for s in strides))
        grad = ref.requires_grad is True
        if grad and view.dtype.kind != "f":
            self.fail(f"{what}: requires_grad on a tensor of dtype {view.dtype} (only float tensors can)")
        t = Tensor(view, device=dev)
        if ref.parameter:
            return Parameter(t, requires_grad=grad)
        return t.requires_grad_(True) if grad else t

    def placed(self, storage, dtype, what):
        """The storage's array, read as `dtype`, native order, on its target device (done once per storage)."""
        if dtype in storage.placed:
            return storage.placed[dtype]
        host = storage.array
        if dtype != storage.dtype:  # _rebuild_tensor_v3: an untyped (byte) storage seen as `dtype`
            if host.nbytes % ITEMSIZE[dtype]:
                self.fail(f"{what}: storage of {host.nbytes} bytes is not a whole number of {dtype}")
            host = host.view("u2" if dtype == "bfloat16" else dtype)
        if dtype == "bfloat16":  # exact: a bfloat16 is the upper 16 bits of the float32 of equal value
            host = (host.astype(np.uint32) << 16).view(np.float32)
            self.bfloat16 = True
        target = self.place(host, storage.location, what)
        if isinstance(target, np.ndarray) or hasattr(target, "__cuda_array_interface__"):  # torch-style callable
            placed = (target, device_of_array(target))
        else:
            placed = (to_device(host, target), target)
        storage.placed[dtype] = placed
        return placed

    def _checked_dtype(self, storage, nbytes):
        dt = np.dtype("u2" if storage.dtype == "bfloat16" else storage.dtype)
        if nbytes != storage.numel * dt.itemsize:
            self.fail(f"storage {storage.key!r}: {nbytes} bytes stored for {storage.numel} {storage.dtype} elements")
        return dt

    def map(self, storage, pages, offset, nbytes, big_endian):
        """`storage.array` as a copy-on-write view of `nbytes` mapped bytes at `offset` (mmap=True)."""
        dt = self._checked_dtype(storage, nbytes)
        arr = mapped.view(pages, dt.newbyteorder(">" if big_endian else "<"), (storage.numel,), offset)
        storage.array = arr if arr.dtype.isnative else arr.astype(dt)

    def read(self, storage, fh, nbytes, big_endian):
        """Fill `storage.array` from `nbytes` bytes of `fh` (already checked to be in the file)."""
        dt = self._checked_dtype(storage, nbytes)
        arr = np.empty(storage.numel, dt)
        view = memoryview(arr.view(np.uint8)) if nbytes else memoryview(b"")
        got = 0
        while got < nbytes:
            n = fh.readinto(view[got : got + READ_CHUNK])  # chunks: zipfile's readinto reads via a copy
            if not n:
                self.fail(f"file is truncated inside storage {storage.key!r}")
            got += n
        if big_endian and dt.itemsize > 1:
            arr.byteswap(inplace=True)
        storage.array = arr


class _Bounded:
    """A file that reads at most `size` more bytes: what pickle's read(n) asks for is capped by the file."""

    def __init__(self, fh, size):
        self.fh, self.left = fh, size

    def read(self, n=-1):
        data = self.fh.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self):
        data = self.fh.readline(self.left)
        self.left -= len(data)
        return data


def _plain(key):
    return key is None or type(key) in (bool, int, float, str, bytes) or (type(key) is tuple and all(map(_plain, key)))


def load(fh, name, place, mmap=False):
    """Load the torch file starting at `fh`'s position: zip or legacy, sniffed from its first bytes. `mmap`:
    the zip's stored storages as copy-on-write views of the file (io/mapped.py); the legacy format has none."""
    base = fh.tell()
    head = fh.read(4)
    fh.seek(base)
    reader = TorchReader(name, place)
    if head != ZIP_MAGIC and mmap:
        reader.fail(
            "mmap=True reads torch's zip format only, as torch.load (this file is "
            + ("in its legacy format)" if _legacy_magic(fh, reader) else "a pickle, not a torch file)")
        )
    pages = mapped.map_file(fh, name) if mmap else None
    obj = _load_zip(fh, reader, pages) if head == ZIP_MAGIC else _load_legacy(fh, reader)
    if reader.bfloat16:  # stacklevel: the caller of dg.load (via reader._load_any, _load_tree, load)
        warnings.warn(f"{name}: bfloat16 tensors loaded as float32 (distgraph has no bfloat16 tensors)", stacklevel=5)
    return obj


def _legacy_magic(fh, reader):
    """Whether the pickle at `fh` (left where it was) starts with torch's legacy magic number."""
    at = fh.tell()
    size = fh.seek(0, 2) - at
    fh.seek(at)
    try:
        return reader.unpickle(fh, size, "corrupt pickle") == LEGACY_MAGIC
    except FileFormatError:
        return False
    finally:
        fh.seek(at)


def _load_zip(fh, reader, pages=None):
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reader.fail(  # it starts as a zip (torch's format): its end, which holds the archive's index, is missing
            f"not a distgraph file, nor a valid torch zip archive: it starts as one but is truncated or damaged ({exc})"
        )
    size = fh.seek(0, 2)
    with archive:
        names = [i.filename for i in archive.infolist()]
        pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            reader.fail(
                "a TorchScript archive (torch.jit.save), not a checkpoint: it holds a compiled program, which "
                "distgraph does not run; save the model's state_dict() with torch.save and load that"
            )
        if len(pkl) != 1:
            reader.fail("not a distgraph file: a zip archive, but not a torch one (no <name>/data.pkl in it)")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            big = _member(archive, prefix + "byteorder", reader, default=b"little") == b"big"
            info = _info(archive, pkl[0], reader, size)
            tree = reader.unpickle(io.BytesIO(archive.read(info)), info.file_size)
            for key, storage in reader.storages.items():
                info = _info(archive, f"{prefix}data/{key}", reader, size)
                if pages is not None and info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
                    reader.map(storage, pages, mapped.zip_member_offset(pages, info, reader.name), info.file_size, big)
                    continue
                with archive.open(info) as member:
                    reader.read(storage, member, info.file_size, big)
            return reader.build(tree)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a member's checksum, a cut archive
            reader.fail(f"corrupt torch zip archive ({exc})")


def _info(archive, name, reader, size):
    """A member's entry, its sizes checked against the archive's before anything is allocated."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        reader.fail(f"corrupt torch zip archive: missing record {name}")
    stored = info.compress_type == zipfile.ZIP_STORED and info.file_size == info.compress_size
    deflated = info.compress_type == zipfile.ZIP_DEFLATED and info.file_size <= 1100 * info.compress_size
    if not (stored or deflated) or info.compress_size > size:
        reader.fail(f"corrupt torch zip archive: record {name} claims {info.file_size} bytes in a {size}-byte file")
    return info


def _member(archive, name, reader, default):
    return archive.read(name).strip() if name in archive.NameToInfo else default


def _load_legacy(fh, reader):
    """The pre-1.6 layout: magic, protocol, sys_info, object pickles, storage keys, then each storage."""
    start = fh.tell()
    size = fh.seek(0, 2) - start
    fh.seek(start)

    def unpickle(damaged="corrupt pickle"):
        return reader.unpickle(fh, size - (fh.tell() - start), damaged)

    foreign = "not a distgraph file, nor a torch one: a pickle without torch's magic number"
    if unpickle(foreign) != LEGACY_MAGIC:
        reader.fail(f"{foreign} (dg.load reads no other pickles)")
    if unpickle() != LEGACY_PROTOCOL:
        reader.fail(f"torch legacy format: unsupported protocol version (expected {LEGACY_PROTOCOL})")
    info = unpickle()
    if not (isinstance(info, dict) and isinstance(info.get("little_endian"), bool)):
        reader.fail("torch legacy format: corrupt sys_info record")
    tree = unpickle()
    keys = unpickle()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        reader.fail("torch legacy format: corrupt list of storage keys")
    for key in keys:
        storage = reader.storages.get(key)
        if storage is None:
            reader.fail(f"torch legacy format: storage {key!r} listed but used by no tensor")
        count = fh.read(8)
        if len(count) < 8:
            reader.fail(f"file is truncated before storage {key!r}")
        numel = int.from_bytes(count, "little")
        itemsize = ITEMSIZE[storage.dtype]
        if numel != storage.numel:
            reader.fail(f"storage {key!r}: {numel} elements stored, {storage.numel} expected")
        if fh.tell() - start + numel * itemsize > size:
            reader.fail(
                f"file is truncated inside storage {key!r}: its {numel} elements need {numel * itemsize} bytes from "
                f"byte {fh.tell() - start}, and the file has {size}"
            )
        reader.read(storage, fh, numel * itemsize, big_endian=not info["little_endian"])
    missing = set(reader.storages) - set(keys)
    if missing:
        reader.fail(f"torch legacy format: no data for storage {sorted(missing)[0]!r}")
    return reader.build(tree)
