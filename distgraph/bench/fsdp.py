"""`distgraph bench fsdp`: FullyShardedDataParallel against PyTorch's, with DDP beside, on Ray workers.

What is measured: a training loop of one's own on `--workers` ranks — forward, cross-entropy, backward,
Adam — with the MLP wrapped in distgraph's `FullyShardedDataParallel` (FULL_SHARD, one unit per Linear,
`dg.distributed.launch`), distgraph's `DistributedDataParallel`, and PyTorch's FSDP (the same strategy and
units, gloo, one Ray actor per rank, one intra-op thread). Same MLP, teacher data, per-rank batch. A run
is `--steps` timed steps after 3 warm-up steps, from a barrier to a barrier; the systems' runs alternate
`--repeat` times and each figure is the median run. Beside the speed, what one rank holds at rest between
steps: the parameters it keeps plus the optimizer's state (Adam: two arrays per parameter element) —
FSDP's point is that this is about 1/world of DDP's.
"""

import statistics

import click

from distgraph.bench._util import CommaList, json_out_option, machine, table, timed_steps, write_json
from distgraph.bench.scaling import _free_port, torch_rank_mlp
from distgraph.distributed.step import shard_bounds

LR = 1e-3


def _bytes_held(params, optimizer_state):
    arrays = [p for p in params] + [v for s in optimizer_state for v in s.values() if hasattr(v, "nbytes")]
    return sum(int(a.nbytes) for a in arrays)


def _distgraph_loop(x, y, sizes, batch, steps, wrapper):
    """One rank: `steps` timed steps → (seconds barrier to barrier, bytes held at rest)."""
    import distgraph as dg
    import distgraph.nn as nn
    import distgraph.nn.functional as F
    from distgraph.bench.scaling import _mlp
    from distgraph.distributed.fsdp import FullyShardedDataParallel, ModuleWrapPolicy
    from distgraph.optim.state_tensors import raw

    dist = dg.distributed
    r, n = dist.rank(), dist.world_size()
    model = _mlp(sizes, seed=0)
    if wrapper == "fsdp":
        model = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    else:
        model = dist.DistributedDataParallel(model)
    opt = dg.optim.Adam(model.parameters(), lr=LR)
    lo, hi = shard_bounds(batch * n, n, r)

    def step(t):
        sel = slice(t * batch * n + lo, t * batch * n + hi)
        opt.zero_grad()
        F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel])).backward()
        opt.step()

    elapsed = timed_steps(step, steps, dist.barrier)
    held = _bytes_held([p.array for p in model.parameters()], [dict(raw(s)) for s in opt.state.values()])
    return elapsed, held


class TorchFSDPRank:
    """One rank of PyTorch FullyShardedDataParallel (FULL_SHARD, a unit per Linear) over gloo, as a Ray actor."""

    def __init__(self, rank, world, port, sizes, seed, mesh=False):
        """`mesh`: over a device mesh of the ranks (its sharded state dicts are then DTensors)."""
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        model = torch_rank_mlp(rank, world, port, sizes, seed)  # (the process group first)
        self.model = FullyShardedDataParallel(
            model, sharding_strategy=ShardingStrategy.FULL_SHARD, auto_wrap_policy=ModuleWrapPolicy({torch.nn.Linear}),
            device_id=torch.device("cpu"), device_mesh=init_device_mesh("cpu", (world,)) if mesh else None,
        )  # fmt: skip
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.torch, self.dist, self.rank, self.world = torch, dist, rank, world

    def run(self, x, y, batch, steps):
        """→ (seconds from the barrier before the first timed step to the barrier after the last, bytes held)."""
        import numpy as np

        x, y = self.torch.from_numpy(np.array(x)), self.torch.from_numpy(np.array(y))
        lo, hi = shard_bounds(batch * self.world, self.world, self.rank)

        def step(t):
            sel = slice(t * batch * self.world + lo, t * batch * self.world + hi)
            self.opt.zero_grad()
            self.torch.nn.functional.cross_entropy(self.model(x[sel]), y[sel]).backward()
            self.opt.step()

        elapsed = timed_steps(step, steps, self.dist.barrier)
        params = [p.detach().numpy() for p in self.model.parameters()]
        state = [{k: v.numpy() for k, v in s.items() if v.dim() > 0} for s in self.opt.state.values()]
        return elapsed, _bytes_held(params, state)

    def close(self):
        self.dist.destroy_process_group()


def _torch_fsdp(x, y, sizes, workers, batch, steps, bind_to):
    from distgraph.distributed import runtime

    port = _free_port()
    ranks = runtime.spawn(TorchFSDPRank, [(r, workers, port, sizes, 0) for r in range(workers)], num_cpus=1)
    try:
        if bind_to == "core":
            runtime.bind_actors(ranks)
        return runtime.gather([a.run.remote(x, y, batch, steps) for a in ranks])
    finally:
        runtime.gather([a.close.remote() for a in ranks])
        runtime.kill(ranks)


def run_fsdp(workers, sizes, batch, steps, repeat, bind_to="core", echo=print):
    """{system: [(samples/s, bytes held by rank 0)] per run}."""
    import distgraph as dg
    from distgraph.datasets import teacher

    (x, y), _ = teacher(samples=int((steps + 3) * batch * workers / 0.8) + 8, features=sizes[0], classes=sizes[-1])
    x = x.astype("float32")
    runs = {}
    for r in range(repeat):
        for system, wrapper in (("distgraph-fsdp", "fsdp"), ("distgraph-ddp", "ddp")):
            ranks = dg.distributed.launch(
                _distgraph_loop, workers=workers, args=(x, y, sizes, batch, steps, wrapper), bind_to=bind_to
            )
            runs.setdefault(system, []).append((workers * batch * steps / max(e for e, _ in ranks), ranks[0][1]))
        ranks = _torch_fsdp(x, y, sizes, workers, batch, steps, bind_to)
        runs.setdefault("torch-fsdp", []).append((workers * batch * steps / max(e for e, _ in ranks), ranks[0][1]))
        echo(f"  round {r + 1}/{repeat}: " + ", ".join(f"{s} {v[-1][0]:,.0f}/s" for s, v in runs.items()))
    return runs


def report(runs):
    median = {s: statistics.median(v for v, _ in rs) for s, rs in runs.items()}
    peer = median["torch-fsdp"]
    return [
        {"system": s, "samples_per_s": median[s], "vs_torch_fsdp": median[s] / peer, "bytes_held": runs[s][0][1],
         "runs": [v for v, _ in runs[s]]}
        for s in runs
    ]  # fmt: skip


@click.command("fsdp")
@click.option("--workers", type=click.IntRange(2), default=2, show_default=True, help="ranks")
@click.option("--sizes", type=CommaList(), default="256,1024,1024,10", show_default=True, help="MLP layer sizes")
@click.option("--batch", type=click.IntRange(1), default=256, show_default=True, help="batch per rank")
@click.option("--steps", type=click.IntRange(1), default=30, show_default=True, help="timed steps per run")
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True, help="runs per system (median)")
@click.option("--bind-to", type=click.Choice(["core", "none"]), default="core", show_default=True)
@json_out_option("fsdp")
def command(workers, sizes, batch, steps, repeat, bind_to, json_out):
    """FullyShardedDataParallel (and DDP) vs PyTorch FSDP: samples/s and bytes a rank holds at rest."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException("bench fsdp compares with PyTorch FSDP: pip install 'distgraph[bench]'") from None
    from distgraph.distributed import runtime

    runtime.init(None, num_cpus=workers)
    click.echo(
        f"fsdp · MLP {'-'.join(map(str, sizes))} · Adam · batch {batch} per rank · {workers} ranks · {machine()}"
    )
    points = report(run_fsdp(workers, tuple(sizes), batch, steps, repeat, bind_to, click.echo))
    rows = [
        [p["system"], f"{p['samples_per_s']:,.0f}", f"{p['vs_torch_fsdp']:.2f}x", f"{p['bytes_held'] / 2**20:.2f}"]
        for p in points
    ]
    click.echo(table(["system", "samples/s", "÷torch-fsdp", "MiB held per rank"], rows))
    config = {"workers": workers, "sizes": sizes, "batch": batch, "steps": steps, "repeat": repeat, "bind_to": bind_to}
    write_json(json_out, {"machine": machine(), "config": config, "points": points}, click.echo)
