"""dg.save / dg.load round trips: every dtype, nested structures, map_location, file objects, atomic writes."""

import io
import os
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import distgraph as dg
from distgraph.errors import DeviceError, FileFormatError
from distgraph.io import MAX_DEPTH
from tests.io._files import equal, forge_records

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
DTYPES += ["float16", "float32", "float64", "complex64", "complex128"]
TENSOR_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def round_trip(obj, path, **load_kwargs):
    dg.save(obj, path)
    return dg.load(path, **load_kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_bit_exactly(dtype, tmp_path):
    arr = (np.random.default_rng(0).standard_normal((3, 5)) * 50).astype(dtype)
    if arr.dtype.kind in "fc":
        arr.reshape(-1)[:3] = [np.nan, np.inf, -0.0]
    obj = {"a": arr, "empty": np.zeros((0, 4), dtype), "scalar": arr.reshape(-1)[5], "zero_d": np.array(arr[0, 1])}
    if dtype in TENSOR_DTYPES:
        obj["t"] = dg.tensor(arr, requires_grad=dtype.startswith("float"))
    assert equal(round_trip(obj, tmp_path / "x.dg"), obj)


def test_bfloat16_round_trips_when_ml_dtypes_is_available(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arr = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)
    assert equal(round_trip({"b": arr}, tmp_path / "b.dg")["b"], arr)


def test_byte_order_and_strided_arrays_come_back_native_and_equal(tmp_path):
    big = np.arange(6, dtype=">i4")
    strided = np.arange(20.0).reshape(4, 5)[:, ::2]
    back = round_trip({"big": big, "strided": strided, "fortran": np.asfortranarray(strided)}, tmp_path / "o.dg")
    assert back["big"].dtype == np.dtype("int32") and np.array_equal(back["big"], big)
    assert np.array_equal(back["strided"], strided) and np.array_equal(back["fortran"], strided)


def test_state_dicts_tuples_and_ordered_dicts_keep_structure_and_order(tmp_path):
    model = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    obj = {
        "model": model.state_dict(),
        "order": OrderedDict([("z", 1), ("a", 2), ("m", 3)]),
        "meta": {"epoch": 3, "lr": 0.1, "tags": ("a", 1, None, True), "raw": b"\x00\x01", 7: [1.5, -2], (1, "k"): 0},
        "nested": ((), [()], ([], {"t": (dg.ones(2),)})),
        "c": 1 + 2j,
        "big_int": 2**64 - 1,
    }
    back = round_trip(obj, tmp_path / "ck.dg")
    assert list(back["order"]) == ["z", "a", "m"] and type(back["order"]) is OrderedDict  # as torch.load
    assert equal(back, obj)
    model2 = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    model2.load_state_dict(back["model"])
    assert all(equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_python_and_numpy_subclasses_are_saved_as_their_base_values(tmp_path):
    obj = {np.str_("key"): [np.str_("s"), np.bytes_(b"b"), bytearray(b"ba"), np.float64(1.5), np.bool_(True)]}
    back = round_trip(obj, tmp_path / "s.dg")
    assert type(next(iter(back))) is str and back["key"][:3] == ["s", b"b", b"ba"]
    assert equal(back["key"][3:], [np.float64(1.5), np.bool_(True)])


def test_requires_grad_is_kept_and_the_loaded_tensor_is_a_fresh_leaf(tmp_path):
    w = dg.randn(3, requires_grad=True)
    back = round_trip({"w": w, "y": (w * 2).detach()}, tmp_path / "g.dg")
    assert back["w"].requires_grad and back["w"].is_leaf and back["w"].grad is None
    assert not back["y"].requires_grad


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.complex_numbers(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    | hnp.arrays(st.sampled_from(["float32", "int64", "bool"]), st.integers(0, 5)).map(dg.from_numpy)
)
KEYS = st.text(max_size=5) | st.integers(-5, 5)
TREES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.tuples(children, children) | st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=16,
)


@given(TREES)
@FUZZ
def test_arbitrary_nested_trees_round_trip_exactly(tmp_path, value):
    assert equal(round_trip({"v": value}, tmp_path / "h.dg")["v"], value)


def test_file_objects_round_trip_and_need_seeking(tmp_path):
    buf = io.BytesIO()
    dg.save({"w": dg.arange(5)}, buf)
    buf.seek(0)
    assert equal(dg.load(buf), {"w": dg.arange(5)})
    with pytest.raises(FileFormatError, match="seekable"):
        dg.load(_Unseekable(buf.getvalue()))


def test_a_stream_is_read_from_its_position_and_left_after_the_record(tmp_path):
    """As torch.load: a record saved after other bytes loads from there, and records saved one after
    another into one file load back in turn."""
    path = tmp_path / "several.bin"
    with open(path, "wb") as f:
        f.write(b"my header")
        dg.save({"w": dg.arange(3)}, f)
        dg.save([1, "two"], f)
        dg.save({"b": dg.ones(2, 2, dtype=dg.float16)}, f)
    with open(path, "rb") as f:
        f.seek(len(b"my header"))
        assert equal(dg.load(f), {"w": dg.arange(3)})
        assert dg.load(f) == [1, "two"]
        assert equal(dg.load(f), {"b": dg.ones(2, 2, dtype=dg.float16)})
        assert f.read() == b""


def test_save_into_a_missing_folder_names_the_target_and_load_refuses_a_non_file(tmp_path):
    target = tmp_path / "no_such_folder" / "ck.dg"
    with pytest.raises(FileFormatError, match=f"dg.save: {target}: its folder .*no_such_folder does not exist"):
        dg.save({"w": dg.ones(2)}, target)
    with pytest.raises(FileFormatError, match="expected a path or a binary file object, got int"):
        dg.load(123)


class _Unseekable(io.RawIOBase):
    def __init__(self, data):
        self.inner = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self.inner.readinto(b)


def test_map_location_forms_send_tensors_where_asked(tmp_path):
    path = tmp_path / "m.dg"
    dg.save({"w": dg.ones(2), "a": np.ones(2)}, path)
    for loc in ("cpu", dg.device("cpu"), {"cpu": "cpu"}, lambda saved: "cpu", lambda storage, loc: storage):
        back = dg.load(path, map_location=loc)
        assert back["w"].device.type == "cpu" and equal(back["w"], dg.ones(2)) and equal(back["a"], np.ones(2))
    seen = []
    dg.load(path, map_location=lambda storage, loc: seen.append((type(storage), loc)) or storage)
    assert seen == [(np.ndarray, "cpu"), (np.ndarray, "cpu")]


def cuda_checkpoint(tmp_path):
    """A checkpoint as a GPU machine writes it (records say cuda:0), made without a GPU."""
    path = tmp_path / "gpu.dg"
    dg.save({"model": {"fc.weight": dg.randn(3, 2), "fc.bias": dg.zeros(3)}, "step": 7}, path)
    path.write_bytes(forge_records(path.read_bytes(), lambda meta: {**meta, "device": "cuda:0"}))
    return path


def test_cuda_checkpoint_loads_on_cpu_with_map_location(tmp_path):
    path = cuda_checkpoint(tmp_path)
    for loc in ("cpu", {"cuda:0": "cpu"}, lambda storage, loc: storage):
        back = dg.load(path, map_location=loc)
        assert back["step"] == 7 and back["model"]["fc.weight"].device.type == "cpu"
        assert back["model"]["fc.weight"].shape == (3, 2)


@pytest.mark.skipif(dg.cuda_is_available(), reason="checks the cpu-only machine's error")
def test_cuda_checkpoint_without_gpu_or_map_location_says_what_to_do(tmp_path):
    path = cuda_checkpoint(tmp_path)
    with pytest.raises(
        DeviceError, match=r"gpu\.dg: tensor 'model\.fc\.weight' was saved on cuda:0.*map_location='cpu'"
    ):
        dg.load(path)
    with pytest.raises(DeviceError, match="cannot be loaded on cuda"):
        dg.load(tmp_path / "gpu.dg", map_location="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not dg.cuda_is_available(), reason="needs cupy and a CUDA GPU")
def test_cuda_tensors_come_back_on_the_requested_device(tmp_path):
    device = dg.device("cuda")
    w = dg.randn(4, 3, device=device, requires_grad=True)
    back = round_trip({"w": w}, tmp_path / "c.dg")
    assert back["w"].device == device and back["w"].requires_grad
    assert equal(back["w"].to("cpu"), w.to("cpu"))
    assert dg.load(tmp_path / "c.dg", map_location="cpu")["w"].device.type == "cpu"
    cpu_saved = round_trip({"w": w.to("cpu")}, tmp_path / "h.dg", map_location=str(device))
    assert cpu_saved["w"].device == device


def test_unsupported_objects_are_refused_naming_where_they_are(tmp_path):
    with pytest.raises(FileFormatError, match=r"at 'cfg\.f': cannot save an object of type function"):
        dg.save({"cfg": {"f": lambda: 1}}, tmp_path / "bad.dg")
    with pytest.raises(FileFormatError, match="does not fit in 64 bits"):
        dg.save([2**64], tmp_path / "bad.dg")
    with pytest.raises(FileFormatError, match="dtype object cannot be saved"):
        dg.save(np.array([None]), tmp_path / "bad.dg")
    with pytest.raises(FileFormatError, match=f"nested deeper than {MAX_DEPTH}"):
        deep = []
        for _ in range(MAX_DEPTH + 5):
            deep = [deep]
        dg.save(deep, tmp_path / "bad.dg")
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_the_previous_checkpoint_intact_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ck.dg"
    dg.save({"v": 1}, path)
    with pytest.raises(FileFormatError):
        dg.save({"v": object()}, path)

    def crash(self, fh, tree):  # a crash after part of the new file is on disk
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("distgraph.io.writer.Writer.write", crash)
    with pytest.raises(KeyboardInterrupt):
        dg.save({"v": 2}, path)
    assert dg.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ck.dg"]


def test_saving_over_an_existing_file_replaces_it_whole(tmp_path):
    path = tmp_path / "ck.dg"
    dg.save({"w": dg.randn(1000)}, path)
    dg.save({"w": dg.ones(3)}, path)
    assert equal(dg.load(path), {"w": dg.ones(3)}) and os.listdir(tmp_path) == ["ck.dg"]
