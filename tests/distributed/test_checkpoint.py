"""Distributed checkpoints (distributed/checkpoint/): `dcp.save` / `dcp.load` with the state dicts of
`get_state_dict` — a plain model alone; FSDP on 2 real Ray ranks each writing only its own pieces, resumed
bit for bit; and the same checkpoint moving between world sizes (2 ranks → one process, one process → 2
ranks, FSDP → DDP), and under Ray Train, whose report merges the ranks' folders. Bad folders, files and dicts get errors that name them."""

import os
import tempfile
import threading
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.checkpoint as dcp
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed import train
from distgraph.distributed.checkpoint import ShardedTensor
from distgraph.distributed.checkpoint.layout import merge, written
from distgraph.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from distgraph.distributed.fsdp import FSDP, ModuleWrapPolicy, ShardingStrategy
from distgraph.errors import ConfigError, DistributedError, DTypeError, FileFormatError, ShapeError
from distgraph.nn.module import StateDictError

STEPS, ROWS = 3, 6  # rows per rank


def _model(scale=1.0):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3)).to(dg.float64)
    with dg.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def _batch(step, rows):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((rows, 5))
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


def _step(model, opt, step, world=1, me=slice(None)):
    x, y = _batch(step, ROWS * world)
    opt.zero_grad()
    F.cross_entropy(model(x[me]), y[me]).backward()
    opt.step()


def _numpy(state):
    """Copies (a state dict's tensors share the parameters' memory, as torch's)."""
    return {k: v.numpy().copy() if hasattr(v, "numpy") else v for k, v in state.items()}


def _resume(model, opt, path):
    """`get_state_dict` for the structure, `dcp.load` into it, `set_state_dict` → the loaded extra entry."""
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd, "step": -1}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return state["step"]


def test_a_plain_model_and_its_adam_resume_bit_for_bit_from_a_checkpoint_folder(tmp_path):
    model, resumed = _model(), _model(scale=3.0)
    opt, resumed_opt = dg.optim.AdamW(model.parameters(), lr=0.01), dg.optim.AdamW(resumed.parameters(), lr=0.5)
    for step in range(STEPS):
        _step(model, opt, step)
    msd, osd = get_state_dict(model, opt)
    assert sorted(osd["state"]) == sorted(n for n, _ in model.named_parameters())  # keyed by name, not index
    meta = dcp.save({"model": msd, "optim": osd, "step": STEPS}, checkpoint_id=tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "ck")) == [".metadata", "__0_1.distcp"]
    assert meta.world_size == 1 and meta.state_dict_metadata["model.0.weight"]["shape"] == [8, 5]
    assert _resume(resumed, resumed_opt, tmp_path / "ck") == STEPS
    assert resumed_opt.param_groups[0]["lr"] == 0.01  # the saved groups' hyperparameters, as load_state_dict
    for m, o in ((model, opt), (resumed, resumed_opt)):
        _step(m, o, STEPS)
    want, got = _numpy(model.state_dict()), _numpy(resumed.state_dict())
    assert all(np.array_equal(want[k], got[k]) for k in want)


def test_async_save_returns_before_writing_and_saves_the_values_of_its_call(tmp_path):
    model, resumed = _model(), _model(scale=3.0)
    opt, resumed_opt = dg.optim.Adam(model.parameters(), lr=0.01), dg.optim.Adam(resumed.parameters(), lr=0.5)
    _step(model, opt, 0)
    msd, osd = get_state_dict(model, opt)
    want = _numpy(model.state_dict())
    gate = threading.Event()
    dcp._writer.submit(gate.wait, 30)  # the writer thread held: nothing of this save is written until set
    future = dcp.async_save({"model": msd, "optim": osd, "step": 1}, checkpoint_id=tmp_path)
    _step(model, opt, 1)  # training goes on before the thread writes: the checkpoint keeps the call's values
    for v in msd.values():
        v.array[...] = 0
    osd["param_groups"][0]["lr"] = 99.0
    assert not future.done() and not os.listdir(tmp_path)
    gate.set()
    assert future.result(timeout=60).world_size == 1
    assert sorted(os.listdir(tmp_path)) == [".metadata", "__0_1.distcp"]  # (this save's marker removed)
    assert _resume(resumed, resumed_opt, tmp_path) == 1 and resumed_opt.param_groups[0]["lr"] == 0.01
    got = _numpy(resumed.state_dict())
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_an_optimizer_that_has_not_stepped_is_given_its_state_without_moving_the_parameters():
    model = _model()
    before = _numpy(model.state_dict())
    opt = dg.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    _, osd = get_state_dict(model, opt)
    assert set(osd["state"]["0.weight"]) >= {"step", "exp_avg", "exp_avg_sq"}
    assert opt.param_groups[0]["lr"] == 0.1 and all(p.grad is None for p in model.parameters())
    after = _numpy(model.state_dict())
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_get_state_dict_leaves_gradients_it_finds_and_a_stepped_sgd_alone():
    for make in (lambda ps: dg.optim.Adam(ps, lr=0.1), lambda ps: dg.optim.SGD(ps, lr=0.1)):
        model = _model()
        opt = make(model.parameters())
        x, y = _batch(0, ROWS)
        F.cross_entropy(model(x), y).backward()  # a checkpoint between backward and step (torch's guard)
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        get_state_dict(model, opt)
        assert all(np.array_equal(p.grad.numpy(), g) for p, g in zip(model.parameters(), grads))
        assert not opt.state_dict()["state"]  # no step was taken on those gradients


def test_a_later_save_into_the_folder_of_an_async_save_in_flight_wins(tmp_path):
    gate = threading.Event()
    dcp._writer.submit(gate.wait, 30)
    future = dcp.async_save({"w": dg.zeros(1000), "step": 1}, checkpoint_id=tmp_path)
    threading.Timer(0.2, gate.set).start()  # (the save below waits for the one in flight, which waits for this)
    dcp.save({"w": dg.ones(1000), "step": 2}, checkpoint_id=tmp_path)
    assert future.done() and future.result().world_size == 1
    state = {"w": dg.zeros(1000), "step": 0}
    dcp.load(state, checkpoint_id=tmp_path)
    assert state["step"] == 2 and state["w"].numpy().min() == 1.0


def test_keys_that_look_like_chunk_names_and_tuples_are_kept_apart(tmp_path):
    pieces = [(0, dg.tensor(np.arange(4.0)))]
    dcp.save({"a": ShardedTensor((4,), np.float64, pieces), "a#0": dg.full((2,), 7.0, dtype=dg.float64)},
             checkpoint_id=tmp_path)  # fmt: skip
    state = {"a": ShardedTensor((4,), np.float64, [(0, dg.zeros(4, dtype=dg.float64))]), "a#0": dg.zeros(2)}
    dcp.load(state, checkpoint_id=tmp_path)
    assert state["a"].to_local().tolist() == [0.0, 1.0, 2.0, 3.0] and state["a#0"].tolist() == [7.0, 7.0]
    dcp.save({"t": (dg.ones(2), "x")}, checkpoint_id=tmp_path / "tuple")
    with pytest.raises(ConfigError, match="'t.1' lies in a tuple"):
        dcp.load({"t": (dg.ones(2), "y")}, checkpoint_id=tmp_path / "tuple")
    with pytest.raises(DTypeError, match="a piece of dtype float32 in a tensor of dtype float64"):
        ShardedTensor((4,), np.float64, [(0, dg.zeros(4, dtype=dg.float32))])
    # torch's precedence: checkpoint_id over the storage writer's own path
    dcp.save({"w": dg.ones(1)}, checkpoint_id=tmp_path / "id", storage_writer=dcp.FileSystemWriter(tmp_path / "writer"))
    assert (tmp_path / "id" / ".metadata").exists() and not (tmp_path / "writer").exists()
    keep = dcp.FileSystemWriter(tmp_path / "id", overwrite=False, thread_count=4)  # (torch's keywords)
    with pytest.raises(ConfigError, match="already holds a checkpoint and the writer has overwrite=False"):
        dcp.save({"w": dg.zeros(1)}, storage_writer=keep)


def test_fsdp_orig_params_with_a_frozen_parameter_and_wrong_configs():
    from distgraph.distributed.fsdp import FullOptimStateDictConfig, ShardedStateDictConfig, StateDictType

    model = FSDP(_model(), use_orig_params=True)
    model.module[0].bias.requires_grad_(False)
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    _step(model, opt, 0)
    msd, osd = get_state_dict(model, opt)
    assert "0.bias" not in osd["state"] and "0.weight" in osd["state"]
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)  # (refused 0.bias's missing state before)
    with pytest.raises(ConfigError, match="FULL_STATE_DICT takes a FullStateDictConfig, got ShardedStateDictConfig"):
        FSDP.set_state_dict_type(model, StateDictType.FULL_STATE_DICT, ShardedStateDictConfig())
    with pytest.raises(ConfigError, match="SHARDED_STATE_DICT takes a ShardedOptimStateDictConfig, got Full"):
        FSDP.set_state_dict_type(model, StateDictType.SHARDED_STATE_DICT, None, FullOptimStateDictConfig())


class _AppState(dcp.Stateful):
    """torch's DCP tutorial's application state, as written there."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self):
        model_state_dict, optimizer_state_dict = get_state_dict(self.model, self.optimizer)
        return {"model": model_state_dict, "optim": optimizer_state_dict}

    def load_state_dict(self, state_dict):
        set_state_dict(self.model, self.optimizer, model_state_dict=state_dict["model"],
                       optim_state_dict=state_dict["optim"])  # fmt: skip


def test_stateful_objects_save_and_load_themselves_as_torchs_tutorial_writes_it(tmp_path):
    model, resumed = _model(), _model(scale=3.0)
    opt, resumed_opt = dg.optim.Adam(model.parameters(), lr=0.01), dg.optim.Adam(resumed.parameters(), lr=0.5)
    _step(model, opt, 0)
    dcp.save({"app": _AppState(model, opt), "epoch": 4}, checkpoint_id=tmp_path / "app")
    state = {"app": _AppState(resumed, resumed_opt), "epoch": 0}
    dcp.load(state, checkpoint_id=tmp_path / "app")
    assert state["epoch"] == 4 and isinstance(state["app"], _AppState)
    for m, o in ((model, opt), (resumed, resumed_opt)):
        _step(m, o, 1)
    want, got = _numpy(model.state_dict()), _numpy(resumed.state_dict())
    assert all(np.array_equal(want[k], got[k]) for k in want)
    plain = _model(scale=5.0)  # a module is Stateful too: its state_dict() saved, load_state_dict() loaded
    dcp.save({"model": model}, checkpoint_id=tmp_path / "model")
    dcp.load({"model": plain}, checkpoint_id=tmp_path / "model")
    assert all(np.array_equal(v, _numpy(plain.state_dict())[k]) for k, v in _numpy(model.state_dict()).items())


def test_ignore_frozen_params_leaves_them_out_and_lets_them_be_missing_on_load():
    model = _model()
    model[0].bias.requires_grad_(False)
    msd = get_state_dict(model, dg.optim.SGD(model.parameters(), lr=0.1),
                         options=StateDictOptions(ignore_frozen_params=True))[0]  # fmt: skip
    assert "0.bias" not in msd and "0.weight" in msd
    other = _model(scale=2.0)
    other[0].bias.requires_grad_(False)
    options = StateDictOptions(ignore_frozen_params=True)
    assert set_model_state_dict(other, msd, options=options).missing_keys == ["0.bias"]
    assert np.array_equal(other[0].weight.detach().numpy(), model[0].weight.detach().numpy())
    with pytest.raises(StateDictError, match=r"missing key\(s\) \['2.weight'\]"):
        set_model_state_dict(other, {k: v for k, v in msd.items() if k != "2.weight"}, options=options)
    with pytest.raises(ConfigError, match="broadcast_from_rank0 needs full_state_dict=True"):
        StateDictOptions(broadcast_from_rank0=True)
    with pytest.raises(ConfigError, match="flatten_optimizer_state_dict=True are not supported"):
        StateDictOptions(flatten_optimizer_state_dict=True)


def test_a_tied_parameter_loads_from_whichever_of_its_names_a_sharded_dict_holds():
    from distgraph.distributed.fsdp import StateDictType

    def tied(scale):
        dg.manual_seed(0)
        m = nn.Sequential(nn.Embedding(10, 4), nn.Tanh(), nn.Linear(4, 10, bias=False))
        m[2].weight = m[0].weight
        with dg.no_grad():
            m[0].weight.mul_(scale)
        return FSDP(m)

    saved, loaded = tied(1.0), tied(3.0)
    with FSDP.state_dict_type(saved, StateDictType.SHARDED_STATE_DICT):
        state = saved.state_dict()
    with FSDP.state_dict_type(loaded, StateDictType.SHARDED_STATE_DICT):  # (only the second name: strict=False)
        assert loaded.load_state_dict({"2.weight": state["2.weight"]}, strict=False).missing_keys == ["0.weight"]
    assert np.array_equal(loaded.state_dict()["0.weight"].numpy(), saved.state_dict()["0.weight"].numpy())


def test_sharded_tensor_pieces_are_filled_across_the_chunks_of_any_other_layout(tmp_path):
    full = np.arange(24, dtype=np.float64).reshape(4, 6)
    dcp.save({"w": dg.tensor(full)}, checkpoint_id=tmp_path)
    pieces = [(3, dg.zeros(7, dtype=dg.float64)), (17, dg.zeros(5, dtype=dg.float64))]  # any runs of elements
    target = {"w": ShardedTensor((4, 6), np.float64, pieces)}
    dcp.load(target, checkpoint_id=tmp_path)
    assert target["w"].to_local().tolist() == [*range(3, 10), *range(17, 22)]
    assert np.array_equal(ShardedTensor((4, 6), np.float64, [(0, dg.tensor(full.ravel()))]).full_tensor().numpy(), full)
    with pytest.raises(ShapeError, match=r"a piece of shape \(5,\) at offset 20 does not lie in the 24 elements"):
        ShardedTensor((4, 6), np.float64, [(20, dg.zeros(5, dtype=dg.float64))])


def test_bad_checkpoints_and_dicts_get_errors_that_name_them(tmp_path):
    folder = tmp_path / "ck"
    dcp.save({"w": dg.ones(3, 2), "epoch": 1}, checkpoint_id=folder)
    with pytest.raises(FileFormatError, match="no such checkpoint folder"):
        dcp.load({"w": dg.ones(3, 2)}, checkpoint_id=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"missing key\(s\) in checkpoint .*\['v'\]"):
        dcp.load({"v": dg.ones(3, 2)}, checkpoint_id=folder)
    with pytest.raises(ShapeError, match=r"size mismatch for 'w': shape \(3, 2\) in checkpoint .*, \(2, 3\) here"):
        dcp.load({"w": dg.ones(2, 3)}, checkpoint_id=folder)
    with pytest.raises(ConfigError, match="'epoch' is a tensor here but an object in checkpoint"):
        dcp.load({"epoch": dg.ones(1)}, checkpoint_id=folder)
    with pytest.raises(ConfigError, match="give checkpoint_id="):
        dcp.save({"w": dg.ones(1)})
    data = folder / "__0_1.distcp"  # (tensors every rank holds alike: rank 0's second file)
    data.write_bytes(data.read_bytes()[:-8])  # a truncated rank file
    with pytest.raises(FileFormatError, match="__0_1.distcp"):
        dcp.load({"w": dg.ones(3, 2)}, checkpoint_id=folder)
    os.remove(folder / ".metadata")  # a save cut short: its index is written last
    with pytest.raises(FileFormatError, match="no .metadata in it .* a save that did not finish"):
        dcp.load({"w": dg.ones(3, 2)}, checkpoint_id=folder)
    chunk = {"rank": 0, "file": "__0_1.distcp", "name": "c0", "offset": 1, "numel": 3}
    gap = {"kind": "tensor", "shape": [4], "dtype": "float64", "chunks": [chunk]}
    dg.save({"version": 1, "world_size": 1, "entries": {"w": gap}}, folder / ".metadata")
    with pytest.raises(FileFormatError, match=r"\.metadata entry 'w' is damaged .*leave a gap at element 0"):
        dcp.load({"w": dg.ones(4)}, checkpoint_id=folder)
    elsewhere = dict(gap, chunks=[dict(chunk, offset=0, numel=4, file="../../etc/passwd")])
    dg.save({"version": 1, "world_size": 1, "entries": {"w": elsewhere}}, folder / ".metadata")
    with pytest.raises(FileFormatError, match="names a data file .* not of this checkpoint"):
        dcp.load({"w": dg.ones(4)}, checkpoint_id=folder)


def test_ranks_that_save_different_things_under_one_key_are_told_which():
    one = {
        "kind": "tensor",
        "shape": [2],
        "dtype": "float64",
        "chunks": [{"rank": 0, "name": "w", "offset": 0, "numel": 2}],
    }
    other = dict(one, shape=[3], chunks=[])
    with pytest.raises(
        ConfigError, match=r"disagree on 'w': a tensor of shape \(2,\), float64 .* shape \(3,\), float64 on rank 1"
    ):
        merge([{"w": one}, {"w": other}], "dcp.save")
    shifted = dict(one, shape=[2], chunks=[{"rank": 1, "name": "w", "offset": 0, "numel": 1}])
    with pytest.raises(ShapeError, match="'w' overlap at element 0"):
        merge([{"w": one}, {"w": shifted}], "dcp.save")


def test_a_chunk_two_ranks_hold_alike_is_written_once_by_the_lower_rank():
    """Replicas (FSDP's hybrid sharding) save the same elements: the index names rank 0's, rank 1 writes none."""

    def entry(rank):
        chunk = {"file": f"__{rank}_0.distcp", "name": "c0", "offset": 0, "numel": 2}
        return {"w": {"kind": "tensor", "shape": [2], "dtype": "float64", "chunks": [chunk]}}

    merged = merge([entry(0), entry(1)], "dcp.save")
    assert [c["file"] for c in merged["w"]["chunks"]] == ["__0_0.distcp"]
    files = {"__1_0.distcp": {"c0": np.zeros(2)}}
    assert written(files, merged) == {}
    assert list(written({"__0_0.distcp": {"c0": np.zeros(2)}}, merged)["__0_0.distcp"]) == ["c0"]


# ---- FSDP on 2 real ranks ------------------------------------------------------------------------------------
CONFIGS = [("FULL_SHARD", False), ("SHARD_GRAD_OP", True), ("NO_SHARD", False)]


def _fsdp(strategy, orig, scale=1.0):
    return FSDP(_model(scale), sharding_strategy=ShardingStrategy[strategy], use_orig_params=orig,
                auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))  # fmt: skip


def _on_each_rank(folder):
    rank, world = dist.get_rank(), dist.get_world_size()
    me = slice(ROWS * rank, ROWS * (rank + 1))
    out = {}
    for strategy, orig in CONFIGS:
        path = os.path.join(folder, strategy)
        model = _fsdp(strategy, orig)
        opt = dg.optim.Adam(model.parameters(), lr=0.01)
        for step in range(STEPS):
            _step(model, opt, step, world, me)
        msd, osd = get_state_dict(model, opt)
        kinds = sorted({type(v).__name__ for v in msd.values()})
        held = sum(t.shape[0] for v in msd.values() if isinstance(v, ShardedTensor) for _, t in v.pieces)
        dcp.save({"model": msd, "optim": osd, "step": STEPS}, checkpoint_id=path)
        full, full_osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
        again = _fsdp(strategy, orig, scale=3.0)
        again_opt = dg.optim.Adam(again.parameters(), lr=0.5)
        loaded_step = _resume(again, again_opt, path)
        for m, o in ((model, opt), (again, again_opt)):
            _step(m, o, STEPS, world, me)
        after = [_numpy(get_state_dict(m, o, options=StateDictOptions(full_state_dict=True))[0]) for m, o in
                 ((model, opt), (again, again_opt))]  # fmt: skip
        out[strategy] = {"kinds": kinds, "held": held, "full": _numpy(full), "osd": full_osd, "step": loaded_step,
                         "resumed": all(np.array_equal(after[0][k], after[1][k]) for k in after[0])}  # fmt: skip
    # async: this rank's part copied before the call returns, written while a step runs; rank 0's future ends
    # when every rank's file and the index are written
    model = _fsdp("FULL_SHARD", False)
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    _step(model, opt, 0, world, me)
    msd, osd = get_state_dict(model, opt)
    before = _numpy(get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))[0])
    future = dcp.async_save({"model": msd, "optim": osd, "step": 1}, checkpoint_id=os.path.join(folder, "async"))
    _step(model, opt, 1, world, me)
    future.result(timeout=60)
    dist.barrier()
    again = _fsdp("FULL_SHARD", False, scale=3.0)
    again_opt = dg.optim.Adam(again.parameters(), lr=0.5)
    out["async_step"] = _resume(again, again_opt, os.path.join(folder, "async"))
    got = _numpy(get_state_dict(again, again_opt, options=StateDictOptions(full_state_dict=True))[0])
    out["async_saved_the_call"] = all(np.array_equal(got[k], before[k]) for k in before)
    # an async save whose write fails on rank 1 (its file's name taken by a folder): rank 0's future says so at
    # once, not after its 600 s wait for rank 1's file
    bad_async = os.path.join(folder, "async-bad")
    if rank == 1:
        os.makedirs(os.path.join(bad_async, "__1_0.distcp"))
    dist.barrier()
    started = time.monotonic()
    try:
        dcp.async_save({"model": msd}, checkpoint_id=bad_async).result(timeout=60)
        out["bad_async"] = None
    except Exception as exc:  # noqa: BLE001 - rank 1 its own write's error, rank 0 the DistributedError
        out["bad_async"] = (type(exc).__name__, str(exc), time.monotonic() - started)
    # a rank whose part cannot be written (its folder is a file) fails every rank's save, naming it, at once
    bad = os.path.join(folder, "a-file") if rank == 1 else os.path.join(folder, "fine")
    if rank == 1:
        open(bad, "w").close()
    try:
        dcp.save({"w": dg.ones(2)}, checkpoint_id=bad)
        out["bad_save"] = None
    except DistributedError as exc:
        out["bad_save"] = str(exc)
    # one process's checkpoint (the driver's, before the launch) into 2 ranks' FULL_SHARD
    model = _fsdp("FULL_SHARD", False, scale=3.0)
    opt = dg.optim.Adam(model.parameters(), lr=0.5)
    out["from_one"] = _resume(model, opt, os.path.join(folder, "one"))
    out["from_one_full"] = _numpy(get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))[0])
    # full dicts only rank 0 holds, sent to the others (torch's broadcast_from_rank0; rank 1 passes {})
    full_model, full_optim = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    fresh = _fsdp("FULL_SHARD", False, scale=5.0)
    fresh_opt = dg.optim.Adam(fresh.parameters(), lr=0.5)
    from_0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_state_dict(fresh, fresh_opt, model_state_dict=full_model if rank == 0 else {},
                   optim_state_dict=full_optim if rank == 0 else {}, options=from_0)  # fmt: skip
    got = _numpy(get_state_dict(fresh, fresh_opt, options=StateDictOptions(full_state_dict=True))[0])
    out["from_rank0"] = all(np.array_equal(got[k], v) for k, v in out["from_one_full"].items())
    out["from_rank0_lr"] = fresh_opt.param_groups[0]["lr"]
    # FSDP's checkpoint into DDP (its names are the plain model's, `module.` left out)
    ddp = dist.DistributedDataParallel(_model(scale=3.0))
    ddp_opt = dg.optim.Adam(ddp.parameters(), lr=0.5)
    out["ddp_keys"] = sorted(get_state_dict(ddp, ddp_opt)[0])
    out["ddp_step"] = _resume(ddp, ddp_opt, os.path.join(folder, "FULL_SHARD"))
    out["ddp"] = _numpy(ddp.module.state_dict())
    # torch's: full dicts offloaded to the cpu are rank 0's alone ({} on the others), FSDP's and DDP's alike
    offloaded = StateDictOptions(full_state_dict=True, cpu_offload=True)
    dicts = (*get_state_dict(model, opt, options=offloaded), *get_state_dict(ddp, ddp_opt, options=offloaded))
    out["offloaded"] = [len(d) > 0 for d in dicts]
    return out


@pytest.mark.ray
def test_fsdp_ranks_save_their_own_pieces_resume_bit_for_bit_and_move_between_world_sizes(ray_session, tmp_path):
    plain = _model()
    plain_opt = dg.optim.Adam(plain.parameters(), lr=0.01)
    for step in range(STEPS):
        _step(plain, plain_opt, step, 2)  # the 2 ranks' global batches, in one process
    msd, osd = get_state_dict(plain, plain_opt)
    dcp.save({"model": msd, "optim": osd, "step": 7}, checkpoint_id=tmp_path / "one")
    ranks = dist.launch(_on_each_rank, workers=2, cpus_per_worker=0.5, args=(str(tmp_path),), timeout_s=120)
    assert ranks[0]["offloaded"] == [True] * 4 and ranks[1]["offloaded"] == [False] * 4
    whole = sum(p.numel() for p in plain.parameters())  # 40 8 | 56 7 | 21 3: units of 48, 63 and 24
    for strategy, _ in CONFIGS:
        r0, r1 = ranks[0][strategy], ranks[1][strategy]
        files = sorted(os.listdir(tmp_path / strategy))
        if strategy == "NO_SHARD":  # whole on every rank: plain tensors, written once (rank 0's second file)
            assert r0["kinds"] == ["Tensor"] and r0["held"] == 0 and files == [".metadata", "__0_1.distcp"]
        else:  # each rank its pieces (in a file of its own), which together are the model once
            assert files == [".metadata", "__0_0.distcp", "__1_0.distcp"]
            assert r0["kinds"] == ["ShardedTensor"] and r0["held"] + r1["held"] == whole and r0["held"] < whole
        assert r0["resumed"] and r1["resumed"] and r0["step"] == STEPS, strategy
        # 2 ranks → one process: the plain model and its Adam from the FSDP checkpoint are FSDP's full dicts
        model, opt = _model(scale=3.0), None
        opt = dg.optim.Adam(model.parameters(), lr=0.5)
        assert _resume(model, opt, tmp_path / strategy) == STEPS
        got = _numpy(model.state_dict())
        assert all(np.array_equal(got[k], r0["full"][k]) for k in got), strategy
        _, got_osd = get_state_dict(model, opt)
        for name, entry in r0["osd"]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                assert np.array_equal(got_osd["state"][name][key], entry[key]), (strategy, name, key)
        # and FSDP trained as the plain model did (the sharded path changes no arithmetic)
        plain_state = _numpy(plain.state_dict())
        for k in plain_state:
            np.testing.assert_allclose(r0["full"][k], plain_state[k], rtol=0, atol=1e-12, err_msg=f"{strategy} {k}")
    kind, message, _ = ranks[0]["bad_async"]
    assert kind == "DistributedError" and "writing into" in message and "failed on rank(s) [1]" in message
    # one process → 2 ranks: each rank loaded its pieces of the plain checkpoint
    for r in ranks:
        assert r["from_one"] == 7
        assert all(np.array_equal(r["from_one_full"][k], v) for k, v in _numpy(plain.state_dict()).items())
        assert r["ddp_keys"] == sorted(plain.state_dict()) and r["ddp_step"] == STEPS
        assert r["async_step"] == 1 and r["async_saved_the_call"]
        assert r["from_rank0"] and r["from_rank0_lr"] == 0.01  # (the fresh optimizer had 0.5)
        assert r["bad_async"] is not None and r["bad_async"][2] < 30
        assert r["bad_save"].startswith("dcp.save: preparing failed on rank(s) [1]: rank 1: FileExistsError")
        assert all(np.array_equal(r["ddp"][k], v) for k, v in ranks[0]["FULL_SHARD"]["full"].items())


def _ray_train_loop(config):
    """Ray Train's pattern for sharded models: every rank saves its part into a folder of its own and reports it."""
    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = train.prepare_model(_model(scale=3.0), parallel_strategy="fsdp",
                                parallel_strategy_kwargs={"auto_wrap_policy": ModuleWrapPolicy({nn.Linear})})  # fmt: skip
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    start = 0
    if train.get_checkpoint() is not None:
        with train.get_checkpoint().as_directory() as d:
            start = _resume(model, opt, d)
    for step in range(start, start + config["steps"]):
        _step(model, opt, step, world, slice(ROWS * rank, ROWS * (rank + 1)))
        with tempfile.TemporaryDirectory() as d:
            msd, osd = get_state_dict(model, opt)
            dcp.save({"model": msd, "optim": osd, "step": step + 1}, checkpoint_id=d)
            train.report({"step": step + 1}, checkpoint=train.Checkpoint.from_directory(d))
    return _numpy(get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))[0])


@pytest.mark.ray
def test_ray_train_merges_the_ranks_sharded_checkpoint_folders_and_resumes_from_them(ray_session, tmp_path):
    scaling = train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})
    run = train.RunConfig(name="fsdp", storage_path=str(tmp_path))

    def fit(steps, resume=None, run=run):
        trainer = train.TorchTrainer(_ray_train_loop, train_loop_config={"steps": steps}, scaling_config=scaling,
                                     run_config=run, resume_from_checkpoint=resume)  # fmt: skip
        return trainer.fit()

    # a run of its own: a second fit under one RunConfig(name) continues that run's folder, as in Ray
    straight = fit(STEPS + 1, run=train.RunConfig(name="fsdp-straight", storage_path=str(tmp_path)))
    first = fit(STEPS)
    assert sorted(os.listdir(first.checkpoint.path)) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    resumed = fit(1, resume=first.checkpoint)
    assert resumed.metrics["step"] == STEPS + 1
    want, got = straight.return_value, resumed.return_value
    assert all(np.array_equal(want[k], got[k]) for k in want)  # stopped and resumed = never stopped, bit for bit
