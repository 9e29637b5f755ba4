"""ShardStep's `on_grad`: each parameter's final gradient is handed out during backward, last layer first,
so a GradBucketer can reduce it while the earlier layers' gradients are still being computed."""

import numpy as np

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed.step import ShardStep


def test_gradients_are_handed_out_during_backward_last_layer_first():
    dg.manual_seed(0)
    step = ShardStep(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)), nn.functional.cross_entropy)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    seen = []

    def on_grad(i, g):
        seen.append((i, [p.grad is None for p in step.params]))

    grads, _ = step.compute(x, y, on_grad=on_grad)
    order = [i for i, _ in seen]
    assert sorted(order) == [0, 1, 2, 3] and order.index(2) < order.index(0)  # layer 2 before layer 0
    first_missing = seen[0][1]
    assert first_missing[0] and first_missing[1]  # when the first arrived, layer 0's were not computed yet
    again, _ = step.compute(x, y)  # without on_grad the hooks stay quiet
    assert len(seen) == 4
    assert all(np.array_equal(a, b) for a, b in zip(grads, again))
