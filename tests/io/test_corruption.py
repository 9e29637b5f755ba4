"""dg.load on damaged and hostile files: truncated, bit-flipped, wrong version, foreign, forged, fuzzed.

The contract: a FileFormatError naming the file and what is wrong, or (for damage that only touches
padding) exactly the data that was saved; never another exception, a hang or a huge allocation.
"""

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distgraph as dg
from distgraph.errors import DeviceError, FileFormatError
from distgraph.io import FORMAT_VERSION, MAGIC, MAX_DEPTH
from distgraph.io.layout import HEADER
from tests.io._files import assemble, equal, forge_records, split, version_bytes

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LONG_FUZZ = settings(FUZZ, max_examples=1000)  # ~3 s: the byte-level fuzz is the one that finds surprises


@pytest.fixture
def good(tmp_path):
    """A small checkpoint: (path, its bytes, what it holds)."""
    dg.manual_seed(0)
    obj = {"model": {"fc.weight": dg.randn(4, 3), "fc.bias": dg.zeros(4)}, "step": 5, "names": ("a", "b")}
    path = tmp_path / "checkpoint.dg"
    dg.save(obj, path)
    return path, path.read_bytes(), obj


def load_bytes(path, data):
    path.write_bytes(data)
    return dg.load(path)


def test_truncation_at_every_byte_is_reported_as_truncated(good):
    path, data, _ = good
    for cut in range(len(data)):
        with pytest.raises(FileFormatError, match=r"checkpoint\.dg: .*(truncated|too short)"):
            load_bytes(path, data[:cut])


def test_a_bit_flip_anywhere_but_padding_is_an_error_naming_the_file(good):
    path, data, obj = good
    tree, region = split(data)
    data_start = len(data) - len(region)
    # fc.weight (48 bytes) at offset 0, fc.bias at offset 64: the bytes no checksum covers are padding
    padding = set(range(HEADER.size + len(tree), data_start)) | set(range(data_start + 48, data_start + 64))
    unnoticed = set()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        try:
            loaded = load_bytes(path, bytes(bad))
        except FileFormatError as exc:
            assert str(exc).startswith(str(path))
            continue
        assert equal(loaded, obj)
        unnoticed.add(pos)
    assert unnoticed == padding


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (0, "not a distgraph file \\(bad magic"),
        (8, "format version .* is not supported"),
        (12, "truncated|checksum mismatch in the structure"),
        (20, "checksum mismatch in the structure"),
        (HEADER.size + 3, "checksum mismatch in the structure"),
    ],
)
def test_flips_in_each_header_field_and_the_tree_say_which(good, where, message):
    path, data, _ = good
    bad = bytearray(data)
    bad[where] ^= 0x40
    with pytest.raises(FileFormatError, match=message):
        load_bytes(path, bytes(bad))


def test_a_flip_in_tensor_data_names_the_tensor(good):
    path, data, _ = good
    _, region = split(data)
    first = len(data) - len(region)  # fc.weight is saved first, at offset 0 of the data region
    bad = bytearray(data)
    bad[first + 5] ^= 1
    with pytest.raises(FileFormatError, match=r"checkpoint\.dg: tensor 'model\.fc\.weight' checksum mismatch"):
        load_bytes(path, bytes(bad))
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(FileFormatError, match="tensor 'model.fc.bias' checksum mismatch"):
        load_bytes(path, bytes(bad))


def test_wrong_version_and_foreign_files_are_refused(good, tmp_path):
    path, data, _ = good
    with pytest.raises(FileFormatError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_bytes(path, MAGIC + version_bytes(FORMAT_VERSION + 1) + data[12:])
    foreign = {
        "pickle": b"\x80\x04\x95" + data[3:],
        "empty": b"",
        "zip": b"PK\x03\x04" + bytes(100),
        "text": b"model:\n  fc: 1\n" * 10,
        "raw msgpack": msgpack.packb({"weight": [1.0, 2.0]}) + bytes(30),
    }
    for kind, content in foreign.items():
        with pytest.raises(FileFormatError, match="not a distgraph file"):
            load_bytes(tmp_path / f"{kind}.bin", content)
    with pytest.raises(FileFormatError, match="no such file"):
        dg.load(tmp_path / "missing.dg")
    with pytest.raises(FileNotFoundError, match="missing.dg: no such file"):  # caught as torch.load's is
        dg.load(tmp_path / "missing.dg")
    with pytest.raises(FileFormatError, match="is a folder, not a file saved by dg.save"):
        dg.load(tmp_path)
    with pytest.raises(FileFormatError, match="is a folder; give the path of a file"):
        dg.save({"w": np.zeros(2)}, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temporary left beside it


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {**m, "shape": [2**30, 2**20], "nbytes": 2**52}, "needs .* bytes.*data has"),
        (lambda m: {**m, "shape": [2**62, 2**62]}, "corrupt shape"),
        (lambda m: {**m, "shape": [1] * 100}, "corrupt shape"),
        (lambda m: {**m, "shape": [0, 2**47, 2**47], "nbytes": 0}, "corrupt shape"),  # empty, yet too big
        (lambda m: {**m, "nbytes": m["nbytes"] + 4}, "cannot have"),
        (lambda m: {**m, "offset": -64}, "corrupt offset"),
        (lambda m: {**m, "offset": 0}, "corrupt offset"),  # two tensors over the same bytes
        (lambda m: {**m, "dtype": "O"}, "unsupported dtype 'O'"),
        (lambda m: {**m, "dtype": "V8"}, "unsupported dtype"),
        (lambda m: {**m, "order": "?"}, "byte order"),
        (lambda m: {**m, "crc": m["crc"] ^ 1}, "checksum mismatch"),
        (lambda m: {**m, "device": "cuda:x"}, "corrupt device"),
        (lambda m: {**m, "device": None}, "corrupt device"),
        (lambda m: {**m, "dtype": "i8", "shape": [m["nbytes"] // 8], "requires_grad": True}, "only floating"),
        (lambda m: [m], "corrupt record"),
    ],
)
def test_forged_records_with_valid_checksums_are_refused_before_allocating(good, change, message):
    """What an attacker controls: the structure (checksum recomputed) lying about the data."""
    path, data, _ = good
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=message):
            load_bytes(path, forge_records(data, change))
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_many_records_over_one_region_cannot_amplify_allocation(tmp_path):
    """1000 records all naming the same 1 MB would be 1 GB if believed: only the first is read."""
    path = tmp_path / "amplify.dg"
    dg.save({"w": np.zeros(1 << 17)}, path)  # 1 MB
    tree, region = split(path.read_bytes())
    record = msgpack.unpackb(tree)["w"]
    forged = msgpack.packb([record] * 1000, use_bin_type=True)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=r"tensor '\[1\]': corrupt offset"):
            load_bytes(path, assemble(forged, region))
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()


def deep(levels, wrap):
    node = None
    for _ in range(levels):
        node = wrap(node)
    return msgpack.packb(node, use_bin_type=True)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (deep(MAX_DEPTH + 10, lambda n: [n]), "nested deeper than"),
        pytest.param(b"\x91" * 100_000 + b"\xc0", "corrupt structure", id="past msgpack's stack limit"),
        (deep(MAX_DEPTH + 10, lambda n: msgpack.ExtType(3, msgpack.packb([n]))), "nested deeper than"),
        (b"\xdd\xff\xff\xff\xff", "corrupt structure"),  # array of 4 billion items in 5 bytes
        (b"\xdf\xff\xff\xff\xff", "corrupt structure"),  # map of 4 billion pairs
        (b"\xdb\xff\xff\xff\xff", "corrupt structure"),  # str of 4 GB
        (b"\xc1", "corrupt structure"),  # never-used msgpack byte
        (msgpack.packb([1]) + b"\x01", "corrupt structure"),  # trailing bytes
        (msgpack.packb(msgpack.ExtType(99, b"\xc0")), "corrupt record \\(type 99\\)"),
        (msgpack.packb(msgpack.ExtType(3, b"\x01")), "corrupt record \\(type 3\\)"),  # tuple of a non-list
        (msgpack.packb(msgpack.ExtType(4, msgpack.packb(["f8", b"12"]))), "corrupt record"),  # scalar, 2 bytes
        (msgpack.packb(msgpack.ExtType(5, msgpack.packb([1, "x"]))), "corrupt record"),
        (b"\xd6\xff\x00\x00\x00\x00", "unexpected Timestamp"),
        (msgpack.packb({msgpack.ExtType(3, msgpack.packb([[1]])): 1}), "unhashable"),
    ],
)
def test_forged_structures_are_refused(tmp_path, tree, message):
    with pytest.raises(FileFormatError, match=message):
        load_bytes(tmp_path / "forged.dg", assemble(tree, b""))


def test_a_forged_structure_length_is_refused(good):
    path, data, _ = good
    for length in (2**60, 2**64 - 1, len(data)):
        with pytest.raises(FileFormatError, match="truncated"):
            load_bytes(path, data[:12] + length.to_bytes(8, "little") + data[20:])


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]), st.floats(0, 1), st.binary(min_size=1, max_size=8)
    ),
    min_size=1,
    max_size=4,
)


@given(MUTATIONS)
@LONG_FUZZ
def test_fuzz_mutated_files_load_exactly_or_raise_file_format_error(good, mutations):
    path, data, obj = good
    buf = bytearray(data)
    for kind, where, payload in mutations:
        pos = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << (payload[0] % 8)
        elif kind == "set" and buf:
            buf[pos] = payload[0]
        elif kind == "cut":
            del buf[pos:]
        elif kind == "delete":
            del buf[pos : pos + len(payload)]
        else:
            buf[pos:pos] = payload
    try:
        loaded = load_bytes(path.with_name("mutated.dg"), bytes(buf))
    except FileFormatError as exc:
        assert "mutated.dg" in str(exc)
        return
    assert equal(loaded, obj), "a mutated file loaded as different data"


INTS = st.integers(-(2**63), 2**64 - 1)  # what msgpack can hold
VALUES = st.none() | st.booleans() | INTS | st.floats() | st.text(max_size=4) | st.binary(max_size=4)
VALUES = VALUES | st.lists(INTS, max_size=3)


@given(st.sampled_from(["dtype", "order", "shape", "offset", "nbytes", "crc", "device", "requires_grad"]), VALUES)
@FUZZ
def test_fuzz_forged_record_fields_raise_only_distgraph_errors(good, field, value):
    """Structure-aware fuzz: one record field replaced by an arbitrary value, checksums kept valid.

    A forger can write any valid file, so a load may succeed with other values ("i4" for "f4"), but
    it holds exactly the saved bytes, or fails with a FileFormatError (DeviceError for a cuda device).
    """
    path, data, obj = good
    forged = forge_records(data, lambda meta: {**meta, field: value})
    try:
        loaded = load_bytes(path.with_name("forged.dg"), forged)
    except (FileFormatError, DeviceError):
        return
    assert list(loaded) == list(obj) and loaded["step"] == 5
    for name, saved in obj["model"].items():
        assert loaded["model"][name].array.nbytes == saved.array.nbytes
