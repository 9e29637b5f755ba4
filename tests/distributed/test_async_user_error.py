"""An async fit ended by a plain Python error of the user's (a ValueError from the loss) keeps the steps before
it, and the next fit runs: before, the failed worker had dropped itself from the shared segment and, the error
not being a distgraph one, the driver set up no new segment, so every later call came back with nothing done
and the next fit looped for ever."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn

pytestmark = pytest.mark.ray


def raising_on_the_third_call(out, y, calls=[0]):  # noqa: B006  (the count lives in the worker's copy)
    """cross-entropy, but a plain ValueError on its third call (the user's own check failing)."""
    calls[0] += 1
    if calls[0] == 3:
        raise ValueError("the loss refused its third batch")
    return nn.functional.cross_entropy(out, y)


def test_an_async_fit_ended_by_a_plain_value_error_leaves_the_next_fit_running(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(__import__(__name__))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    trainer = dg.Trainer(
        model, raising_on_the_third_call, opt, workers=1, backend="ray", sync="async", progress=False, timeout_s=30
    )
    with trainer:
        with pytest.raises(ValueError, match="refused its third batch"):
            trainer.fit((x, y), epochs=1, batch_size=16)
        assert trainer.global_step == 2  # the two steps before the error, taken from the store
        trainer.fit((x, y), epochs=2, batch_size=16)  # looped for ever before
        assert trainer.epoch == 2 and trainer.global_step > 2
