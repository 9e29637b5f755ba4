"""`distgraph bench simulate --validate`: the α-β model against our own measured 1- and 2-worker Ray runs.

What is predicted: the synchronous Trainer's step with the parameter store sharded across the workers
(`distributed/zero.py`): each worker computes its half of the batch, copies its flat gradient into its
slot of one shared-memory segment, meets the others at a barrier, sums its own chunk of every slot,
applies the optimizer to its own chunk of the parameters (which live in the segment), and meets them
again; one Ray call carries STEPS_PER_CALL (4) such steps, so Ray's cost is paid once per 4 steps
(fixed here, so that the epoch holds several calls to time; the Trainer sizes its calls to ~1 s).

Every input is measured here, none is fitted to the 2-worker result. Probe actors (`runtime.spawn`:
the workers' allocator settings, one BLAS thread each) time, in lockstep through a segment barrier so
that ranks compute at the same moments as in a step:

- compute alone: one probe, forward + backward at the full and the half batch;
- compute contended: two probes computing their half batches at once on this 2-core machine — the
  slowdown is the model's `compute_contention`, and the per-step spread between the two ranks its
  `compute_jitter` (the barrier waits for the slower one);
- α, β: the step's own reduction (copy the gradient into the slot, barrier, sum this rank's chunk,
  barrier — `Segment.reduce`) between the two probes, at 4 KB and at the gradient's size, started
  together so that neither waits for the other;
- update: one probe's world-of-1 store step (flatten the gradients, SGD on all parameters); two ranks
  each update half (`update_sharded`).

The runs: a 1-worker and a 2-worker Ray Trainer on the same MLP and batch, both kept up, one epoch each
per round; a step's time is the median interval between the starts of consecutive Ray calls / 4.
Ray's overhead on a worker's path is the 1-worker step minus its compute and update. The driver's CPU
time per step (submitting calls, collecting statistics) ran on the spare core in the 1-worker run; with
2 workers on 2 cores it comes out of theirs, half from each. The raylet's CPU time is not measured (the
bench layer does not import ray): 0.2–0.4 ms per step by /proc in a side run, so the prediction may
come out that much low.

Probes and runs alternate round by round and each figure is the best of its rounds: on a machine that
other people load, interference only adds time.
"""

import os
import statistics
import time
import uuid
from dataclasses import replace

import click
import numpy as np

from distgraph.bench import simulator_model as sm
from distgraph.bench._util import machine, table

SIZES = (256, 512, 512, 10)
BATCH = 256
STEPS_PER_CALL = 4
SMALL_BYTES = 4096


def _mlp(sizes):
    from distgraph import nn

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Probe:
    """One rank of a timing group, run as a Ray actor: a model replica and the segments of the group.

    Every timed iteration starts at a barrier, so the ranks of a group run it at the same time."""

    def __init__(self, rank, world, group, sizes, batch):
        import distgraph as dg
        from distgraph import nn
        from distgraph.distributed.step import ShardStep

        self.rank, self.world, self.group = rank, world, group
        rng = np.random.default_rng(rank)
        self.x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        self.y = rng.integers(0, sizes[-1], batch)
        dg.manual_seed(0)
        self.step = ShardStep(_mlp(sizes), nn.functional.cross_entropy)
        self.grads, _ = self.step.compute(self.x, self.y)
        self.count = sum(g.size for g in self.grads)
        self.segments = {}

    def _segment(self, count):
        from distgraph.distributed.shm import Segment, segment_name

        if count not in self.segments:
            name = segment_name(self.group, "probe", np.float32, count)
            self.segments[count] = Segment(name, self.rank, self.world, np.float32, count, 60.0)
        return self.segments[count]

    def grad_bytes(self):
        return self.count * 4

    def time_compute(self, batch, iters):
        """Seconds of each of `iters` forward + backward passes on `batch` samples."""
        sync, times = self._segment(1), []
        for _ in range(iters):
            sync.barrier()
            start = time.perf_counter()
            self.step.compute(self.x[:batch], self.y[:batch])
            times.append(time.perf_counter() - start)
        return times

    def time_reduce(self, count, iters):
        """Median seconds of the sharded step's reduction of `count` float32s: slot copy, barrier, chunk sum, barrier."""
        sync, seg = self._segment(1), self._segment(count)
        data = np.ones(count, np.float32)
        times = []
        for _ in range(iters + 1):
            sync.barrier()
            start = time.perf_counter()
            np.copyto(seg.slot, data)
            seg.reduce()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])  # the first call maps the segment's pages

    def time_update(self, iters):
        """Median seconds of a world-of-1 store step: flatten the gradients, SGD on all parameters."""
        from distgraph.optim.functional import sgd_update

        flat = np.concatenate([p.reshape(-1) for p in self.step.get_parameters()])
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            grad = np.concatenate([g.reshape(-1) for g in self.grads])
            sgd_update(flat, grad, {}, lr=1e-6)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def close(self):
        for seg in self.segments.values():
            seg.close()


def model_inputs(best, nbytes):
    """The model's inputs from the probes' best figures (seconds): compute alone and contended, jitter, α, β.

    `best` holds full, half (compute alone), contended (a rank's half batch while both compute), spread
    (median |rank 0 − rank 1| of a step's compute), small and big (the reduction of SMALL_BYTES and of
    `nbytes`) and update."""
    beta = (nbytes - SMALL_BYTES) / max(best["big"] - best["small"], 1e-9)
    alpha = max(best["small"] - SMALL_BYTES / beta, 0.0) / 2  # 2 ranks: T = 2α + S/β (ring_time, n = 2)
    # a − b of two independent normal times is normal with σ√2, so its median |a − b| is 0.6745 σ√2
    jitter = best["spread"] / (0.6745 * np.sqrt(2)) / best["contended"]
    return {"t_full": best["full"], "t_half": best["half"], "t_contended": best["contended"],
            "contention": best["contended"] / best["half"], "spread": best["spread"], "jitter": float(jitter),
            "alpha": alpha, "beta": beta, "update": best["update"], "grad_bytes": nbytes}  # fmt: skip


class _Probes:
    """A solo probe and a pair of probes (no CPU reserved: they sit idle while the Trainers run)."""

    def __init__(self, batch, sizes):
        from distgraph.distributed import runtime

        group = f"dgsim{uuid.uuid4().hex[:8]}"
        self.batch, self.runtime = batch, runtime
        self.solo = runtime.spawn(Probe, [(0, 1, group + "s", sizes, batch)], num_cpus=0)[0]
        self.pair = runtime.spawn(Probe, [(r, 2, group, sizes, batch // 2) for r in range(2)], num_cpus=0)
        self.nbytes = runtime.gather(self.solo.grad_bytes.remote())
        self.best = dict.fromkeys(("full", "half", "contended", "spread", "small", "big", "update"), float("inf"))
        self.rounds = []  # every round's figures, for the JSON

    def round(self, iters=24):
        """One pass over every figure, each the median over `iters` steps (as many as an epoch of the Trainer
        runs has); keeps each figure's best so far."""
        get, half = self.runtime.gather, self.batch // 2
        full = np.median(get(self.solo.time_compute.remote(self.batch, iters)))
        alone = np.median(get(self.solo.time_compute.remote(half, iters)))
        per_rank = np.array(get([p.time_compute.remote(half, iters) for p in self.pair]))  # (2, iters)
        small = max(get([p.time_reduce.remote(SMALL_BYTES // 4, iters) for p in self.pair]))
        big = max(get([p.time_reduce.remote(self.nbytes // 4, iters) for p in self.pair]))
        update = get(self.solo.time_update.remote(iters))
        figures = dict(full=full, half=alone, contended=np.median(per_rank),
                       spread=np.median(np.abs(per_rank[0] - per_rank[1])), small=small, big=big, update=update)  # fmt: skip
        self.rounds.append({k: float(v) for k, v in figures.items()})
        self.best = {k: min(self.best[k], float(v)) for k, v in figures.items()}

    def inputs(self):
        return model_inputs(self.best, self.nbytes)

    def close(self):
        self.runtime.gather([p.close.remote() for p in [self.solo, *self.pair]])
        self.runtime.kill([self.solo, *self.pair])


def _trainer(workers, batch, sizes, data):
    """A Ray Trainer on the MLP, warmed up by one epoch."""
    import distgraph as dg
    from distgraph import nn

    dg.manual_seed(0)
    model = _mlp(sizes)
    opt = dg.optim.SGD(model.parameters(), lr=0.01)
    t = dg.Trainer(model, nn.functional.cross_entropy, opt, workers=workers, backend="ray", progress=False)
    t.fit(data, epochs=1, batch_size=batch)
    # fixed calls of STEPS_PER_CALL steps: the step time is read off the intervals between call starts
    t._cluster.scheduler.steps_per_call = STEPS_PER_CALL
    return t


def _epoch_step(trainer, data, batch):
    """Seconds per step in one more epoch, and the driver's CPU seconds per step.

    The step time is the median over the epoch's Ray calls (each carries `steps_per_call` steps) of the
    interval between the starts of consecutive calls on rank 0, divided by the steps per call: a burst
    of other processes' load shifts a median of intervals less than it shifts the epoch's total."""
    from distgraph.distributed.timeline import Timeline

    timeline, scheduler = Timeline(), trainer._cluster.scheduler
    scheduler.on_worker_stats = timeline.add
    steps, cpu = -(-len(data[0]) // batch), time.process_time()
    trainer.fit(data, epochs=trainer.epoch + 1, batch_size=batch)
    cpu = (time.process_time() - cpu) / steps
    k = scheduler.steps_per_call
    starts = [timeline.steps[s][0]["t_start"] for s in sorted(timeline.steps)][::k]
    return statistics.median(b - a for a, b in zip(starts, starts[1:])) / k, cpu


def validate(batch=BATCH, sizes=SIZES, rounds=12):
    from distgraph.datasets import teacher
    from distgraph.distributed import runtime

    # 3 CPUs of Ray's accounting for 2 cores: both Trainers stay up (one idles while the other runs)
    runtime.init(num_cpus=3)
    (x, y), _ = teacher(samples=batch * 30, features=sizes[0], classes=sizes[-1])  # 24 steps after the test split
    probes, one_worker, two_workers = _Probes(batch, sizes), _trainer(1, batch, sizes, (x, y)), None
    try:
        two_workers = _trainer(2, batch, sizes, (x, y))
        # alternate probes and runs, keep each figure's best: on a shared machine interference only adds time
        runs = []
        for _ in range(rounds):
            probes.round()
            runs.append((_epoch_step(one_worker, (x, y), batch), _epoch_step(two_workers, (x, y), batch)))
        (t1, host), (t2, _) = (min(r[i] for r in runs) for i in (0, 1))
        m = probes.inputs()
    finally:
        probes.close()
        for t in (one_worker, two_workers):
            if t is not None:
                t.close()
    # Ray's cost on a worker's path per step, read off the 1-worker run (its driver had the other core to itself)
    overhead = max(t1 - m["t_full"] - m["update"], 0.0)
    # with 2 workers filling both cores the driver's CPU time per step comes out of theirs, h / cores each
    cores = os.cpu_count() or 1
    stolen = host / cores if 2 >= cores else 0.0
    cfg = sm.Config(step_time=m["t_half"], batch=batch // 2, params=m["grad_bytes"] / 4, bandwidth=m["beta"],
                    intra_bandwidth=m["beta"], latency=m["alpha"], gpus_per_server=2,
                    compute_contention=m["contention"], compute_jitter=m["jitter"], update_time=m["update"],
                    update_sharded=True, overhead=overhead + stolen, workers=(2,))  # fmt: skip
    two = sm.step_time(cfg, 2)
    one = sm.step_time(replace(cfg, step_time=m["t_full"], batch=batch, overhead=overhead), 1)["step"]
    err1, err2 = (100 * (pred - meas) / meas for pred, meas in ((one, t1), (two["step"], t2)))
    rows = [[1, f"{one * 1e3:.2f}", f"{t1 * 1e3:.2f}", f"{err1:+.1f}% (overhead read off this run)"],
            [2, f"{two['step'] * 1e3:.2f}", f"{t2 * 1e3:.2f}", f"{err2:+.1f}%"]]  # fmt: skip
    click.echo(f"validation: MLP {'-'.join(map(str, sizes))}, batch {batch}, Ray workers on this machine — {machine()}")
    click.echo(
        f"inputs measured here (probe actors, one BLAS thread; best of {rounds} rounds alternated with the runs): "
        f"compute {m['t_full'] * 1e3:.2f} ms (batch {batch}), {m['t_half'] * 1e3:.2f} ms (batch {batch // 2}) "
        f"alone, {m['t_contended'] * 1e3:.2f} ms with 2 ranks at once (contention ×{m['contention']:.2f}); spread "
        f"between ranks {m['spread'] * 1e3:.2f} ms/step (jitter σ/μ = {m['jitter']:.3f}); sharded reduce "
        f"α = {m['alpha'] * 1e6:.0f} µs, β = {m['beta'] / 1e9:.2f} GB/s; update {m['update'] * 1e3:.2f} ms (all "
        f"parameters); Ray overhead {overhead * 1e3:.2f} ms/step (1-worker run minus compute and update); driver "
        f"CPU {host * 1e3:.2f} ms/step ({stolen * 1e3:.2f} ms from each worker's core when {cores} cores hold 2 workers)"
    )
    click.echo(
        f"2-worker step predicted: compute {two['compute'] * 1e3:.2f} + wait for the slower rank "
        f"{two['wait'] * 1e3:.2f} + reduce {two['comm'] * 1e3:.2f} + update {two['update'] * 1e3:.2f} + "
        f"overhead {two['overhead'] * 1e3:.2f} ms"
    )
    click.echo(table(["workers", "predicted ms/step", "measured ms/step", "error"], rows))
    click.echo("target: |error| ≤ 15% for the 2-worker prediction")
    return {"t1": t1, "t2": t2, "pred1": one, "pred2": two, "error2": err2 / 100, "overhead": overhead,
            "driver_cpu": host, "inputs": m,
            "rounds": [{**p, "t1": a[0], "driver_cpu": a[1], "t2": b[0]} for p, (a, b) in zip(probes.rounds, runs)]}  # fmt: skip
