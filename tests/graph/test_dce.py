from distgraph.graph.passes.dce import dce
from tests.graph.helpers import assert_same_outputs, captured, randn


def test_unused_branch_and_its_constants_are_pruned():
    def fn(x):
        _unused = (x * 7.0).exp()
        return x.tanh() + 1.0

    graph, arrays = captured(fn, randn(3, 4))
    pruned = dce(graph)
    assert [n.op for n in pruned.nodes] == ["tanh", "add"]
    assert len(pruned.constants) == 1
    assert pruned.inputs == graph.inputs  # the signature never changes
    assert_same_outputs(graph, pruned, arrays)


def test_graph_without_dead_nodes_is_unchanged():
    graph, _ = captured(lambda x: x.sin() * x, randn(2, 2))
    assert dce(graph) == graph
