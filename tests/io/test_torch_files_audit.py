"""Torch files through distgraph, found by an audit: views of a loaded torch file stay shared when saved again in
torch's format (they were written as copies: tied weights untied), and three refusals say what the file is: a
legacy file cut inside a storage, a plain pickle under mmap=True, a TorchScript archive."""

import pickle
import zipfile

import pytest

import distgraph as dg
from distgraph.errors import FileFormatError

torch = pytest.importorskip("torch")


def test_views_of_a_loaded_torch_file_stay_shared_when_saved_again(tmp_path):
    w, base = torch.randn(4, 3), torch.arange(10.0)
    torch.save({"w": w, "wT": w.t(), "b": base, "s": base[3:7]}, tmp_path / "a.pt")
    dg.save(dg.load(tmp_path / "a.pt"), tmp_path / "b.pt", format="torch")
    assert len([n for n in zipfile.ZipFile(tmp_path / "b.pt").namelist() if "/data/" in n]) == 2  # two storages
    again = torch.load(tmp_path / "b.pt", weights_only=True)
    again["w"][0, 0], again["b"][4] = 7.0, 99.0
    assert again["wT"][0, 0] == 7.0 and again["wT"].stride() == (1, 3) and again["s"][1] == 99.0


def test_refusals_say_what_the_file_is(tmp_path):
    torch.save({"w": torch.randn(100)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-1])
    with pytest.raises(FileFormatError, match="truncated inside storage .*need 400 bytes"):
        dg.load(tmp_path / "cut.pt")
    with (tmp_path / "plain.pkl").open("wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(FileFormatError, match=r"this file is a pickle, not a torch file"):
        dg.load(tmp_path / "plain.pkl", mmap=True)
    with pytest.raises(FileFormatError, match="in its legacy format"):
        dg.load(tmp_path / "legacy.pt", mmap=True)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "jit.pt")
    for mmap in (False, True):
        with pytest.raises(FileFormatError, match=r"a TorchScript archive \(torch.jit.save\)"):
            dg.load(tmp_path / "jit.pt", mmap=mmap)


def test_sets_dtypes_and_tuple_keys_go_into_torch_files_as_torchs_weights_only_load_reads_them(tmp_path):
    saved = {"s": {1, 2, "a"}, (1, 2): 3, "d": dg.float32, "b": dg.bool, "nested": [{"x": {1}}], "t": dg.ones(2)}
    dg.save(saved, tmp_path / "a.pt", format="torch")
    theirs = torch.load(tmp_path / "a.pt", weights_only=True)
    assert theirs["s"] == {1, 2, "a"} and theirs[(1, 2)] == 3 and theirs["nested"] == [{"x": {1}}]
    assert theirs["d"] is torch.float32 and theirs["b"] is torch.bool
    ours = dg.load(tmp_path / "a.pt")
    assert ours["s"] == {1, 2, "a"} and ours[(1, 2)] == 3 and ours["d"] == dg.float32 and ours["b"] == dg.bool
    with pytest.raises(FileFormatError, match="type frozenset"):  # torch's weights_only refuses it too
        dg.save({"f": frozenset({1})}, tmp_path / "b.pt", format="torch")
