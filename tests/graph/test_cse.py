from distgraph.graph.passes.cse import cse
from tests.graph.helpers import assert_same_outputs, captured, randn


def test_repeated_subexpression_is_computed_once():
    graph, arrays = captured(lambda x: x.exp().sum(0) + x.exp().sum(0), randn(3, 4))
    merged = cse(graph)
    assert [n.op for n in graph.nodes].count("exp") == 2
    assert [n.op for n in merged.nodes] == ["exp", "sum", "add"]
    assert_same_outputs(graph, merged, arrays)


def test_equal_constants_merge_but_different_attributes_do_not():
    graph, arrays = captured(lambda x: (x * 2.0 + x * 2.0) + x.sum(0) + x.sum(1, keepdim=True), randn(3, 3))
    merged = cse(graph)
    assert len(merged.constants) == 1
    assert [n.op for n in merged.nodes].count("sum") == 2
    assert [n.op for n in merged.nodes].count("mul") == 1
    assert_same_outputs(graph, merged, arrays)


def test_two_returned_equal_expressions_stay_two_arrays():
    """`return x * 2, x * 2`: merged, both outputs were one array, and writing into one changed the other."""
    graph, arrays = captured(lambda x: (x * 2, x * 2, (x * 2).exp() + (x * 2).exp()), randn(3, 4))
    merged = cse(graph)
    assert [n.op for n in merged.nodes].count("mul") == 2  # the two returned ones (the others merge into one)
    assert [n.op for n in merged.nodes].count("exp") == 1
    assert_same_outputs(graph, merged, arrays)
