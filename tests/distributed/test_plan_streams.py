"""A Ray plan run draws one seed per task from the driver's generator (plan_runner.py): its dropout masks are
the LocalExecutor pipeline's, repeat under a seed whichever worker process runs them, and a Trainer with
strategy="pipeline" (on Ray, and local) resumes from a checkpoint to the uninterrupted fit's bits."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed.plan_runner import RayPlanExecutor
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import independent, pipeline
from tests.graph.helpers import captured, randn

pytestmark = pytest.mark.ray


def _dropout_step(x, w):
    h = nn.functional.dropout((x @ w).tanh(), 0.5, training=True)
    return ((h @ w.T) ** 2).mean()


def _runs(ex, x, params, seed=5):
    dg.manual_seed(seed)
    return [ex.run(x, *params) for _ in range(2)]


@pytest.mark.parametrize("compiled", [False, True])  # actor calls; a Ray Compiled Graph (seeds as its inputs)
def test_a_ray_pipeline_draws_the_local_pipelines_masks_and_repeats_them_under_a_seed(ray_session, compiled):
    w = randn(16, 16).requires_grad_()
    graph, arrays = captured(_dropout_step, randn(4, 16), w, grad_of=[w])
    plan = pipeline(graph, 2, micro_batches=4)
    x = randn(16, 16).array
    with threadpool_limits(1), LocalExecutor(plan, workers=2, schedule="1f1b") as local:
        expected = _runs(local, x, arrays[1:])
    with RayPlanExecutor(plan, 2, compiled=compiled) as ex:
        got, again = _runs(ex, x, arrays[1:]), _runs(ex, x, arrays[1:])  # the workers' streams moved on between
        assert (ex.compiled is not None) == compiled, ex.compiled_error
    for a, b, c in zip(expected, got, again):
        assert all(np.array_equal(p, q) and np.array_equal(p, r) for p, q, r in zip(a, b, c))
    assert not np.array_equal(got[0][1], got[1][1])  # each run draws new masks


def test_a_plan_that_draws_nothing_leaves_the_drivers_generator_alone(ray_session):
    graph, arrays = captured(lambda x, w: (x @ w).tanh().sum(), randn(4, 3), randn(3, 2))
    with RayPlanExecutor(independent(graph), 2, compiled=False) as ex:
        dg.manual_seed(3)
        ex.run(*arrays)
        assert np.array_equal(dg.rand(4).numpy(), dg.manual_seed(3) and dg.rand(4).numpy())


def _pipeline_fit(folder, epochs, backend, driver_seed=1, resume=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.3), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    dg.manual_seed(driver_seed)
    trainer = dg.Trainer(model, nn.functional.cross_entropy, opt, progress=False, workers=2, backend=backend,
                         strategy="pipeline", micro_batches=4, checkpoint_dir=str(folder))  # fmt: skip
    with trainer:
        trainer.fit((x, y), epochs=epochs, batch_size=64, resume=resume)
    return [p.detach().numpy().tobytes() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_a_resumed_pipeline_fit_with_dropout_draws_the_uninterrupted_fits_masks(ray_session, tmp_path, backend):
    """The executor is built leaving the driver's generator alone (its capture drew masks from it, after the
    checkpoint's generator was restored in a resumed fit, before the first step in the uninterrupted one)."""
    whole = _pipeline_fit(tmp_path / "whole", 3, backend)
    _pipeline_fit(tmp_path / "halves", 2, backend)
    assert _pipeline_fit(tmp_path / "halves", 3, backend, driver_seed=99, resume=True) == whole
    assert _pipeline_fit(tmp_path / "other", 3, backend, driver_seed=2) != whole  # the masks matter here
