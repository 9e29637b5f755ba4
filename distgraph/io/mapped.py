"""`dg.load(f, mmap=True)`, as torch.load's: arrays are copy-on-write views of the file's pages instead of copies
read into memory — a checkpoint larger than memory loads, and only the pages a program touches are read.

The file is mapped once, privately (`mmap.ACCESS_COPY`): an array written to changes this process's pages, never
the file. The bounds of every array are checked against the file as without mmap, but its checksum is not: that
would read every byte, which is what mapping avoids (torch's format has none at all). A torch zip file maps its
stored (uncompressed) members, as torch.load(mmap=True) reads only zip files; its legacy format cannot be mapped.
As with torch's, the arrays see the file as it is when they are read: a file rewritten in place meanwhile changes
them, and one cut shorter ends the process (SIGBUS) — `dg.save` never does either (it writes a new file and
renames it into place).
"""

import mmap
import struct

import numpy as np

from distgraph.errors import FileFormatError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip member's local header: signature, ..., name and extra lengths


def map_file(fh, name):
    """The whole file behind `fh`, mapped copy-on-write (a FileFormatError for a stream that is no file)."""
    try:
        fileno = fh.fileno()
    except (AttributeError, OSError):
        raise FileFormatError(f"{name}: mmap=True needs a file on disk, not a {type(fh).__name__}") from None
    try:
        return mmap.mmap(fileno, 0, access=mmap.ACCESS_COPY)
    except (ValueError, OSError) as exc:  # an empty file, a pipe
        raise FileFormatError(f"{name}: cannot be mapped ({exc})") from None


def view(mapped, dtype, shape, offset):
    """`shape` elements of `dtype` at byte `offset` of the mapping (bounds checked by the caller): a writable,
    copy-on-write array; no bytes are read until it is."""
    count = int(np.prod(shape))
    if count == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(mapped, dtype, count, offset).reshape(shape)


def zip_member_offset(mapped, info, name):
    """Where a stored zip member's bytes start in the mapped file (after its local header)."""
    start = info.header_offset
    if start + _LOCAL_HEADER.size > len(mapped):
        raise FileFormatError(f"{name}: corrupt torch zip archive: record {info.filename} starts past the end")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(mapped, start)
    offset = start + _LOCAL_HEADER.size + name_len + extra_len
    if signature != b"PK\x03\x04" or offset + info.file_size > len(mapped):
        raise FileFormatError(f"{name}: corrupt torch zip archive: record {info.filename} lies outside the file")
    return offset
