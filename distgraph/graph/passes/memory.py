"""Memory planning: liveness, buffer reuse and in-place execution, and the peak bytes they need.

Liveness: a node's output lives from the node that makes it to its last reader (graph outputs live
to the end). The executor drops each value right after its last reader (`free_after`), so memory
tracks the live set instead of every value ever made. Buffers: values are assigned greedily to
buffers freed by dead values of the same byte size (`buffers` counts them). In-place: an
elementwise node may write into an input that dies at that node when the input has the node's
shape and dtype, was freshly made by a non-view op, and no view of it was taken (so nothing else
aliases its memory). `peak_bytes` is the planned peak of intermediate values; `naive_bytes` is what
keeping every intermediate alive costs (no planning).
"""

from dataclasses import dataclass

from distgraph.graph.ir import makes_fresh
from distgraph.graph.passes.fusion import writes_out


@dataclass(frozen=True)
class MemoryPlan:
    free_after: tuple  # per node: value names that die after it runs
    inplace: dict  # node index -> input name whose buffer it writes
    peak_bytes: int
    naive_bytes: int
    buffers: int

    def __str__(self):
        return (
            f"memory plan: peak {self.peak_bytes / 1e6:.3f} MB (no planning {self.naive_bytes / 1e6:.3f} MB), "
            f"{self.buffers} buffers, {len(self.inplace)} in-place nodes"
        )


def plan(graph, inplace=True):
    produced = {n.name: i for i, n in enumerate(graph.nodes)}
    outputs = set(graph.outputs)
    last = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in produced:
                last[name] = i
    viewed = {name for n in graph.nodes if not makes_fresh(n) for name in n.inputs}  # may share memory
    free_after = [[] for _ in graph.nodes]
    for name, i in last.items():
        if name not in outputs:
            free_after[i].append(name)
    in_place = {}
    if inplace:
        for i, node in enumerate(graph.nodes):
            eligible = node.op == "fused" or writes_out(node.op, node.attrs)
            if not eligible or not node.spec.shape:  # 0-d results are numpy scalars, not writable buffers
                continue
            for name in dict.fromkeys(node.inputs):
                src = produced.get(name)
                if (
                    src is not None
                    and name in free_after[i]
                    and name not in viewed
                    and node.inputs.count(name) == 1
                    and makes_fresh(graph.nodes[src])
                    and graph.nodes[src].spec == node.spec
                ):
                    in_place[i] = name
                    break
    peak, buffers = _simulate(graph, free_after, in_place)
    naive = sum(n.spec.nbytes for n in graph.nodes)
    return MemoryPlan(tuple(tuple(f) for f in free_after), in_place, peak, naive, buffers)


def _simulate(graph, free_after, in_place):
    """Walk the schedule: live bytes after each node, and buffers needed with reuse by size."""
    sizes = {n.name: n.spec.nbytes for n in graph.nodes}
    live = peak = 0
    pool, owned, count = {}, {}, 0
    for i, node in enumerate(graph.nodes):
        size = sizes[node.name]
        if i in in_place:
            owned[node.name] = owned.pop(in_place[i])
        else:
            live += size
            if pool.get(size):
                pool[size] -= 1
            else:
                count += 1
            owned[node.name] = size
        peak = max(peak, live)
        for name in free_after[i]:
            if name in owned and not (i in in_place and in_place[i] == name):
                live -= owned.pop(name)
                pool[sizes[name]] = pool.get(sizes[name], 0) + 1
    return peak, count
