"""Partitioning a Graph into a Plan: independent subgraphs, pipeline stages, data-parallel replicas.

Independent subgraphs (`independent`): nodes are first split into the connected components of the
node DAG, ignoring graph inputs and constants (a shared input does not tie two branches together).
A component is then split once more at its *join*: every node is labelled with the root nodes
(nodes reading only inputs/constants, views of inputs excepted) it descends from; the nodes that descend from all of the
component's roots form the join (the merge of a multi-tower model, a loss over an ensemble), and
if removing them leaves several components, those are branches that can run concurrently, each
split again recursively. Finally a join fed by several branches whose only consumer is another
join is merged into it, and a subgraph whose only consumer has no other producer is merged into it,
so chains of small joins do not become chains of tiny subgraphs.

Pipeline stages (`pipeline`): the graph must be captured at micro-batch size (every stage runs once
per micro-batch). Forward-only graphs: the topological order cut into k contiguous stages whose
FLOP sums are as equal as the order allows. A training step (outputs: the loss, then gradients) is
split so that each stage's forward and backward run where its activations live:
- the forward set F (the loss and its ancestors) is cut into k balanced contiguous stages as above;
- every node the loss does not need (the backward set B: gradients, an optimizer update), in
  topological order, gets `limit` = the lowest stage of its B inputs (k−1 if none), and for each
  F value v it reads, `best(v)` = the highest stage ≤ limit where v already is (made there or read
  by F there; `limit` if none); it goes to the highest best(v), or to `limit` if it reads no F value.
So F flows to later stages, B to earlier ones, and F0..F{k−1}, B{k−1}..B0 is a topological order:
the plan holds subgraphs "stage{s}.fwd" and "stage{s}.bwd" (phase "fwd"/"bwd"), both placed on
stage s. `meta["cut_bytes"]` holds the bytes crossing each stage boundary (either way) per
micro-batch, `meta["stages"]` the number of stages.

Replicas (`replicas`): n copies of the whole graph, each fed one shard of the batch inputs.
"""

from distgraph.graph.ir import Graph
from distgraph.graph.plan import Edge, Plan, Subgraph
from distgraph.ops.registry import get_op


def independent(graph):
    groups = _merge(graph, _split(graph, list(range(len(graph.nodes)))))
    groups.sort(key=lambda g: g[-1])  # producers before consumers
    subgraphs = [_subgraph(graph, g, f"sg{k}") for k, g in enumerate(groups)]
    return Plan("dag", tuple(subgraphs), _edges(graph, subgraphs), graph.input_names, graph.outputs)


def pipeline(graph, stages, micro_batches=1, batch_inputs=(0,), combine=None):
    forward = _ancestors(graph, graph.outputs[0]) if graph.outputs else set()
    if not forward:  # the first output is an input or a constant: nothing to call the forward
        forward = set(range(len(graph.nodes)))
    parts = _balanced(graph, sorted(forward), stages)
    stages = len(parts)  # fewer than asked when the forward has fewer nodes than stages
    stage_of = {i: s for s, part in enumerate(parts) for i in part}
    backward = _place_backward(graph, stage_of, stages)
    training = bool(backward)
    subgraphs = []
    for phase, where, order in (("fwd", stage_of, range(stages)), ("bwd", backward, range(stages - 1, -1, -1))):
        for s in order:
            idx = sorted(i for i, t in where.items() if t == s)
            if idx:
                name = f"stage{s}.{phase}" if training else f"stage{s}"
                subgraphs.append(_subgraph(graph, idx, name, placement=f"stage:{s}", stage=s, phase=phase))
    edges = _edges(graph, subgraphs)
    stage = {sg.name: sg.stage for sg in subgraphs}
    cut_bytes = [
        sum(e.bytes for e in edges if min(stage[e.src], stage[e.dst]) <= s < max(stage[e.src], stage[e.dst]))
        for s in range(stages - 1)
    ]
    return Plan(
        "pipeline",
        tuple(subgraphs),
        edges,
        graph.input_names,
        graph.outputs,
        micro_batches=micro_batches,
        batch_inputs=tuple(batch_inputs),
        combine=tuple(combine or _default_combine(graph, batch_inputs)),
        meta={"cut_bytes": cut_bytes, "stages": stages},
    )


def replicas(graph, n, batch_inputs=(0,), combine=None):
    everything = list(range(len(graph.nodes)))
    subgraphs = [_subgraph(graph, everything, f"replica{r}", placement=f"replica:{r}") for r in range(n)]
    return Plan(
        "replicas",
        tuple(subgraphs),
        (),
        graph.input_names,
        graph.outputs,
        batch_inputs=tuple(batch_inputs),
        combine=tuple(combine or _default_combine(graph, batch_inputs)),
    )


# ---- independent: components and joins -------------------------------------------------------------
def _components(graph, idx):
    members = set(idx)
    producer = {graph.nodes[i].name: i for i in idx}
    parent = {i: i for i in idx}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in idx:
        for name in graph.nodes[i].inputs:
            j = producer.get(name)
            if j is not None and j in members:
                parent[find(i)] = find(j)
    comps = {}
    for i in idx:
        comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def _split(graph, idx):
    comps = _components(graph, idx)
    if len(comps) > 1:
        return [g for c in comps for g in _split(graph, c)]
    producer = {graph.nodes[i].name: i for i in idx}
    roots = {}
    for i in idx:
        parents = [producer[n] for n in graph.nodes[i].inputs if n in producer]
        if parents:
            roots[i] = frozenset().union(*(roots[p] for p in parents))
        else:  # a view of an input (w.T) is not a branch of its own: it belongs with its reader
            roots[i] = frozenset() if _kind(graph.nodes[i]) == "view" else frozenset((i,))
    everything = frozenset().union(*roots.values())
    join = [i for i in idx if roots[i] == everything]
    rest = [i for i in idx if roots[i] != everything]
    if not join or not rest or len(_components(graph, rest)) < 2:
        return [idx]
    return [g for c in _components(graph, rest) for g in _split(graph, c)] + [join]


def _kind(node):
    return "fused" if node.op == "fused" else get_op(node.op).kind


def _merge(graph, groups):
    groups = [sorted(g) for g in groups]
    while True:
        owner = {graph.nodes[i].name: k for k, g in enumerate(groups) for i in g}
        producers = [
            {owner[n] for i in g for n in graph.nodes[i].inputs if owner.get(n, k) != k} for k, g in enumerate(groups)
        ]
        consumers = [set() for _ in groups]
        for k, ps in enumerate(producers):
            for p in ps:
                consumers[p].add(k)
        outputs = {owner.get(o) for o in graph.outputs}
        for k in range(len(groups)):
            if len(consumers[k]) != 1 or k in outputs:
                continue
            (t,) = consumers[k]
            if len(producers[k]) >= 2 or producers[t] == {k}:
                groups[t] = sorted(groups[t] + groups[k])
                del groups[k]
                break
        else:
            return groups


# ---- pipeline: forward cut, backward placement -------------------------------------------------
def _ancestors(graph, name):
    """Indices of the nodes `name` depends on, itself included."""
    producer = {n.name: i for i, n in enumerate(graph.nodes)}
    seen, todo = set(), [name]
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in seen:
            seen.add(i)
            todo.extend(graph.nodes[i].inputs)
    return seen


def _balanced(graph, idx, stages):
    """`idx` (topological) cut into at most `stages` contiguous runs of about equal FLOPs."""
    cost = [graph.nodes[i].flops + 1 for i in idx]
    total, bounds, acc = sum(cost), [], 0
    for k, c in enumerate(cost):
        acc += c
        if len(bounds) < stages - 1 and acc >= total * (len(bounds) + 1) / stages and k < len(cost) - 1:
            bounds.append(k + 1)
    return [idx[a:b] for a, b in zip([0] + bounds, bounds + [len(idx)])]


def _place_backward(graph, stage_of, stages):
    """{node index: stage} for every node outside `stage_of` (see the module docstring)."""
    producer = {n.name: i for i, n in enumerate(graph.nodes)}
    present = {}  # forward value -> stages holding it
    for i, s in stage_of.items():
        present.setdefault(graph.nodes[i].name, set()).add(s)
        for name in graph.nodes[i].inputs:
            if producer.get(name) in stage_of:
                present.setdefault(name, set()).add(s)
    placed = {}
    for i, node in enumerate(graph.nodes):
        if i in stage_of:
            continue
        reads = [producer[n] for n in node.inputs if n in producer]
        limit = min((placed[j] for j in reads if j in placed), default=stages - 1)
        best = [
            max((s for s in present[graph.nodes[j].name] if s <= limit), default=limit) for j in reads if j in stage_of
        ]
        placed[i] = max(best, default=limit)
    return placed


# ---- building subgraphs ------------------------------------------------------------------------
def _subgraph(graph, idx, name, placement="any", stage=-1, phase=""):
    specs = graph.specs()
    nodes = [graph.nodes[i] for i in idx]
    made = {n.name for n in nodes}
    reads = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in made))
    inputs = [r for r in reads if r not in graph.constants]
    constants = {r: graph.constants[r] for r in reads if r in graph.constants}
    used_later = set(graph.outputs)
    for n in graph.nodes:
        if n.name not in made:
            used_later.update(n.inputs)
    outputs = [n.name for n in nodes if n.name in used_later]
    sub = Graph(tuple((i, specs[i]) for i in inputs), tuple(nodes), tuple(outputs), constants)
    return Subgraph(name, sub, tuple(inputs), tuple(outputs), placement, stage, phase)


def _edges(graph, subgraphs):
    specs = graph.specs()
    made_by = {o: sg.name for sg in subgraphs for o in sg.outputs}
    return tuple(Edge(made_by[i], sg.name, i, specs[i].nbytes) for sg in subgraphs for i in sg.inputs if i in made_by)


def _default_combine(graph, batch_inputs):
    """Outputs with the batch dimension are concatenated; everything else (loss, grads) is averaged."""
    batch = {graph.inputs[i][1].shape[0] for i in batch_inputs if graph.inputs[i][1].shape}
    specs = graph.specs()
    return ["cat" if specs[o].shape and specs[o].shape[0] in batch else "mean" for o in graph.outputs]
