"""Shared fixtures: the torch parity helper, a session-wide local Ray instance, device parametrization."""

import os
import sys
import weakref

import numpy as np
import pytest

import distgraph as dg

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # torch is the reference, not a dependency: parity tests skip without it
    torch = None


def pytest_configure(config):
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # This machine's image sets PYTHONDONTWRITEBYTECODE=1, so every process compiled distgraph's ~300 modules
    # from source: 0.3-0.5 s of CPU per process, and the Ray tests start ~800 worker processes (the distributed
    # tests took 807 s with it, 605 s without). Let them write and read __pycache__: the Ray instances and
    # subprocesses the tests start inherit this environment, and importlib writes each .pyc atomically.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    # A closed Trainer's workers stay warm for the next test's Trainer of the same shape (worker_pool.py): of
    # test_ray_trainer.py's 54 worker processes 15 remain, and the file's time halves. Off by default for
    # users; tests/distributed/test_worker_pool.py checks both ways, and whatever wants CPUs releases them.
    os.environ.setdefault("DISTGRAPH_KEEP_WORKERS_S", "30")


RAY_GROUPS = 2  # xdist groups of Ray tests: CI's two workers each run one, on a Ray instance of its own
# they look for leftover point-to-point files in /dev/shm: only one instance may run them at a time
_ONE_GROUP = {"test_p2p.py", "test_pipelining.py", "test_pipelining_multi.py"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: a test that takes ray_session is a `ray` test
def pytest_collection_modifyitems(config, items):
    """Every test that needs Ray (marked `ray`, or taking the `ray_session` fixture: it gets the mark, so
    `-m "not ray"` leaves it out too) goes, under pytest-xdist (`-n auto --dist loadgroup`, as CI runs),
    to one of RAY_GROUPS groups, whole files at a time, each file to the group with fewer tests so far.
    A group runs in one worker process, on that process's one local Ray instance, in its files' order.
    xdist hands out the largest groups first, one to each worker, so CI's two workers each run one half
    of the Ray tests (and share the rest): one group of them all kept a worker busy for ~13 minutes
    while the other had finished everything else after ~3. Each instance claims the machine's 2 CPUs, so
    the two share the cores: the Ray tests spend much of their time waiting (process starts, timeouts,
    Ray's own round trips) rather than computing."""
    groups, sizes = {}, [0] * RAY_GROUPS
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray"):
            path = item.path
            if path not in groups:
                groups[path] = 0 if path.name in _ONE_GROUP else sizes.index(min(sizes))
            sizes[groups[path]] += 1
            item.add_marker(pytest.mark.xdist_group(f"ray{groups[path]}"))


@pytest.fixture(autouse=True)
def _seed():
    dg.manual_seed(0)
    np.random.seed(0)


def devices():
    """Devices to run parity tests on: cpu always, cuda where cupy and a GPU exist."""
    out = ["cpu"]
    if dg.cuda_is_available():
        out.append("cuda")
    return out


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not dg.cuda_is_available():
        pytest.skip("needs cupy and a CUDA GPU")
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance per test session (ray.init costs seconds), num_cpus=2."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray


@pytest.fixture
def keep_workers(ray_session):
    """Warm workers on (30 s) for the test whatever the environment says, released and handed back to the
    environment after it (worker_pool.py)."""
    from distgraph.distributed import worker_pool

    worker_pool.set_keep_seconds(30)
    yield
    worker_pool.set_keep_seconds(0)
    worker_pool.set_keep_seconds(None)


_TRAINERS = weakref.WeakSet()  # every Trainer built in this session that is still alive
_trainer_init = dg.Trainer.__init__


def _tracked_init(self, *args, **kwargs):
    _TRAINERS.add(self)
    _trainer_init(self, *args, **kwargs)


dg.Trainer.__init__ = _tracked_init


@pytest.fixture(autouse=True)
def _close_trainers(request):
    """After a test that used Ray, close every Trainer it left open. A failed assertion skips the test's
    own `close()`, and its traceback keeps the Trainer alive; its workers would hold the session's two
    CPUs and the next tests would wait for them (the cascade of failures and the hang CI once met).
    The Trainers are tracked from their construction: a scan of every object after each Ray test took
    0.6 s and more with torch loaded (minutes over the suite)."""
    yield
    if "ray_session" not in request.fixturenames:
        return
    for trainer in list(_TRAINERS):
        if getattr(trainer, "_cluster", None) is not None:  # (one whose __init__ raised has none)
            trainer.close()
