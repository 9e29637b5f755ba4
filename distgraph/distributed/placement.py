"""Where and in which order a Plan's subgraphs run on W workers, and which strategy suits a graph.

Pure functions of a Plan (no Ray), so the policy is testable and printable on its own.

Placement (`place`):
- "dag" (strategy `branches`): earliest finish time. In plan order (producers first) each subgraph
  goes to the worker where it would finish first, given the work already queued there and the
  bytes it must receive from other workers, so independent branches land on different workers
  and a join goes where its inputs are.
- "pipeline": stage s (its forward and its backward subgraph: the backward reads the forward's
  activations, so they never leave the worker) on worker s mod W.
- "replicas" (strategy `data`): replica r on worker r.

Order (`tasks`): a run is a list of tasks (subgraph, worker, input keys, output keys), a key being
a value name and the micro-batch or replica it belongs to (None: shared by all). Ray runs the
calls one caller makes to an actor in submission order, and the tasks are submitted in one
topological order, so every worker's queue is a subsequence of it and the earliest unfinished
task can always run: no schedule deadlocks. A pipeline's order is the LocalExecutor's
(`graph.executor.pipeline_order`): per stage, GPipe runs every micro-batch's forward, then every
backward; 1F1B warms up with k−1−s forwards, then alternates one forward and one backward.

Strategy (`choose_strategy`): a cost model estimates one step of each applicable strategy —
compute at `flops_per_s` per worker, bytes moved at `bytes_per_s`, `dispatch_s` per task — and
picks the cheapest. Parameters are plan inputs, so each worker reading one receives it. With
backend="local" the data strategy's shards run one after another, so it costs the whole compute.
"""

from dataclasses import dataclass

from distgraph.errors import ConfigError
from distgraph.graph.executor import pipeline_order
from distgraph.graph.partition import independent, pipeline


@dataclass(frozen=True)
class CostModel:
    flops_per_s: float = 2e9  # one CPU worker, float64 numpy kernels of moderate size
    bytes_per_s: float = 1e9  # a value moved between processes through Ray's object store
    dispatch_s: float = 1e-3  # one actor call round trip (`distgraph bench dispatch` measures it)

    def compute(self, flops):
        return flops / self.flops_per_s

    def move(self, nbytes):
        return nbytes / self.bytes_per_s


@dataclass(frozen=True)
class Task:
    label: str  # what the timeline shows: "sg2", "stage1/mb3", "replica0"
    subgraph: str
    worker: int
    inputs: tuple  # keys (value, part)
    outputs: tuple


# ---- placement ----------------------------------------------------------------------------------
def place(plan, workers, cost=CostModel()):
    """{subgraph name: worker index}."""
    if plan.kind == "replicas":
        return {sg.name: r % workers for r, sg in enumerate(plan.subgraphs)}
    if plan.kind == "pipeline":
        return {sg.name: sg.stage % workers for sg in plan.subgraphs}
    return earliest_finish(plan, workers, cost)[0]


def earliest_finish(plan, workers, cost=CostModel()):
    """List scheduling of a "dag" plan: ({subgraph: worker}, estimated seconds to the last finish)."""
    incoming = {sg.name: [] for sg in plan.subgraphs}
    for e in plan.edges:
        incoming[e.dst].append(e)
    free = [0.0] * workers
    where, finish = {}, {}
    for sg in plan.subgraphs:
        best = None
        for w in range(workers):
            start = free[w]
            for e in incoming[sg.name]:
                start = max(start, finish[e.src] + (0.0 if where[e.src] == w else cost.move(e.bytes)))
            end = start + cost.compute(sg.flops) + cost.dispatch_s
            if best is None or end < best[0]:
                best = (end, w)
        finish[sg.name], where[sg.name] = best
        free[best[1]] = best[0]
    return where, max(finish.values(), default=0.0)


# ---- order ------------------------------------------------------------------------------------------
def tasks(plan, placement, schedule="gpipe"):
    """(feed keys, tasks in submission order, result keys) of one run of `plan`."""
    if plan.kind == "dag":
        feeds = [(n, None) for n in plan.inputs]
        run = [Task(sg.name, sg.name, placement[sg.name], _keys(sg.inputs), _keys(sg.outputs)) for sg in plan.subgraphs]
        return feeds, run, [(o, None) for o in plan.outputs]
    parts = plan.micro_batches if plan.kind == "pipeline" else len(plan.subgraphs)
    split = {plan.inputs[i] for i in plan.batch_inputs}
    feeds = [(n, j) for n in plan.inputs for j in (range(parts) if n in split else (None,))]
    results = [(o, j) for j in range(parts) for o in plan.outputs]
    if plan.kind == "replicas":
        run = [
            Task(sg.name, sg.name, placement[sg.name], _keys(sg.inputs, r, split), _keys(sg.outputs, r, sg.outputs))
            for r, sg in enumerate(plan.subgraphs)
        ]
        return feeds, run, results
    made = {o for sg in plan.subgraphs for o in sg.outputs}
    run = [
        Task(
            f"{sg.name}/mb{j}",
            sg.name,
            placement[sg.name],
            _keys(sg.inputs, j, split, private=made),
            _keys(sg.outputs, j, sg.outputs),
        )
        for sg, j in pipeline_order(plan, schedule)
    ]
    return feeds, run, results


def _keys(names, part=None, split=(), private=()):
    """Values of this part: split inputs and values made inside the run belong to it; the rest are shared."""
    return tuple((n, part) if part is not None and (n in split or n in private) else (n, None) for n in names)


# ---- strategy -------------------------------------------------------------------------------------
def choose_strategy(graph, workers, micro_batches=4, cost=CostModel(), *, backend="ray", even_shards=True):
    """("data" | "branches" | "pipeline", reason): the strategy the cost model estimates fastest, the
    graph being the whole batch's step.

    `backend="local"`: a data-parallel step computes its shards one after another in one process (the
    Trainer's local data path), so "data" costs the whole batch's compute there; branches and pipeline
    stages do run at once, on threads. `even_shards`: "data" cuts the batch into equal shards (a
    replicas Plan); the Trainer's data path takes uneven ones (`shard_bounds`) and passes False. When
    no strategy can be estimated it is "data", the one that runs any step, and the reason says why."""
    if workers < 1:
        raise ConfigError(f"choose_strategy: workers must be ≥ 1, got {workers}")
    if workers == 1:
        return "data", "one worker: nothing to split, the step runs whole"
    estimates, skipped = {}, []
    batch = graph.inputs[0][1].shape[0] if graph.inputs and graph.inputs[0][1].shape else 0
    specs = graph.specs()
    batched = {n for n, s in graph.inputs[:1]}
    shared_in = sum(s.nbytes for n, s in graph.inputs if n not in batched)
    out_reduce = sum(specs[o].nbytes for o in graph.outputs if not specs[o].shape or specs[o].shape[0] != batch)

    if not batch:
        skipped.append("data: the first input has no batch dimension to split")
    elif even_shards and batch % workers:
        skipped.append(f"data: batch {batch} does not split into {workers} equal shards")
    elif backend == "local":
        estimates["data"] = (
            cost.compute(graph.flops),
            f"{workers} shards one after another in this process, backend='local'",
        )
    else:
        largest = -(-batch // workers) / batch  # the largest shard's share: the step waits for it
        t = cost.compute(graph.flops * largest) + cost.move(workers * shared_in)
        t += cost.move(2 * (workers - 1) / workers * out_reduce) + cost.dispatch_s
        estimates["data"] = (t, f"{workers} replicas, each receiving {shared_in / 1e6:.3g} MB of parameters")

    plan = independent(graph)
    if len(plan.subgraphs) > 1:
        _, t = earliest_finish(plan, workers, cost)
        estimates["branches"] = (t + cost.move(shared_in), f"{len(plan.subgraphs)} independent subgraphs")
    else:
        skipped.append("branches: the graph has no independent subgraphs")

    if not batch:
        skipped.append("pipeline: the first input has no batch dimension to cut into micro-batches")
    elif batch % micro_batches:
        skipped.append(f"pipeline: batch {batch} does not split into {micro_batches} micro-batches")
    elif len(graph.nodes) < workers:
        skipped.append(f"pipeline: the graph has {len(graph.nodes)} nodes, fewer than {workers} stages")
    else:
        stages = pipeline(graph, workers)
        per_stage = {}
        for sg in stages.subgraphs:  # a stage's forward and backward share its worker
            per_stage[sg.stage] = per_stage.get(sg.stage, 0) + sg.flops
        slowest = max(cost.compute(f / micro_batches) for f in per_stage.values())
        cut = max(stages.meta["cut_bytes"], default=0) / micro_batches
        t = (micro_batches + workers - 1) * (slowest + cost.move(cut) + cost.dispatch_s)
        t += cost.move(shared_in + micro_batches * out_reduce)
        bubble = (workers - 1) / (micro_batches + workers - 1)
        estimates["pipeline"] = (t, f"{workers} stages × {micro_batches} micro-batches, bubble {bubble:.0%}")

    why_not = "".join(f"; {s}" for s in skipped)
    if not estimates:
        return "data", f"data: no strategy could be estimated, and data is the default{why_not}"
    best = min(estimates, key=lambda k: estimates[k][0])
    others = ", ".join(f"{k} {v[0] * 1e3:.3g} ms" for k, v in estimates.items() if k != best)
    reason = f"{best}: estimated {estimates[best][0] * 1e3:.3g} ms per step ({estimates[best][1]})"
    return best, reason + (f" vs {others}" if others else "") + why_not
