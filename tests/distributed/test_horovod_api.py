"""The rest of Horovod's torch API in `distgraph.distributed.horovod`: the async forms with their handles
(`synchronize`, `poll`), the timeline (`start_timeline` / `stop_timeline`: rank 0 writes every rank's
collectives), `is_initialized`, the build queries, the global process set; alone (rank 0 of 1) and on 2
real Ray ranks, against numpy."""

import inspect
import json
import os

import numpy as np
import pytest
from ray.util import collective

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.horovod as hvd
from distgraph.amp import GradScaler
from distgraph.backend import cuda_is_available
from distgraph.distributed import collective_trace
from distgraph.distributed.horovod_join import ROUND_WORDS
from distgraph.errors import ConfigError, DistributedError, DTypeError


@pytest.fixture(autouse=True)
def _fresh():
    """Every test starts and ends with Horovod shut down and no timeline recording (module state)."""
    hvd.shutdown()
    yield
    collective_trace._state["trace"] = None
    hvd.shutdown()


# ---- alone: rank 0 of 1 -------------------------------------------------------------------------------------
def test_each_async_form_hands_its_collectives_output_over_once():
    x = dg.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    y = dg.tensor(np.array([[7.0, 8.0]]))
    handles = {
        "allreduce": hvd.allreduce_async(x, name="x", op=hvd.Sum, postscale_factor=3.0),
        "grouped": hvd.grouped_allreduce_async([x, y], average=True),
        "allgather": hvd.allgather_async(x),
        "grouped allgather": hvd.grouped_allgather_async([x, y]),
        "broadcast": hvd.broadcast_async(x, root_rank=0),
        "reducescatter": hvd.reducescatter_async(x, op=hvd.Sum, prescale_factor=2.0),
        "grouped reducescatter": hvd.grouped_reducescatter_async([x, y]),
        "alltoall": hvd.alltoall_async(x),
        "alltoall splits": hvd.alltoall_async(x, splits=[3]),
    }
    assert list(handles.values()) == sorted(set(handles.values())) and all(type(h) is int for h in handles.values())
    assert all(hvd.poll(h) is True for h in handles.values())  # finished when returned
    got = {k: hvd.synchronize(h) for k, h in handles.items()}
    a, b = x.detach().numpy(), y.numpy()
    np.testing.assert_array_equal(got["allreduce"].numpy(), a * 3)
    assert [t.tolist() for t in got["grouped"]] == [a.tolist(), b.tolist()]
    np.testing.assert_array_equal(got["allgather"].numpy(), a)
    assert [t.tolist() for t in got["grouped allgather"]] == [a.tolist(), b.tolist()]
    np.testing.assert_array_equal(got["broadcast"].numpy(), a)
    np.testing.assert_array_equal(got["reducescatter"].numpy(), a * 2)
    assert [t.tolist() for t in got["grouped reducescatter"]] == [a.tolist(), b.tolist()]
    for key in ("alltoall", "alltoall splits"):  # (output, received splits) with or without splits, as Horovod's
        out, received = got[key]
        np.testing.assert_array_equal(out.numpy(), a)
        assert received.tolist() == [3] and received.dtype == dg.int32
    # Horovod's async ops record no graph: the outputs of a tensor that requires grad are plain tensors
    assert not got["allreduce"].requires_grad and got["allreduce"].grad_fn is None
    # a handle is handed over once
    for h in handles.values():
        with pytest.raises(ConfigError, match=rf"synchronize: Handle {h} was not created or has been cleared\."):
            hvd.synchronize(h)
        with pytest.raises(ValueError, match=rf"poll: Handle {h} was not created or has been cleared\."):
            hvd.poll(h)
    with pytest.raises(ConfigError, match="synchronize: Handle 10000 was not created"):
        hvd.synchronize(10000)


def test_in_place_async_forms_reduce_into_the_tensor_and_hand_it_back():
    t = dg.tensor(np.array([1.0, 2.0]))
    pair = [dg.tensor(np.array([3.0])), dg.tensor(np.array([4.0, 5.0]))]
    h1, h2 = hvd.allreduce_async_(t, op=hvd.Sum, prescale_factor=4.0), hvd.grouped_allreduce_async_(pair)
    h3 = hvd.broadcast_async_(dg.tensor(np.array([6.0])), root_rank=0)
    assert hvd.synchronize(h1) is t and t.tolist() == [4.0, 8.0]
    out = hvd.synchronize(h2)
    assert out[0] is pair[0] and out[1] is pair[1] and [p.tolist() for p in pair] == [[3.0], [4.0, 5.0]]
    assert hvd.synchronize(h3).tolist() == [6.0]
    for name, fn in (("allreduce_async_", hvd.allreduce_async_), ("grouped_allreduce_async_", hvd.grouped_allreduce_async_)):  # fmt: skip
        assert fn.__name__ == name and "process_set" in str(inspect.signature(fn))


def test_async_forms_check_their_arguments_as_the_sync_ones():
    x = dg.tensor(np.arange(4.0))
    with pytest.raises(ConfigError, match="allreduce: prescale and postscale factors are supported for Sum and Average, not max"):  # fmt: skip
        hvd.allreduce_async(x, op=hvd.Max, prescale_factor=2.0)
    with pytest.raises(ConfigError, match="reducescatter: prescale and postscale factors are supported"):
        hvd.reducescatter_async(x, op=hvd.Min, postscale_factor=2.0)
    with pytest.raises(ConfigError, match="The op parameter supersedes average"):
        hvd.allreduce_async_(x, average=True, op=hvd.Sum)
    for fn in (hvd.allreduce_async, hvd.allgather_async, hvd.alltoall_async, hvd.reducescatter_async):
        with pytest.raises(ConfigError, match="process_set must be an hvd.ProcessSet, got <object"):
            fn(x, process_set=object())
    with pytest.raises(ConfigError, match="process_set must be an hvd.ProcessSet, got <object"):
        hvd.broadcast_async(x, 0, process_set=object())
    # Horovod's default set, named, is the launch's; max is not differentiable, but async records no graph
    got = hvd.synchronize(hvd.allreduce_async(dg.tensor(np.arange(4.0), requires_grad=True), op=hvd.Max))
    assert got.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert hvd.synchronize(hvd.allgather_async(x, process_set=hvd.global_process_set)).tolist() == x.tolist()
    hvd.barrier(process_set=hvd.global_process_set)
    assert hvd.global_process_set.ranks == [0] and hvd.global_process_set.size() == 1
    with pytest.raises(
        ConfigError, match=r"add_process_set: a process set of ranks \[0\] is already registered \(id 0\)"
    ):
        hvd.add_process_set([0])  # (alone, [0] is the global set)
    with pytest.raises(ConfigError, match=r"add_process_set: ranks \[5\] are not the launch's ranks \[0\]"):
        hvd.add_process_set([5])
    with pytest.raises(ConfigError, match=r"remove_process_set: expected an hvd.ProcessSet, got \[0\]"):
        hvd.remove_process_set([0])
    assert hvd.remove_process_set(hvd.global_process_set) is False  # the global set stays


def test_init_marks_horovod_initialized_until_shutdown_and_forgets_old_handles():
    assert hvd.is_initialized() is False
    hvd.init()
    assert hvd.is_initialized() is True
    h = hvd.allreduce_async(dg.ones(2))
    hvd.init()  # Horovod's init starts a new table of handles
    with pytest.raises(ConfigError, match=f"Handle {h} was not created or has been cleared"):
        hvd.synchronize(h)
    hvd.shutdown()
    assert hvd.is_initialized() is False


def test_build_queries_say_what_distgraph_has_here():
    assert hvd.mpi_built() is False and hvd.mpi_enabled() is False
    assert hvd.ddl_built() is False and hvd.ccl_built() is False
    with pytest.raises(ValueError, match="Horovod MPI is not enabled; Please make sure it's installed and enabled."):
        hvd.mpi_threads_supported()
    assert hvd.gloo_built() is collective.gloo_available()
    assert hvd.gloo_enabled() is False  # outside a launch: no group at all
    assert hvd.nccl_built() is cuda_is_available()
    assert hvd.cuda_built() or hvd.rocm_built() or not cuda_is_available()
    assert not (hvd.cuda_built() and hvd.rocm_built())
    assert hvd.HorovodInternalError is DistributedError and hvd.SyncBatchNorm is dg.nn.SyncBatchNorm


def test_distributed_optimizer_takes_horovods_grouping_keywords():
    p = dg.zeros(2, requires_grad=True)
    opt = hvd.DistributedOptimizer(
        dg.optim.SGD([p], lr=1.0), num_groups=2, groups=[[p]], sparse_as_dense=True, process_set=hvd.global_process_set
    )
    p.grad = dg.tensor(np.array([1.0, -1.0], np.float32))
    opt.step()
    assert p.tolist() == [-1.0, 1.0]
    for kwargs, words in (
        ({"num_groups": -1}, "num_groups should be a non-negative integer, got -1"),
        ({"groups": [p]}, "groups should be a list of lists of parameters"),
        ({"process_set": object()}, "process_set must be an hvd.ProcessSet"),
        (
            {"process_set": hvd.ProcessSet([0])},
            r"ProcessSet\(process_set_id=None, ranks=\[0\], mpi_comm=None\) is not registered",
        ),
    ):
        with pytest.raises(ConfigError, match=f"DistributedOptimizer: {words}"):
            hvd.DistributedOptimizer(dg.optim.SGD([p], lr=1.0), **kwargs)


def test_chrome_trace_has_a_process_per_rank_and_an_event_per_collective():
    events = [
        [{"name": "allreduce.loss", "op": "allreduce", "bytes": 8, "start": 100.5, "end": 100.5005}],
        [
            {"name": "allreduce.loss", "op": "allreduce", "bytes": 8, "start": 100.25, "end": 100.5005},
            {"name": "broadcast.noname.1", "op": "broadcast", "bytes": 16, "start": 101.0, "end": 101.002},
        ],
    ]
    assert collective_trace.chrome_trace(events) == {
        "traceEvents": [
            {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "hvd rank 0"}},
            {"name": "allreduce.loss", "cat": "allreduce", "ph": "X", "pid": 0, "tid": 0, "ts": 250000.0,
             "dur": 500.0, "args": {"op": "allreduce", "bytes": 8, "rank": 0}},
            {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "hvd rank 1"}},
            {"name": "allreduce.loss", "cat": "allreduce", "ph": "X", "pid": 1, "tid": 0, "ts": 0.0,
             "dur": 250500.0, "args": {"op": "allreduce", "bytes": 8, "rank": 1}},
            {"name": "broadcast.noname.1", "cat": "broadcast", "ph": "X", "pid": 1, "tid": 0, "ts": 750000.0,
             "dur": 2000.0, "args": {"op": "broadcast", "bytes": 16, "rank": 1}},
        ],
        "displayTimeUnit": "ms",
        "otherData": {"ranks": 2, "collectives": 3},
    }  # fmt: skip
    assert collective_trace.chrome_trace([[]])["traceEvents"] == [
        {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "hvd rank 0"}}
    ]


def _names(path):
    with open(path, encoding="utf-8") as f:
        trace = json.load(f)
    return [(e["name"], e["args"]["bytes"]) for e in trace["traceEvents"] if e["ph"] == "X"]


def test_timeline_has_one_event_per_collective_between_start_and_stop(tmp_path):
    path = tmp_path / "timeline.json"
    x = dg.tensor(np.zeros(3, np.float32))  # 12 bytes
    hvd.allreduce(x, name="before")  # not recorded
    hvd.start_timeline(str(path), mark_cycles=True)
    with pytest.raises(ConfigError, match="start_timeline: a timeline is already recording"):
        hvd.start_timeline(str(tmp_path / "other.json"))
    hvd.allreduce_(x, name="loss")  # through allreduce: one event
    hvd.grouped_allreduce([x, x])  # through allreduce twice: one event, both tensors' bytes
    hvd.synchronize(hvd.allreduce_async(x))
    hvd.synchronize(hvd.alltoall_async(x, name="a2a"))
    hvd.broadcast_(x, 0, name="w")
    hvd.barrier()
    p = dg.zeros(5, requires_grad=True)  # 20 bytes of float32 gradient
    opt = hvd.DistributedOptimizer(dg.optim.SGD([p], lr=0.1))
    p.grad = dg.ones(5)
    opt.step()
    with pytest.raises(ValueError):
        hvd.allreduce(x, op="nonsense")  # a collective that fails is no event
    assert not path.exists()  # written at stop
    hvd.stop_timeline()
    hvd.allreduce(x, name="after")  # not recorded
    assert _names(path) == [
        ("allreduce.loss", 12), ("grouped_allreduce.noname.1", 24), ("allreduce.noname.2", 12),
        ("alltoall.a2a", 12), ("broadcast.w", 12), ("barrier.noname.3", 0), ("allreduce.gradients", 20),
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"stop_timeline: no timeline is recording; call start_timeline\(file_path\)"):
        hvd.stop_timeline()


def test_shutdown_writes_a_running_timeline(tmp_path):
    hvd.init()
    hvd.start_timeline(str(tmp_path / "t.json"))
    hvd.allreduce(dg.ones(2), name="x")
    hvd.shutdown()
    assert _names(tmp_path / "t.json") == [("allreduce.x", 8)]
    assert not collective_trace.recording()


# ---- 2 ranks -------------------------------------------------------------------------------------------------
def _on_each_rank(folder):
    r, out = hvd.rank(), {}
    hvd.init()
    out["initialized"], out["gloo enabled"] = hvd.is_initialized(), hvd.gloo_enabled()
    hvd.start_timeline(os.path.join(folder, f"rank{r}.json"))  # rank 0's path is the file, as Horovod's
    mine = dg.tensor(np.array([1.0, 2.0]) * (r + 1))  # rank 0: [1, 2], rank 1: [2, 4]
    rows = dg.tensor(np.arange(2.0 + r).reshape(-1, 1) + 10 * r)  # rank 0: 2 rows, rank 1: 3 rows
    handles = {
        "avg": hvd.allreduce_async(mine, name="avg"),
        "grouped": hvd.grouped_allreduce_async([mine, mine * 2], op=hvd.Sum),
        "gather": hvd.allgather_async(rows),
        "grouped gather": hvd.grouped_allgather_async([rows, mine.reshape(2, 1)]),
        "bcast": hvd.broadcast_async(mine, root_rank=1),
        "rs": hvd.reducescatter_async(dg.tensor(np.arange(4.0) * (r + 1)), op=hvd.Sum),
        "grouped rs": hvd.grouped_reducescatter_async([dg.tensor(np.arange(2.0) + r)], op=hvd.Sum),
        "a2a": hvd.alltoall_async(dg.tensor(np.array([1.0, 2.0, 3.0]) + 10 * r), splits=[1, 2] if r == 0 else [2, 1]),
    }  # fmt: skip
    out["polled"] = [hvd.poll(h) for h in handles.values()]
    got = {k: hvd.synchronize(h) for k, h in handles.items()}
    out.update({k: v.numpy() for k, v in got.items() if isinstance(v, dg.Tensor)})
    out["grouped"] = [t.numpy() for t in got["grouped"]]
    out["grouped gather"] = [t.numpy() for t in got["grouped gather"]]
    out["grouped rs"] = [t.numpy() for t in got["grouped rs"]]
    out["a2a"] = [t.numpy() for t in got["a2a"]]
    in_place = dg.tensor(np.array([3.0]) * (r + 1))
    assert hvd.synchronize(hvd.allreduce_async_(in_place, op=hvd.Sum)) is in_place
    out["in place"] = in_place.numpy()
    root = dg.tensor(np.array([5.0 + r]))
    hvd.synchronize(hvd.broadcast_async_(root, root_rank=0))
    out["in place bcast"] = root.numpy()
    with pytest.raises(ConfigError, match="synchronize: Handle .* was not created or has been cleared"):
        hvd.synchronize(handles["avg"])
    hvd.barrier()
    hvd.stop_timeline()
    return out


@pytest.mark.ray
def test_async_forms_and_the_timeline_on_two_ranks(ray_session, tmp_path):
    ranks = dist.launch(_on_each_rank, workers=2, args=(str(tmp_path),), cpus_per_worker=0.5, timeout_s=60)
    for r, got in enumerate(ranks):
        assert got["initialized"] is True and got["gloo enabled"] is False  # one node: shared memory
        assert got["polled"] == [True] * 8
        np.testing.assert_array_equal(got["avg"], [1.5, 3.0])
        np.testing.assert_array_equal(got["grouped"][0], [3.0, 6.0])
        np.testing.assert_array_equal(got["grouped"][1], [6.0, 12.0])
        np.testing.assert_array_equal(got["gather"], [[0.0], [1.0], [10.0], [11.0], [12.0]])
        np.testing.assert_array_equal(got["grouped gather"][0], got["gather"])
        np.testing.assert_array_equal(got["grouped gather"][1], [[1.0], [2.0], [2.0], [4.0]])
        np.testing.assert_array_equal(got["bcast"], [2.0, 4.0])
        np.testing.assert_array_equal(got["rs"], (np.arange(4.0) * 3)[2 * r : 2 * r + 2])
        np.testing.assert_array_equal(got["grouped rs"][0], [1.0, 3.0][r : r + 1])
        np.testing.assert_array_equal(got["in place"], [9.0])
        np.testing.assert_array_equal(got["in place bcast"], [5.0])
    # alltoall: rank 0 sends [1] to itself and [2, 3] to rank 1; rank 1 sends [11, 12] to rank 0 and [13] to itself
    np.testing.assert_array_equal(ranks[0]["a2a"][0], [1.0, 11.0, 12.0])
    np.testing.assert_array_equal(ranks[0]["a2a"][1], [1, 2])
    np.testing.assert_array_equal(ranks[1]["a2a"][0], [2.0, 3.0, 13.0])
    np.testing.assert_array_equal(ranks[1]["a2a"][1], [2, 1])
    # Horovod's convention: rank 0 writes one file holding both ranks' collectives
    assert sorted(os.listdir(tmp_path)) == ["rank0.json"]
    with open(tmp_path / "rank0.json", encoding="utf-8") as f:
        trace = json.load(f)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = ["allreduce.avg", "grouped_allreduce.noname.1", "allgather.noname.2", "grouped_allgather.noname.3",
             "broadcast.noname.4", "reducescatter.noname.5", "grouped_reducescatter.noname.6", "alltoall.noname.7",
             "allreduce.noname.8", "broadcast.noname.9", "barrier.noname.10"]  # fmt: skip
    for r in (0, 1):
        assert [e["name"] for e in spans if e["pid"] == r] == names
    by_rank = {r: {e["name"]: e["args"]["bytes"] for e in spans if e["pid"] == r} for r in (0, 1)}
    assert by_rank[0]["allgather.noname.2"] == 16 and by_rank[1]["allgather.noname.2"] == 24  # each its own rows
    assert by_rank[0]["grouped_allreduce.noname.1"] == 32 and by_rank[0]["barrier.noname.10"] == 0
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    assert trace["otherData"] == {"ranks": 2, "collectives": 2 * len(names)}


# ---- Horovod's semantics where torch's differ --------------------------------------------------------------
def test_integer_tensors_average_in_their_own_dtype_as_horovods():
    """Horovod's Average of an integer tensor is its sum scaled by 1 / size, and every scaling writes factor * value
    back truncated toward zero: the dtype stays (torch's ReduceOp.AVG refuses integers, and dist.* still does)."""
    x = dg.tensor(np.array([1, -3, 5], np.int32))
    for got in (hvd.allreduce(x), hvd.grouped_allreduce([x])[0], hvd.reducescatter(x), hvd.allreduce_(dg.tensor(x.numpy()))):  # fmt: skip
        assert got.dtype == dg.int32 and got.tolist() == [1, -3, 5]
    assert hvd.synchronize(hvd.allreduce_async(x)).tolist() == [1, -3, 5]
    halved = hvd.allreduce(x, prescale_factor=0.5)  # 0.5, -1.5, 2.5
    assert halved.dtype == dg.int32 and halved.tolist() == [0, -1, 2]
    assert hvd.allreduce(x, op=hvd.Sum, postscale_factor=2.5).tolist() == [2, -7, 12]
    assert hvd.reducescatter(x, postscale_factor=-0.5).tolist() == [0, 1, -2]
    with pytest.raises(DTypeError, match="Cannot use ReduceOp.AVG with non-floating dtype int32"):
        dist.grouped_allreduce([x])  # dg.distributed's: torch's refusal


def test_distributed_optimizer_is_an_instance_of_the_wrapped_optimizers_class():
    """As Horovod's: a subclass of the wrapped optimizer's class, sharing its param groups and state, so lr
    schedulers and GradScaler take it."""
    p = dg.zeros(2, requires_grad=True)
    sgd = dg.optim.SGD([p], lr=1.0, momentum=0.5)
    opt = hvd.DistributedOptimizer(sgd)
    assert isinstance(opt, dg.optim.SGD) and isinstance(opt, hvd.DistributedOptimizer) and type(opt).__name__ == "SGD"
    assert opt.param_groups is sgd.param_groups and opt.state is sgd.state and opt.optimizer is sgd
    assert type(hvd.DistributedOptimizer(dg.optim.SGD([dg.zeros(1, requires_grad=True)], lr=1.0))) is type(opt)
    schedule = dg.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = GradScaler(init_scale=4.0)
    scaler.scale((p * dg.tensor(np.array([1.0, -1.0], np.float32))).sum()).backward()
    scaler.step(opt)  # unscales, then opt.step(): the all-reduce (alone: the gradient), then SGD's update
    scaler.update()
    schedule.step()
    assert p.tolist() == [-1.0, 1.0] and sgd.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.5
    assert opt.state_dict()["state"][0]["momentum_buffer"].tolist() == [1.0, -1.0]
    assert sgd.state[p]["momentum_buffer"].tolist() == [1.0, -1.0]


def _optimizer_with_gradients_on_some_ranks(r):
    """Rank 0 has a gradient for `a` only, rank 1 for `b` only (their forwards took other branches)."""
    a, b, frozen = dg.zeros(2, requires_grad=True), dg.zeros(2, requires_grad=True), dg.zeros(2)
    opt = hvd.DistributedOptimizer(dg.optim.SGD([a, b, frozen], lr=1.0))
    (a if r == 0 else b).grad = dg.tensor(np.full(2, 2.0 + 2 * r, np.float32))
    opt.step()
    return [None if p.grad is None else p.grad.tolist() for p in (a, b, frozen)], [a.tolist(), b.tolist()]


def _integer_averages(r):
    ints = dg.tensor(np.array([[1, -3, 5, 7], [2, 0, 0, 8]][r], np.int64))
    return hvd.allreduce(ints).numpy(), hvd.reducescatter(ints).numpy()


def _broadcast_gradients(r):
    """x's gradient through Horovod's broadcast and through torch's, each rank's output gradient r + 1."""
    grads = []
    for fn in (lambda x: hvd.broadcast(x, root_rank=0), lambda x: dist.nn.functional.broadcast(x, 0)):
        x = dg.tensor(np.array([1.0, 2.0]), requires_grad=True)
        (fn(x) * (r + 1)).sum().backward()
        grads.append(x.grad.tolist())
    return grads


def _counting_all_reduces(fn):
    """(fn(), the arrays' sizes of each all-reduce of the launch's communicator it made)."""
    comm, made = dist.loop._context["comm"], []
    comm.allreduce = lambda arrays, *a, **k: made.append([x.size for x in arrays]) or type(comm).allreduce(comm, arrays, *a, **k)  # fmt: skip
    try:
        return fn(), made
    finally:
        del comm.allreduce


def _allreduce_rounds(r):
    """Each form of hvd.allreduce of a small tensor: its result, and the all-reduces it made."""
    x = dg.tensor(np.array([1.0, 2.0], np.float32) * (r + 1))
    calls = {"sum": lambda: hvd.allreduce(x, op=hvd.Sum), "average": lambda: hvd.allreduce(x),
             "int average": lambda: hvd.allreduce(dg.tensor(np.array([3, -3], np.int64) * (r + 1))),
             "fp16": lambda: hvd.allreduce(x, compression=hvd.Compression.fp16, op=hvd.Sum)}  # fmt: skip
    out = {name: _counting_all_reduces(lambda fn=fn: fn().numpy().tolist()) for name, fn in calls.items()}
    w = dg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    out["gradient"] = _counting_all_reduces(lambda: (hvd.allreduce(w, op=hvd.Sum) * (r + 1)).sum().backward())[1]
    out["gradient"] = (w.grad.tolist(), out["gradient"])
    rows = dg.tensor(np.arange(r + 1, dtype=np.float32).reshape(-1, 1) + 10 * r, requires_grad=True)
    out["gather"] = _counting_all_reduces(lambda: hvd.allgather(rows.detach()).numpy().tolist())
    out["gather gradient"] = _counting_all_reduces(lambda: (hvd.allgather(rows) * (r + 1)).sum().backward())[1]
    out["gather gradient"] = (rows.grad.tolist(), out["gather gradient"])
    signed = dg.tensor(np.array([-0.0, 1.5, np.nan]) * [1, r + 1, 1])  # root's bytes exactly, -0.0 and NaN too
    out["broadcast"] = _counting_all_reduces(lambda: hvd.broadcast(signed, root_rank=1).numpy().tobytes().hex())
    return out


def _mismatched_calls(r):
    """Each way the ranks' calls can differ: the error each rank raised (type, message), or None."""
    out = {}
    for name, fn in (("shapes", lambda: hvd.allreduce(dg.ones(2 + r))),
                     ("dtypes", lambda: hvd.allreduce(dg.tensor(np.ones(2, [np.float32, np.float64][r])))),
                     ("gathered dims", lambda: hvd.allgather(dg.ones((1, 2 + r)))),
                     ("ops", lambda: hvd.allreduce(dg.ones(2)) if r == 0 else hvd.allgather(dg.ones(2)))):  # fmt: skip
        try:
            out[name] = fn() and None
        except Exception as exc:  # noqa: BLE001  (reported to the test)
            out[name] = (type(exc).__name__, str(exc))
    x = dg.tensor(np.full(2, float(r + 1), np.float32))
    # forms of one collective on the wire agree: in place against not, async against not
    out["broadcast forms"] = (hvd.broadcast_(x.clone(), 0) if r == 0 else hvd.broadcast(x, 0)).numpy().tolist()
    alltoall = hvd.alltoall(x) if r == 0 else hvd.synchronize(hvd.alltoall_async(x))[0]
    out["alltoall forms"] = alltoall.numpy().tolist()
    w = dg.zeros(2, requires_grad=True)
    opt = hvd.DistributedOptimizer(dg.optim.SGD([w], lr=1.0))
    w.grad = dg.ones(2)
    try:  # rank 1 has never run a DistributedOptimizer: its error still names it
        opt.step() if r == 0 else hvd.allreduce(dg.ones(2))
    except DistributedError as exc:
        out["optimizer against allreduce"] = str(exc)
    return out


def _horovod_semantics_on_each_rank():
    """Each part's result, or its error (type, message): one part failing leaves the others to their tests."""
    out = {}
    for name, part in (("optimizer", _optimizer_with_gradients_on_some_ranks), ("ints", _integer_averages),
                       ("broadcast", _broadcast_gradients), ("rounds", _allreduce_rounds),
                       ("mismatched", _mismatched_calls)):  # fmt: skip
        try:
            out[name] = part(hvd.rank())
        except Exception as exc:  # noqa: BLE001  (reported to the test)
            out[name] = (type(exc).__name__, str(exc))
    return out


@pytest.fixture(scope="module")
def horovod_semantics(ray_session):
    return dist.launch(_horovod_semantics_on_each_rank, workers=2, cpus_per_worker=0.5, timeout_s=60)


@pytest.mark.ray
def test_distributed_optimizer_reduces_every_parameter_zero_filling_missing_gradients(horovod_semantics):
    for got in horovod_semantics:  # a: (2 + 0) / 2, b: (0 + 4) / 2 on both ranks, never a paired with b
        assert got["optimizer"] == ([[1.0, 1.0], [2.0, 2.0], None], [[-1.0, -1.0], [-2.0, -2.0]])


@pytest.mark.ray
def test_integer_average_over_two_ranks_truncates_toward_zero(horovod_semantics):
    for r, got in enumerate(horovod_semantics):  # sums [3, -3, 5, 15] / 2: 1.5, -1.5, 2.5, 7.5
        average, scattered = got["ints"]
        assert average.dtype == scattered.dtype == np.int64
        assert average.tolist() == [1, -1, 2, 7] and scattered.tolist() == [[1, -1], [2, 7]][r]


@pytest.mark.ray
def test_horovod_broadcast_averages_its_gradient_where_torchs_sums_it(horovod_semantics):
    r0, r1 = (got["broadcast"] for got in horovod_semantics)  # the ranks' output gradients: 1 and 2
    assert r0 == [[1.5, 1.5], [3.0, 3.0]] and r1 == [[0.0, 0.0], [0.0, 0.0]]  # (Horovod's, torch's)


@pytest.mark.ray
def test_allreduce_allgather_and_broadcast_of_a_small_tensor_are_one_all_reduce_the_data_riding_in_the_join_round(
    horovod_semantics,
):
    words = ROUND_WORDS  # (the round: every rank's head and data together)
    for got in horovod_semantics:
        rounds = got["rounds"]
        assert rounds["sum"] == ([3.0, 6.0], [[words]]) and rounds["average"] == ([1.5, 3.0], [[words]])
        assert rounds["int average"] == ([4, -4], [[words]])  # 9 / 2 → 4, truncated as Horovod's
        assert rounds["fp16"] == ([3.0, 6.0], [[words]])
        grad, made = rounds["gradient"]  # forward in the round; backward: dist's all-reduce of the gradients, checked
        assert grad == [3.0, 3.0] and made[0] == [words] and len(made) > 1
        assert rounds["gather"] == ([[0.0], [10.0], [11.0]], [[words]])  # rank 0's row, then rank 1's two
    (grad0, made), (grad1, _) = (got["rounds"]["gather gradient"] for got in horovod_semantics)
    assert grad0 == [[1.5]] and grad1 == [[1.5], [1.5]] and made[0] == [words]  # (1 + 2) / 2, Horovod's average
    root = np.array([-0.0, 3.0, np.nan]).tobytes().hex()
    assert [got["rounds"]["broadcast"] for got in horovod_semantics] == [(root, [[words]])] * 2


@pytest.mark.ray
def test_ranks_calling_different_collectives_or_shapes_raise_on_every_rank(horovod_semantics):
    for got, op in zip(horovod_semantics, ("allreduce", "allgather")):
        mismatched = got["mismatched"]
        assert mismatched["shapes"] == ("ShapeError", "all_reduce: the ranks' tensors differ (rank 0: float32 (2,), rank 1: float32 (3,))")  # fmt: skip
        assert mismatched["dtypes"][0] == "DTypeError" and "the ranks' tensors differ" in mismatched["dtypes"][1]
        assert mismatched["gathered dims"] == ("ShapeError", "allgather: the ranks' shapes differ beyond dim 0 (rank 0: float32 (1, 2), rank 1: float32 (1, 3))")  # fmt: skip
        assert mismatched["ops"] == ("DistributedError", f"{op}: the ranks run different collectives (rank 0: allreduce, rank 1: allgather): every rank must call the same Horovod collectives in the same order")  # fmt: skip
        assert mismatched["broadcast forms"] == [1.0, 1.0] and mismatched["alltoall forms"] == [1.0, 2.0]
        assert "(rank 0: DistributedOptimizer, rank 1: allreduce)" in mismatched["optimizer against allreduce"]
