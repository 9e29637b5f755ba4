import numpy as np

import distgraph as dg
from distgraph.graph.partition import independent, pipeline, replicas
from distgraph.graph.plan import Plan
from tests.graph.helpers import captured, randn


def _towers(x, *ws):
    """Four towers on one shared input, merged at the end."""
    outs = [((x @ w).tanh() @ w.T).sum(1, keepdim=True) for w in ws]
    return dg.cat(outs, 1).sum(1)


def _tower_graph():
    return captured(_towers, randn(8, 6), *[randn(6, 6 + k) for k in range(4)])


def test_four_towers_become_four_branches_and_a_join():
    graph, _ = _tower_graph()
    plan = independent(graph)
    assert len(plan.subgraphs) == 5
    *branches, join = plan.subgraphs
    assert [n.op for n in join.graph.nodes] == ["cat", "sum"]
    for k, sg in enumerate(branches):
        assert set(sg.inputs) == {"%in0", f"%in{k + 1}"}  # only the shared input ties them, and it is cut
    assert {(e.src, e.dst) for e in plan.edges} == {(b.name, join.name) for b in branches}
    assert all(e.bytes == 8 * 8 for e in plan.edges)


def _check_backward_per_tower(graph, arrays, weights, grads):
    """Tower k's gradient (`grads[k]`, of `weights[k]`) is made in a subgraph of its own that reads no
    other tower's weight, and the plan on 2 threads gives the unsplit graph's bits."""
    from distgraph.graph.executor import LocalExecutor, Runner

    plan = independent(graph)
    maker = {o: sg for sg in plan.subgraphs for o in sg.outputs}
    makers = [maker[g] for g in grads]
    assert len({sg.name for sg in makers}) == len(weights), plan
    by_name = {sg.name: sg for sg in plan.subgraphs}
    for k, sg in enumerate(makers):  # it holds tower k's forward, or gets tower k's activations from it
        near = [sg] + [by_name[e.src] for e in plan.edges if e.dst == sg.name]
        towers = [j for j, w in enumerate(weights) if any(w in s.inputs for s in near)]
        assert towers == [k], (k, towers)
    out = LocalExecutor(plan, workers=2).run(*arrays)
    for a, b in zip(out, Runner(graph)(*arrays)):
        np.testing.assert_array_equal(a, b)
    return plan


def test_a_training_step_splits_its_backward_by_tower_too():
    """A loss whose gradient does not read its value: each tower's forward and backward are one branch,
    the broadcast gradient seed a small subgraph before them (it tied the towers into one subgraph)."""
    ws = [randn(6, 6 + k) for k in range(4)]
    for w in ws:
        w.requires_grad_(True)
    graph, arrays = captured(lambda x, *ws: _towers(x, *ws).sum(), randn(8, 6), *ws, grad_of=ws)
    _check_backward_per_tower(graph, arrays, [f"%in{k + 1}" for k in range(4)], graph.outputs[1:])


def test_a_cross_entropy_step_runs_each_towers_backward_beside_the_others():
    """Cross-entropy's gradient reads the logits, so every backward node descends from all towers: the
    join held the whole backward; it is split by the tower whose activations and weights it reads."""
    from distgraph import nn

    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            self.towers = nn.ModuleList(
                [nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)) for _ in range(4)]
            )
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(dg.cat([t(x) for t in self.towers], 1))

    dg.manual_seed(0)
    model, x, y = Towers(), randn(32, 8).float(), dg.tensor(np.arange(32) % 3)
    step = dg.compile(model, (x, y), loss_fn=dg.nn.functional.cross_entropy)
    runner, lifted, _, _ = next(iter(step.variants.values()))
    graph = runner.graph  # the optimized graph: what the Trainer's branches strategy partitions
    names = dict(zip((id(p) for p in lifted), graph.input_names[2:]))
    firsts = [t[0].weight for t in model.towers]
    grads = [graph.outputs[1 + next(i for i, p in enumerate(step.params) if p is w)] for w in firsts]
    arrays = [x.array, y.array, *[p.array for p in lifted]]
    plan = _check_backward_per_tower(graph, arrays, [names[id(w)] for w in firsts], grads)
    assert len(plan.subgraphs) >= 9  # 4 forward towers, the join, 4 backward towers


def test_separate_outputs_are_separate_components():
    graph, _ = captured(lambda x, y: (x.exp(), y.sin() * 2.0), randn(3), randn(4))
    plan = independent(graph)
    assert sorted(len(sg.graph) for sg in plan.subgraphs) == [1, 2] and plan.edges == ()


def test_a_chain_stays_one_subgraph():
    graph, _ = captured(lambda x: x.exp().sin().tanh().sum(), randn(5))
    assert len(independent(graph).subgraphs) == 1


def test_pipeline_stages_are_contiguous_balanced_and_report_cut_bytes():
    def mlp(x, *ws):
        for w in ws:
            x = (x @ w).relu()
        return x

    graph, _ = captured(mlp, randn(16, 32), *[randn(32, 32) for _ in range(8)])
    plan = pipeline(graph, 4, micro_batches=2)
    flops = [sg.flops for sg in plan.subgraphs]
    assert len(flops) == 4 and max(flops) <= 1.5 * min(flops)
    order = [n.name for sg in plan.subgraphs for n in sg.graph.nodes]
    assert order == [n.name for n in graph.nodes]
    assert plan.meta["cut_bytes"] == [16 * 32 * 8] * 3
    assert plan.combine == ("cat",)


def test_replicas_copy_the_graph_and_average_scalars():
    graph, _ = captured(lambda x, w: ((x @ w) ** 2).mean(), randn(8, 3), randn(3, 2))
    plan = replicas(graph, 2)
    assert [sg.placement for sg in plan.subgraphs] == ["replica:0", "replica:1"] and plan.combine == ("mean",)


def test_replicas_of_a_train_step_split_the_targets_and_average_gradients_whatever_their_shape():
    """Defaults: the batch and its targets are cut; a gradient whose first dimension equals the batch
    (Linear(3, 4)'s weight, shards of 4) is averaged, not concatenated — it came out (8, 3) before.
    The step is captured at the size one replica runs (a shard), as the executors expect."""
    from distgraph import nn
    from distgraph.graph.executor import LocalExecutor, Runner

    dg.manual_seed(0)
    model = nn.Linear(3, 4)
    model.double()
    x, y = randn(8, 3), dg.tensor(np.arange(8) % 4)
    step = dg.compile(model, (x[:4], y[:4]), loss_fn=dg.nn.functional.cross_entropy)
    params = [p.array for p in next(iter(step.variants.values()))[1]]
    graph, run = step.graph, Runner(step.graph)
    plan = replicas(graph, 2)
    assert plan.batch_inputs == (0, 1) and plan.combine == ("mean",) * 3
    halves = [run(x.array[:4], y.array[:4], *params), run(x.array[4:], y.array[4:], *params)]
    for a, b, c in zip(LocalExecutor(plan).run(x.array, y.array, *params), *halves):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, (b + c) / 2, rtol=0, atol=1e-12)


def test_plan_prints_serializes_and_draws(tmp_path):
    graph, _ = _tower_graph()
    plan = independent(graph)
    assert str(plan).startswith("Plan(dag, 5 subgraphs")
    plan.save(tmp_path / "p.dg")
    back = Plan.load(tmp_path / "p.dg")
    assert str(back) == str(plan) and back.edges == plan.edges
    dot = plan.to_dot()
    assert dot.count('subgraph "cluster_') == 5 and "fillcolor" in dot
    import re

    declared = set(re.findall(r'^\s*"([^"]+)" \[label=', dot, flags=re.M))
    crossing = re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[label=', dot, flags=re.M)
    assert len(crossing) >= len(plan.edges) > 0
    assert all(a in declared and b in declared for a, b in crossing)  # they join drawn nodes, none made up
    np.testing.assert_equal(len(back.subgraphs[0].graph), len(plan.subgraphs[0].graph))


def test_every_plan_returns_the_folded_zero_gradient_of_an_unused_parameter():
    """The loss ignores `unused`: after folding, its gradient output is a graph constant that no node
    makes. Every plan returned it nowhere, and executing the plan ended in a KeyError."""
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import LocalExecutor, Runner
    from distgraph.graph.passes import optimize

    x, w, unused = randn(8, 6), randn(6, 3), randn(3)
    leaves = [w.requires_grad_(), unused.requires_grad_()]
    graph, _, _ = capture(lambda x: ((x @ w).tanh() ** 2).sum(), [x[:4]], grad_of=leaves)
    graph = optimize(graph)
    assert graph.outputs[-1] in graph.constants
    run = Runner(graph)
    halves = [run(x.array[:4], w.array, unused.array), run(x.array[4:], w.array, unused.array)]
    for plan, arrays, want in (
        (independent(graph), [x.array[:4], w.array, unused.array], halves[0]),
        (pipeline(graph, 2), [x.array[:4], w.array, unused.array], halves[0]),
        (replicas(graph, 2), [x.array, w.array, unused.array], [(a + b) / 2 for a, b in zip(*halves)]),
    ):
        got = LocalExecutor(plan, workers=2).run(*arrays)
        np.testing.assert_array_equal(got[-1], np.zeros(3))
        for a, b in zip(got[:-1], want[:-1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_combine_rule_that_does_not_exist_or_does_not_fit_the_outputs_is_refused():
    import pytest

    from distgraph.errors import ConfigError

    graph, _ = captured(lambda x, w: ((x @ w).tanh() ** 2).sum(), randn(8, 6), randn(6, 3))
    with pytest.raises(ConfigError, match="one of cat, cat_mean, mean, sum per graph output \\(1\\)"):
        replicas(graph, 2, combine=("concat",))
    with pytest.raises(ConfigError, match="per graph output"):
        pipeline(graph, 2, combine=("mean", "mean"))
