"""Warm launches (worker_pool.py, process_settings.py): with keep_workers_s, a launch that closed cleanly leaves
its ranks' processes to the next launch of its shape, which finds in them what a new process has."""

import importlib.util
import os

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.horovod as hvd
import distgraph.nn as nn
from distgraph.distributed import collective_trace, runtime, worker_pool
from distgraph.distributed.loop import LoopWorker

pytestmark = pytest.mark.ray
WITH_TORCH = importlib.util.find_spec("torch") is not None


def _read():
    """What a rank finds as its function starts: its pid, then every setting a function could leave behind."""
    draw = dg.rand(3).numpy().tolist()  # (the generator as the process's start left it)
    dg.manual_seed(0)
    layer = nn.Linear(3, 2)
    torch_group = False
    if WITH_TORCH:
        import torch.distributed as tdist

        torch_group = tdist.is_initialized()
    return os.getpid(), {
        "cwd": os.getcwd(),
        "dtype": str(dg.get_default_dtype()),
        "draw": draw,
        "grad": dg.is_grad_enabled(),
        "deterministic": dg.are_deterministic_algorithms_enabled(),
        "matmul": dg.get_float32_matmul_precision(),
        "warn_always": dg.is_warn_always_enabled(),
        "printed": str(dg.tensor([1.23456789])),
        "layer": layer(dg.ones(1, 3)).detach().numpy().tolist(),  # (a global hook left would zero it)
        "hvd": hvd.is_initialized(),
        "timeline": collective_trace.recording(),
        "torch_group": torch_group,
    }


def _leave_traces(tmp):
    """Set everything `_read` reads, for the rest of the process, and leave it so."""
    os.chdir(tmp)
    dg.set_default_dtype(dg.float64)
    dg.manual_seed(123)
    dg.set_grad_enabled(False)
    dg.use_deterministic_algorithms(True)
    dg.set_float32_matmul_precision("medium")
    dg.set_warn_always(True)
    dg.set_printoptions(precision=1)
    nn.modules.module.register_module_forward_hook(lambda module, args, out: out * 0)
    hvd.init()
    hvd.start_timeline(os.path.join(tmp, f"timeline{dist.rank()}.json"))
    if WITH_TORCH:
        import torch.distributed as tdist

        tdist.init_process_group("gloo", init_method="env://")  # (MASTER_ADDR/PORT, RANK, WORLD_SIZE: launch's)
    return os.getpid()


def _fails_on_rank_1():
    if dist.rank() == 1:
        raise ValueError("rank 1 gives up")
    return os.getpid()


def test_the_next_launch_runs_in_the_same_processes_and_finds_what_a_new_process_has(keep_workers, tmp_path):
    worker_pool.set_keep_seconds(0)  # (what new processes read: nothing parked by an earlier test taken)
    cold = dist.launch(_read, workers=2)
    worker_pool.set_keep_seconds(30)
    pids = dist.launch(_leave_traces, workers=2, args=(str(tmp_path),))
    warm = dist.launch(_read, workers=2)
    assert [pid for pid, _ in warm] == pids  # the same processes
    assert not set(pids) & {pid for pid, _ in cold}
    for (_, new), (_, reused) in zip(cold, warm):
        assert reused == new
    assert reused["grad"] and not reused["hvd"] and reused["cwd"] != str(tmp_path)  # (what _leave_traces changed)


def test_a_failed_launch_leaves_no_processes_to_the_next(keep_workers):
    with pytest.raises(ValueError, match="rank 1 gives up"):
        dist.launch(_fails_on_rank_1, workers=2)
    ranks = runtime.remote_class(LoopWorker, 1)  # (the first of a parked group's key: its Ray class)
    assert not [key for key in worker_pool._parked if key[0] is ranks]  # stopped: one may have waited for the other
    first = dist.launch(_read, workers=2)
    again = dist.launch(_read, workers=2)
    assert [pid for pid, _ in again] == [pid for pid, _ in first]  # (parked after a clean close)
    worker_pool.set_keep_seconds(0)
    fresh = dist.launch(_read, workers=2)
    assert not {pid for pid, _ in fresh} & {pid for pid, _ in first}  # off: new processes
    assert np.array_equal(fresh[0][1]["draw"], first[0][1]["draw"])  # (rank 0's readings)
