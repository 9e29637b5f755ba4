"""What a distgraph actor's process sets up itself, now that no actor has a runtime_env (runtime.py): Ray's
OMP_NUM_THREADS before BLAS loads (one BLAS thread per CPU), the driver's default dtype, and glibc keeping
freed memory (a freed 64 MB array stays in the heap instead of going back to the kernel)."""

import os

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _inside():
    import ray
    from threadpoolctl import threadpool_info

    before = _rss_mb()
    block = np.ones(64 * 2**20 // 8)  # touched: its pages are resident
    del block
    kept = _rss_mb() - before
    blas = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    return {"runtime_env": ray.get_runtime_context().runtime_env, "blas": blas, "kept_mb": kept,
            "dtype": dg.get_default_dtype().name, "omp": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip


@pytest.mark.ray
def test_workers_set_up_their_process_without_a_runtime_env(ray_session):
    pytest.importorskip("threadpoolctl")
    previous = dg.get_default_dtype()
    dg.set_default_dtype(dg.float64)
    try:
        ranks = dist.launch(_inside, workers=2, cpus_per_worker=1, timeout_s=60)
    finally:
        dg.set_default_dtype(previous)
    for got in ranks:
        assert not got["runtime_env"], got  # started without Ray's setup_worker step
        assert got["omp"] == "1" and got["blas"] == [1], got
        assert got["dtype"] == "float64", got
        assert got["kept_mb"] > 48, got  # with glibc's defaults, a 64 MB block is unmapped on free (~0 kept)


@pytest.mark.ray
def test_the_remote_class_is_made_once_per_class_cpus_and_default_dtype(ray_session):
    """Ray exports an actor class once per job: the same combination gets the same class back (not a new
    one pickled, hashed and stored at every group's start), and another default dtype gets its own, so a
    worker started after `dg.set_default_dtype` takes the driver's dtype of then, not of an earlier start."""
    from distgraph.distributed import runtime
    from distgraph.distributed.worker import TrainWorker

    float32_class = runtime.remote_class(TrainWorker, 1)
    assert runtime.remote_class(TrainWorker, 1) is float32_class
    assert runtime.remote_class(TrainWorker, 2) is not float32_class
    previous = dg.get_default_dtype()
    dg.set_default_dtype(dg.float64)
    try:
        assert runtime.remote_class(TrainWorker, 1) is not float32_class
        (first,) = dist.launch(_inside, workers=1, timeout_s=60)
    finally:
        dg.set_default_dtype(previous)
    (then,) = dist.launch(_inside, workers=1, timeout_s=60)
    assert (first["dtype"], then["dtype"]) == ("float64", previous.name)
