"""dg.save / dg.load: round trips from disk, corruption of every kind, and a mutation fuzz."""

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distgraph as dg
from distgraph.errors import DeviceError, FileFormatError
from distgraph.io import FORMAT_VERSION, MAGIC

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


TENSOR_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"]


def equal(a, b):
    if isinstance(a, dg.Tensor):
        return (
            isinstance(b, dg.Tensor)
            and a.dtype == b.dtype
            and a.requires_grad == b.requires_grad
            and np.array_equal(a.detach().numpy(), b.detach().numpy())
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips(dtype, tmp_path):
    arr = (np.random.default_rng(0).standard_normal((3, 5)) * 50).astype(dtype)
    obj = {"a": arr, "empty": np.zeros((0, 4), dtype), "scalar": arr.reshape(-1)[0]}
    if dtype in TENSOR_DTYPES:
        obj["t"] = dg.tensor(arr)
    dg.save(obj, tmp_path / "x.dg")
    assert equal(dg.load(tmp_path / "x.dg"), obj)


def test_nested_structure_and_state_dict_round_trip(tmp_path):
    model = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    obj = {
        "model": model.state_dict(),
        "meta": {"epoch": 3, "lr": 0.1, "name": "run", "tags": ("a", 1, None, True), "raw": b"\x00\x01", 7: [1.5, -2]},
        "grad": dg.ones(2, requires_grad=True),
        "c": 1 + 2j,
        "big_endian": np.arange(6, dtype=">i4"),
        "strided": np.arange(20.0).reshape(4, 5)[:, ::2],
    }
    dg.save(obj, tmp_path / "ck.dg")
    back = dg.load(tmp_path / "ck.dg")
    assert list(back["model"]) == list(obj["model"])
    assert equal(back["meta"], obj["meta"]) and back["c"] == obj["c"]
    assert np.array_equal(back["big_endian"], obj["big_endian"]) and np.array_equal(back["strided"], obj["strided"])
    model2 = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    model2.load_state_dict(back["model"])
    assert all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.state_dict().values(), model2.state_dict().values())
    )


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.tuples(children, children)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=12,
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_nested_python_values_round_trip(tmp_path, value):
    dg.save({"v": value, "t": dg.arange(3)}, tmp_path / "h.dg")
    assert equal(dg.load(tmp_path / "h.dg")["v"], value)


def test_map_location_and_cuda_without_gpu(tmp_path):
    dg.save({"w": dg.ones(2)}, tmp_path / "m.dg")
    assert dg.load(tmp_path / "m.dg", map_location="cpu")["w"].device.type == "cpu"
    assert dg.load(tmp_path / "m.dg", map_location=lambda saved: "cpu")["w"].device.type == "cpu"
    if not dg.cuda_is_available():
        with pytest.raises(DeviceError, match="map_location"):
            dg.load(tmp_path / "m.dg", map_location="cuda")


def test_unsupported_object_is_refused_before_writing(tmp_path):
    with pytest.raises(FileFormatError, match="cannot save an object of type function"):
        dg.save({"f": lambda: 1}, tmp_path / "bad.dg")
    assert not os.path.exists(tmp_path / "bad.dg")


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "ck.dg"
    dg.save({"v": 1}, path)
    with pytest.raises(FileFormatError):
        dg.save({"v": object()}, path)
    assert dg.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ck.dg"]


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.dg"
    dg.save({"weight": dg.randn(16, 8), "step": 5, "names": ["a", "b"]}, path)
    return path


def test_truncated_everywhere_raises_file_format_error(good_file):
    data = good_file.read_bytes()
    for cut in sorted({0, 3, 10, 23, 24, 40, len(data) // 2, len(data) - 1}):
        good_file.write_bytes(data[:cut])
        with pytest.raises(FileFormatError, match="good.dg"):
            dg.load(good_file)


def test_bit_flips_in_header_tree_and_data_are_detected(good_file):
    data = bytearray(good_file.read_bytes())
    for pos in (30, 60, len(data) - 100, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        good_file.write_bytes(bytes(bad))
        with pytest.raises(FileFormatError, match="checksum mismatch|corrupt"):
            dg.load(good_file)


def test_wrong_magic_version_and_forged_lengths(good_file, tmp_path):
    data = good_file.read_bytes()
    (tmp_path / "pickle.dg").write_bytes(b"\x80\x04\x95" + data[3:])
    with pytest.raises(FileFormatError, match="not a distgraph file"):
        dg.load(tmp_path / "pickle.dg")
    good_file.write_bytes(MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + data[12:])
    with pytest.raises(FileFormatError, match="format version 2 is not supported"):
        dg.load(good_file)
    good_file.write_bytes(MAGIC + struct.pack("<IQ", FORMAT_VERSION, 2**60) + data[20:])
    with pytest.raises(FileFormatError, match="truncated"):
        dg.load(good_file)
    with pytest.raises(FileFormatError, match="no such file"):
        dg.load(tmp_path / "missing.dg")


def test_forged_tensor_shape_never_allocates(tmp_path):
    """A valid-checksum header claiming a huge tensor is refused before any allocation."""
    import zlib

    import msgpack

    from distgraph.io import _HEADER

    meta = {
        "dtype": "f8",
        "order": "<",
        "shape": [2**40, 2**20],
        "offset": 0,
        "nbytes": 2**63,
        "crc": 0,
        "device": "cpu",
    }
    tree = msgpack.packb({"x": msgpack.ExtType(2, msgpack.packb(meta))})
    (tmp_path / "forged.dg").write_bytes(_HEADER.pack(MAGIC, FORMAT_VERSION, len(tree), zlib.crc32(tree)) + tree)
    with pytest.raises(FileFormatError, match="cannot have|truncated"):
        dg.load(tmp_path / "forged.dg")


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_mutated_files_only_raise_file_format_error(good_file, data):
    original = good_file.read_bytes()
    expected = dg.load(good_file)
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = good_file.with_name("mut.dg")
    mutated.write_bytes(bytes(buf))
    try:
        loaded = dg.load(mutated)
    except FileFormatError:
        return
    assert equal(loaded, expected), "a mutated file loaded as different data"
