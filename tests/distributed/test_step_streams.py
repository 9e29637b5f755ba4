"""Ray workers draw a sync step's random numbers from a stream keyed by the step (`runtime.step_seed`), so a
model with dropout resumes from a checkpoint, and replays the steps after a killed worker, to the bits of the
uninterrupted run — on the store sharded in the workers ("auto") and on store actors ("store")."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed.runtime import seed_step, step_seed, worker_seed
from tests.distributed.helpers import kill_when, worker_pid


def data(n=512):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def trainer(driver_seed, folder=None, **kw):
    """A model with dropout; `driver_seed` seeds the driver's generator after the model is made (the Ray
    workers' base seed is drawn from it at the first fit)."""
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    dg.manual_seed(driver_seed)
    folder = None if folder is None else str(folder)
    return dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=2, backend="ray", progress=False, checkpoint_dir=folder, **kw
    )


def fitted(t, epochs, **kw):
    with t:
        t.fit(data(), epochs=epochs, batch_size=16, **kw)
    return [p.detach().numpy().tobytes() for p in t.model.parameters()]


def test_step_streams_are_apart_from_the_start_streams_and_from_each_other():
    """numpy pads a SeedSequence's entropy with zeros: without its tag, step t's stream would be start t's."""
    seeds = {worker_seed(5, 1, 3), step_seed(5, 1, 3), step_seed(5, 0, 3), step_seed(5, 1, 4), step_seed(6, 1, 3)}
    assert len(seeds) == 5
    seed_step((5, 10), 1, k=2)  # a call's third step, begun at global step 10
    drawn = dg.rand(3).numpy()
    dg.manual_seed(step_seed(5, 1, 12))
    np.testing.assert_array_equal(drawn, dg.rand(3).numpy())
    seed_step(None, 1)  # no streams: the process's stream goes on
    assert not np.array_equal(drawn, dg.rand(3).numpy())


@pytest.mark.ray
@pytest.mark.parametrize("allreduce", ["auto", "store"])
def test_a_resumed_ray_fit_with_dropout_draws_the_masks_of_the_uninterrupted_fit(ray_session, tmp_path, allreduce):
    whole = fitted(trainer(1, tmp_path / "whole", allreduce=allreduce), 3)
    fitted(trainer(1, tmp_path / "halves", allreduce=allreduce), 2)
    # the driver seeded otherwise before the resumed fit: the workers' base comes from the checkpoint
    assert fitted(trainer(999, tmp_path / "halves", allreduce=allreduce), 3, resume=True) == whole
    assert fitted(trainer(2, allreduce=allreduce), 3) != whole  # the masks follow the base: they do matter here


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["auto", "store"])
def test_a_killed_worker_replays_its_steps_with_their_masks(ray_session, allreduce):
    whole = fitted(trainer(1, allreduce=allreduce), 3)
    t = trainer(1, allreduce=allreduce)
    killer = kill_when(t, 1, worker_pid(1))
    replayed = fitted(t, 3)
    killer.join()
    assert any("died" in e and "replayed" in e for e in t.history.events), t.history.events
    assert replayed == whole
