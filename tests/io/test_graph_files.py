"""Graph and plan files (dg.save'd IR): damaged or hostile files give FileFormatError, never another error."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distgraph as dg
from distgraph.errors import FileFormatError
from distgraph.graph.capture import capture
from distgraph.graph.ir import Graph
from distgraph.graph.partition import independent
from distgraph.graph.plan import Plan

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def graph():
    x = dg.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    w = dg.tensor(np.random.default_rng(1).standard_normal((3, 5)))
    return capture(lambda x, w: (x @ w).tanh()[1:, ::2].sum(0) * 2.0, [x, w])[0]


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=3))
@FUZZ
def test_fuzz_mutated_graph_files_load_the_same_graph_or_raise_file_format_error(graph, tmp_path, edits):
    path = tmp_path / "g.dg"
    graph.save(path)
    data = bytearray(path.read_bytes())
    for where, value in edits:
        data[min(int(where * len(data)), len(data) - 1)] = value
    path.write_bytes(bytes(data))
    try:
        back = Graph.load(path)
    except FileFormatError:
        return
    assert str(back) == str(graph)


def paths(tree, prefix=()):
    """Every (path, value) in a nested dict/list tree: the places a forger can put a wrong value."""
    yield prefix, tree
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield from paths(value, (*prefix, key))


def replaced(tree, path, value):
    if not path:
        return value
    out = dict(tree) if isinstance(tree, dict) else list(tree)
    out[path[0]] = replaced(tree[path[0]], path[1:], value)
    return out


WRONG = (
    st.none()
    | st.booleans()
    | st.integers(-5, 2**40)
    | st.text(max_size=6)
    | st.lists(st.integers(-5, 2**40), max_size=2)
)
WRONG = WRONG | st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2) | st.just("matmul")


@pytest.mark.parametrize("kind", ["graph", "plan"])
@given(data=st.data())
@FUZZ
def test_fuzz_well_formed_files_with_wrong_fields_raise_file_format_error(graph, tmp_path, kind, data):
    """The container is valid (checksums and all), the graph inside it is not: still only FileFormatError."""
    cls, obj = (Graph, graph) if kind == "graph" else (Plan, independent(graph))
    tree = obj.to_dict()
    where = data.draw(st.sampled_from([p for p, _ in paths(tree) if p]))
    forged = replaced(tree, where, data.draw(WRONG))
    path = tmp_path / f"{kind}.dg"
    dg.save(forged, path)
    try:
        cls.load(path)
    except FileFormatError as exc:
        assert f"{kind}.dg" in str(exc)
