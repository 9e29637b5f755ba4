"""dg.load(f, mmap=True), as torch.load's: the arrays are copy-on-write views of the file's pages (io/mapped.py),
for distgraph's files and torch's zip files; what cannot be mapped is refused by name."""

import io
import mmap

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ConfigError, FileFormatError

torch = pytest.importorskip("torch")  # (the torch files are written by torch itself)


def _mapping_of(array):
    """The mmap an array's memory belongs to, following its bases (None: memory of its own)."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None) if not isinstance(array, memoryview) else array.obj
    return array


def _state():
    dg.manual_seed(0)
    return {"w": dg.randn(3, 4), "ids": dg.arange(5), "empty": dg.zeros(0, 3), "x": dg.tensor(np.arange(6.0))}


def test_a_distgraph_file_maps_every_array_and_a_write_stays_in_this_process(tmp_path):
    path, state = tmp_path / "state.dg", _state()
    dg.save(state, path)
    loaded = dg.load(path, mmap=True)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy(), err_msg=key)
        if value.numel():
            assert isinstance(_mapping_of(loaded[key].array), mmap.mmap), key
    loaded["w"].array[0, 0] = 99.0  # copy-on-write: the file keeps its value
    assert dg.load(path)["w"].numpy()[0, 0] == state["w"].numpy()[0, 0]
    assert _mapping_of(dg.load(path)["w"].array) is None  # without mmap: an array of its own


def test_a_torch_zip_file_maps_its_storages_and_shares_them_as_torch(tmp_path):
    weight = torch.randn(4, 3, dtype=torch.float64)
    torch.save({"w": weight, "view": weight[1:], "n": torch.arange(4)}, tmp_path / "t.pt")
    loaded = dg.load(tmp_path / "t.pt", mmap=True, weights_only=True)
    np.testing.assert_array_equal(loaded["w"].numpy(), weight.numpy())
    np.testing.assert_array_equal(loaded["view"].numpy(), weight[1:].numpy())
    np.testing.assert_array_equal(loaded["n"].numpy(), np.arange(4))
    assert isinstance(_mapping_of(loaded["w"].array), mmap.mmap)
    assert np.shares_memory(loaded["w"].array, loaded["view"].array)  # one storage, as torch's


def test_what_cannot_be_mapped_is_refused_by_name(tmp_path):
    dg.save(_state(), tmp_path / "s.dg")
    with pytest.raises(FileFormatError, match="mmap=True needs a file on disk, not a BytesIO"):
        dg.load(io.BytesIO((tmp_path / "s.dg").read_bytes()), mmap=True)
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(FileFormatError, match="mmap=True reads torch's zip format only"):
        dg.load(tmp_path / "old.pt", mmap=True)
    np.testing.assert_array_equal(dg.load(tmp_path / "old.pt")["w"].numpy(), [1.0, 1.0])  # read, not mapped
    with pytest.raises(ConfigError, match="pickle_module and pickle load arguments are not taken"):
        dg.load(tmp_path / "s.dg", encoding="latin1")
