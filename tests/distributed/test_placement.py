"""Placement, task order and strategy choice of Plans on W workers (pure functions: no Ray)."""

import pytest

from distgraph.distributed.placement import choose_strategy, place, tasks
from distgraph.errors import ConfigError
from distgraph.graph.partition import independent, pipeline, replicas
from tests.graph.helpers import captured, randn
from tests.graph.test_partition import _tower_graph


def _chain(batch, width, depth, grad=False):
    ws = [randn(width, width + 0 * k).requires_grad_(grad) for k in range(depth)]

    def step(x, *ws):
        for w in ws:
            x = (x @ w).tanh()
        return (x**2).mean()

    return captured(step, randn(batch, width), *ws, grad_of=ws if grad else None)[0]


def test_four_towers_spread_over_two_workers_and_the_join_goes_where_the_last_tower_ends():
    plan = independent(_tower_graph()[0])
    where = place(plan, 2)
    *towers, join = plan.subgraphs
    assert [where[t.name] for t in towers] == [0, 1, 0, 1]
    assert where[join.name] == where[towers[-1].name] == 1  # the widest tower ends last


def test_a_stage_runs_its_forward_and_backward_on_one_worker():
    plan = pipeline(_chain(4, 8, 4, grad=True), 2, micro_batches=2)
    assert place(plan, 2) == {"stage0.fwd": 0, "stage1.fwd": 1, "stage1.bwd": 1, "stage0.bwd": 0}
    plan = replicas(_chain(4, 8, 2), 3)
    assert place(plan, 3) == {"replica0": 0, "replica1": 1, "replica2": 2}


def _per_worker(run, workers):
    return [[t.label for t in run if t.worker == w] for w in range(workers)]


def _topological(run, feeds):
    made = set(feeds)
    for t in run:
        assert set(t.inputs) <= made, t.label
        made.update(t.outputs)


def test_1f1b_warms_up_then_alternates_forward_and_backward_on_each_worker():
    plan = pipeline(_chain(4, 8, 4, grad=True), 2, micro_batches=4)
    feeds, run, _ = tasks(plan, place(plan, 2), "1f1b")
    worker0, worker1 = _per_worker(run, 2)
    f0, b0, f1, b1 = (lambda j: f"stage0.fwd/mb{j}"), (lambda j: f"stage0.bwd/mb{j}"), (lambda j: f"stage1.fwd/mb{j}"), (lambda j: f"stage1.bwd/mb{j}")  # fmt: skip
    assert worker0 == [f0(0), f0(1), b0(0), f0(2), b0(1), f0(3), b0(2), b0(3)]
    assert worker1 == [f1(0), b1(0), f1(1), b1(1), f1(2), b1(2), f1(3), b1(3)]
    _topological(run, feeds)


def test_gpipe_runs_every_forward_of_a_stage_before_its_backwards():
    plan = pipeline(_chain(4, 8, 4, grad=True), 2, micro_batches=3)
    feeds, run, _ = tasks(plan, place(plan, 2), "gpipe")
    for w, labels in enumerate(_per_worker(run, 2)):
        assert labels == [f"stage{w}.{phase}/mb{j}" for phase in ("fwd", "bwd") for j in range(3)]
    _topological(run, feeds)
    with pytest.raises(ConfigError, match="unknown pipeline schedule"):
        tasks(plan, place(plan, 2), "zigzag")


def test_pipeline_tasks_key_values_by_micro_batch_and_share_the_parameters():
    plan = pipeline(_chain(4, 8, 4), 2, micro_batches=2)
    feeds, run, results = tasks(plan, place(plan, 2))
    assert feeds == [("%in0", 0), ("%in0", 1)] + [(f"%in{k}", None) for k in range(1, 5)]
    assert [t.label for t in run] == ["stage0/mb0", "stage1/mb0", "stage0/mb1", "stage1/mb1"]
    assert all(j in (None, 1) for _, j in run[3].inputs) and ("%in0", 1) not in run[3].inputs
    assert results == [(plan.outputs[0], 0), (plan.outputs[0], 1)]


@pytest.mark.parametrize(
    "graph, expected",
    [
        (lambda: captured(lambda x, *ws: sum(((x @ w).tanh()).sum() for w in ws), randn(1, 64), *[randn(64, 64)] * 4)[0],
         "branches"),
        (lambda: _chain(512, 32, 3), "data"),
        (lambda: _chain(8, 1024, 4), "pipeline"),
    ],
    ids=["towers on one sample", "big batch small weights", "small batch big weights"],
)  # fmt: skip
def test_auto_picks_the_cheapest_strategy_and_says_why(graph, expected):
    strategy, reason = choose_strategy(graph(), 2)
    assert strategy == expected
    assert reason.startswith(f"{expected}: estimated") and "ms per step" in reason


def test_one_worker_runs_the_step_whole():
    assert choose_strategy(_chain(4, 8, 2), 1) == ("data", "one worker: nothing to split, the step runs whole")
