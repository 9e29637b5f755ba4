"""Dead-node pruning: keep only nodes an output depends on, and only the constants they read.

Graph inputs are kept even when unused, so a pruned graph is called exactly like the original.
Random draws (ops marked `random`: dropout masks, normal/poisson/binomial samples, ...) are kept even
when nothing reads them: each one advances the device's generator, so removing an unused draw would
shift every later one and a seeded run would get other masks than eager code seeded the same way.
"""

from distgraph.ops.registry import REGISTRY


def dce(graph):
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.name in live or is_random(node):
            kept.append(node)
            live.update(node.inputs)
    constants = {k: v for k, v in graph.constants.items() if k in live}
    return graph.replace(nodes=tuple(reversed(kept)), constants=constants)


def is_random(node):
    """Whether the node draws from the generator (a side effect: see the module docstring)."""
    return getattr(REGISTRY.get(node.op), "random", False)
