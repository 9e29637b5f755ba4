"""Graph -> Graph passes. Each is a pure function: it returns a new Graph and never mutates its input.

`optimize` runs the default pipeline: fold constants, simplify algebra, merge common subexpressions,
prune dead nodes, then fuse elementwise chains. Gradient checkpointing (`checkpoint`) and mixed
precision (`amp`) change what is computed, so they are opt-in: `optimize(g, (checkpoint, *DEFAULT))`. Memory planning is not a rewrite: the executor asks
`memory.plan` when it builds a runner.
"""

from distgraph.graph.passes.amp import amp  # noqa: F401
from distgraph.graph.passes.checkpoint import checkpoint  # noqa: F401
from distgraph.graph.passes.cse import cse
from distgraph.graph.passes.dce import dce
from distgraph.graph.passes.fold import fold
from distgraph.graph.passes.fusion import fuse
from distgraph.graph.passes.simplify import simplify

DEFAULT = (fold, simplify, cse, dce, fuse)


def optimize(graph, passes=DEFAULT):
    for p in passes:
        graph = p(graph)
    return graph
