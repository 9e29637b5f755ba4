"""Where and in which order a Plan's subgraphs run on W workers, and which strategy suits a graph.

Pure functions of a Plan (no Ray), so the policy is testable and printable on its own.

Placement (`place`):
- "dag" (strategy `branches`): earliest finish time. In plan order (producers first) each subgraph
  goes to the worker where it would finish first, given the work already queued there and the
  bytes it must receive from other workers, so independent branches land on different workers
  and a join goes where its inputs are.
- "pipeline": stage s on worker s. With twice as many stages as workers (a training step's forward
  and backward captured together and cut into 2W stages) the stages fold: stage s and stage
  2W−1−s share worker s. Backward visits the layers in reverse, so the mirror stage is the one
  that reads stage s's activations, and they never leave the worker.
- "replicas" (strategy `data`): replica r on worker r.

Order (`tasks`): a run is a list of tasks (subgraph, worker, input keys, output keys), a key being
a value name and the micro-batch or replica it belongs to (None: shared by all). Ray runs the
calls one caller makes to an actor in submission order, and the tasks are submitted in one
topological order, so every worker's queue is a subsequence of it and the earliest unfinished
task can always run: no schedule deadlocks. GPipe submits stage-major (every micro-batch through
a stage before the next stage). 1F1B gives worker w min(W−w−1, m) warm-up forwards, then
alternates one forward and one backward, then drains the backwards; with one stage per worker
(forward only) that is micro-batch order, as in the LocalExecutor.

Strategy (`choose_strategy`): a cost model estimates one step of each applicable strategy —
compute at `flops_per_s` per worker, bytes moved at `bytes_per_s`, `dispatch_s` per task — and
picks the cheapest. Parameters are plan inputs, so each worker reading one receives it.
"""

from dataclasses import dataclass

from distgraph.errors import ConfigError, DistributedError
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
        n = len(plan.subgraphs)
        return {sg.name: stage_worker(sg.stage, n, workers) for sg in plan.subgraphs}
    return earliest_finish(plan, workers, cost)[0]


def stage_worker(stage, stages, workers):
    if stages == 2 * workers:
        return min(stage, stages - 1 - stage)
    return stage % workers


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
    stages = sorted(plan.subgraphs, key=lambda sg: sg.stage)
    run = [
        Task(
            f"{stages[s].name}/mb{j}",
            stages[s].name,
            placement[stages[s].name],
            _keys(stages[s].inputs, j, split, private=_made_in(stages)),
            _keys(stages[s].outputs, j, stages[s].outputs),
        )
        for s, j in pipeline_order(schedule, len(stages), parts, len(set(placement.values())))
    ]
    return feeds, run, results


def _made_in(stages):
    return {o for sg in stages for o in sg.outputs}


def _keys(names, part=None, split=(), private=()):
    """Values of this part: split inputs and values made inside the run belong to it; the rest are shared."""
    return tuple((n, part) if part is not None and (n in split or n in private) else (n, None) for n in names)


def pipeline_order(schedule, stages, micro_batches, workers):
    """(stage, micro-batch) pairs in submission order."""
    if schedule == "gpipe":
        return [(s, j) for s in range(stages) for j in range(micro_batches)]
    if schedule != "1f1b":
        raise ConfigError(f"unknown pipeline schedule {schedule!r} (gpipe, 1f1b)")
    if stages <= workers:
        return [(s, j) for j in range(micro_batches) for s in range(stages)]
    if stages != 2 * workers:
        raise ConfigError(
            f"1F1B needs one stage per worker or a forward and a backward stage per worker "
            f"({workers} or {2 * workers} stages), got {stages}"
        )
    queues = []
    for w in range(workers):
        fwd, bwd = w, stages - 1 - w
        warm = min(workers - w - 1, micro_batches)
        q = [(fwd, j) for j in range(warm)]
        for i in range(micro_batches - warm):
            q += [(fwd, warm + i), (bwd, i)]
        q += [(bwd, j) for j in range(micro_batches - warm, micro_batches)]
        queues.append(q)
    return _merge(queues)


def _merge(queues):
    """One topological order holding every worker queue as a subsequence (round-robin over workers)."""
    done, order, heads = set(), [], [0] * len(queues)
    total = sum(len(q) for q in queues)
    while len(order) < total:
        progressed = False
        for w, q in enumerate(queues):
            if heads[w] < len(q):
                s, j = q[heads[w]]
                if s == 0 or (s - 1, j) in done:
                    done.add((s, j))
                    order.append((s, j))
                    heads[w] += 1
                    progressed = True
        if not progressed:
            stuck = [q[h] for q, h in zip(queues, heads) if h < len(q)]
            raise DistributedError(f"pipeline schedule cannot progress: every worker waits ({stuck})")
    return order


# ---- strategy -------------------------------------------------------------------------------------
def choose_strategy(graph, workers, micro_batches=4, cost=CostModel()):
    """("data" | "branches" | "pipeline", reason): the strategy the cost model estimates fastest."""
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

    if batch and batch % workers == 0:
        t = cost.compute(graph.flops / workers) + cost.move(workers * shared_in)
        t += cost.move(2 * (workers - 1) / workers * out_reduce) + cost.dispatch_s
        estimates["data"] = (t, f"{workers} replicas, each receiving {shared_in / 1e6:.3g} MB of parameters")
    else:
        skipped.append(f"data needs a batch divisible by {workers} (batch {batch})")

    plan = independent(graph)
    if len(plan.subgraphs) > 1:
        _, t = earliest_finish(plan, workers, cost)
        estimates["branches"] = (t + cost.move(shared_in), f"{len(plan.subgraphs)} independent subgraphs")
    else:
        skipped.append("branches: the graph has no independent subgraphs")

    if batch and batch % micro_batches == 0 and len(graph.nodes) >= workers:
        stages = pipeline(graph, workers)
        slowest = max(cost.compute(sg.flops / micro_batches) for sg in stages.subgraphs)
        cut = max(stages.meta["cut_bytes"], default=0) / micro_batches
        t = (micro_batches + workers - 1) * (slowest + cost.move(cut) + cost.dispatch_s)
        t += cost.move(shared_in + micro_batches * out_reduce)
        bubble = (workers - 1) / (micro_batches + workers - 1)
        estimates["pipeline"] = (t, f"{workers} stages × {micro_batches} micro-batches, bubble {bubble:.0%}")
    else:
        skipped.append(f"pipeline needs a batch divisible by {micro_batches} micro-batches (batch {batch})")

    best = min(estimates, key=lambda k: estimates[k][0])
    others = ", ".join(f"{k} {v[0] * 1e3:.3g} ms" for k, v in estimates.items() if k != best)
    reason = f"{best}: estimated {estimates[best][0] * 1e3:.3g} ms per step ({estimates[best][1]})"
    reason += (f" vs {others}" if others else "") + "".join(f"; {s}" for s in skipped)
    return best, reason
