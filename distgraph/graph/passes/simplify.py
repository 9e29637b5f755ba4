"""Algebraic simplification: identities that remove a node without changing the result's value.

x+0 (which may only turn -0.0 into +0.0), x-0, x*1, x/1 (when the constant neither broadcasts nor changes the dtype), neg(neg(x)),
and shape ops that do nothing (reshape/expand/sum_to to the same shape, identity permute, cast to
the same dtype). A removed node's uses are renamed to the value it would have copied.

A node that makes a new array and is returned (or viewed by a returned value) is kept when the
value it would be renamed to is an input, a constant or returned too: eager's `x * 1` is a new
tensor, so writing into the result must not write into `x` (or into another output).
"""

from distgraph.graph.ir import exposed, makes_fresh, rename

_IDENTITY_RIGHT = {"add": 0, "sub": 0, "mul": 1, "div": 1}
_SAME_SHAPE_OPS = ("reshape", "expand", "sum_to")


def simplify(graph):
    specs = graph.specs()
    producer = {n.name: n for n in graph.nodes}
    mapping = {}
    shared = exposed(graph) | set(graph.input_names) | set(graph.constants)

    def resolve(name):
        while name in mapping:
            name = mapping[name]
        return name

    for node in graph.nodes:
        target = _identity_of(graph, specs, producer, node, [resolve(i) for i in node.inputs])
        if target is None:
            continue
        target = resolve(target)
        if node.name in shared and makes_fresh(node):
            if target in shared:
                continue  # the returned result would alias an input, a constant or another output
            shared.add(target)
        mapping[node.name] = target
    return rename(graph, mapping)


def _identity_of(graph, specs, producer, node, inputs):
    """The value `node` would merely copy, or None."""
    x = inputs[0] if inputs else None
    same = x is not None and specs[x].shape == node.spec.shape and specs[x].dtype == node.spec.dtype
    if node.op in _IDENTITY_RIGHT and same and _is_scalar(graph, inputs[1], _IDENTITY_RIGHT[node.op]):
        return x
    if node.op in ("add", "mul") and len(inputs) == 2 and _flip_ok(graph, specs, node, inputs):
        return inputs[1]
    if node.op in _SAME_SHAPE_OPS and same:
        return x
    if node.op == "permute" and same and tuple(node.attrs["dims"]) == tuple(range(len(node.spec.shape))):
        return x
    if node.op == "cast" and same:
        return x
    if node.op == "neg" and x in producer and producer[x].op == "neg":
        return producer[x].inputs[0]
    return None


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
