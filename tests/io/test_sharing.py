"""dg.load gives back what torch.load gives back: Parameters as Parameters, shared tensors shared.
Files written before references existed (format version 1) still load."""

import io
from pathlib import Path

import msgpack
import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import FileFormatError
from distgraph.io.layout import HEADER
from tests.io._files import assemble, split

torch = pytest.importorskip("torch")
V1_FILE = Path(__file__).parent / "data" / "format_v1.dg"


def torch_round_trip(obj, path):
    torch.save(obj, path)
    return torch.load(path)


def test_a_parameter_loads_back_as_a_parameter_alone_or_in_a_dict(tmp_path):
    w = dg.nn.Parameter(dg.randn(2, 3))
    frozen = dg.nn.Parameter(dg.ones(2), requires_grad=False)
    dg.save(w, tmp_path / "p.dg")
    dg.save({"w": w, "frozen": frozen, "plain": dg.ones(2)}, tmp_path / "d.dg")
    alone, d = dg.load(tmp_path / "p.dg"), dg.load(tmp_path / "d.dg")
    theirs = torch_round_trip({"w": torch.nn.Parameter(torch.ones(2)), "plain": torch.ones(2)}, tmp_path / "t.pt")
    assert type(theirs["w"]) is torch.nn.Parameter and type(theirs["plain"]) is torch.Tensor
    assert (
        type(alone) is dg.nn.Parameter
        and alone.requires_grad
        and np.array_equal(alone.detach().numpy(), w.detach().numpy())
    )
    assert type(d["w"]) is dg.nn.Parameter and type(d["plain"]) is dg.Tensor
    assert type(d["frozen"]) is dg.nn.Parameter and not d["frozen"].requires_grad


def test_one_tensor_saved_twice_loads_back_as_one_object_as_torch():
    t, a = dg.randn(3), np.arange(4)
    buf = io.BytesIO()
    dg.save({"x": t, "again": [t, (t,)], "arr": a, "arr2": a}, buf)
    buf.seek(0)
    back = dg.load(buf)
    assert back["again"][0] is back["x"] and back["again"][1][0] is back["x"] and back["arr2"] is back["arr"]
    tt = torch.randn(3)
    buf = io.BytesIO()
    torch.save({"x": tt, "again": [tt]}, buf)
    buf.seek(0)
    theirs = torch.load(buf)
    assert theirs["again"][0] is theirs["x"]


def test_tensors_sharing_data_load_back_sharing_it_as_torchs_storages(tmp_path):
    """Tied weights in a state dict are two detached tensors on one array: still one array after loading."""
    w = dg.nn.Parameter(dg.randn(4, 2))
    dg.save({"enc": w.detach(), "dec": w.detach(), "p": w}, tmp_path / "tied.dg")
    back = dg.load(tmp_path / "tied.dg")
    assert back["enc"] is not back["dec"] and back["enc"].array is back["dec"].array is back["p"].array
    assert type(back["p"]) is dg.nn.Parameter and not back["enc"].requires_grad
    back["enc"].array[0, 0] = 42.0
    assert back["dec"][0, 0].item() == 42.0
    tw = torch.nn.Parameter(torch.randn(4, 2))
    theirs = torch_round_trip({"enc": tw.detach(), "dec": tw.detach()}, tmp_path / "tied.pt")
    assert theirs["enc"].data_ptr() == theirs["dec"].data_ptr()
    # the shared data is stored once
    dg.save({"enc": w.detach(), "dec": dg.tensor(w.detach().numpy().copy())}, tmp_path / "copy.dg")
    assert (tmp_path / "tied.dg").stat().st_size < (tmp_path / "copy.dg").stat().st_size


def test_a_file_written_before_references_existed_still_loads():
    """format_v1.dg was written by the code before this change: {'weight': Parameter(w), 'tied': [w, w],
    'arr': int32 0..4, 'meta': ('v1', 3, 0.5)}; version 1 stored no flags or references, so it reads
    back as plain tensors, each stored copy its own."""
    assert HEADER.unpack(V1_FILE.read_bytes()[: HEADER.size])[1] == 1
    back = dg.load(V1_FILE)
    assert back["weight"].detach().numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]] and back["weight"].requires_grad
    assert all(np.array_equal(t.detach().numpy(), back["weight"].detach().numpy()) for t in back["tied"])
    assert back["tied"][0] is not back["tied"][1]
    assert back["arr"].dtype == np.int32 and back["arr"].tolist() == [0, 1, 2, 3, 4]
    assert back["meta"] == ("v1", 3, 0.5)


def test_files_without_references_stay_version_1_and_with_them_are_version_2(tmp_path):
    t = dg.ones(2)
    dg.save({"a": t, "p": dg.nn.Parameter(dg.ones(2))}, tmp_path / "plain.dg")
    dg.save({"a": t, "b": t}, tmp_path / "shared.dg")
    versions = [HEADER.unpack((tmp_path / n).read_bytes()[: HEADER.size])[1] for n in ("plain.dg", "shared.dg")]
    assert versions == [1, 2]


def test_a_forged_reference_is_a_file_format_error_naming_it(tmp_path):
    dg.save({"a": dg.ones(2), "b": [1]}, tmp_path / "ok.dg")
    tree, region = split((tmp_path / "ok.dg").read_bytes())
    for forged in (msgpack.ExtType(6, msgpack.packb(7)), msgpack.ExtType(1, msgpack.packb({"data_of": 3}))):
        node = msgpack.unpackb(tree, strict_map_key=False)
        node["b"] = forged
        (tmp_path / "bad.dg").write_bytes(assemble(msgpack.packb(node, use_bin_type=True), region, version=2))
        with pytest.raises(FileFormatError, match="bad.dg: .*corrupt reference"):
            dg.load(tmp_path / "bad.dg")
