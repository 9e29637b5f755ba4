"""Placement, task order and strategy choice of Plans on W workers (pure functions: no Ray)."""

import pytest

from distgraph.distributed.placement import choose_strategy, pipeline_order, place, stage_worker, tasks
from distgraph.errors import ConfigError
from distgraph.graph.partition import independent, pipeline, replicas
from tests.graph.helpers import captured, randn
from tests.graph.test_partition import _tower_graph


def _chain(batch, width, depth, grad=False):
    ws = [randn(width, width + 0 * k) for k in range(depth)]

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


def test_folded_stages_put_a_backward_stage_with_its_forward():
    assert [stage_worker(s, 4, 2) for s in range(4)] == [0, 1, 1, 0]
    assert [stage_worker(s, 2, 2) for s in range(2)] == [0, 1]
    plan = replicas(_chain(4, 8, 2), 3)
    assert place(plan, 3) == {"replica0": 0, "replica1": 1, "replica2": 2}


def test_1f1b_warms_up_then_alternates_forward_and_backward_on_each_worker():
    order = pipeline_order("1f1b", 4, 4, 2)
    worker0 = [(s, j) for s, j in order if stage_worker(s, 4, 2) == 0]
    worker1 = [(s, j) for s, j in order if stage_worker(s, 4, 2) == 1]
    assert worker0 == [(0, 0), (0, 1), (3, 0), (0, 2), (3, 1), (0, 3), (3, 2), (3, 3)]
    assert worker1 == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]
    done = set()
    for s, j in order:  # one topological order: a stage's micro-batch after the stage before it
        assert s == 0 or (s - 1, j) in done
        done.add((s, j))


def test_gpipe_runs_every_micro_batch_through_a_stage_before_the_next():
    assert pipeline_order("gpipe", 2, 3, 2) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(ConfigError, match="1F1B needs"):
        pipeline_order("1f1b", 3, 4, 2)
    with pytest.raises(ConfigError, match="unknown pipeline schedule"):
        pipeline_order("zigzag", 2, 4, 2)


def test_pipeline_tasks_key_values_by_micro_batch_and_share_the_parameters():
    plan = pipeline(_chain(4, 8, 4), 2, micro_batches=2)
    feeds, run, results = tasks(plan, place(plan, 2))
    assert feeds == [("%in0", 0), ("%in0", 1)] + [(f"%in{k}", None) for k in range(1, 5)]
    assert [t.label for t in run] == ["stage0/mb0", "stage0/mb1", "stage1/mb0", "stage1/mb1"]
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
