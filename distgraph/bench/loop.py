"""`distgraph bench loop`: a training loop of one's own on Ray workers against PyTorch DDP's.

What is measured: `dg.distributed.launch` running a hand-written loop — `broadcast_parameters`, then
steps of forward, cross-entropy, backward and `DistributedOptimizer(SGD).step()` (the gradients
averaged in one fused all-reduce, then every rank steps the whole model: Horovod's scheme), and the same
loop with the model in `DistributedDataParallel` instead (row "distgraph-ddp") — against
the same loop under PyTorch DistributedDataParallel over gloo (one Ray actor per rank, the scaling
bench's `DDPPeer`). Same MLP, teacher data, per-worker batch (weak scaling), one BLAS/intra-op thread
per rank. A run is `--steps` timed steps after 3 warm-up steps, from a barrier to a barrier; the two
systems' runs alternate `--repeat` times per worker count, and each figure is the median run.
Efficiency = samples/s(W) ÷ (W × samples/s(1)) of the same system.

Unlike the Trainer's data parallelism (`bench scaling`), this loop starts its workers at each launch,
reduces private gradient arrays (copied into the segment and back) and updates every parameter on
every rank: what a user's own loop gets with no more than the optimizer wrapped.
"""

import statistics

import click

from distgraph.bench._util import CommaList, json_out_option, machine, table, timed_steps, write_json

LR = 0.05


def _own_loop(x, y, sizes, batch, steps, wrapper="optimizer"):
    """One rank's timed steps → seconds from the barrier before the first to the barrier after the last.
    `wrapper`: "optimizer" (Horovod's DistributedOptimizer) or "ddp" (torch's DistributedDataParallel)."""
    import distgraph as dg
    import distgraph.nn.functional as F
    from distgraph.bench.scaling import _mlp

    dist = dg.distributed
    r, n = dist.rank(), dist.world_size()
    model = _mlp(sizes, seed=0)
    if wrapper == "ddp":
        model = dist.DistributedDataParallel(model)
        opt = dg.optim.SGD(model.parameters(), lr=LR)
    else:
        dist.broadcast_parameters(model)
        opt = dist.DistributedOptimizer(dg.optim.SGD(model.parameters(), lr=LR))

    def step(t):
        lo = t * batch * n + r * batch
        loss = F.cross_entropy(model(dg.tensor(x[lo : lo + batch])), dg.tensor(y[lo : lo + batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed_steps(step, steps, dist.barrier)


def run_loop(workers, sizes, batch, steps, repeat, bind_to="core", echo=print):
    """{(system, W): [samples/s of each run]} for distgraph's own loop (DistributedOptimizer; the
    DistributedDataParallel wrapper) and torch's DDP."""
    import distgraph as dg
    from distgraph.bench.scaling import DDPPeer
    from distgraph.datasets import teacher

    (x, y), _ = teacher(samples=int(steps * batch * max(workers) / 0.8) + 8, features=sizes[0], classes=sizes[-1])
    runs = {}
    for r in range(repeat):
        for w in workers:
            for system, wrapper in (("distgraph", "optimizer"), ("distgraph-ddp", "ddp")):
                args = (x, y, sizes, batch, steps, wrapper)
                elapsed = max(dg.distributed.launch(_own_loop, workers=w, args=args, bind_to=bind_to))
                runs.setdefault((system, w), []).append(w * batch * steps / elapsed)
            ddp = DDPPeer(w, (x, y), sizes, bind_to=bind_to)
            try:
                ddp.warm(w * batch)
                runs.setdefault(("torch-ddp", w), []).append(ddp.epoch(w * batch, steps)["samples_per_s"])
            finally:
                ddp.close()
        echo(f"  round {r + 1}/{repeat}: " + ", ".join(f"{s} W={w} {v[-1]:,.0f}/s" for (s, w), v in runs.items()))
    return runs


def report(runs):
    """Rows of (W, system, median samples/s, efficiency, ÷ DDP) and the same as dicts."""
    median = {k: statistics.median(v) for k, v in runs.items()}
    points = []
    for (system, w), value in sorted(median.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        one = median.get((system, 1))
        ddp = median.get(("torch-ddp", w))
        points.append({
            "workers": w, "system": system, "samples_per_s": value, "runs": runs[system, w],
            "efficiency": value / (w * one) if one else None, "vs_ddp": value / ddp if ddp else None,
        })  # fmt: skip
    return points


@click.command("loop")
@click.option("--workers", type=CommaList(), default="1,2", show_default=True, help="worker counts, comma-separated")
@click.option("--sizes", type=CommaList(), default="256,512,512,10", show_default=True, help="MLP layer sizes")
@click.option("--batch", type=click.IntRange(1), default=512, show_default=True, help="batch per worker")
@click.option("--steps", type=click.IntRange(1), default=40, show_default=True, help="timed steps per run")
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True, help="runs per system (median)")
@click.option("--bind-to", type=click.Choice(["core", "none"]), default="core", show_default=True)
@json_out_option("loop")
def command(workers, sizes, batch, steps, repeat, bind_to, json_out):
    """A training loop of one's own (launch + DistributedOptimizer or DistributedDataParallel) vs PyTorch
    DDP's, samples/s."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException("bench loop compares with PyTorch DDP: pip install 'distgraph[bench]'") from None
    from distgraph.distributed import runtime

    runtime.init(None, num_cpus=max(workers))
    click.echo(f"loop · MLP {'-'.join(map(str, sizes))} · batch {batch} per worker · {steps} steps · {machine()}")
    points = report(run_loop(workers, tuple(sizes), batch, steps, repeat, bind_to, click.echo))
    rows = [
        [p["workers"], p["system"], f"{p['samples_per_s']:,.0f}",
         "—" if p["efficiency"] is None else f"{100 * p['efficiency']:.0f}%",
         "—" if p["vs_ddp"] is None else f"{p['vs_ddp']:.2f}x"]
        for p in points
    ]  # fmt: skip
    click.echo(table(["W", "system", "samples/s", "efficiency", "÷ddp"], rows))
    config = {"workers": workers, "sizes": sizes, "batch": batch, "steps": steps, "repeat": repeat, "bind_to": bind_to}
    write_json(json_out, {"machine": machine(), "config": config, "points": points}, click.echo)
