"""Running a graph Plan on Ray actors: `RayPlanExecutor`, the distributed twin of the LocalExecutor.

Policy. Every subgraph is placed on one worker actor before anything runs (`placement.place`:
branches by earliest finish time, pipeline stage s — its forward and backward subgraphs — on
worker s mod W, replicas one per worker), and each actor compiles a Runner for the subgraphs it
owns, once. A run is the task list of `placement.tasks`, submitted in one go as actor calls whose
arguments are the ObjectRefs of the upstream outputs: Ray moves each value from the worker that
made it to the worker that reads it, runs independent tasks on different workers at the same
time, and the driver waits once, for the plan's outputs (`submit` returns before that; `run` =
`submit(...).result()`). A value's ref is dropped as soon as its last reader is submitted, so Ray
frees it when that reader is done.

Compiled Graphs: the same task list is bound once to a `ray.dag.InputNode` and compiled; every run
is then one `execute` over shared-memory channels instead of one actor call per task
(`distgraph bench dispatch`: 2-3× less time per dispatched subgraph). But a compiled graph's actors
poll their channels: each keeps a core busy even while idle. So `compiled="auto"` (the default)
compiles the repeated step — at the second run — only where the machine has a core to spare
beyond the workers' CPUs and the driver's; `True` compiles at the first run, `False` never. If
compiling fails the executor keeps the actor calls and says why in `compiled_error`.

Numerics: the actors run the LocalExecutor's Runner on the same subgraphs, and micro-batch and
replica outputs are combined by the LocalExecutor's function in the same order, so results equal
the LocalExecutor's bit for bit on CPU when BLAS uses as many threads in both (a worker uses
`cpus_per_worker`; OpenBLAS sums in another order with more threads).

Random draws: a run of a plan whose subgraphs draw (dropout) draws one seed per task from the driver's
generator, in task order, and each drawing task runs on generators seeded with its seed
(`rng.seeded_draws`), as the LocalExecutor's pipeline does. A task's masks are then a function of the
driver's generator alone, not of which worker ran it nor of what that process drew before: a seeded run
repeats, a pipeline draws the LocalExecutor's masks, and a Trainer resumed from a checkpoint (which holds
the driver's generator) or running on restarted workers draws the uninterrupted run's. (Before, each
worker drew from its own process's stream, seeded from a base the group drew from the driver's generator
when it was made — after the restore in a resumed fit, before the first step in the uninterrupted one —
so a resumed fit drew other masks.)

Timeline: each actor logs (task, wall-clock start, end, bytes read and written) per task; the
`timeline` property collects the logs into one `graph.trace.Timeline`, one row per worker. A log
keeps the last LOG_TASKS tasks since the timeline was last read: a Trainer that never reads it runs
for days, and an unbounded log grew by every task of every step.
"""

import contextlib
import os
import time
from collections import deque

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from distgraph.backend import CPU, to_device
from distgraph.backend import device as as_device
from distgraph.distributed.placement import CostModel, choose_strategy, place, tasks
from distgraph.distributed.runtime import WorkerGroup
from distgraph.distributed.scheduler import raise_user_error, start_allowance, wait_ready
from distgraph.errors import ConfigError, DistributedError, ShapeError
from distgraph.graph.executor import Runner, _combine, _shards, drawing_subgraphs, task_seeds
from distgraph.graph.partition import independent, pipeline, replicas
from distgraph.graph.trace import Timeline
from distgraph.ops.rng import seeded_draws

INLINE_BYTES = 100 * 1024  # Ray inlines smaller arguments in the call; larger ones are put in the object store once
LOG_TASKS = 100_000  # tasks a worker's timeline log keeps (the latest; ~10 MB)


class PlanWorker:
    """Ray actor: Runners for the subgraphs placed on it, and a log of what it ran when.

    A call names its task by its index in `tasks` ((label, subgraph) of every task of the plan, sent
    once): one small int instead of two strings in every call's arguments.

    The graphs are captured on the driver, on its host; a worker runs them on its own `device` (the GPU
    Ray gave it, cupy). Values arrive and leave as numpy arrays, which is what Ray moves between processes
    anyway (it pickles a cupy array through the host) and what the driver, which may have no GPU, reads."""

    def __init__(self, rank, graphs, tasks, device="cpu"):
        self.rank = rank
        self.device = as_device("cuda" if str(device).startswith("cuda") else device)  # Ray's GPU is cuda:0 here
        runners = {name: Runner(graph, device=self.device) for name, graph in graphs.items()}
        self.tasks = [(label, runners.get(name)) for label, name in tasks]
        self.log = deque(maxlen=LOG_TASKS)

    def ping(self):
        return self.rank

    def computes_on(self):
        """The array module this worker's Runners compute with ("numpy" or "cupy")."""
        return self.device.xp.__name__

    def run(self, task, seed, *arrays):
        """Task `task` on `arrays`, its draws from generators seeded with `seed` (None: it draws nothing)."""
        label, runner = self.tasks[task]
        start = time.time()
        dev = self.device
        with seeded_draws(seed) if seed is not None else contextlib.nullcontext():
            outs = runner(*(to_device(a, dev) for a in arrays))
        if dev is not CPU:
            outs = [to_device(o, CPU) for o in outs]  # waits for the kernels: the log's end is the work's end
        end = time.time()
        self.log.append((label, start, end, sum(a.nbytes for a in arrays) + sum(o.nbytes for o in outs)))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def drain(self):
        log, self.log = list(self.log), deque(maxlen=self.log.maxlen)
        return log


class RayPlanExecutor:
    """Runs a Plan on `workers` Ray actors; `run(*arrays)` returns the plan's outputs like the LocalExecutor."""

    def __init__(
        self,
        plan,
        workers=2,
        *,
        schedule="1f1b",
        device="cpu",
        cpus_per_worker=1,
        bind_to=None,
        compiled="auto",
        timeout_s=60.0,
        cost=CostModel(),
        placement=None,
    ):
        """`placement` ({subgraph: worker}) overrides the policy of `placement.place`."""
        self.plan, self.workers, self.timeout_s = plan, workers, timeout_s
        self.placement = placement or place(plan, workers, cost)
        self.feeds, self.tasks, self.results = tasks(plan, self.placement, schedule)
        self.last_use = {}
        for i, t in enumerate(self.tasks):
            self.last_use.update(dict.fromkeys(t.inputs, i))
        self.group = WorkerGroup(
            PlanWorker, workers, device=device, cpus_per_worker=cpus_per_worker, timeout_s=timeout_s, bind_to=bind_to
        )  # not `seeded`: a task draws from a seed of its own, and making the group leaves the driver's generator be
        try:
            table = [(t.label, t.subgraph) for t in self.tasks]
            for w in range(workers):
                mine = {sg.name: sg.graph for sg in plan.subgraphs if self.placement[sg.name] == w}
                self.group.start(w, w, mine, table, device)
            startup = start_allowance(timeout_s)  # the first calls include the workers' processes starting
            self.group.bound(startup)
            wait_ready([a.ping.remote() for a in self.group.actors], startup, f"{workers} plan workers")
        except BaseException:
            self.group.shutdown()
            raise
        self.actors = self.group.actors
        # each task's actor method, made once (`options` builds a new one per call)
        self.calls = [self.actors[t.worker].run.options(num_returns=len(t.outputs)) for t in self.tasks]
        drawing = drawing_subgraphs(plan)
        self.draws = [t.subgraph in drawing for t in self.tasks]  # the tasks whose subgraph draws (module docstring)
        self._timeline = Timeline()
        self.compiled, self.compiled_error, self.runs = None, None, 0
        spare = (os.cpu_count() or 1) > workers * cpus_per_worker + 1
        self.compile_at = {True: 0, False: None, "auto": 1 if spare else None}[compiled]

    @classmethod
    def for_graph(cls, graph, strategy="auto", workers=2, micro_batches=4, recapture=None, **kwargs):
        """Partition `graph` for a strategy ("auto": `choose_strategy`) and start an executor for it.

        A named strategy takes the graph captured at the size one task runs: a shard for "data", a
        micro-batch for "pipeline", the whole batch for "branches". "auto" takes it at the whole batch
        (what `run` is given) and needs `recapture(rows)` → the graph captured again for `rows` samples
        when it picks "data" or "pipeline" (as the Trainer captures its step at the task's size): a
        captured graph has static shapes. Without one, that choice is refused with the reason.
        `executor.reason` says why the strategy was chosen."""
        reason = f"{strategy}: asked for"
        if strategy == "auto":  # on Ray, with replicas that need equal shards (the defaults)
            strategy, reason = choose_strategy(graph, workers, micro_batches, kwargs.get("cost", CostModel()))
            if strategy != "branches":  # branches run the graph whole; the others a shard or micro-batch of it
                graph = _at_task_size(graph, strategy, workers if strategy == "data" else micro_batches, recapture)
        if strategy == "data":
            plan = replicas(graph, workers)
        elif strategy == "branches":
            plan = independent(graph)
        elif strategy == "pipeline":
            plan = pipeline(graph, workers, micro_batches=micro_batches)
        else:
            raise DistributedError(f"unknown strategy {strategy!r} (data, branches, pipeline, auto)")
        executor = cls(plan, workers, **kwargs)
        executor.strategy, executor.reason = strategy, reason
        return executor

    # ---- running ------------------------------------------------------------------------------------
    def run(self, *arrays):
        return self.submit(*arrays).result()

    def submit(self, *arrays):
        """Submit one run without waiting; the returned PendingRun's `result()` waits for it."""
        feeds = self._feed(arrays)
        seeds = self._seeds()
        if self.runs == self.compile_at:
            try:
                self.compiled = self._compile()
            except Exception as exc:  # noqa: BLE001  (any failure to compile means: keep the actor calls)
                self.compiled_error = f"{type(exc).__name__}: {exc}"
        self.runs += 1
        if self.compiled is not None:
            return PendingRun(self, self.compiled.execute(*feeds.values(), *seeds), compiled=True)
        env = {k: ray.put(a) if getattr(a, "nbytes", 0) >= INLINE_BYTES else a for k, a in feeds.items()}
        keep = set(self.results)
        for i, t in enumerate(self.tasks):
            args = [env[k] for k in t.inputs]
            refs = self.calls[i].remote(i, seeds[i], *args)
            env.update(zip(t.outputs, refs if len(t.outputs) > 1 else [refs]))
            for k in t.inputs:
                if self.last_use[k] == i and k not in keep:
                    del env[k]
        return PendingRun(self, [env[k] for k in self.results])

    def _seeds(self):
        """One seed per task of this run, drawn from the driver's generator in task order, None for a task
        that draws nothing; nothing drawn for a plan that draws nothing (module docstring)."""
        if not any(self.draws):
            return [None] * len(self.tasks)
        seeds = task_seeds(len(self.tasks))
        return [int(s) if d else None for s, d in zip(seeds, self.draws)]

    def _feed(self, arrays):
        plan = self.plan
        if len(arrays) != len(plan.inputs):
            raise ShapeError(f"plan expects {len(plan.inputs)} inputs, got {len(arrays)}")
        by_name = dict(zip(plan.inputs, arrays))
        parts = {j for _, j in self.feeds if j is not None}
        shards = {plan.inputs[i]: _shards(arrays[i], len(parts), plan.inputs[i]) for i in plan.batch_inputs if parts}
        return {(n, j): by_name[n] if j is None else shards[n][j] for n, j in self.feeds}

    def _outputs(self, values):
        plan = self.plan
        if plan.kind == "dag":
            return list(values)
        got = dict(zip(self.results, values))
        parts = sorted({j for _, j in self.results})
        return _combine(plan, [[got[(o, j)] for o in plan.outputs] for j in parts])

    def _compile(self):
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:
            nodes = {key: inp[i] for i, key in enumerate(self.feeds)}
            for i, t in enumerate(self.tasks):
                n = len(t.outputs)
                seed = inp[len(self.feeds) + i]  # each run's seeds follow its feeds (`submit`)
                call = self.calls[i].bind(i, seed, *[nodes[k] for k in t.inputs])
                nodes.update(zip(t.outputs, [call[i] for i in range(n)] if n > 1 else [call]))
            dag = MultiOutputNode([nodes[k] for k in self.results])
        return dag.experimental_compile()

    # ---- timeline and teardown ----------------------------------------------------------------------
    @property
    def timeline(self):
        """Every task run so far, one row per worker (collected from the actors on each access)."""
        logs = wait_ready([a.drain.remote() for a in self.actors], self.timeout_s, "plan workers' timelines")
        for w, log in enumerate(logs):
            for label, start, end, nbytes in log:
                self._timeline.record(label, f"worker{w}", start, end, nbytes)
        return self._timeline

    def shutdown(self):
        # parked for the next executor of this shape (worker_pool.py), unless a compiled graph ran in them:
        # its teardown leaves actors Ray's channels were bound to, which a new instance should not inherit
        compiled = self.compile_at is not None and self.runs > self.compile_at
        if self.compiled is not None and ray.is_initialized():
            self.compiled.teardown()
            self.compiled = None
        self.group.shutdown(park=not compiled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _at_task_size(graph, strategy, parts, recapture):
    """`graph` (captured at the whole batch) captured again at the size one task of `strategy` runs."""
    batch = graph.inputs[0][1].shape[0] if graph.inputs and graph.inputs[0][1].shape else 0
    what = "shards" if strategy == "data" else "micro-batches"
    if not batch or batch % parts:
        raise ConfigError(
            f"for_graph(strategy='auto'): chose {strategy!r}, but batch {batch} does not split into {parts} {what}"
        )
    if recapture is None:
        raise ConfigError(
            f"for_graph(strategy='auto') chose {strategy!r}, whose tasks each run {batch // parts} of the graph's {batch} "
            f"samples, but a captured graph has static shapes: pass recapture=fn (rows → the graph captured for that "
            f"many samples), or capture at the task's size and name the strategy"
        )
    task = recapture(batch // parts)
    got = task.inputs[0][1].shape[:1] if task.inputs else ()
    if tuple(got) != (batch // parts,):
        raise ConfigError(f"for_graph: recapture({batch // parts}) gave a graph whose first input has batch {got}")
    return task


class PendingRun:
    """One submitted run: `result()` waits (at most the executor's timeout) and returns the outputs."""

    def __init__(self, executor, refs, compiled=False):
        self.executor, self.refs, self.compiled = executor, refs, compiled

    def result(self):
        ex = self.executor
        try:
            values = ray.get(self.refs, timeout=ex.timeout_s)
        except GetTimeoutError as exc:
            raise DistributedError(
                f"plan ({ex.plan.kind}, {len(ex.plan.subgraphs)} subgraphs): outputs {list(ex.plan.outputs)} "
                f"not ready within {ex.timeout_s}s"
            ) from exc
        except RayActorError as exc:
            raise DistributedError(f"plan worker died while running the plan: {exc}") from exc
        except RayTaskError as exc:  # the task's own error: the user's (a bad input, an op's) raised as itself
            raise_user_error(exc)
            raise DistributedError(
                f"plan ({ex.plan.kind}): a task failed: {getattr(exc, 'cause', None) or exc}"
            ) from exc
        return ex._outputs(values)
