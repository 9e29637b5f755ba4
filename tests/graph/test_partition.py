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
