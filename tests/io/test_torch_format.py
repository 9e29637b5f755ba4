"""dg.load reads what torch.save writes (zip and legacy), as torch.load(weights_only=True) would, without
torch; dg.save(format="torch") writes what torch.load(weights_only=True) reads. Files are made by torch."""

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import FileFormatError

torch = pytest.importorskip("torch")
FORMATS = {"zip": {}, "legacy": {"_use_new_zipfile_serialization": False}}
DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def torch_to_dg(obj, path, layout="zip"):
    torch.save(obj, path, **FORMATS[layout])
    return dg.load(path)


def same(theirs, ours):
    """Same values, dtype, shape, type (Parameter or not), requires_grad and structure, all the way down."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, dg.Tensor), type(ours)
        assert isinstance(ours, dg.nn.Parameter) == isinstance(theirs, torch.nn.Parameter)
        assert ours.requires_grad == theirs.requires_grad
        want = theirs.detach().numpy()
        got = ours.detach().numpy()
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want, equal_nan=True)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs)
        for k in theirs:
            same(theirs[k], ours[k])
    elif isinstance(theirs, list | tuple):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(theirs, ours):
            same(a, b)
    else:
        assert type(ours) is type(theirs) and ours == theirs


@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_loads_bit_exactly_with_0d_empty_and_strided_tensors(dtype, layout, tmp_path):
    torch.manual_seed(0)
    base = (torch.randn(4, 6) * 50).to(getattr(torch, dtype))
    obj = {
        "t": base,
        "zero_d": base[1, 2].clone(),
        "empty": torch.zeros(0, 3, dtype=base.dtype),
        "transposed": base.t(),
        "sliced": base[1:, ::2],
        "expanded": base[0].clone().expand(3, 6),  # stride 0
    }
    back = torch_to_dg(obj, tmp_path / "x.pt", layout)
    same(obj, back)
    assert back["zero_d"].shape == () and back["empty"].shape == (0, 3)


@pytest.mark.parametrize("layout", FORMATS)
def test_views_of_one_storage_load_as_views_of_one_array_and_objects_met_twice_as_one(layout, tmp_path):
    x = torch.arange(24.0).reshape(4, 6)
    w = torch.nn.Parameter(torch.randn(3))
    obj = {"x": x, "row": x[2], "col": x[:, 1], "tail": x.view(-1)[5:], "again": [x], "w": w, "w_data": w.detach()}
    back = torch_to_dg(obj, tmp_path / "v.pt", layout)
    same(obj, back)
    assert back["again"][0] is back["x"]
    arrays = [back[k].array for k in ("x", "row", "col", "tail")]
    assert all(np.shares_memory(arrays[0], a) for a in arrays[1:])
    back["x"].array[2, 1] = -1.0  # one write, seen through every view, as in torch
    assert back["row"][1].item() == back["col"][2].item() == back["tail"][8].item() == -1.0
    assert np.shares_memory(back["w"].array, back["w_data"].array)


@pytest.mark.parametrize("layout", FORMATS)
def test_parameters_and_requires_grad_flags_come_back(layout, tmp_path):
    obj = {
        "p": torch.nn.Parameter(torch.randn(2, 2)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "leaf": torch.ones(3, requires_grad=True),
        "plain": torch.ones(3),
        "ints": torch.arange(3),
    }
    back = torch_to_dg(obj, tmp_path / "p.pt", layout)
    same(obj, back)
    assert type(back["p"]) is dg.nn.Parameter and back["p"].requires_grad
    assert type(back["frozen"]) is dg.nn.Parameter and not back["frozen"].requires_grad
    alone = torch_to_dg(torch.nn.Parameter(torch.ones(2)), tmp_path / "alone.pt", layout)
    assert type(alone) is dg.nn.Parameter and alone.requires_grad


def test_bfloat16_loads_as_float32_with_a_warning_and_complex_is_an_error_naming_the_key(tmp_path):
    bf = torch.tensor([1.5, -2.25, 3e38, 1e-40], dtype=torch.bfloat16)
    torch.save({"bf": bf, "view": bf[1:]}, tmp_path / "bf.pt")
    with pytest.warns(UserWarning, match="bf.pt: bfloat16 tensors loaded as float32"):
        back = dg.load(tmp_path / "bf.pt")
    assert back["bf"].dtype == dg.float32 and np.array_equal(back["bf"].numpy(), bf.float().numpy())
    assert np.shares_memory(back["bf"].array, back["view"].array)
    for dtype in (torch.complex64, torch.uint16):
        torch.save({"ok": torch.ones(2), "layer": {"w": torch.ones(2, dtype=dtype)}}, tmp_path / "c.pt")
        with pytest.raises(FileFormatError, match=rf"c.pt: tensor 'layer.w' has dtype {str(dtype)[6:]}"):
            dg.load(tmp_path / "c.pt")


def test_a_big_endian_file_loads_in_native_order(tmp_path):
    """torch writes byteorder "big" on big-endian machines: the same file, its storages byte-swapped."""
    obj = {
        "f": torch.arange(6.0).reshape(2, 3),
        "i": torch.tensor([1, -2, 2**40]),
        "h": torch.tensor([0.5, 2.0]).half(),
    }
    torch.save(obj, tmp_path / "le.pt")
    with zipfile.ZipFile(tmp_path / "le.pt") as src, zipfile.ZipFile(tmp_path / "be.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                key = info.filename.rsplit("/", 1)[1]
                itemsize = {"0": 4, "1": 8, "2": 2}[key]
                data = np.frombuffer(data, f"u{itemsize}").byteswap().tobytes()
            dst.writestr(info.filename, data)
    same(obj, dg.load(tmp_path / "be.pt"))


def test_module_state_dicts_load_into_distgraph_modules_and_give_torchs_outputs(tmp_path):
    torch.manual_seed(0)
    t_conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    t_conv(torch.randn(2, 3, 5, 5))  # running statistics and num_batches_tracked move off their defaults
    t_conv.eval()
    t_mlp = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7))
    t_lstm = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True)
    torch.save({"conv": t_conv.state_dict(), "mlp": t_mlp.state_dict(), "lstm": t_lstm.state_dict()}, tmp_path / "m.pt")
    state = dg.load(tmp_path / "m.pt")
    assert (
        state["conv"]["1.num_batches_tracked"].dtype == dg.int64 and state["conv"]["1.num_batches_tracked"].item() == 1
    )
    conv = dg.nn.Sequential(dg.nn.Conv2d(3, 4, 3, padding=1), dg.nn.BatchNorm2d(4), dg.nn.ReLU()).eval()
    mlp = dg.nn.Sequential(dg.nn.Linear(5, 7), dg.nn.BatchNorm1d(7)).eval()
    lstm = dg.nn.LSTM(4, 6, num_layers=2, batch_first=True)
    for ours, name in ((conv, "conv"), (mlp, "mlp"), (lstm, "lstm")):
        ours.load_state_dict(state[name])
    t_mlp.eval()
    x_img, x_vec, x_seq = np.random.default_rng(0).standard_normal((2, 3, 5, 5)), np.ones((3, 5)), np.ones((2, 3, 4))
    x_seq[:, 1] = -0.5
    with torch.no_grad():
        want = [
            t_conv(torch.tensor(x_img, dtype=torch.float32)),
            t_mlp(torch.tensor(x_vec, dtype=torch.float32)),
            t_lstm(torch.tensor(x_seq, dtype=torch.float32))[0],
        ]
    got = [conv(dg.tensor(x_img, dtype=dg.float32)), mlp(dg.tensor(x_vec, dtype=dg.float32))]
    got.append(lstm(dg.tensor(x_seq, dtype=dg.float32))[0])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_an_optimizer_checkpoint_resumes_in_distgraph_as_in_torch(tmp_path):
    """A torch training checkpoint (model, Adam state with 0-d "step" tensors, epoch, loss): distgraph takes
    one more step from it and lands where torch does."""
    torch.manual_seed(0)
    t_model = torch.nn.Linear(3, 2)
    t_opt = torch.optim.Adam(t_model.parameters(), lr=0.1, betas=(0.8, 0.9), weight_decay=0.01)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    for _ in range(3):
        t_opt.zero_grad()
        torch.nn.functional.mse_loss(t_model(x), y).backward()
        t_opt.step()
    ckpt = {"model": t_model.state_dict(), "optimizer": t_opt.state_dict(), "epoch": 3, "loss": 0.25}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    back = dg.load(tmp_path / "ckpt.pt")
    same(torch.load(tmp_path / "ckpt.pt", weights_only=True), back)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9) and back["epoch"] == 3
    model = dg.nn.Linear(3, 2)
    model.load_state_dict(back["model"])
    opt = dg.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9), weight_decay=0.01)
    opt.load_state_dict(back["optimizer"])
    for zero, loss, step in (
        (t_opt.zero_grad, torch.nn.functional.mse_loss(t_model(x), y), t_opt.step),
        (opt.zero_grad, dg.nn.functional.mse_loss(model(dg.tensor(x.numpy())), dg.tensor(y.numpy())), opt.step),
    ):
        zero()
        loss.backward()
        step()
    np.testing.assert_allclose(model.weight.detach().numpy(), t_model.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_distgraph_optimizer_checkpoint_saved_for_torch_resumes_in_torch_as_in_distgraph(tmp_path):
    """The other way: dg.save(format="torch") of a model and its optimizer. The optimizer's state holds
    numpy arrays where torch's holds tensors; they used to be refused ("cannot save an object of type
    ndarray"), so no optimizer checkpoint could go to torch. They are written as tensors: torch.load
    (weights_only) and torch's Adam take the file and its next step lands where distgraph's does, and
    distgraph reads the file back into its own optimizer."""
    dg.manual_seed(0)
    model = dg.nn.Linear(3, 2)
    opt = dg.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9), weight_decay=0.01)
    x, y = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), np.ones((4, 2), np.float32)
    for _ in range(3):
        opt.zero_grad()
        dg.nn.functional.mse_loss(model(dg.tensor(x)), dg.tensor(y)).backward()
        opt.step()
    dg.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "ck.pt", format="torch"
    )
    ckpt = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert isinstance(ckpt["optimizer"]["state"][0]["exp_avg"], torch.Tensor)
    t_model = torch.nn.Linear(3, 2)
    t_model.load_state_dict(ckpt["model"])
    t_opt = torch.optim.Adam(t_model.parameters(), lr=0.1, betas=(0.8, 0.9), weight_decay=0.01)
    t_opt.load_state_dict(ckpt["optimizer"])
    again = dg.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9), weight_decay=0.01)
    again.load_state_dict(dg.load(tmp_path / "ck.pt")["optimizer"])
    for zero, loss, step in (
        (t_opt.zero_grad, torch.nn.functional.mse_loss(t_model(torch.tensor(x)), torch.tensor(y)), t_opt.step),
        (again.zero_grad, dg.nn.functional.mse_loss(model(dg.tensor(x)), dg.tensor(y)), again.step),
    ):
        zero()
        loss.backward()
        step()
    np.testing.assert_allclose(model.weight.detach().numpy(), t_model.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert int(again.state_dict()["state"][0]["step"]) == 4


class Evil:
    def __reduce__(self):  # not `print`: once Ray is imported, builtins.print is Ray's tqdm-safe print
        return (eval, ("print('pwned')",))


def test_a_pickle_naming_any_other_global_is_refused_naming_the_file_and_the_global(tmp_path, capsys):
    for layout in FORMATS:
        torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / f"evil_{layout}.pt", **FORMATS[layout])
        with pytest.raises(FileFormatError, match=rf"evil_{layout}.pt: refuses to load the global builtins.eval"):
            dg.load(tmp_path / f"evil_{layout}.pt")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(FileFormatError, match="raw.pkl: refuses to load the global builtins.eval"):
        dg.load(tmp_path / "raw.pkl")
    (tmp_path / "os.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.")
    with pytest.raises(FileFormatError, match="os.pkl: refuses to load the global os.system"):
        dg.load(tmp_path / "os.pkl")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    with pytest.raises(FileFormatError, match="plain.pkl: not a distgraph file, nor a torch one"):
        dg.load(tmp_path / "plain.pkl")
    assert "pwned" not in capsys.readouterr().out


class Storage:
    def __init__(self, key, numel, kind="FloatStorage"):
        self.pid = ("storage", getattr(torch, kind), key, "cpu", numel)


class View:
    def __init__(self, storage, offset, size, stride, requires_grad=False):
        self.args = (storage, offset, size, stride, requires_grad, OrderedDict())


class WithState(View):
    """A tensor given extra state after it is built (pickle's BUILD opcode)."""


class Forger(pickle.Pickler):
    """Pickles View/Storage stand-ins as torch.save would pickle a tensor — but with any values."""

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None

    def reducer_override(self, obj):
        if isinstance(obj, WithState):
            return (torch._utils._rebuild_tensor_v2, obj.args, (None, {"array": "not an array"}))
        return (torch._utils._rebuild_tensor_v2, obj.args) if isinstance(obj, View) else NotImplemented


def _nested(depth):
    node = []
    for _ in range(depth):
        node = [node]
    return node


def forged_file(path, obj, storages):
    buf = io.BytesIO()
    Forger(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("f/data.pkl", buf.getvalue())
        for key, data in storages.items():
            archive.writestr(f"f/data/{key}", data)
        archive.writestr("f/version", b"3\n")


def test_forged_storages_and_views_are_file_format_errors_allocating_nothing(tmp_path):
    six = np.arange(6, dtype=np.float32).tobytes()
    s = Storage("0", 6)
    forged_file(tmp_path / "ok.pt", {"w": View(s, 2, (2, 2), (2, 1))}, {"0": six})
    assert dg.load(tmp_path / "ok.pt")["w"].numpy().tolist() == [[2.0, 3.0], [4.0, 5.0]]  # the forger works
    cases = {
        "tensor 'w': size \\(2, 2\\), stride \\(3, 1\\) at offset 2 run past its storage of 6": View(
            s, 2, (2, 2), (3, 1)
        ),
        "tensor 'w': corrupt size": View(s, 0, (2,), (-1,)),
        "tensor 'w\\[0\\]': corrupt size": [View(s, 0, (2, 2), (1,))],
        "storage '0': 24 bytes stored for 1000000000000000 float32 elements": View(Storage("0", 10**15), 0, (1,), (1,)),
        "missing record f/data/9": View(Storage("9", 6), 0, (1,), (1,)),
        "storage '0' named with two types or sizes": [
            View(s, 0, (1,), (1,)),
            View(Storage("0", 6, "IntStorage"), 0, (1,), (1,)),
        ],
        "tensor rebuilt on int": View(3, 0, (1,), (1,)),
        "a tensor cannot be given extra state": WithState(s, 0, (1,), (1,)),
        "requires_grad on a tensor of dtype int32": View(Storage("0", 6, "IntStorage"), 0, (1,), (1,), True),
        "structure nested deeper than 200 levels at 'w\\[0\\]\\[0\\]": _nested(300),
    }
    for message, obj in cases.items():
        forged_file(tmp_path / "bad.pt", {"w": obj}, {"0": six})
        with pytest.raises(FileFormatError, match=f"bad.pt: .*{message}"):
            dg.load(tmp_path / "bad.pt")


@pytest.mark.parametrize("layout", FORMATS)
def test_truncated_and_corrupted_files_are_file_format_errors_naming_the_file(layout, tmp_path):
    torch.save({"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "good.pt", **FORMATS[layout])
    data = (tmp_path / "good.pt").read_bytes()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 30):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(FileFormatError, match="cut.pt: "):
            dg.load(tmp_path / "cut.pt")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the weight's bytes: the zip checksum catches it
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    if layout == "zip":
        with pytest.raises(FileFormatError, match="flip.pt: corrupt torch zip archive .*CRC"):
            dg.load(tmp_path / "flip.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(FileFormatError, match="junk.pt: not a distgraph file, nor a valid torch zip"):
        dg.load(tmp_path / "junk.pt")


def test_a_legacy_stream_loads_from_a_file_object_and_stops_after_its_record(tmp_path):
    buf = io.BytesIO()
    torch.save({"a": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    end = buf.tell()
    buf.write(b"after")
    buf.seek(0)
    assert dg.load(buf)["a"].numpy().tolist() == [1.0, 1.0] and buf.tell() == end


def test_map_location_moves_each_storage_once_keeping_views(tmp_path):
    x = torch.arange(6.0)
    torch.save({"x": x, "v": x[2:]}, tmp_path / "m.pt")
    seen = []
    back = dg.load(tmp_path / "m.pt", map_location=lambda storage, loc: seen.append(loc) or storage)
    assert seen == ["cpu"] and np.shares_memory(back["x"].array, back["v"].array)
    assert dg.load(tmp_path / "m.pt", map_location="cpu")["v"].numpy().tolist() == [2.0, 3.0, 4.0, 5.0]


# ---- dg.save(format="torch") ------------------------------------------------------------------------------


def test_dg_save_torch_format_round_trips_through_torch_load_weights_only(tmp_path):
    model = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3))
    w = dg.nn.Parameter(dg.randn(3, 2))
    obj = {
        "model": model.state_dict(),
        "params": [w, dg.nn.Parameter(dg.ones(2), requires_grad=False)],
        "tied": {"enc": w.detach(), "dec": w.detach(), "same": w},
        "strided": dg.tensor(np.arange(12.0).reshape(3, 4)[:, ::2]),
        "dtypes": {d: dg.tensor(np.arange(-2, 4).astype(d)) for d in DTYPES},
        "scalars": {"zero_d": dg.tensor(2.5), "empty": dg.zeros(0, 3), "leaf": dg.ones(2, requires_grad=True)},
        "meta": OrderedDict(
            epoch=3, lr=0.1, big=2**40, neg=-(2**62), name="run", raw=b"\x00\xff", tags=("a", None, True)
        ),
        "nested": [[], (), {}, [1, [2.5, (3,)]]],
    }
    dg.save(obj, tmp_path / "ours.pt", format="torch")
    theirs = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert type(theirs["params"][0]) is torch.nn.Parameter and theirs["tied"]["same"] is theirs["params"][0]
    assert theirs["tied"]["enc"].untyped_storage().data_ptr() == theirs["tied"]["dec"].untyped_storage().data_ptr()
    assert type(theirs["meta"]) is OrderedDict and theirs["meta"]["raw"] == b"\x00\xff"
    same(theirs, dg.load(tmp_path / "ours.pt"))  # and distgraph reads its own torch file the same
    # torch reads it memory-mapped too: each storage starts 64-byte aligned
    assert torch.load(tmp_path / "ours.pt", weights_only=True, mmap=True)["strided"].tolist() == [
        [0, 2],
        [4, 6],
        [8, 10],
    ]


def test_dg_save_torch_format_keeps_views_of_one_array_as_views_of_one_storage_as_torch_save(tmp_path):
    """Views (a slice, a column, a transpose) were written as separate copies: torch.load gave unrelated
    tensors, and a write through one no longer reached the others. Now they name one storage with their
    own offsets and strides, as torch.save writes them, and a view of a large buffer writes only the
    elements its views use. Views torch cannot describe (negative strides) are still copied."""
    base = np.arange(24.0).reshape(4, 6)
    t = dg.tensor(base)
    obj = {"w": t, "rows": t[1:3], "col": t[:, 2], "t": t.t(), "flipped": dg.tensor(base[::-1])}
    dg.save(obj, tmp_path / "views.pt", format="torch")
    theirs = torch.load(tmp_path / "views.pt", weights_only=True)
    ptr = theirs["w"].untyped_storage().data_ptr()
    for key, offset, stride in (("rows", 6, (6, 1)), ("col", 2, (6,)), ("t", 0, (1, 6))):
        assert theirs[key].untyped_storage().data_ptr() == ptr, key
        assert (theirs[key].storage_offset(), theirs[key].stride()) == (offset, stride), key
    assert theirs["flipped"].untyped_storage().data_ptr() != ptr
    for key, value in obj.items():
        np.testing.assert_array_equal(theirs[key].numpy(), value.numpy(), err_msg=key)
    theirs["w"][2, 2] = -1.0  # one storage: the write reaches every view, as in torch
    assert theirs["rows"][1, 2] == theirs["col"][2] == theirs["t"][2, 2] == -1.0
    ours = dg.load(tmp_path / "views.pt")
    assert all(np.shares_memory(ours[k].numpy(), ours["w"].numpy()) for k in ("rows", "col", "t"))

    for first in ("whole", "part"):  # a tensor saved beside a view of itself: one storage, whichever comes first
        pair = {"whole": t, "part": t[2:]} if first == "whole" else {"part": t[2:], "whole": t}
        dg.save(pair, tmp_path / "pair.pt", format="torch")
        back, theirs = dg.load(tmp_path / "pair.pt"), torch.load(tmp_path / "pair.pt", weights_only=True)
        for key, value in pair.items():
            np.testing.assert_array_equal(back[key].numpy(), value.numpy())
            np.testing.assert_array_equal(theirs[key].numpy(), value.numpy())
        assert np.shares_memory(back["part"].numpy(), back["whole"].numpy())

    flat = np.zeros(1_000_000)  # parameters as views of one flat buffer: their elements only are written
    buffer = dg.from_numpy(flat)
    dg.save({"a": buffer[10:20], "b": buffer[30:40]}, tmp_path / "flat.pt", format="torch")
    theirs = torch.load(tmp_path / "flat.pt", weights_only=True)
    assert theirs["a"].untyped_storage().nbytes() == 30 * 8 and theirs["b"].storage_offset() == 20
    assert os.path.getsize(tmp_path / "flat.pt") < 2_000


def test_dg_save_torch_format_storages_are_64_byte_aligned(tmp_path):
    dg.save({f"w{i}": dg.ones(i + 1) for i in range(5)}, tmp_path / "a.pt", format="torch")
    raw = (tmp_path / "a.pt").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.pt") as archive:
        for info in archive.infolist():
            if "/data/" in info.filename:
                name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
                assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0


def test_dg_save_torch_format_refuses_what_weights_only_would_refuse(tmp_path):
    for bad, what in (  # (a set and a tuple key it reads: test_torch_files_audit.py writes them)
        (frozenset({1, 2}), "frozenset"),
        (1j, "complex"),
        ({frozenset({1}): 0}, "dict key of type frozenset"),
    ):
        with pytest.raises(FileFormatError, match=rf"dg.save\(format='torch'\): .*'x'.*{what}"):
            dg.save({"x": bad}, tmp_path / "bad.pt", format="torch")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileFormatError, match="unknown format 'onnx'"):
        dg.save({}, tmp_path / "x", format="onnx")


def test_a_distgraph_file_still_loads_as_before(tmp_path):
    obj = {"w": dg.ones(2), "arr": np.arange(3)}
    dg.save(obj, tmp_path / "x.dg")
    back = dg.load(tmp_path / "x.dg")
    assert back["w"].numpy().tolist() == [1.0, 1.0] and type(back["arr"]) is np.ndarray


def test_distgraph_reads_and_writes_torch_files_without_importing_torch(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "t.pt")
    code = (
        "import sys, distgraph as dg; "
        f"w = dg.load({str(tmp_path / 't.pt')!r})['w']; "
        f"dg.save({{'w': w}}, {str(tmp_path / 'back.pt')!r}, format='torch'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    assert torch.load(tmp_path / "back.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]


# ---- from a review: memo slots, other devices' files, BUILD on allowed functions, torch's other safe globals --


def test_empty_tuples_beside_0d_tensors_keep_their_own_memo_slots(tmp_path):
    """A 0-d tensor's shape and stride are one object, (), put twice: its slot used to go to the next object."""
    dg.save({"loss": dg.tensor(0.5), "args": (), "w": dg.ones(2), "kw": ()}, tmp_path / "e.pt", format="torch")
    for back in (torch.load(tmp_path / "e.pt", weights_only=True), dg.load(tmp_path / "e.pt")):
        assert back["args"] == () and back["kw"] == () and float(back["loss"]) == 0.5
        assert back["w"].tolist() == [1.0, 1.0]


def _relocated(src, dst, location):
    """torch's file `src` with every storage's location string changed to `location` (as saved on that device)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("data.pkl"):
                data = data.replace(
                    b"X\x03\x00\x00\x00cpu", b"X" + struct.pack("<I", len(location)) + location.encode()
                )
            zout.writestr(name, data)


def test_a_file_saved_on_another_device_loads_where_map_location_sends_it(tmp_path):
    torch.save({"w": torch.arange(4.0)}, tmp_path / "cpu.pt")
    _relocated(tmp_path / "cpu.pt", tmp_path / "mps.pt", "mps")
    for where in ("cpu", {"mps": "cpu"}, lambda storage, loc: storage):
        assert dg.load(tmp_path / "mps.pt", map_location=where)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(dg.errors.DeviceError, match="mps.pt: tensor 'w' was saved on mps .*map_location='cpu'"):
        dg.load(tmp_path / "mps.pt")


def test_a_file_cannot_set_attributes_of_the_loaders_functions(tmp_path):
    """BUILD on an allowed global (torch's weights_only refuses it): before, __defaults__ set from one file
    broke every later load of a Parameter in the process."""
    pkl = b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__)s\x86b0}."
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("a/data.pkl", pkl)
        archive.writestr("a/version", b"3\n")
    with pytest.raises(FileFormatError, match="evil.pt: corrupt pickle .*cannot be given extra state"):
        dg.load(tmp_path / "evil.pt")
    torch.save({"p": torch.nn.Parameter(torch.ones(2))}, tmp_path / "p.pt")
    assert isinstance(dg.load(tmp_path / "p.pt")["p"], dg.nn.Parameter)


def test_torchs_other_weights_only_globals_load():
    import collections

    buf = io.BytesIO()
    value = {"s": {1, 2}, "c": 1 + 2j, "b": bytearray(b"ab"), "n": collections.Counter({"a": 2}), "w": torch.ones(2)}
    torch.save({**value, "d": torch.device("cuda", 1), "e": torch.device("cpu"), "t": torch.float32}, buf)
    buf.seek(0)
    back = dg.load(buf)
    assert {k: back[k] for k in ("s", "c", "b", "n")} == {k: value[k] for k in ("s", "c", "b", "n")}
    assert type(back["n"]) is collections.Counter and back["t"] is dg.float32
    assert (back["d"], back["e"]) == ("cuda:1", "cpu")
