"""Trainer strategies that split the step by the graph — 'branches' and 'pipeline' — on threads
(backend="local") and on Ray workers: the same parameters as unsplit training, up to float rounding."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn


class TwoTowers(nn.Module):
    """Two towers that meet only in the sum of their outputs: two independent subgraphs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        self.b = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.a(x) + self.b(x)


def data(n=256):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def mlp():
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def train(make_model, n=256, **kw):
    dg.manual_seed(0)
    model = make_model()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    with dg.Trainer(model, nn.functional.cross_entropy, opt, progress=False, **kw) as t:
        hist = t.fit(data(n), epochs=2, batch_size=32)
        return [p.detach().cpu().numpy().copy() for p in model.parameters()], hist


def close(a, b, tol=1e-6):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) <= tol


@pytest.mark.parametrize("strategy,make_model", [("pipeline", mlp), ("branches", TwoTowers)])
def test_local_split_step_equals_unsplit_training(strategy, make_model, device):
    reference, ref_hist = train(make_model, device=device)
    split, hist = train(make_model, workers=2, strategy=strategy, device=device)
    assert close(reference, split)
    assert np.allclose(ref_hist["loss"], hist["loss"], rtol=1e-5)
    assert any(f"strategy {strategy}" in e for e in hist.events), hist.events


@pytest.mark.ray
@pytest.mark.parametrize("strategy,make_model", [("pipeline", mlp), ("branches", TwoTowers)])
def test_ray_split_step_equals_unsplit_training(ray_session, strategy, make_model):
    reference, _ = train(make_model)
    split, hist = train(make_model, workers=2, backend="ray", strategy=strategy)
    assert close(reference, split)
    assert hist["loss"][-1] < hist["loss"][0]


def test_auto_says_which_strategy_and_why():
    _, hist = train(TwoTowers, workers=2, strategy="auto")
    assert any(e.startswith("strategy auto → ") for e in hist.events), hist.events


def test_last_smaller_batch_is_left_out_and_said():
    reference, _ = train(mlp, n=256)
    split, hist = train(mlp, n=256 + 7, workers=2, strategy="pipeline")  # the extra 7 are one smaller batch
    assert any("drop_last" in e for e in hist.events), hist.events
    assert hist["count"] if "count" in hist.epochs[0] else True
    assert np.isfinite(hist["loss"]).all()
    assert len(split) == len(reference)


def test_split_strategies_refuse_what_they_cannot_do():
    with pytest.raises(dg.errors.ConfigError, match="strategy must be one of"):
        train(mlp, strategy="tensor")
    with pytest.raises(dg.errors.ConfigError, match="pipeline batch size 32 is not divisible"):
        train(mlp, workers=2, strategy="pipeline", micro_batches=5)
