"""Pipeline stages of a captured training step: each stage's forward and backward on one worker,
GPipe and 1F1B schedules, the same loss and gradients as the unsplit step."""

import json

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.graph.executor import LocalExecutor, Runner
from distgraph.graph.partition import pipeline
from distgraph.graph.plan import Plan

MICRO_BATCHES = 4


def _step(batch):
    """(micro-batch graph, full-batch graph, arrays (x, y, params...)) of an MLP's float64 training step."""
    dg.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    ).double()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch, 8)), rng.integers(0, 3, batch)
    micro = batch // MICRO_BATCHES
    step = dg.compile(model, (dg.tensor(x[:micro]), dg.tensor(y[:micro])), loss_fn=F.cross_entropy)
    full = dg.compile(model, (dg.tensor(x), dg.tensor(y)), loss_fn=F.cross_entropy)
    params = [p.array for p in next(iter(step.variants.values()))[1]]
    return step.graph, full.graph, [x, y, *params]


def _plan(stages):
    graph, full, arrays = _step(16)
    plan = pipeline(graph, stages, MICRO_BATCHES, batch_inputs=(0, 1), combine=["mean"] * len(graph.outputs))
    return plan, full, arrays


def _max_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def _per_worker(timeline):
    """{thread or worker: labels in the order they ran}."""
    rows = {}
    for label, worker, start, *_ in sorted(timeline.events, key=lambda e: e[2]):
        rows.setdefault(worker, []).append(label)
    return rows


def _peak_live(labels):
    """Most micro-batches whose forward ran on this worker and whose backward has not yet."""
    live = peak = 0
    for label in labels:
        live += 1 if ".fwd/" in label else -1
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages", [2, 3])
def test_loss_and_every_gradient_equal_the_unsplit_step(stages, schedule):
    plan, full, arrays = _plan(stages)
    expected = Runner(full)(*arrays)
    got = LocalExecutor(plan, schedule=schedule).run(*arrays)
    assert len(got) == len(expected) == 1 + len(arrays) - 2  # the loss and one gradient per parameter
    assert _max_diff(got, expected) <= 1e-12


@pytest.mark.parametrize("stages", [2, 3])
def test_each_stage_has_a_forward_and_a_backward_where_its_activations_live(stages):
    plan, _, _ = _plan(stages)
    names = [sg.name for sg in plan.subgraphs]
    assert names == [f"stage{s}.fwd" for s in range(stages)] + [f"stage{s}.bwd" for s in reversed(range(stages))]
    for sg in plan.subgraphs:
        assert sg.placement == f"stage:{sg.stage}" and sg.name == f"stage{sg.stage}.{sg.phase}"
    forward = [sg for sg in plan.subgraphs if sg.phase == "fwd"]
    made_in = {n.name: sg.stage for sg in forward for n in sg.graph.nodes}
    present = {v: {s} for v, s in made_in.items()}
    for sg in forward:
        for v in sg.inputs:
            present.get(v, set()).add(sg.stage)
    reads = 0
    for sg in plan.subgraphs:
        if sg.phase == "bwd":
            for v in sg.inputs:
                if v in made_in:
                    reads += 1
                    assert sg.stage in present[v], f"{sg.name} reads {v}, which lives on stages {present[v]}"
    assert reads >= stages  # every backward stage reads activations
    position = {sg.name: k for k, sg in enumerate(plan.subgraphs)}
    assert all(position[e.src] < position[e.dst] for e in plan.edges)  # F0..F{k-1}, B{k-1}..B0 is topological
    assert len(plan.meta["cut_bytes"]) == stages - 1 and all(b > 0 for b in plan.meta["cut_bytes"])


def test_more_stages_than_the_forward_can_fill_gives_as_many_as_it_can():
    graph, full, arrays = _step(16)
    plan = pipeline(graph, 100, MICRO_BATCHES, batch_inputs=(0, 1), combine=["mean"] * len(graph.outputs))
    forward = [sg for sg in plan.subgraphs if sg.phase == "fwd"]
    assert plan.meta["stages"] == len(forward) < 100 and len(plan.meta["cut_bytes"]) == len(forward) - 1
    assert _max_diff(LocalExecutor(plan, schedule="1f1b").run(*arrays), Runner(full)(*arrays)) <= 1e-12


@pytest.mark.parametrize("stages", [2, 3])
def test_1f1b_interleaves_and_holds_at_most_k_micro_batches_per_stage(stages, tmp_path):
    plan, _, arrays = _plan(stages)
    rows = {}
    for schedule in ("gpipe", "1f1b"):
        ex = LocalExecutor(plan, schedule=schedule)
        ex.run(*arrays)
        rows[schedule] = _per_worker(ex.timeline)
        assert sorted(rows[schedule]) == [f"dg-stage{s}_0" for s in range(stages)]
    for s in range(stages):
        gpipe, one = rows["gpipe"][f"dg-stage{s}_0"], rows["1f1b"][f"dg-stage{s}_0"]
        assert gpipe == [f"stage{s}.{phase}/mb{j}" for phase in ("fwd", "bwd") for j in range(MICRO_BATCHES)]
        assert sorted(one) == sorted(gpipe) and one != gpipe
        assert _peak_live(gpipe) == MICRO_BATCHES
        assert _peak_live(one) == stages - s <= stages
    trace = json.loads(ex.timeline.write(tmp_path / "trace.json").read_text())
    threads = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    spans = sorted((e for e in trace["traceEvents"] if e["ph"] == "X"), key=lambda e: e["ts"])
    in_trace = [e["name"] for e in spans if threads[e["tid"]] == "dg-stage0_0"]
    assert in_trace == rows["1f1b"]["dg-stage0_0"]


def test_plan_round_trips_through_save_and_load(tmp_path):
    plan, _, arrays = _plan(2)
    dg.save(plan.to_dict(), tmp_path / "plan.dg")
    back = Plan.from_dict(dg.load(tmp_path / "plan.dg"))
    assert str(back) == str(plan) and back.edges == plan.edges and back.meta == plan.meta
    assert [(sg.stage, sg.phase) for sg in back.subgraphs] == [(sg.stage, sg.phase) for sg in plan.subgraphs]
    assert back.to_dot() == plan.to_dot()
    assert _max_diff(LocalExecutor(back, schedule="1f1b").run(*arrays), LocalExecutor(plan).run(*arrays)) == 0.0


@pytest.mark.ray
def test_ray_1f1b_equals_the_unsplit_step(ray_session):
    from distgraph.distributed.plan_runner import RayPlanExecutor

    plan, full, arrays = _plan(2)
    with RayPlanExecutor(plan, workers=2, schedule="1f1b") as ex:
        got = ex.run(*arrays)
        rows = _per_worker(ex.timeline)
    assert _max_diff(got, Runner(full)(*arrays)) <= 1e-12
    assert rows["worker1"] == [f"stage1.{phase}/mb{j}" for j in range(MICRO_BATCHES) for phase in ("fwd", "bwd")]
    assert _peak_live(rows["worker0"]) == 2
