"""`distgraph bench scaling`: strong and weak scaling of synchronous data-parallel training on Ray.

What is measured: `dg.Trainer(..., backend="ray", sync="sync")` training an MLP on the teacher
dataset, for each worker count; strong scaling keeps the global batch fixed, weak scaling keeps the
per-worker batch fixed. Each point is the median of `--repeat` epochs of `--steps` steps after a
warm-up, timed by the Trainer (samples/s of the epoch). The step-time breakdown comes from the
workers' own timeline (`distgraph.distributed.timeline`): compute (forward + backward), comm
(all-reduce transfer), wait (for the slowest rank: in the all-reduce and after the update), update
(the optimizer on the worker's chunk) and overhead (the rest of the driver-measured period: Ray
dispatch, object transfer, a store actor's update).

Peers, in the same run, same model, batch, shards and worker count, each step gathering its rows of
a shuffled order as the Trainer does, one BLAS/intra-op thread per worker: PyTorch
DistributedDataParallel over gloo (one Ray actor per rank; its compute is the same steps under
`no_sync()`, its comm the exposed rest), and distgraph with `allreduce="gloo"` (the
workers meet in a ray.util.collective gloo group instead of their shared-memory segment: the path a
run across nodes takes).

Efficiency = throughput(W) / (W × throughput(1)) of the same system and mode; ideal is 1. Beside it,
the host's ceiling: after each of its weak-scaling epochs distgraph runs the same steps' forward and
backward on every worker at once with nothing exchanged (`compute_alone`, as DDP's no_sync() run);
the efficiency of that is what the machine leaves for the whole step (on 2 cores, two ranks in
lockstep share them with Ray's own processes and everything else). Output:
a table, JSON, a PNG plot (matplotlib) and a Chrome trace of one measured step across all workers.
"""

import os
import socket
import statistics
import time

import click
import numpy as np

from distgraph.bench._pause import Paused
from distgraph.bench._util import CommaList, beside, json_out_option, machine, table, write_json
from distgraph.bench.scaling_report import add_ratios, plot, rows, verdicts
from distgraph.distributed.step import shard_bounds

LR = 0.05


def _mlp(sizes, seed):
    import distgraph as dg
    from distgraph import nn

    dg.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def _median_run(runs):
    """The run with the median throughput (an actual run, so its breakdown and trace belong to it)."""
    ranked = sorted(runs, key=lambda r: r["samples_per_s"])
    return ranked[len(ranked) // 2]


# ---- distgraph ------------------------------------------------------------------------------------------
class DistgraphPeer:
    """A Trainer (backend="ray", sync) kept alive across the run, so its epochs interleave with the peers'."""

    def __init__(
        self, workers, data, sizes, allreduce="auto", cpu_share=1.0, seed=0, strategy="data", bucket_mb=25, bind_to=None
    ):
        import distgraph as dg
        import distgraph.nn.functional as F
        from distgraph import optim
        from distgraph.distributed.timeline import Timeline

        model = _mlp(sizes, seed)
        self.trainer = dg.Trainer(
            model, F.cross_entropy, optim.SGD(model.parameters(), lr=LR), workers=workers, backend="ray",
            sync="sync", allreduce=allreduce, cpus_per_worker=cpu_share, progress=False, seed=seed, strategy=strategy,
            bucket_mb=bucket_mb, bind_to=bind_to,
        )  # fmt: skip
        suffix = ("" if allreduce == "auto" else "-gloo") + ("" if strategy == "data" else f"-{strategy}")
        self.data, self.timeline, self.label = data, Timeline(), "distgraph" + suffix

    def _fit(self, batch, steps):
        x, y = self.data
        n = steps * batch
        return self.trainer.fit((x[:n], y[:n]), epochs=self.trainer.epoch + 1, batch_size=batch).epochs[-1]

    def warm(self, batch):
        self._fit(batch, 3)
        scheduler = getattr(self.trainer._cluster, "scheduler", None)  # data parallelism: the workers' timeline
        if scheduler is not None:
            scheduler.on_worker_stats = self.timeline.add

    def epoch(self, batch, steps):
        self.timeline.clear()
        record = self._fit(batch, steps)
        period = record["time_s"] / steps
        return {
            "samples_per_s": steps * batch / record["time_s"], "step_ms": period * 1e3,
            "breakdown_ms": {k: v * 1e3 for k, v in self.timeline.breakdown(period).items() if k != "period"},
            "trace": self.timeline.chrome_trace(label=self.label) if len(self.timeline) else None,
        }  # fmt: skip

    def compute_alone(self, batch, steps):
        """Samples/s of `steps` forward and backward passes of each worker's shard, all workers at once
        and nothing exchanged (`TrainWorker.compute_only`): the ceiling this host sets for the system's
        step, measured as DDP's no_sync() run. None for a Plan's workers (not one replica per worker)."""
        from distgraph.distributed import runtime
        from distgraph.distributed.worker import pack_indices

        cluster = self.trainer._cluster
        if not hasattr(cluster, "group"):
            return None
        packed = pack_indices([np.arange(t * batch, (t + 1) * batch) for t in range(steps)])
        times = runtime.gather([a.compute_only.remote(packed) for a in cluster.group.actors])
        return steps * batch / max(sum(end - start for start, end in t) for t in times)

    def pids(self):
        from distgraph.distributed import runtime

        cluster = self.trainer._cluster  # None until the first fit starts the workers
        if cluster is None:
            return []
        if hasattr(cluster, "group"):  # data parallelism: the Trainer's worker group
            return runtime.local_pids(cluster.group.actors)
        return runtime.local_pids(getattr(cluster.executor, "actors", None) or [])  # a Plan's workers, once made

    def close(self):
        self.trainer.close()


# ---- PyTorch DDP peer -----------------------------------------------------------------------------------
def torch_rank_mlp(rank, world, port, sizes, seed):
    """A torch peer's rank: one intra-op thread, in a gloo group on the port, with the bench's MLP (seeded)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    return torch.nn.Sequential(*layers)


class DDPRank:
    """One rank of PyTorch DistributedDataParallel over gloo, as a Ray actor (one intra-op thread)."""

    def __init__(self, rank, world, port, sizes, seed, bucket_mb=25):
        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        self.model = DistributedDataParallel(torch_rank_mlp(rank, world, port, sizes, seed), bucket_cap_mb=bucket_mb)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.torch, self.dist, self.rank, self.world = torch, dist, rank, world
        self.shuffle = np.random.default_rng(seed)  # every rank draws the same orders: shards of one global batch

    def set_data(self, x, y):
        self.x, self.y = self.torch.from_numpy(np.array(x)), self.torch.from_numpy(np.array(y))
        return len(self.x)

    def run(self, batch, steps, sync=True):
        """(start, end) wall-clock seconds of each of `steps` steps on this rank's shard of each global
        batch; `sync=False` runs them under no_sync() (no all-reduce: the compute alone).

        The batches are drawn shuffled, a new order each call, and each step gathers its shard's rows,
        as the Trainer's workers do with the epoch's permutation (DistributedSampler's default too): a
        peer slicing consecutive rows would skip a gather of ~0.1-0.3 ms a step that distgraph pays."""
        import contextlib

        lo, hi = shard_bounds(batch, self.world, self.rank)
        order = self.torch.from_numpy(self.shuffle.permutation(steps * batch))
        self.dist.barrier()
        times = []
        for t in range(steps):
            start = time.time()
            rows = order[t * batch + lo : t * batch + hi]
            with contextlib.nullcontext() if sync else self.model.no_sync():
                self.opt.zero_grad()
                self.torch.nn.functional.cross_entropy(self.model(self.x[rows]), self.y[rows]).backward()
            self.opt.step()
            times.append((start, time.time()))
        return times

    def close(self):
        self.dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DDPPeer:
    """W DDPRank actors; an epoch is `steps` synchronized steps, then the same steps under no_sync()."""

    label = "torch-ddp"

    def __init__(self, workers, data, sizes, cpu_share=1.0, seed=0, bucket_mb=25, bind_to=None):
        from distgraph.distributed import runtime

        port = _free_port()
        self.runtime = runtime
        self.ranks = runtime.spawn(
            DDPRank, [(r, workers, port, sizes, seed, bucket_mb) for r in range(workers)], num_cpus=cpu_share
        )
        if bind_to == "core":  # as the Trainer binds distgraph's workers
            runtime.bind_actors(self.ranks)
        runtime.gather([a.set_data.remote(*data) for a in self.ranks])

    def _run(self, batch, steps, sync=True):
        return self.runtime.gather([a.run.remote(batch, steps, sync) for a in self.ranks])

    def warm(self, batch):
        self._run(batch, 3)

    def epoch(self, batch, steps):
        synced, alone = self._run(batch, steps), self._run(batch, steps, sync=False)
        elapsed = max(t[-1][1] for t in synced) - min(t[0][0] for t in synced)
        compute = statistics.fmean(statistics.median(e - s for s, e in t) for t in alone)
        period = elapsed / steps
        return {
            "samples_per_s": batch * steps / elapsed, "step_ms": period * 1e3,
            "breakdown_ms": {"compute": compute * 1e3, "comm": max(period - compute, 0.0) * 1e3},
        }  # fmt: skip

    def pids(self):
        return self.runtime.local_pids(self.ranks)

    def close(self):
        self.runtime.gather([a.close.remote() for a in self.ranks])
        self.runtime.kill(self.ranks)


def _peers_to_start(workers, peers, strategies=("data",)):
    """(system, workers) of every point: distgraph at each count, its gloo variant and its split-step
    strategies from 2 workers, DDP."""
    out = [("distgraph", w) for w in workers]
    out += [("distgraph-gloo", w) for w in workers if "gloo" in peers and w > 1]
    out += [(f"distgraph-{s}", w) for s in strategies if s != "data" for w in workers if w > 1]
    out += [("torch-ddp", w) for w in workers if "ddp" in peers]
    return out


def run_scaling(
    workers,
    sizes,
    strong_batch,
    weak_batch,
    steps,
    repeat,
    peers,
    cpus,
    seed=0,
    echo=print,
    strategies=("data",),
    bucket_mb=25,
    pause=True,
    bind_to="core",
):
    """Every point of the report (list of dicts, efficiency included) and the trace of one step.

    Every (system, worker count) is started once and kept alive; the measured epochs then go round
    robin over all of them, `repeat` rounds per mode, so a change in machine load hits every point
    alike. Only one of them computes at a time: each worker reserves cpus / (workers alive) of Ray's
    logical CPUs (at most 1), which admits them all without giving any more physical cores. With
    `pause`, the systems not running are stopped meanwhile (`Paused`). `bind_to="core"` binds every system's
    workers to cores of their own, DDP's ranks too (affinity.py)."""
    from distgraph.datasets import teacher

    largest = max(strong_batch, weak_batch * max(workers))
    (x, y), _ = teacher(samples=int(steps * largest / 0.8) + 8, features=sizes[0], classes=sizes[-1], seed=seed)
    keys = _peers_to_start(workers, peers, strategies)
    share = min(1.0, cpus / sum(w for _, w in keys))
    opts = {"bucket_mb": bucket_mb, "bind_to": bind_to}
    make = {
        "distgraph": lambda w: DistgraphPeer(w, (x, y), sizes, "auto", share, seed, **opts),
        "distgraph-gloo": lambda w: DistgraphPeer(w, (x, y), sizes, "gloo", share, seed, **opts),
        "torch-ddp": lambda w: DDPPeer(w, (x, y), sizes, share, seed, **opts),
        **{
            f"distgraph-{s}": (lambda w, s=s: DistgraphPeer(w, (x, y), sizes, "auto", share, seed, strategy=s, **opts))
            for s in strategies
            if s != "data"
        },
    }
    started = time.perf_counter()
    alive = {}
    paused = Paused(alive if pause else {})
    try:
        for system, w in keys:
            alive[system, w] = make[system](w)
        echo(
            f"  started {len(alive)} systems ({sum(w for _, w in keys)} workers) in {time.perf_counter() - started:.1f}s"
        )
        points, trace = [], None
        for mode in ("strong", "weak"):
            batch = {(s, w): strong_batch if mode == "strong" else weak_batch * w for s, w in keys}
            started = time.perf_counter()
            for key, peer in alive.items():
                paused.only(key)
                peer.warm(batch[key])
            runs, alone = {key: [] for key in alive}, {key: [] for key in alive if key[0] == "distgraph"}
            for _ in range(repeat):
                for key, peer in alive.items():
                    paused.only(key)
                    runs[key].append(peer.epoch(batch[key], steps))
                    if key in alone and mode == "weak":  # the ceiling, right after the epoch it bounds
                        alone[key].append(peer.compute_alone(batch[key], steps))
            for (system, w), rs in runs.items():
                point = _median_run(rs)
                if (system, w, mode) == ("distgraph", max(workers), "strong"):
                    trace = point["trace"]
                point = {k: v for k, v in point.items() if k != "trace"} | {"repeats": [r["samples_per_s"] for r in rs]}
                if alone.get((system, w)) and None not in alone[system, w]:
                    point["compute_alone_samples_per_s"] = statistics.median(alone[system, w])
                points.append({"mode": mode, "workers": w, "system": system, "global_batch": batch[system, w], **point})
            echo(f"  {mode} scaling: {repeat} rounds over {len(alive)} systems in {time.perf_counter() - started:.1f}s")
    finally:
        paused.release()
        for peer in alive.values():
            peer.close()
    points.sort(key=lambda p: (p["mode"] != "strong", p["workers"], p["system"]))
    return add_ratios(points), trace


@click.command("scaling")
@click.option("--workers", type=CommaList(), default="1,2", show_default=True, help="worker counts, comma-separated")
@click.option("--sizes", type=CommaList(), default="256,512,512,10", show_default=True, help="MLP layer sizes")
@click.option(
    "--batch",
    "strong_batch",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="global batch (strong scaling)",
)
@click.option(
    "--weak-batch", type=click.IntRange(1), default=512, show_default=True, help="batch per worker (weak scaling)"
)
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="steps per measured epoch")
@click.option(
    "--repeat", type=click.IntRange(1), default=15, show_default=True,
    help="measured epochs per point (median; the 2-worker epochs vary ±5 % on this host, and medians of 5 moved "
    "the efficiency by up to 9 points within one run)",
)  # fmt: skip
@click.option("--peers", default="ddp,gloo", show_default=True, help="peers to run: ddp, gloo (or 'none')")
@click.option(
    "--strategy", "strategies", default="data", show_default=True,
    help="distgraph strategies, comma-separated: data, pipeline, branches (those the model has)",
)  # fmt: skip
@click.option(
    "--bucket-mb", default=25.0, show_default=True,
    help="gradient bucket size in MiB, for distgraph (Trainer bucket_mb) and DDP (bucket_cap_mb) alike",
)  # fmt: skip
@click.option(
    "--pause/--no-pause", default=True, show_default=True,
    help="stop the other systems' worker processes (SIGSTOP) while one system runs its epochs",
)  # fmt: skip
@click.option(
    "--bind-to", type=click.Choice(["core", "none"]), default="core", show_default=True,
    help="core: every system's workers bound to cores of their own (Trainer bind_to; DDP's ranks alike)",
)  # fmt: skip
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one)")
@json_out_option("scaling")
def command(
    workers, sizes, strong_batch, weak_batch, steps, repeat, peers, strategies, bucket_mb, pause, bind_to, address,
    json_out,
):  # fmt: skip
    """Strong/weak scaling of sync data-parallel training vs PyTorch DDP (gloo); table, JSON, plot, trace."""
    from distgraph.distributed import runtime
    from distgraph.errors import ConfigError

    counts, layer_sizes = workers, tuple(sizes)
    wanted = {p.strip() for p in peers.split(",")} - {"none", ""}
    if wanted - {"ddp", "gloo"}:
        raise click.BadParameter(f"unknown peers {sorted(wanted - {'ddp', 'gloo'})}; choose from ddp, gloo")
    try:
        import torch  # noqa: F401
    except ImportError:
        click.echo("torch is not installed: the DDP and gloo peers are skipped (pip install 'distgraph[bench]')")
        wanted = set()
    chosen = [s.strip() for s in strategies.split(",") if s.strip()]
    if set(chosen) - {"data", "pipeline", "branches"}:
        raise click.BadParameter(f"unknown strategies {sorted(set(chosen) - {'data', 'pipeline', 'branches'})}")
    if "branches" in chosen:  # an MLP is one chain of ops: nothing runs side by side
        click.echo("strategy branches: an MLP has no independent subgraphs; skipped")
        chosen.remove("branches")
    runtime.init(address, num_cpus=None if address else max(counts))
    cpus = runtime.cluster_summary()["resources"].get("CPU", 0)
    if cpus < max(counts):
        raise ConfigError(f"bench scaling: {max(counts)} workers need {max(counts)} CPUs; the Ray cluster has {cpus}")
    click.echo(f"scaling · MLP {'-'.join(map(str, layer_sizes))} · teacher data · sync data-parallel · {machine()}")
    points, trace = run_scaling(
        counts, layer_sizes, strong_batch, weak_batch, steps, repeat, wanted, cpus, echo=click.echo,
        strategies=tuple(chosen), bucket_mb=bucket_mb, pause=pause, bind_to=bind_to,
    )  # fmt: skip
    headers = "mode W system batch samples/s ÷ddp step-ms compute comm wait update overhead efficiency".split()
    click.echo(table(headers, rows(points)))
    click.echo(
        "times in ms per step; compute/comm/wait/update from the workers' timeline (update: the optimizer on the "
        "worker's own chunk; wait: for peers, in the all-reduce and after the update), overhead = period − those "
        "(Ray dispatch, batch slicing, transfers, a store actor's update where one applies it); torch-ddp: compute = its no_sync() step, comm = the exposed rest. "
        f"÷ ddp = samples/s ÷ torch-ddp's at the same W; efficiency = samples/s ÷ (W × 1-worker samples/s) · "
        f"{os.cpu_count()} cores here, the systems' epochs interleaved"
        + (", the others' workers stopped meanwhile" if pause else "")
        + (", each worker bound to a core of its own" if bind_to == "core" else "")
    )
    for line in verdicts(points):
        click.echo(line)
    if not json_out:
        return
    config = {"workers": counts, "sizes": layer_sizes, "strong_batch": strong_batch, "weak_batch": weak_batch,
              "bucket_mb": bucket_mb, "pause": pause, "bind_to": bind_to}  # fmt: skip
    config |= {"steps": steps, "repeat": repeat}
    write_json(json_out, {"machine": machine(), "config": config, "points": points}, click.echo)
    if trace is not None:
        write_json(beside(json_out, ".trace.json"), trace, click.echo)
    try:
        plot(points, beside(json_out, ".png"))
        click.echo(f"wrote {beside(json_out, '.png')}")
    except ImportError:
        click.echo("matplotlib is not installed: no plot (pip install 'distgraph[bench]')")
