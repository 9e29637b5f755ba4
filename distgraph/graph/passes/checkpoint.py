"""Gradient checkpointing: trade compute for memory by recomputing forward values in backward.

A captured training step lists the forward nodes first (up to the loss, `graph.outputs[0]`) and the
backward nodes after. Forward values read by backward stay alive from forward until backward — that
is the memory checkpointing reclaims. Policy: the forward nodes are cut into segments; the last value
of each segment is a checkpoint and stays alive, every other forward value that backward reads is
recomputed from the segment's inputs right before the first backward node that needs it, by copies
of the segment's nodes (`name~rc`). Random ops (dropout masks) are never recomputed: they are
checkpoints, so the recomputed values equal the originals bit for bit. The last segment is never
recomputed: backward starts there while its values are still alive, and keeping them costs no more
than recomputing any other segment (the peak stays that of one segment plus the checkpoints).

Segments: `segments=k` cuts the forward into k equal runs (default √n, the classic choice);
`budget_bytes` picks the smallest number of segments whose planned peak fits the budget.
"""

import math

from distgraph.graph.ir import Node
from distgraph.graph.passes import memory
from distgraph.ops.registry import REGISTRY

SUFFIX = "~rc"


def checkpoint(graph, segments=None, budget_bytes=None):
    loss = graph.outputs[0]
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    if loss not in index:
        return graph
    n_fwd = index[loss] + 1
    if budget_bytes is not None:
        for k in range(1, n_fwd + 1):
            candidate = _rewrite(graph, n_fwd, k)
            if memory.plan(candidate).peak_bytes <= budget_bytes:
                return candidate
        return _rewrite(graph, n_fwd, n_fwd)
    return _rewrite(graph, n_fwd, segments or max(1, math.isqrt(n_fwd)))


def _random(node):
    return getattr(REGISTRY.get(node.op), "random", False)


def _rewrite(graph, n_fwd, k):
    fwd, bwd = graph.nodes[:n_fwd], graph.nodes[n_fwd:]
    size = math.ceil(len(fwd) / k)
    keep = {fwd[min(i + size, len(fwd)) - 1].name for i in range(0, len(fwd), size)}
    keep |= {n.name for n in fwd[(len(fwd) - 1) // size * size :]}  # the last segment: still alive
    keep |= {n.name for n in fwd if _random(n)}
    keep.add(graph.outputs[0])
    fwd_index = {n.name: i for i, n in enumerate(fwd)}
    recompute = {}  # forward name -> recomputed name
    new_bwd = []
    for node in bwd:
        needed = [x for x in node.inputs if x in fwd_index and x not in keep]
        for name in needed:
            new_bwd += _emit(name, fwd, fwd_index, keep, recompute)
        if needed or any(x in recompute for x in node.inputs):
            node = Node(node.name, node.op, tuple(recompute.get(x, x) for x in node.inputs), node.attrs, node.spec,
                        node.flops, node.bytes)  # fmt: skip
        new_bwd.append(node)
    return graph.replace(nodes=tuple(fwd) + tuple(new_bwd))


def _emit(name, fwd, fwd_index, keep, recompute):
    """Copies of the forward nodes `name` needs (not yet recomputed), in forward order."""
    todo, stack = [], [name]
    while stack:
        v = stack.pop()
        if v in recompute or v in keep or v not in fwd_index or v in todo:
            continue
        todo.append(v)
        stack.extend(fwd[fwd_index[v]].inputs)
    out = []
    for v in sorted(todo, key=fwd_index.get):
        node = fwd[fwd_index[v]]
        recompute[v] = v + SUFFIX
        ins = tuple(recompute.get(x, x) for x in node.inputs)
        out.append(Node(v + SUFFIX, node.op, ins, node.attrs, node.spec, node.flops, node.bytes))
    return out
