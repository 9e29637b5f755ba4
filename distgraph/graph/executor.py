"""Running graphs: `Runner` replays one Graph on arrays; `LocalExecutor` runs a Plan in one process.

Runner: the graph is turned once into the source of one straight-line function (`codegen`): one
numpy call per node, preallocated `out=` buffers from the memory plan, values dropped after their
last reader, eligible elementwise nodes writing into a dying input (memory.plan). The node-by-node
interpreter (`codegen=False`) is kept as the reference the generated code is checked against.

LocalExecutor policy (no Ray): a "dag" plan submits every subgraph to a thread pool as soon as all
of its inputs exist, so independent subgraphs run concurrently (numpy and cupy release the GIL in
heavy kernels). A "pipeline" plan gives each stage one thread (a stage is a device: its forward
and backward subgraphs run there) and submits one task per (subgraph, micro-batch) to it in the
schedule's order (`pipeline_order`); a task waits only for the tasks that make its inputs. Per
stage s of k, over m micro-batches:
- GPipe: the forwards of micro-batches 0..m−1, then their backwards;
- 1F1B: min(k−1−s, m) warm-up forwards, then one forward and one backward in turn, then the
  remaining backwards: stage s holds at most k−s micro-batches' activations instead of m.
Forward-only stages run micro-batches in order under both. A micro-batch's activations are
dropped as soon as their last reader has run. A "replicas" plan runs its copies over batch shards
concurrently and combines outputs. Every subgraph run is recorded on the Timeline.

Random draws (dropout masks, samples) come from the device's one generator, so subgraphs drawing on
concurrent threads would take each other's numbers in whatever order the threads run: a seeded run
would not repeat. A "dag" or "replicas" plan with more than one drawing subgraph therefore runs its
subgraphs one at a time, in plan order (a dag's draws then come in the captured graph's order, as a
Runner's). A pipeline keeps its stages concurrent: each run draws one seed per task from the device's
generator on the calling thread, in `pipeline_order`, and a drawing task runs on generators of its
own seeded with its seed (`rng.seeded_draws`), so a seeded pipeline run repeats bit for bit.

The executor's threads live as long as it does (`shutdown()`, `with`, or garbage collection ends them),
as torch's inter-op pool does: a pool started per run paid thread start-up and, in every new thread,
a fresh malloc arena whose pages fault in again — measured here, 6 page faults and ~0.5 ms a run of
the four-tower bench.
"""

import contextlib
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np

from distgraph.backend import device as as_device
from distgraph.backend import to_device
from distgraph.errors import ConfigError, DTypeError, ShapeError
from distgraph.graph.codegen import generate
from distgraph.graph.ir import makes_fresh
from distgraph.graph.passes import memory
from distgraph.graph.passes.dce import is_random
from distgraph.graph.passes.fusion import FusedKernel, compute_into, out_function, writes_out
from distgraph.graph.trace import Timeline
from distgraph.ops.registry import get_op
from distgraph.ops.rng import generator, seeded_draws


def drawing_subgraphs(plan):
    """The names of `plan`'s subgraphs that draw random numbers (dropout, sampling)."""
    return {sg.name for sg in plan.subgraphs if any(is_random(n) for n in sg.graph.nodes)}


def task_seeds(count):
    """One seed per task of a run, drawn from the cpu generator in task order: how the LocalExecutor's pipeline
    and the RayPlanExecutor seed their drawing tasks, so the two draw the same masks for the same seed."""
    return generator(as_device("cpu")).integers(0, 2**63, size=count)


class Runner:
    """A Graph compiled for repeated execution on one device: `runner(*arrays) -> list of arrays`.

    By default the graph becomes one generated function (`codegen`); `codegen=False` interprets it
    node by node instead (the reference the generated code is tested against). `write_back` maps an
    output index to the input index whose array receives that output (see `codegen`). `device` runs
    the graph on another device than the one it was captured on (a Ray worker's GPU runs a graph its
    driver captured on the host).
    """

    def __init__(self, graph, plan_memory=True, codegen=True, write_back=None, device=None):
        self.graph = graph
        dev = as_device(device if device is not None else graph.inputs[0][1].device if graph.inputs else "cpu")
        self.device = dev
        self.xp = dev.xp
        self.n_inputs = len(graph.inputs)
        self.expects = tuple((tuple(spec.shape), _dtype(spec.dtype)) for _, spec in graph.inputs)
        self.plan = memory.plan(graph, inplace=plan_memory) if plan_memory else None
        self.write_back = dict(write_back or {})
        if codegen:
            self.program = generate(graph, dev, self.plan, self.write_back)
            self._idle = []  # instances (each with its own buffers) no call is using now
        else:
            self.program = None
            self._compile_steps(graph, dev)
            self.run = lambda *arrays: self._interpret(arrays)  # (the generated function's `run` has no program)

    def run(self, *arrays):
        """Call the generated function, unchecked. Concurrent calls never share scratch buffers: a
        call takes an idle instance (list pop/append are atomic) or makes one, and returns it after,
        so the executor's threads reuse the buffers of earlier calls."""
        idle = self._idle
        try:
            fn = idle.pop()
        except IndexError:
            fn = self.program.instantiate()
        try:
            return fn(*arrays)
        finally:
            idle.append(fn)

    def __call__(self, *arrays):
        """Run the graph after checking the inputs against the captured specs: its buffers are
        preallocated for those shapes, so another shape would broadcast into them (wrong numbers) or
        fail inside numpy. (dg.compile calls `run` directly: its guard has checked the signature.)"""
        if len(arrays) != self.n_inputs:
            raise ShapeError(f"graph expects {self.n_inputs} inputs, got {len(arrays)}")
        try:
            for i, (a, (shape, dtype)) in enumerate(zip(arrays, self.expects)):
                if a.shape != shape or (a.dtype is not dtype and a.dtype != dtype):
                    self._refuse(i, a)
        except AttributeError:  # not an array
            self._refuse(i, a)
        if self.program is not None:
            return self.run(*arrays)
        return self._interpret(arrays)

    def _refuse(self, i, a):
        name, spec = self.graph.inputs[i]
        shape, dtype = tuple(getattr(a, "shape", ())), getattr(a, "dtype", type(a).__name__)
        error = ShapeError if shape != tuple(spec.shape) else DTypeError
        raise error(
            f"graph input {i} ({name}) is {dtype} {shape}, but the graph was captured for {spec.dtype} "
            f"{tuple(spec.shape)}: capture it again for these inputs"
        )

    # ---- the interpreter: a flat list of steps (registry forward, argument slots, output slot, frees)
    def _compile_steps(self, graph, dev):
        xp = self.xp
        names = [n for n, _ in graph.inputs] + list(graph.constants) + [n.name for n in graph.nodes]
        slot = {name: i for i, name in enumerate(names)}
        self.template = [None] * len(names)
        for name, arr in graph.constants.items():
            self.template[slot[name]] = to_device(xp.asarray(arr) if xp is np else arr, dev)
        self.steps = []
        for i, node in enumerate(graph.nodes):
            free = tuple(slot[n] for n in self.plan.free_after[i]) if self.plan else ()
            target = slot[self.plan.inplace[i]] if self.plan and i in self.plan.inplace else -1
            attrs = node.attrs if node.op != "fused" else {}
            ins = tuple(slot[n] for n in node.inputs)
            self.steps.append((_callable(node, xp), attrs, ins, slot[node.name], free, target))
        self.outputs = tuple(slot[o] for o in graph.outputs)
        # outputs a caller could write into that are (or view) a constant serving every call: copied
        roots = {n: {n} for n in names}
        for node in graph.nodes:
            if not makes_fresh(node):
                roots[node.name] = roots[node.name].union(*(roots[n] for n in node.inputs))
        self.copied = {slot[o] for o in graph.outputs if roots[o] & set(graph.constants)}
        specs = graph.specs()
        self.scalars = {slot[o] for o in graph.outputs if not specs[o].shape}  # 0-d: returned as arrays
        self.write_slots = [(self.outputs[o], i) for o, i in self.write_back.items()]

    def _interpret(self, arrays):
        env = self.template.copy()
        env[: self.n_inputs] = arrays
        xp = self.xp
        for fn, attrs, ins, out, free, target in self.steps:
            args = [env[i] for i in ins]
            if target >= 0:
                env[out] = fn(xp, *args, out=env[target], **attrs)
            else:
                env[out] = fn(xp, *args, **attrs)
            for f in free:
                env[f] = None
        for out, i in self.write_slots:
            xp.copyto(arrays[i], env[out])
        return [self._returned(env[o], o, xp) for o in self.outputs]

    def _returned(self, value, slot, xp):
        """As the generated code returns it: a copy where it may share a constant, a 0-d value as an array."""
        if slot in self.scalars:
            return xp.array(value) if slot in self.copied else xp.asarray(value)
        return value.copy() if slot in self.copied else value


def _callable(node, xp):
    if node.op == "fused":
        return FusedKernel(node, xp)
    op = get_op(node.op)
    if writes_out(node.op, node.attrs):  # the memory plan may hand it an input to write in place
        writer = out_function(xp, node.op)  # None on a device without one (sigmoid on cupy)

        def run(xp, *args, out=None, **attrs):
            return compute_into(op, writer, xp, args, attrs, out)

        return run
    if op.saves_extra:
        forward = op.forward
        return lambda xp, *args, **attrs: forward(xp, *args, **attrs)[0]
    return op.forward


class LocalExecutor:
    """Runs a Plan in this process; `run(*arrays)` returns the plan's outputs, `timeline` what ran when."""

    def __init__(self, plan, workers=2, schedule="gpipe"):
        self.plan = plan
        self.workers = workers
        self.schedule = schedule
        self.order = pipeline_order(plan, schedule) if plan.kind == "pipeline" else None
        self.runners = {sg.name: Runner(sg.graph) for sg in plan.subgraphs}
        # subgraphs that draw random numbers: two or more run one at a time (module docstring)
        self._random = drawing_subgraphs(plan)
        self._serial = len(self._random) > 1
        self.timeline = Timeline()
        self._running = threading.Lock()
        self._pools = {}  # name -> ThreadPoolExecutor, started on first use, kept until shutdown()
        self._finalizer = weakref.finalize(self, _shutdown, self._pools)

    def _pool(self, name, threads):
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ThreadPoolExecutor(threads, thread_name_prefix=name)
        return pool

    def shutdown(self):
        """End the executor's threads (idempotent; as RayPlanExecutor.shutdown); a later run starts them again."""
        _shutdown(self._pools)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def run(self, *arrays):
        if len(arrays) != len(self.plan.inputs):
            raise ShapeError(f"plan expects {len(self.plan.inputs)} inputs, got {len(arrays)}")
        with self._running:  # one run at a time: a stage's single thread runs one schedule's queue
            return self._run(arrays)

    def _run(self, arrays):
        if self.plan.kind == "pipeline":
            return self._run_pipeline(arrays)
        if self.plan.kind == "replicas":
            return self._run_replicas(arrays)
        return self._run_dag(dict(zip(self.plan.inputs, arrays)), self.plan.subgraphs)

    # ---- one subgraph, timed ------------------------------------------------------------------------
    def _call(self, sg, env, label=None, worker=None):
        args = [env[n] for n in sg.inputs]
        start = time.perf_counter()
        outs = self.runners[sg.name](*args)
        end = time.perf_counter()
        nbytes = sum(a.nbytes for a in args) + sum(o.nbytes for o in outs)
        self.timeline.record(label or sg.name, worker or threading.current_thread().name, start, end, nbytes)
        return dict(zip(sg.outputs, outs))

    def _run_dag(self, env, subgraphs):
        """Run each subgraph once its inputs exist, on `workers` threads: the caller is one of them.

        The caller runs a ready subgraph itself instead of sleeping until the pool's threads finish, and
        takes back one the pool has not started when nothing else is ready, so no thread wakes up only to
        hand work over: four towers on 2 threads lost ~0.1 ms at every hand-over, ~0.8 ms a 10 ms run."""
        pending = list(subgraphs)
        running = {}
        pool = self._pool("dg-worker", self.workers - 1) if self.workers > 1 and not self._serial else None
        while pending or running:
            for fut in [f for f in running if f.done()]:
                del running[fut]
                env.update(fut.result())
            if not pending and not running:  # the last ones finished in the pool
                break
            ready = [sg for sg in pending if all(n in env for n in sg.inputs)]
            if ready:
                mine, rest = ready[0], (ready[1:] if pool is not None else [])  # one thread: the rest wait their turn
                for sg in [mine, *rest]:
                    pending.remove(sg)
                for sg in rest:
                    running[pool.submit(self._call, sg, env)] = sg
            else:  # nothing ready: take back a subgraph the pool has not started, if there is one
                queued = next((f for f in running if f.cancel()), None)
                mine = running.pop(queued) if queued is not None else None
            if mine is not None:
                env.update(self._call(mine, env, worker="dg-worker (caller)"))
            elif running:
                wait(running, return_when=FIRST_COMPLETED)  # collected at the top of the loop
            else:
                missing = {n for sg in pending for n in sg.inputs if n not in env}
                raise ShapeError(f"plan cannot progress: values {sorted(missing)} are never produced")
        return [env[n] for n in self.plan.outputs]

    # ---- pipeline ---------------------------------------------------------------------------------
    def _run_pipeline(self, arrays):
        plan, m = self.plan, self.plan.micro_batches
        envs = [dict(zip(plan.inputs, shard)) for shard in _split_inputs(plan, arrays, m)]
        made_by = _producers(plan)
        readers = Counter(v for sg in plan.subgraphs for v in sg.inputs if v in made_by and v not in plan.outputs)
        left = [dict(readers) for _ in range(m)]  # per micro-batch: readers still to run, per value
        lock = threading.Lock()
        pools = {s: self._pool(f"dg-stage{s}", 1) for s in sorted({sg.stage for sg in plan.subgraphs})}
        # one seed per task, drawn here in the schedule's order: a task's draws do not depend on the threads'
        seeds = task_seeds(len(self.order)) if self._random else None
        futures = {}
        for i, (sg, j) in enumerate(self.order):
            deps = [futures[(made_by[v], j)] for v in sg.inputs if v in made_by]
            seed = seeds[i] if sg.name in self._random else None
            args = (sg, envs[j], deps, f"{sg.name}/mb{j}", left[j], lock, seed)
            futures[(sg.name, j)] = pools[sg.stage].submit(self._task, *args)
        wait(futures.values())  # every task ends (a failed one fails its dependants) before any error is raised
        for f in futures.values():
            f.result()
        return _combine(plan, [[env[n] for n in plan.outputs] for env in envs])

    def _task(self, sg, env, deps, label, left, lock, seed=None):
        """Run one (subgraph, micro-batch) once its producers are done, drawing from generators seeded
        with `seed` if it has one; drop the inputs it read last."""
        for d in deps:
            d.result()
        with seeded_draws(seed) if seed is not None else contextlib.nullcontext():
            env.update(self._call(sg, env, label))
        with lock:
            for v in sg.inputs:
                if v in left:
                    left[v] -= 1
                    if not left[v]:
                        del env[v]

    # ---- data-parallel replicas -------------------------------------------------------------------
    def _run_replicas(self, arrays):
        plan = self.plan
        shards = _split_inputs(plan, arrays, len(plan.subgraphs))
        if self._serial:
            results = [self._call(sg, dict(zip(plan.inputs, shard))) for sg, shard in zip(plan.subgraphs, shards)]
            return _combine(plan, [[r[n] for n in plan.outputs] for r in results])
        pool = self._pool("dg-replica", self.workers)
        futures = [
            pool.submit(self._call, sg, dict(zip(plan.inputs, shard))) for sg, shard in zip(plan.subgraphs, shards)
        ]
        wait(futures)
        results = [f.result() for f in futures]
        return _combine(plan, [[r[n] for n in plan.outputs] for r in results])


def _shutdown(pools):
    """Shut the pools down; wait for their threads unless this is one of them (garbage collection can
    end an executor inside a task of its own pool, and a thread cannot join itself)."""
    me = threading.current_thread()
    for pool in pools.values():
        pool.shutdown(wait=me not in getattr(pool, "_threads", ()))
    pools.clear()


def pipeline_order(plan, schedule="gpipe"):
    """[(subgraph, micro-batch)] of a "pipeline" plan in one submission order that holds every stage's
    schedule (module docstring) as a subsequence and puts every task after the tasks making its
    inputs. Workers that run their queue in this order, each task waiting for its inputs, never
    deadlock: the earliest unfinished task is always at the head of its queue with its inputs made."""
    if schedule not in ("gpipe", "1f1b"):
        raise ConfigError(f"unknown pipeline schedule {schedule!r} (gpipe, 1f1b)")
    m, k = plan.micro_batches, 1 + max(sg.stage for sg in plan.subgraphs)
    queues = []
    for s in sorted({sg.stage for sg in plan.subgraphs}):
        parts = {sg.phase: sg for sg in plan.subgraphs if sg.stage == s}
        fwd = [(parts["fwd"], j) for j in range(m)] if "fwd" in parts else []
        bwd = [(parts["bwd"], j) for j in range(m)] if "bwd" in parts else []
        warm = m if schedule == "gpipe" or not (fwd and bwd) else min(k - 1 - s, m)
        queues.append(fwd[:warm] + [t for pair in zip(fwd[warm:], bwd) for t in pair] + bwd[m - warm :])
    return _merge(plan, queues)


def _merge(plan, queues):
    """Round-robin over the queues, taking each head whose producers are already taken."""
    made_by = _producers(plan)
    deps = {sg.name: {made_by[v] for v in sg.inputs if v in made_by} for sg in plan.subgraphs}
    done, order, heads = set(), [], [0] * len(queues)
    while len(order) < sum(map(len, queues)):
        progressed = False
        for q, queue in enumerate(queues):
            if heads[q] < len(queue):
                sg, j = queue[heads[q]]
                if all((d, j) in done for d in deps[sg.name]):
                    done.add((sg.name, j))
                    order.append((sg, j))
                    heads[q] += 1
                    progressed = True
        if not progressed:
            stuck = [f"{queue[h][0].name}/mb{queue[h][1]}" for queue, h in zip(queues, heads) if h < len(queue)]
            raise ConfigError(f"pipeline schedule cannot progress: every stage waits ({', '.join(stuck)})")
    return order


def _producers(plan):
    """{value: name of the subgraph that makes it}."""
    return {o: sg.name for sg in plan.subgraphs for o in sg.outputs}


def _split_inputs(plan, arrays, parts):
    split = [_shards(a, parts, plan.inputs[i]) if i in plan.batch_inputs else [a] * parts for i, a in enumerate(arrays)]
    _check_shards(plan, arrays, [col[0] for col in split], parts)
    return [tuple(col[k] for col in split) for k in range(parts)]


def _check_shards(plan, arrays, shards, parts):
    """Each shard (the whole input, where it is not split) against the spec the subgraphs were captured
    with: a graph captured at the full batch, run on shards of it, broadcast them into its buffers."""
    specs = {name: spec for sg in plan.subgraphs for name, spec in sg.graph.inputs}
    for i, (name, whole, shard) in enumerate(zip(plan.inputs, arrays, shards)):
        spec = specs.get(name)
        if spec is None or shard.shape == tuple(spec.shape):
            continue
        split = f" (a 1/{parts} shard of {tuple(whole.shape)})" if i in plan.batch_inputs else ""
        raise ShapeError(
            f"plan input {i} ({name}) gives its subgraphs shape {tuple(shard.shape)}{split}, but they were "
            f"captured for {tuple(spec.shape)}: capture the graph at the size one {plan.kind} task runs"
        )


def _dtype(name):
    """numpy's dtype for a spec's dtype name (the name itself where numpy has no such dtype: compared
    with an array's dtype, it still matches the dtype of that name)."""
    try:
        return np.dtype(name)
    except TypeError:
        return name


def _shards(array, parts, name):
    if array.shape[0] % parts:
        raise ShapeError(f"input {name}: batch of {array.shape[0]} does not split into {parts} equal shards")
    size = array.shape[0] // parts
    return [array[k * size : (k + 1) * size] for k in range(parts)]


def _combine(plan, per_part):
    out = []
    for i, how in enumerate(plan.combine):
        parts = [p[i] for p in per_part]
        xp = np if isinstance(parts[0], np.ndarray | np.generic) else _xp(parts[0])
        if how in ("cat", "cat_mean"):
            whole = xp.concatenate(parts, axis=0)
            out.append(whole / len(parts) if how == "cat_mean" else whole)
        else:
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            out.append(total / len(parts) if how == "mean" else total)
    return out


def _xp(array):
    from distgraph.backend import namespace

    return namespace(array)
