"""dg.save / dg.load: a msgpack container that never runs code and never returns wrong data.

Layout of a file:

    header   magic b"\\x89DGRAPH\\n" · format version (u32) · tree length (u64) · tree crc32 (u32)
    tree     msgpack: the saved object. Tensors, arrays, tuples, OrderedDicts and numpy scalars are ExtType
             records; a tensor/array record is {dtype, order, shape, offset, nbytes, crc, device[, requires_grad]
             [, view]}, or {data_of, device[, view][, requires_grad]} for one on an earlier record's bytes
    data     each array's raw bytes at its offset (64-byte aligned, in tree order), written straight
             from the array's buffer and read straight into a preallocated array (one copy in memory)

Saving and loading walk the object with the same depth-first order and the same rules (`Writer.encode` and
`Reader.decode` mirror each other), so whatever `save` accepts, `load` gives back: dict order,
tuples vs lists, dtypes (bfloat16 too when ml_dtypes is imported), requires_grad and byte order.
As torch.load: an nn.Parameter comes back a Parameter (a "parameter" flag in its record), an OrderedDict
(a state_dict) an OrderedDict (EXT_ORDERED_DICT), and sharing comes back shared — a tensor or array met
twice is stored once and later met as a reference (EXT_REF, format version 2), a tensor on an array an
earlier tensor holds (tied weights, t and t.detach()) as a record pointing at that tensor's data
("data_of"), and views of one storage (a slice and its base, parameters in one flat buffer) as records
holding the part of the storage they read once, each with its offset and strides there ("view", version
3: autograd/storage.py finds a view's storage, for the torch-format writer too), so they load back views
of one array with their strides. A file is written with the lowest version that holds it.

Trust model: a file is data, never code (no pickle). Loading validates before it allocates: the tree
is bounded by the file size (msgpack's max_*_len), nesting by MAX_DEPTH, each tensor's dtype by an
allow-list, its shape × itemsize against its byte count, its bytes against the data region and a view
against the storage it reads (a view allocates nothing), with
tensors laid out in increasing, non-overlapping order, so a forged header can never make `load`
allocate more than the file holds. Every checksum is checked (but under `load(f, mmap=True)`, whose arrays are
views of the file's pages: mapped.py). Any problem is a FileFormatError naming
the file and the tensor. Writes go to a temporary file renamed into place (`os.replace`), so a crash
never leaves a half-written checkpoint under the final name.

Torch files: `load` also reads what torch.save wrote, zip or legacy, without torch and as
torch.load(weights_only=True) (an allow-list unpickler: torch_format); `save(obj, f, format="torch")`
writes a zip file torch.load(weights_only=True) reads (torch_writer).
"""

from distgraph.io.layout import FORMAT_VERSION, MAGIC, MAX_DEPTH
from distgraph.io.reader import load, load_as
from distgraph.io.writer import save

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_DEPTH", "load", "load_as", "save"]
