"""Shared fixtures: the torch parity helper, a session-wide local Ray instance, device parametrization."""

import os
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


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: a test that takes ray_session is a `ray` test
def pytest_collection_modifyitems(config, items):
    """Every test that needs Ray (marked `ray`, or taking the `ray_session` fixture: it gets the mark, so
    `-m "not ray"` leaves it out too) goes, under pytest-xdist (`-n auto --dist loadgroup`, as CI runs),
    to one worker process: they share that process's one local Ray instance (two instances would each
    claim the machine's 2 CPUs) and run in their file's order, while the other worker takes the rest."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))


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
