"""Partitioning a Graph into a Plan: independent subgraphs, pipeline stages, data-parallel replicas.

Independent subgraphs (`independent`): nodes are first split into the connected components of the
node DAG, ignoring graph inputs and constants (a shared input does not tie two branches together).
A component is then split once more at its *join*: every node is labelled with the root nodes it
descends from — a root is the first node to combine two graph inputs (x @ w); a node before any
root that transforms one input or constants alone (w.T, a cast of a parameter, a gradient seed) is
*loose*: it goes with the one branch that reads it, or, read by several, into a small front
subgraph run first. The nodes that descend from all of the component's roots form the join (the
merge of a multi-tower model, a loss over an ensemble), and if removing them leaves several
components, those are branches that can run concurrently, each split again recursively. In a
training step the join also holds the whole backward pass when the loss's gradient reads the
loss's inputs (cross-entropy); it is split once more by the branch whose activations and
parameters each backward node reads (`_split_backward`), so each branch's backward runs beside the
others, where its activations live. Finally a join fed by several branches whose only consumer is another
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

from distgraph.errors import ConfigError
from distgraph.graph.ir import Graph
from distgraph.graph.plan import Edge, Plan, Subgraph
from distgraph.ops.registry import get_op


def independent(graph):
    groups = _split(graph, list(range(len(graph.nodes))))
    groups = _merge(graph, [part for g in groups for part in _split_backward(graph, groups, g)])
    subgraphs = [_subgraph(graph, g, f"sg{k}", claims=k == 0) for k, g in enumerate(_topological(graph, groups))]
    return Plan("dag", tuple(subgraphs), _edges(graph, subgraphs), graph.input_names, graph.outputs)


def pipeline(graph, stages, micro_batches=1, batch_inputs=None, combine=None):
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
                sg = _subgraph(graph, idx, name, placement=f"stage:{s}", stage=s, phase=phase, claims=not subgraphs)
                subgraphs.append(sg)
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
        batch_inputs=tuple(_batch_inputs(graph, batch_inputs)),
        combine=_combine(graph, batch_inputs, combine),
        meta={"cut_bytes": cut_bytes, "stages": stages},
    )


def replicas(graph, n, batch_inputs=None, combine=None):
    everything = list(range(len(graph.nodes)))
    subgraphs = [_subgraph(graph, everything, f"replica{r}", placement=f"replica:{r}", claims=True) for r in range(n)]
    return Plan(
        "replicas",
        tuple(subgraphs),
        (),
        graph.input_names,
        graph.outputs,
        batch_inputs=tuple(_batch_inputs(graph, batch_inputs)),
        combine=_combine(graph, batch_inputs, combine),
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
    roots, feeds, inputs = {}, {}, set(graph.input_names)
    for i in idx:
        parents = [producer[n] for n in graph.nodes[i].inputs if n in producer]
        roots[i] = frozenset().union(*(roots[p] for p in parents))
        if not roots[i]:  # loose so far: which graph inputs does it transform?
            feeds[i] = frozenset(n for n in graph.nodes[i].inputs if n in inputs).union(*(feeds[p] for p in parents))
            if len(feeds[i]) > 1:  # it combines two inputs (x @ w): the start of a branch
                roots[i] = frozenset((i,))
    everything = frozenset().union(*roots.values())
    join = [i for i in idx if roots[i] == everything]
    rest = [i for i in idx if roots[i] != everything]
    if not join or not rest:
        return [idx]
    front, branches = _attach_loose(graph, rest, roots)
    if len(branches) < 2:
        return [idx]
    return ([front] if front else []) + [g for c in branches for g in _split(graph, c)] + [join]


def _attach_loose(graph, rest, roots):
    """(front, branches): the components of `rest`'s nodes tied to a root, each with the loose nodes
    (views of inputs and constants: no root) that only it reads, directly or through other loose
    nodes; a loose node read by several branches or by the join — a gradient seed broadcast to every
    tower's backward — goes to `front`, which runs first, instead of tying the branches together."""
    tied = [i for i in rest if roots[i]]
    branches = _components(graph, tied)
    comp_of = {i: k for k, c in enumerate(branches) for i in c}
    readers = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            readers.setdefault(name, []).append(i)
    loose, front = [i for i in rest if not roots[i]], []
    reached = {}  # loose node -> the branches reading it (-1: the join or the graph's outputs)
    for i in reversed(loose):
        name = graph.nodes[i].name
        ks = {comp_of.get(r, -1) if r not in reached else None for r in readers.get(name, [])} - {None}
        for r in readers.get(name, []):
            ks |= reached.get(r, set())
        reached[i] = ks | ({-1} if name in graph.outputs else set())
    for i in loose:
        (branches[next(iter(reached[i]))] if len(reached[i]) == 1 and -1 not in reached[i] else front).append(i)
    return front, [sorted(c) for c in branches]


def _split_backward(graph, groups, join):
    """A join's nodes split by the branch whose activations they read: [front, backward of branch 1, ...,
    rest]. In a training step the join holds the merge, the loss and the whole backward pass (every
    gradient descends from the loss, so from all roots); each branch's backward reads that branch's
    forward values, so it can run beside the others, where those values live. A node that is not an
    ancestor of the loss (`graph.outputs[0]`) belongs to branch k when the forward values and parameters
    (inputs only branch k reads) it reads are branch k's alone, directly or through its own inputs'
    branch; one reading none stays in front (the loss's gradient, the fan-out to the branches), one
    reading two branches goes to the rest. Values are traced through loose transforms (w.T, casts) to
    what they transform, so a weight's cast shared by a branch and its backward still names the branch."""
    group_of = {graph.nodes[i].name: k for k, g in enumerate(groups) for i in g}
    me = group_of[graph.nodes[join[0]].name]
    made_by = {n.name: n for n in graph.nodes}

    def base(name):
        node = made_by.get(name)
        while node is not None and len(sources := _sources(graph, node)) == 1:
            name = next(iter(sources))
            node = made_by.get(name)
        return name

    readers = {}  # graph input -> the other groups that compute with it
    inputs = set(graph.input_names)
    for k, g in enumerate(groups):
        for i in g if k != me else ():
            if len(_sources(graph, graph.nodes[i])) > 1:
                for name in graph.nodes[i].inputs:
                    if base(name) in inputs:
                        readers.setdefault(base(name), set()).add(k)
    branch_of = {name: next(iter(ks)) for name, ks in readers.items() if len(ks) == 1}
    producer = {graph.nodes[i].name: i for i in join}
    forward = _ancestors(graph, graph.outputs[0]) if graph.outputs else set()
    owner = {}  # join node index -> the branches (group indices) it depends on
    for i in join:
        if i in forward:
            continue
        owners = set()
        for name in map(base, graph.nodes[i].inputs):
            if name in producer:
                owners |= owner.get(producer[name], set())
            elif group_of.get(name, me) != me:
                owners.add(group_of[name])
            elif name in branch_of:
                owners.add(branch_of[name])
        owner[i] = frozenset(owners)
    branches = sorted({o for os_ in owner.values() if len(os_) == 1 for o in os_})
    if len(branches) < 2:
        return [join]
    front = [i for i in join if i not in owner or not owner[i]]
    parts = [[i for i in join if owner.get(i) == {b}] for b in branches]
    rest = [i for i in join if len(owner.get(i, ())) > 1]
    return [p for p in (front, *parts, rest) if p]


def _sources(graph, node):
    """The non-constant values a node reads."""
    return {n for n in node.inputs if n not in graph.constants}


def _topological(graph, groups):
    """Groups ordered producers first (ties by their first node)."""
    group_of = {graph.nodes[i].name: k for k, g in enumerate(groups) for i in g}
    needs = [
        {group_of[n] for i in g for n in graph.nodes[i].inputs if group_of.get(n, k) != k} for k, g in enumerate(groups)
    ]
    order, done = [], set()
    while len(order) < len(groups):
        k = min((k for k in range(len(groups)) if k not in done and needs[k] <= done), key=lambda k: groups[k][0])
        order.append(groups[k])
        done.add(k)
    return order


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
def _subgraph(graph, idx, name, placement="any", stage=-1, phase="", claims=False):
    """The nodes `idx` of `graph` as a Subgraph. With `claims`, it also returns the graph's outputs that
    are constants (a folded zero gradient of a parameter the loss does not use): no node makes them, so
    without a subgraph returning them no executor had them (a KeyError after the whole step ran)."""
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
    if claims:
        loose = [o for o in dict.fromkeys(graph.outputs) if o in graph.constants]
        outputs += loose
        constants.update((o, graph.constants[o]) for o in loose)
    sub = Graph(tuple((i, specs[i]) for i in inputs), tuple(nodes), tuple(outputs), constants)
    return Subgraph(name, sub, tuple(inputs), tuple(outputs), placement, stage, phase)


def _edges(graph, subgraphs):
    specs = graph.specs()
    made_by = {o: sg.name for sg in subgraphs for o in sg.outputs}
    return tuple(Edge(made_by[i], sg.name, i, specs[i].nbytes) for sg in subgraphs for i in sg.inputs if i in made_by)


def _batch_inputs(graph, batch_inputs):
    """The inputs cut along the batch: as given, else every explicit input (`%in*`, not a lifted
    parameter) whose leading dimension is the first input's — the batch and its targets."""
    if batch_inputs is not None:
        return tuple(batch_inputs)
    lead = graph.inputs[0][1].shape[:1] if graph.inputs else ()
    return tuple(
        i for i, (name, spec) in enumerate(graph.inputs) if name.startswith("%in") and lead and spec.shape[:1] == lead
    )


COMBINES = ("cat", "cat_mean", "mean", "sum")


def _combine(graph, batch_inputs, combine):
    """The given combine rules, checked (an unknown one was summed), or the default ones."""
    if combine is None:
        return tuple(_default_combine(graph, _batch_inputs(graph, batch_inputs)))
    combine = tuple(combine)
    bad = [c for c in combine if c not in COMBINES]
    if bad or len(combine) != len(graph.outputs):
        raise ConfigError(
            f"combine: one of {', '.join(COMBINES)} per graph output ({len(graph.outputs)}), got {combine!r}"
        )
    return combine


def _default_combine(graph, batch_inputs):
    """Outputs with the batch dimension are concatenated; everything else — the loss, and anything
    shaped like a non-batch input (a parameter's gradient or new value, even when its first dimension
    happens to equal the batch size) — is averaged. A gradient w.r.t. a batch input itself is
    concatenated too, but a loss averaged over the parts makes it "cat_mean": a graph that has one
    (captured with the batch in `grad_of`) passes `combine`."""
    batch = {graph.inputs[i][1].shape[0] for i in batch_inputs if graph.inputs[i][1].shape}
    shaped_like_params = {s.shape for i, (_, s) in enumerate(graph.inputs) if i not in batch_inputs}
    specs = graph.specs()
    return [
        "cat" if specs[o].shape and specs[o].shape[0] in batch and specs[o].shape not in shaped_like_params else "mean"
        for o in graph.outputs
    ]
