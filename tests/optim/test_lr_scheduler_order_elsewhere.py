"""The scheduler's order warning ("lr_scheduler.step() before optimizer.step()") stays silent where the update runs
elsewhere than optimizer.step(): in a compiled training step's graph, and on the Ray workers of a Trainer
(`Optimizer.note_step`). Both warned in every such loop before."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F

ORDER = "before `optimizer.step()`"


def _order_warnings(run):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in record if ORDER in str(w.message)]


def test_a_compiled_step_with_its_optimizer_counts_as_the_step():
    model = nn.Linear(3, 2)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    x, y = dg.randn(4, 3), dg.tensor([0, 1, 0, 1])
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    schedule = dg.optim.lr_scheduler.StepLR(opt, 1)

    def loop():
        for _ in range(2):
            step(x, y)
            schedule.step()

    assert _order_warnings(loop) == []
    fresh = dg.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)  # the warning itself still comes where it should
    assert len(_order_warnings(lambda: dg.optim.lr_scheduler.StepLR(fresh, 1).step())) == 1


@pytest.mark.ray
@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_a_ray_trainers_scheduler_does_not_warn(ray_session, interval):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = nn.Linear(3, 2)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    trainer = dg.Trainer(model, F.cross_entropy, opt, workers=2, backend="ray", progress=False,
                         scheduler=dg.optim.lr_scheduler.StepLR(opt, 1), scheduler_interval=interval)  # fmt: skip
    with trainer:
        assert _order_warnings(lambda: trainer.fit((x, y), epochs=2, batch_size=16)) == []
