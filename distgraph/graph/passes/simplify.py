"""Algebraic simplification: identities that remove a node without changing the result's value.

x+0 (which may only turn -0.0 into +0.0), x-0, x*1, x/1 (when the constant neither broadcasts nor changes the dtype), neg(neg(x)),
and shape ops that do nothing (reshape/expand/sum_to to the same shape, identity permute, cast to
the same dtype). A removed node's uses are renamed to the value it would have copied.
"""

from distgraph.graph.ir import rename

_IDENTITY_RIGHT = {"add": 0, "sub": 0, "mul": 1, "div": 1}
_SAME_SHAPE_OPS = ("reshape", "expand", "sum_to")


def simplify(graph):
    specs = graph.specs()
    producer = {n.name: n for n in graph.nodes}
    mapping = {}

    def resolve(name):
        while name in mapping:
            name = mapping[name]
        return name

    for node in graph.nodes:
        inputs = [resolve(i) for i in node.inputs]
        x = inputs[0] if inputs else None
        same = x is not None and specs[x].shape == node.spec.shape and specs[x].dtype == node.spec.dtype
        if node.op in _IDENTITY_RIGHT and same and _is_scalar(graph, inputs[1], _IDENTITY_RIGHT[node.op]):
            mapping[node.name] = x
        elif node.op in ("add", "mul") and len(inputs) == 2 and _flip_ok(graph, specs, node, inputs):
            mapping[node.name] = inputs[1]
        elif node.op in _SAME_SHAPE_OPS and same:
            mapping[node.name] = x
        elif node.op == "permute" and same and tuple(node.attrs["dims"]) == tuple(range(len(node.spec.shape))):
            mapping[node.name] = x
        elif node.op == "cast" and same:
            mapping[node.name] = x
        elif node.op == "neg" and x in producer and producer[x].op == "neg":
            mapping[node.name] = resolve(producer[x].inputs[0])
    return rename(graph, mapping)


def _flip_ok(graph, specs, node, inputs):
    """0 + x and 1 * x."""
    y = inputs[1]
    same = specs[y].shape == node.spec.shape and specs[y].dtype == node.spec.dtype
    return same and _is_scalar(graph, inputs[0], 0 if node.op == "add" else 1)


def _is_scalar(graph, name, value):
    arr = graph.constants.get(name)
    if arr is None or arr.size != 1:
        return False
    v = arr.item() if not hasattr(arr, "get") else arr.get().item()
    return v == value and not (value == 0 and str(v).startswith("-"))
