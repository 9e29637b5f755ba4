"""Views through dg.save / dg.load and copy.deepcopy: views of one storage stay views of one storage, a tensor
keeps its strides, an OrderedDict stays an OrderedDict — as torch.save / torch.load and torch's deepcopy."""

import copy
from collections import OrderedDict

import msgpack
import numpy as np
import pytest

import distgraph as dg
from distgraph.autograd.storage import root_of
from distgraph.errors import FileFormatError
from distgraph.io.layout import HEADER
from tests.io._files import assemble, split


def round_trip(obj, path, **load_args):
    dg.save(obj, path)
    return dg.load(path, **load_args)


def torch_round_trip(torch, obj, path):
    torch.save(obj, path)
    return torch.load(path)


def version(path):
    return HEADER.unpack(path.read_bytes()[: HEADER.size])[1]


def flat_bucket_model():
    """A model whose parameters are views of one flat buffer (as a gradient bucket or FSDP lays them out)."""
    dg.manual_seed(0)
    model = dg.nn.Sequential(dg.nn.Linear(3, 4), dg.nn.Linear(4, 2))
    params = list(model.parameters())
    buffer = np.zeros(sum(p.numel() for p in params), np.float32)
    start = 0
    for p in params:
        part = buffer[start : start + p.numel()].reshape(p.shape)
        part[...] = p.array
        p.array, start = part, start + p.numel()
    return model, buffer


@pytest.mark.parametrize("view_first", [False, True])
def test_a_tensor_and_its_slice_load_back_sharing_memory_as_torch(tmp_path, view_first):
    torch = pytest.importorskip("torch")
    a = dg.arange(6.0)
    obj = {"v": a[2:4], "a": a} if view_first else {"a": a, "v": a[2:4]}
    mine = round_trip(obj, tmp_path / "v.dg")
    ta = torch.arange(6.0)
    theirs = torch_round_trip(
        torch, {"v": ta[2:4], "a": ta} if view_first else {"a": ta, "v": ta[2:4]}, tmp_path / "v.pt"
    )
    mine["v"][0] = -1.0
    theirs["v"][0] = -1.0
    assert mine["a"].tolist() == theirs["a"].tolist() == [0.0, 1.0, -1.0, 3.0, 4.0, 5.0]
    assert version(tmp_path / "v.dg") == 3


def test_a_non_contiguous_tensor_keeps_its_strides_as_torch(tmp_path):
    torch = pytest.importorskip("torch")
    t = dg.arange(6.0).reshape(2, 3).T
    tt = torch.arange(6.0).reshape(2, 3).T
    obj = {"t": t, "exp": t.exp(), "cl": dg.ones(2, 3, 4, 5).to(memory_format=dg.channels_last)}
    mine = round_trip(obj, tmp_path / "t.dg")
    theirs = torch_round_trip(
        torch,
        {"t": tt, "exp": tt.exp(), "cl": torch.ones(2, 3, 4, 5).to(memory_format=torch.channels_last)},
        tmp_path / "t.pt",
    )
    for k in obj:
        assert mine[k].is_contiguous() == theirs[k].is_contiguous() is False
        assert mine[k].stride() == theirs[k].stride()
        assert np.array_equal(mine[k].numpy(), obj[k].numpy())


def test_an_ordered_dict_loads_back_an_ordered_dict_as_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    obj = {
        "model": model.state_dict(),
        "order": OrderedDict([("z", 1), ("a", (2, OrderedDict(k=[3])))]),
        "plain": {"b": 1},
    }
    mine = round_trip(obj, tmp_path / "o.dg")
    theirs = torch_round_trip(torch, {"model": torch.nn.Linear(4, 3).state_dict()}, tmp_path / "o.pt")
    assert type(mine["model"]) is type(theirs["model"]) is OrderedDict
    assert list(mine["model"]) == list(obj["model"]) and mine["order"] == obj["order"]
    assert type(mine["order"]["a"][1]) is OrderedDict and type(mine["plain"]) is dict
    dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3)).load_state_dict(mine["model"])


def test_parameters_in_one_flat_buffer_load_back_on_one_buffer_stored_once(tmp_path):
    model, buffer = flat_bucket_model()
    mine = round_trip(model.state_dict(), tmp_path / "b.dg")
    roots = {id(root_of(t.array)) for t in mine.values()}
    assert len(roots) == 1 and root_of(next(iter(mine.values())).array).size == buffer.size
    assert all(np.array_equal(mine[k].numpy(), v.numpy()) for k, v in model.state_dict().items())
    assert all(type(t) is dg.Tensor for t in mine.values())
    copies = {k: v.clone() for k, v in model.state_dict().items()}  # the same values, each its own array
    dg.save(copies, tmp_path / "copies.dg")
    assert (tmp_path / "b.dg").stat().st_size <= (tmp_path / "copies.dg").stat().st_size


def test_a_slice_of_a_large_buffer_stores_only_its_own_elements(tmp_path):
    big = dg.zeros(1 << 20)
    dg.save({"part": big[10:20]}, tmp_path / "part.dg")
    dg.save({"part": big[10:20].T, "strided": big[0:100:10]}, tmp_path / "strided.dg")
    assert (tmp_path / "part.dg").stat().st_size < 4096 and (tmp_path / "strided.dg").stat().st_size < 4096
    back = dg.load(tmp_path / "strided.dg")
    assert back["strided"].shape == (10,) and back["strided"].stride() == (10,)


def test_views_load_back_shared_under_mmap(tmp_path):
    a = dg.arange(12.0).reshape(3, 4)
    mine = round_trip({"a": a, "row": a[1], "t": a.T, "arr": a.array[:, 1]}, tmp_path / "m.dg", mmap=True)
    assert np.array_equal(mine["t"].numpy(), a.T.numpy()) and mine["t"].stride() == (1, 4)
    mine["row"][1] = -1.0
    assert mine["a"][1, 1].item() == mine["t"][1, 1].item() == mine["arr"][1] == -1.0
    assert a[1, 1].item() == 5.0 and dg.load(tmp_path / "m.dg")["a"][1, 1].item() == 5.0  # the file is unchanged


def test_files_written_before_views_still_load(tmp_path):
    """What the writer before version 3 made of a view (a row-major copy of it) and of an OrderedDict (a
    map): a version-2 file of plain records and a data_of reference."""
    dg.save({"a": dg.arange(6.0), "v": dg.arange(6.0)[2:4].clone(), "tied": [dg.ones(2)] * 2}, tmp_path / "old.dg")
    t = dg.ones(2)
    dg.save({"a": dg.arange(6.0).reshape(2, 3).T.contiguous(), "t": t, "d": t.detach()}, tmp_path / "v2.dg")
    assert version(tmp_path / "old.dg") == version(tmp_path / "v2.dg") == 2
    back = dg.load(tmp_path / "v2.dg")
    assert back["a"].is_contiguous() and back["a"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert back["t"].array is back["d"].array
    assert dg.load(tmp_path / "old.dg")["v"].tolist() == [2.0, 3.0]


def test_a_forged_view_is_a_file_format_error_naming_it(tmp_path):
    a = dg.arange(6.0)
    dg.save({"a": a[1:], "v": a[2:4]}, tmp_path / "ok.dg")
    tree, region = split((tmp_path / "ok.dg").read_bytes())
    node = msgpack.unpackb(tree, strict_map_key=False)
    shared = msgpack.unpackb(node["v"].data)
    forged = {
        "outside": ({**shared, "view": [4, [2], [1]]}, "corrupt view .* .outside its storage of 5 elements"),
        "negative": ({**shared, "view": [0, [2], [-1]]}, "corrupt view"),
        "strides": ({**shared, "view": [0, [2, 2], [1]]}, "corrupt view"),
        "no bytes": ({**shared, "data_of": 1}, "corrupt reference to shared data 1 \\(a record without bytes"),
        "ahead": ({**shared, "data_of": 2}, "corrupt reference to shared data 2"),
    }
    for record, message in forged.values():
        node["w"] = msgpack.ExtType(1, msgpack.packb(record))
        (tmp_path / "bad.dg").write_bytes(assemble(msgpack.packb(node, use_bin_type=True), region, version=3))
        with pytest.raises(FileFormatError, match=f"bad.dg: tensor 'w': {message}"):
            dg.load(tmp_path / "bad.dg")


def test_deepcopy_keeps_a_view_a_view_of_the_copied_tensor_as_torch():
    torch = pytest.importorskip("torch")
    a, ta = dg.arange(6.0), torch.arange(6.0)
    mine, theirs = copy.deepcopy({"a": a, "v": a[2:4], "t": a.reshape(2, 3).T}), copy.deepcopy({"a": ta, "v": ta[2:4]})
    mine["v"][0] = -1.0
    theirs["v"][0] = -1.0
    assert mine["a"].tolist() == theirs["a"].tolist() == [0.0, 1.0, -1.0, 3.0, 4.0, 5.0]
    assert a.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and mine["t"].stride() == (1, 3)
    assert copy.deepcopy(a[1:]).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert copy.deepcopy(ta.reshape(2, 3).T).stride() == copy.deepcopy(a.reshape(2, 3).T).stride()


def test_deepcopy_of_a_model_on_one_flat_buffer_puts_the_copy_on_one_new_buffer():
    model, buffer = flat_bucket_model()
    model[0].weight.grad = dg.ones(4, 3)
    twin = copy.deepcopy(model)
    params = list(twin.parameters())
    roots = {id(root_of(p.array)) for p in params}
    assert len(roots) == 1 and root_of(params[0].array) is not buffer and root_of(params[0].array).size == buffer.size
    assert all(type(p) is dg.nn.Parameter and p.requires_grad for p in params)
    assert all(np.array_equal(p.array, q.array) for p, q in zip(params, model.parameters()))
    params[0].array[0, 0] = 99.0
    assert root_of(params[1].array)[0] == 99.0 and buffer[0] != 99.0
    assert twin[0].weight.grad.tolist() == [[1.0] * 3] * 4 and twin[0].weight.grad is not model[0].weight.grad
