"""Constant folding: a node whose inputs are all constants is evaluated once, at optimization time,
with the same registry forward the executor would run, and becomes a constant.

Folding never grows the graph much: a result larger than `max_bytes` (and larger than its inputs —
a broadcast of a scalar, say) stays a node.
"""

from distgraph.backend import device as as_device
from distgraph.ops.registry import REGISTRY, get_op


def fold(graph, max_bytes=1 << 16):
    constants = dict(graph.constants)
    nodes = []
    for node in graph.nodes:
        random = getattr(REGISTRY.get(node.op), "random", False)  # a fresh draw per run: never a constant
        if node.op == "fused" or random or not node.inputs or not all(i in constants for i in node.inputs):
            nodes.append(node)
            continue
        if node.spec.nbytes > max(max_bytes, max(constants[i].nbytes for i in node.inputs)):
            nodes.append(node)
            continue
        op = get_op(node.op)
        result = op.forward(as_device(node.spec.device).xp, *(constants[i] for i in node.inputs), **node.attrs)
        constants[node.name] = result[0] if op.saves_extra else result
    return graph.replace(nodes=tuple(nodes), constants=constants)
