"""strategy="auto" on the Trainer: every batch size gets a strategy, each strategy left out says why, and a
local data step is priced as what it is (its shards one after another in one process)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed.placement import CostModel, choose_strategy
from tests.distributed.test_placement import _chain
from tests.graph.helpers import captured, randn


def _fit_auto(make_model, batch_size, workers=2):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 8)).astype(np.float32)
    y = rng.integers(0, 3, 70)
    dg.manual_seed(0)
    model = make_model()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    with dg.Trainer(model, nn.functional.cross_entropy, opt, progress=False, workers=workers, strategy="auto") as t:
        hist = t.fit((x, y), epochs=1, batch_size=batch_size)
    return [e for e in hist.events if e.startswith("strategy auto")], hist


@pytest.mark.parametrize(
    "make_model",
    [lambda: nn.Linear(8, 3, bias=False), lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))],
    ids=["linear", "mlp"],
)
def test_a_batch_that_splits_evenly_neither_over_workers_nor_micro_batches_trains_data_parallel(make_model):
    (event,), hist = _fit_auto(make_model, batch_size=7)
    assert event.startswith("strategy auto → data: data: estimated")
    assert "pipeline: batch 7 does not split into 4 micro-batches" in event
    assert "divisible" not in event  # the Trainer's data path shards any batch (shard_bounds)
    assert np.isfinite(hist["loss"]).all()


def test_each_strategy_left_out_names_its_own_cause():
    few_nodes = captured(lambda x, w: (x @ w).sum(), randn(8, 4), randn(4, 2))[0]
    strategy, reason = choose_strategy(few_nodes, 8)
    assert strategy == "data"
    assert f"pipeline: the graph has {len(few_nodes.nodes)} nodes, fewer than 8 stages" in reason
    assert "branches: the graph has no independent subgraphs" in reason
    strategy, reason = choose_strategy(_chain(6, 8, 2), 4)  # replicas of a Plan need equal shards
    assert "data: batch 6 does not split into 4 equal shards" in reason
    assert "pipeline: batch 6 does not split into 4 micro-batches" in reason


def test_with_no_estimate_it_falls_back_to_data_and_says_so():
    no_batch = captured(lambda a, w: (w * a).sum(), dg.tensor(2.0), randn(3))[0]
    strategy, reason = choose_strategy(no_batch, 2)
    assert strategy == "data"
    assert reason.startswith("data: no strategy could be estimated")
    assert "data: the first input has no batch dimension" in reason


def test_a_local_data_step_is_priced_at_the_whole_batchs_compute():
    graph, cost = _chain(512, 64, 8, grad=True), CostModel()
    _, on_ray = choose_strategy(graph, 2, cost=cost)
    strategy, local = choose_strategy(graph, 2, cost=cost, backend="local")
    assert on_ray.startswith("data: estimated") and "2 replicas" in on_ray
    assert f"data {cost.compute(graph.flops) * 1e3:.3g} ms" in local  # no longer half of it
    assert strategy == "pipeline"  # the stages do run at once, on threads


def test_the_trainers_local_auto_says_its_data_shards_run_one_after_another():
    (event,), _ = _fit_auto(lambda: nn.Linear(8, 3, bias=False), batch_size=8)
    assert "2 shards one after another in this process, backend='local'" in event
