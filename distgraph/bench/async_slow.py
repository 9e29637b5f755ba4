"""`distgraph bench async_slow`: sync vs async (stale-synchronous) throughput with one worker slowed down.

What is measured: two `dg.Trainer(..., backend="ray")` runs kept alive side by side, `sync="sync"` and
`sync="async", staleness=S`, same MLP, data, global batch and worker count. Rank `--slow-rank` of each
is made a straggler with `TrainWorker.set_slowdown(--slow-worker)` (its compute phase sleeps
(factor − 1) × its compute time). Each measured epoch is `--steps` batches; the two systems' epochs
alternate `--repeat` times so machine load hits both alike, and each system's figure is the median
epoch's samples/s (the Trainer's own timing). The issue's target: async ≥ 1.4× sync with staleness 2
and one worker slowed 2×. A sync step waits for the straggler every step; an async worker only
waits when the version it would compute on is more than `staleness` versions ahead of the one the
slowest computing worker uses (a 2× straggler stays 2 versions behind: nobody waits at staleness 2).

With the store in the workers' segment (one node), async's last measured epoch is also printed as a
schedule (steps per worker, their waits, the staleness of the pushes) and written as a Chrome trace
next to the JSON (`async_slow.trace.json`).
"""

import statistics

import click

from distgraph.bench._util import CommaList, beside, json_out_option, machine, table, write_json

LR = 0.05


def _trainer(sync, workers, sizes, staleness, cpus, seed):
    import distgraph as dg
    import distgraph.nn.functional as F
    from distgraph import nn, optim

    dg.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers)
    return dg.Trainer(
        model, F.cross_entropy, optim.SGD(model.parameters(), lr=LR), workers=workers, backend="ray", sync=sync,
        staleness=staleness, cpus_per_worker=cpus, progress=False, seed=seed,
    )  # fmt: skip


def _epoch(trainer, data, batch, steps):
    x, y = data
    n = steps * batch
    return trainer.fit((x[:n], y[:n]), epochs=trainer.epoch + 1, batch_size=batch).epochs[-1]["samples_per_s"]


def run(workers, sizes, batch, steps, repeat, staleness, slowdown, slow_rank, cpus, seed=0, echo=print):
    """{mode: {"samples_per_s": median, "repeats": [...]}} for mode in sync, async; with the shared
    async store also "timeline": the AsyncTimeline of async's last measured epoch."""
    import ray

    from distgraph.datasets import teacher
    from distgraph.distributed.timeline import AsyncTimeline

    (x, y), _ = teacher(samples=int(steps * batch / 0.8) + 8, features=sizes[0], classes=sizes[-1], seed=seed)
    share = min(1.0, cpus / (2 * workers))  # both systems alive at once; only one computes at a time
    trainers = {}
    try:
        for mode in ("sync", "async"):
            trainers[mode] = t = _trainer(mode, workers, sizes, staleness, share, seed)
            _epoch(t, (x, y), batch, 3)  # starts the cluster, warms the workers
            ray.get(t._cluster.group.actors[slow_rank].set_slowdown.remote(slowdown))
            _epoch(t, (x, y), batch, 3)
        timeline = AsyncTimeline()
        if trainers["async"]._cluster.async_scheduler is not None:
            trainers["async"]._cluster.async_scheduler.on_worker_stats = timeline.add
        runs = {mode: [] for mode in trainers}
        for r in range(repeat):
            for mode, t in trainers.items():
                timeline.clear()
                runs[mode].append(_epoch(t, (x, y), batch, steps))
            echo(f"  round {r + 1}/{repeat}: " + ", ".join(f"{m} {v[-1]:,.0f}/s" for m, v in runs.items()))
    finally:
        for t in trainers.values():
            t.close()
    out = {m: {"samples_per_s": statistics.median(v), "repeats": v} for m, v in runs.items()}
    return out | ({"timeline": timeline} if timeline.records else {})


@click.command("async_slow")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="workers per system")
@click.option("--sizes", type=CommaList(), default="256,512,512,10", show_default=True, help="MLP layer sizes")
@click.option(
    "--batch", type=click.IntRange(1), default=256, show_default=True, help="global batch (sync: split over workers)"
)
@click.option("--steps", type=click.IntRange(1), default=40, show_default=True, help="batches per measured epoch")
@click.option(
    "--repeat", type=click.IntRange(1), default=3, show_default=True, help="measured epochs per system (median)"
)
@click.option("--staleness", type=click.IntRange(0), default=2, show_default=True, help="async staleness bound")
@click.option("--slow-worker", "slowdown", default=2.0, show_default=True, help="slowdown factor of one worker")
@click.option("--slow-rank", type=click.IntRange(0), default=0, show_default=True, help="which rank is slowed")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one)")
@json_out_option("async_slow")
def command(workers, sizes, batch, steps, repeat, staleness, slowdown, slow_rank, address, json_out):
    """Sync vs async (staleness S) samples/s with one worker slowed; target async ≥ 1.4× sync."""
    from distgraph.distributed import runtime

    layer_sizes = tuple(sizes)
    if not 0 <= slow_rank < workers:
        raise click.BadParameter(f"--slow-rank {slow_rank} is not a rank of {workers} workers")
    runtime.init(address, num_cpus=None if address else workers)
    cpus = runtime.cluster_summary()["resources"].get("CPU", 0)
    click.echo(
        f"async_slow · MLP {'-'.join(map(str, layer_sizes))} · {workers} workers · rank {slow_rank} slowed "
        f"{slowdown:g}x · staleness {staleness} · batch {batch} · {machine()}"
    )
    res = run(workers, layer_sizes, batch, steps, repeat, staleness, slowdown, slow_rank, cpus, echo=click.echo)
    timeline = res.pop("timeline", None)
    ratio = res["async"]["samples_per_s"] / res["sync"]["samples_per_s"]
    rows = [[m, f"{r['samples_per_s']:,.0f}", " ".join(f"{v:,.0f}" for v in r["repeats"])] for m, r in res.items()]
    click.echo(table(["mode", "samples/s (median)", "epochs"], rows))
    click.echo(f"async / sync = {ratio:.2f}x (target ≥ 1.4x: {'met' if ratio >= 1.4 else 'NOT met'})")
    if timeline is not None:
        click.echo(_schedule_summary(timeline, slow_rank))
        trace = timeline.chrome_trace(f"async, rank {slow_rank} slowed {slowdown:g}x")
        write_json(json_out and beside(json_out, ".trace.json"), trace, click.echo)  # async's last epoch
    config = {"workers": workers, "sizes": layer_sizes, "batch": batch, "steps": steps, "repeat": repeat}
    config |= {"staleness": staleness, "slowdown": slowdown, "slow_rank": slow_rank}
    write_json(json_out, {"machine": machine(), "config": config, "results": res, "async_over_sync": ratio}, click.echo)


def _schedule_summary(timeline, slow_rank):
    """Who did how many of async's steps, how long each waited, and how stale the pushes were."""
    stale = timeline.staleness()
    lines = [
        f"async's last epoch: staleness (pushes between a step's claim and its push) mean "
        f"{statistics.fmean(stale):.2f}, max {max(stale)}; per worker:"
    ]
    for rank, w in timeline.per_worker().items():
        busy = w["compute_s"] + w["push_s"] + w["wait_s"]
        lines.append(
            f"  worker {rank}{' (slowed)' if rank == slow_rank else ''}: {w['steps']} steps, compute "
            f"{w['compute_s'] * 1e3:.0f} ms, push {w['push_s'] * 1e3:.1f} ms, waiting between steps "
            f"{w['wait_s'] * 1e3:.1f} ms ({w['wait_s'] / busy:.0%})"
        )
    return "\n".join(lines)
