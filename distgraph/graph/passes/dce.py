"""Dead-node pruning: keep only nodes an output depends on, and only the constants they read.

Graph inputs are kept even when unused, so a pruned graph is called exactly like the original.
"""


def dce(graph):
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.name in live:
            kept.append(node)
            live.update(node.inputs)
    constants = {k: v for k, v in graph.constants.items() if k in live}
    return graph.replace(nodes=tuple(reversed(kept)), constants=constants)
