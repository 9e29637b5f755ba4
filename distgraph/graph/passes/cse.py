"""Common-subexpression elimination: equal constants, and nodes with the same op, inputs and attributes,
are computed once. Registry ops are deterministic except those marked `random` (dropout's mask),
which are never merged, so merging never changes a result. Gradient checkpointing's recomputations
(`name~rc`) equal their originals by design and are never merged back: that would undo the pass.
Two returned new arrays (`return x * 2, x * 2`) are not merged either: eager gives two tensors, and
writing into one must not change the other.
"""

import numpy as np

from distgraph.graph.ir import exposed, makes_fresh, rename
from distgraph.graph.passes.checkpoint import SUFFIX as RECOMPUTED
from distgraph.ops.registry import REGISTRY


def freeze(value):
    """A hashable key for an attribute value (arrays by content)."""
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__,) + tuple(freeze(v) for v in value)
    if isinstance(value, slice):
        return ("slice", value.start, value.stop, value.step)
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        host = value.get() if hasattr(value, "get") else value
        return ("array", host.dtype.str, host.shape, host.tobytes())
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    return value


def cse(graph):
    mapping, seen_const, constants = {}, {}, {}
    for name, arr in graph.constants.items():
        key = freeze(arr)
        if key in seen_const:
            mapping[name] = seen_const[key]
        else:
            seen_const[key] = name
            constants[name] = arr
    seen, nodes, shared = {}, [], exposed(graph)
    for node in graph.nodes:
        inputs = tuple(mapping.get(i, i) for i in node.inputs)
        key = (node.op, inputs, freeze(node.attrs))
        if key in seen and not getattr(REGISTRY.get(node.op), "random", False) and not node.name.endswith(RECOMPUTED):
            if node.name in shared and makes_fresh(node):
                if seen[key] in shared:
                    nodes.append(node)  # both returned: they stay two arrays
                    continue
                shared.add(seen[key])
            mapping[node.name] = seen[key]
        else:
            seen[key] = node.name
            nodes.append(node)
    return rename(graph.replace(constants=constants), mapping, nodes=tuple(nodes))
