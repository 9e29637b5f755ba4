"""Helpers for io tests: compare loaded trees exactly, and rewrite a saved file's structure consistently."""

import struct
import zlib

import msgpack
import numpy as np

import distgraph as dg
from distgraph.io.layout import ALIGN, FORMAT_VERSION, HEADER, MAGIC


def equal(a, b):
    """Same types, dtypes, shapes, flags and bits all the way down (dict order and tuple-ness included)."""
    if isinstance(a, dg.Tensor):
        return (
            isinstance(b, dg.Tensor)
            and a.dtype == b.dtype
            and a.requires_grad == b.requires_grad
            and a.device == b.device
            and equal(np.asarray(a.detach().numpy()), np.asarray(b.detach().numpy()))
        )
    if isinstance(a, np.ndarray):
        return (
            type(b) is np.ndarray
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == np.ascontiguousarray(b).tobytes()
        )
    if isinstance(a, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


def split(data):
    """(tree bytes, data region bytes) of a saved file."""
    _, _, tree_len, _ = HEADER.unpack(data[: HEADER.size])
    start = HEADER.size + tree_len
    return data[HEADER.size : start], data[start + (-start % ALIGN) :]


def assemble(tree, data_region, version=FORMAT_VERSION, crc=None):
    """A file with a given structure and data region, its header and checksum made consistent."""
    head = HEADER.pack(MAGIC, version, len(tree), zlib.crc32(tree) if crc is None else crc)
    pad = -(len(head) + len(tree)) % ALIGN
    return head + tree + b"\0" * pad + data_region


def forge_records(data, change):
    """Rewrite every tensor/array record of a file with `change(meta) -> meta`, keeping checksums valid.

    This is what an attacker can do: a structure that passes the checksum but lies about the data.
    """

    def walk(node):
        if isinstance(node, msgpack.ExtType) and node.code in (1, 2):
            meta = change(msgpack.unpackb(node.data))
            return msgpack.ExtType(node.code, msgpack.packb(meta, use_bin_type=True))
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    tree, region = split(data)
    return assemble(msgpack.packb(walk(msgpack.unpackb(tree, strict_map_key=False)), use_bin_type=True), region)


def version_bytes(version):
    return struct.pack("<I", version)
