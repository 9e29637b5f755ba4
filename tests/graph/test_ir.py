import numpy as np

import distgraph as dg
from distgraph.graph.executor import Runner
from distgraph.graph.ir import Graph, decode, encode
from tests.graph.helpers import captured, randn


def _graph():
    x, w = randn(4, 3), randn(3, 5)
    return captured(lambda x, w: (x @ w).tanh()[1:, ::2].sum(0) * 2.0, x, w)


def test_prints_one_line_per_node_and_a_return():
    graph, _ = _graph()
    text = str(graph)
    assert text.startswith("graph(%in0: f64[4,3], %in1: f64[3,5])")
    assert "= matmul(%in0, %in1)" in text and "= tanh(" in text and "= getitem(" in text
    assert "index=(1:,::2)" in text  # `1:` printed as a slice (it was printed as the index `1`)
    body = [line for line in text.splitlines() if " = " in line and "const(" not in line]
    assert len(body) == len(graph.nodes)
    assert text.splitlines()[-2].strip().startswith("return (")


def test_msgpack_round_trip_keeps_nodes_and_results(tmp_path):
    graph, arrays = _graph()
    graph.save(tmp_path / "g.dg")
    back = Graph.load(tmp_path / "g.dg")
    assert str(back) == str(graph)
    assert [n.attrs for n in back.nodes] == [n.attrs for n in graph.nodes]
    np.testing.assert_array_equal(Runner(back)(*arrays)[0], Runner(graph)(*arrays)[0])


def test_dg_save_and_dg_load_round_trip_graphs_and_plans_whole(tmp_path):
    from distgraph.graph.partition import independent
    from distgraph.graph.plan import Plan

    graph, arrays = _graph()
    dg.save(graph, tmp_path / "g.dg")
    back = dg.load(tmp_path / "g.dg")
    assert isinstance(back, Graph) and back == graph
    np.testing.assert_array_equal(Runner(back)(*arrays)[0], Runner(graph)(*arrays)[0])
    plan = independent(graph)
    dg.save({"plan": plan, "graphs": [graph], "step": 3}, tmp_path / "p.dg")  # nested in a checkpoint-like tree
    tree = dg.load(tmp_path / "p.dg")
    assert isinstance(tree["plan"], Plan) and tree["plan"] == plan and tree["graphs"][0] == graph and tree["step"] == 3


def test_a_damaged_graph_in_a_file_is_a_file_format_error(tmp_path):
    import pytest

    from distgraph.errors import FileFormatError

    tree = _graph()[0].to_dict()
    tree["nodes"][0]["op"] = "no_such_op"
    dg.save(tree, tmp_path / "bad.dg")
    with pytest.raises(FileFormatError, match="bad.dg: holds a damaged graph or plan .*no_such_op"):
        dg.load(tmp_path / "bad.dg")


def test_attribute_encoding_handles_slices_dtypes_and_ellipsis():
    value = {"index": (slice(1, None, 2), Ellipsis, None, 3), "dtype": np.dtype("float32")}
    assert decode(encode(value)) == value


def test_dot_names_every_node_and_edge():
    graph, _ = _graph()
    dot = graph.to_dot()
    assert dot.startswith("digraph G {") and dot.rstrip().endswith("}")
    for node in graph.nodes:
        assert f'"{node.name}" [label=' in dot
        for src in node.inputs:
            assert f'"{src}" -> "{node.name}"' in dot


def test_cost_model_counts_matmul_flops_and_bytes():
    graph, _ = _graph()
    mm = next(n for n in graph.nodes if n.op == "matmul")
    assert mm.flops == 2 * 4 * 5 * 3
    assert mm.bytes == (4 * 3 + 3 * 5 + 4 * 5) * 8


def test_cost_model_finds_the_inner_dimension_of_transposed_products():
    from distgraph.graph.ir import Spec, cost

    s = lambda *shape: Spec(shape, "float32")  # noqa: E731
    assert cost("matmul", [s(8, 1024), s(8, 512)], s(1024, 512))[0] == 2 * 1024 * 512 * 8  # g.T @ x: K = batch
    assert cost("matmul", [s(64, 8), s(32, 8)], s(64, 32))[0] == 2 * 64 * 32 * 8  # a @ b.T
    assert cost("matmul", [s(4, 64, 8), s(8, 32)], s(4, 64, 32))[0] == 2 * 4 * 64 * 32 * 8  # batched


def test_unknown_op_in_a_file_is_named(tmp_path):
    graph, _ = _graph()
    tree = graph.to_dict()
    tree["nodes"][0]["op"] = "no_such_op"
    import pytest

    with pytest.raises(dg.errors.DistgraphError, match="no_such_op"):
        Graph.from_dict(tree)
