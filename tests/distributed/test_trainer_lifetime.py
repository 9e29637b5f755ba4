"""A Ray Trainer's workers live as long as the Trainer: dropping it frees their CPUs at once, and a Trainer
that cannot get CPUs says who holds them."""

import gc
import weakref

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed import runtime
from distgraph.errors import DistributedError

pytestmark = pytest.mark.ray

X = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def trainer(strategy="data", timeout_s=30.0):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    return dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=2, backend="ray", strategy=strategy, progress=False,
        timeout_s=timeout_s,
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["data", "branches"])
def test_a_dropped_trainer_frees_its_workers_for_the_next(ray_session, strategy):
    """The session has 2 CPUs and each Trainer takes both: the second one only fits because dropping the
    first (no close(), as a notebook cell run again does) freed them — and with nothing left for gc."""
    gc.disable()  # the release must not wait for a collection: no reference cycle holds the Trainer
    try:
        first = trainer(strategy)
        first.fit((X, Y), epochs=1, batch_size=16)
        gone = weakref.ref(first)
        del first
        assert gone() is None
        with trainer(strategy, timeout_s=20.0) as second:
            loss = second.fit((X, Y), epochs=1, batch_size=16)["loss"][-1]
        assert np.isfinite(loss)
    finally:
        gc.enable()


def test_no_room_names_the_placement_groups_that_hold_the_cpus(ray_session):
    with trainer() as first:
        first.fit((X, Y), epochs=1, batch_size=16)
        with pytest.raises(DistributedError) as err:
            trainer(timeout_s=2.0).fit((X, Y), epochs=1, batch_size=16)
    msg = str(err.value)
    # (2 s asked; a placement waits at least PLACEMENT_FLOOR_S)
    assert f"could not place 2 workers with {{'CPU': 1}} each within {runtime.PLACEMENT_FLOOR_S}s" in msg
    assert "CPU 0 free of 2" in msg and "1 other placement group(s) hold CPU 2" in msg
    assert "trainer.close()" in msg
    with trainer(timeout_s=20.0) as after:  # the refused Trainer kept nothing either
        after.fit((X, Y), epochs=1, batch_size=16)


def test_a_trainer_dropped_after_a_failed_fit_frees_its_workers(ray_session):
    """The failed fit's traceback keeps the Trainer in a reference cycle; the next placement collects it
    instead of waiting out its timeout."""
    gc.disable()
    try:
        failed = trainer()
        with pytest.raises(dg.errors.ShapeError, match="linear"):
            failed.fit((X[:, :5], Y), epochs=1, batch_size=16)
        del failed
        with trainer(timeout_s=20.0) as second:
            assert np.isfinite(second.fit((X, Y), epochs=1, batch_size=16)["loss"][-1])
    finally:
        gc.enable()
