"""`distgraph bench warm`: a Trainer's whole life (build, a short fit, close) in new processes, and in the
workers the Trainer before it left warm (`keep_workers_s`, distributed/worker_pool.py).

What is measured: `--rounds` rounds of two blocks on the same small MLP. The cold block runs `--trainers`
Trainers one after another with keep_workers_s=0 (the default: each starts its workers — and with
`--allreduce store` its parameter-store shards — as new Ray actors, new processes). The warm block sets
keep_workers_s and runs one Trainer to park its workers (not counted), then `--trainers` more, each taking
the processes the one before it closed. Each figure is the median seconds from `dg.Trainer(...)` to
`close()` returning, and the processes each Trainer started (its actors' process ids not seen before).
A hyperparameter sweep, or a notebook cell run again, is a row of such Trainers. Ray Train and PyTorch
start new processes for each run, as the cold block does; it is the peer.

`--launch`: each run is a `dg.distributed.launch` of a loop of one's own instead (the same MLP and steps,
`DistributedOptimizer`), from the call to its return; torchrun starts new processes for each, as the cold
block does.
"""

import statistics
import time

import click
import numpy as np

from distgraph.bench._util import CommaList, json_out_option, machine, table, write_json

KEEP_S = 60.0  # the warm block's keep_workers_s: longer than any Trainer here lives


def _life(sizes, workers, allreduce, batch, steps, seen):
    """Build, fit one epoch of `steps` batches, close → (seconds, processes started that `seen` lacked)."""
    import distgraph as dg
    import distgraph.nn.functional as F
    from distgraph import optim
    from distgraph.distributed import runtime

    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], steps * batch)
    started = time.perf_counter()
    model = _mlp(sizes)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = dg.Trainer(model, F.cross_entropy, opt, workers=workers, backend="ray", allreduce=allreduce,
                         progress=False)  # fmt: skip
    with trainer:
        trainer.fit((x, y), epochs=1, batch_size=batch)
        pids = set(runtime.local_pids(trainer._cluster.group.actors + trainer._cluster.stores))
    return _since(started, pids, seen)


def _mlp(sizes):
    """The MLP of `sizes` (ReLU between the layers), from seed 0."""
    import distgraph as dg
    from distgraph import nn

    dg.manual_seed(0)
    layers = [m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
    return nn.Sequential(*layers)


def _since(started, pids, seen):
    """(seconds since `started`, how many of `pids` `seen` lacked: processes started); `seen` takes them."""
    seconds, new = time.perf_counter() - started, len(pids - seen)
    seen |= pids
    return seconds, new


def _loop(sizes, batch, steps):
    """A launched rank's loop of its own: the MLP, `steps` steps of `batch` → this rank's process id."""
    import os

    import distgraph as dg
    import distgraph.distributed as dist
    import distgraph.nn.functional as F
    from distgraph import optim

    model = _mlp(sizes)
    opt = dist.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    rng = np.random.default_rng(dist.rank())
    for _ in range(steps):
        x = dg.tensor(rng.standard_normal((batch, sizes[0])).astype(np.float32))
        y = dg.tensor(rng.integers(0, sizes[-1], batch))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return os.getpid()


def _launch_life(sizes, workers, batch, steps, seen):
    """One launch of `_loop` → (seconds, processes started that `seen` lacked)."""
    import distgraph.distributed as dist

    started = time.perf_counter()
    pids = set(dist.launch(_loop, workers=workers, args=(sizes, batch, steps)))
    return _since(started, pids, seen)


def run(workers, sizes, allreduce, batch, steps, trainers, rounds, echo=print, launch=False):
    """{"cold" | "warm": {"seconds", "processes", "runs"}} with the medians over every counted Trainer (or
    launch, with `launch`)."""
    from distgraph.distributed import worker_pool

    runs, seen = {"cold": [], "warm": []}, set()
    if launch:
        life = lambda: _launch_life(sizes, workers, batch, steps, seen)  # noqa: E731
    else:
        life = lambda: _life(sizes, workers, allreduce, batch, steps, seen)  # noqa: E731
    try:
        for r in range(rounds):
            worker_pool.set_keep_seconds(0)
            runs["cold"] += [life() for _ in range(trainers)]
            worker_pool.set_keep_seconds(KEEP_S)
            life()  # parks the workers the block's Trainers take
            runs["warm"] += [life() for _ in range(trainers)]
            echo(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(f"{m} {statistics.median(s for s, _ in v[-trainers:]):.2f} s" for m, v in runs.items())
            )
    finally:
        worker_pool.set_keep_seconds(None)
    return {
        mode: {
            "seconds": statistics.median(s for s, _ in v),
            "processes": statistics.median(n for _, n in v),
            "runs": [[round(s, 4), n] for s, n in v],
        }
        for mode, v in runs.items()
    }


@click.command("warm")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--sizes", type=CommaList(), default="64,128,10", show_default=True, help="MLP layer sizes")
@click.option("--allreduce", type=click.Choice(["auto", "store"]), default="auto", show_default=True,
              help="store: the parameter-store shards are actors too (as across nodes)")  # fmt: skip
@click.option("--batch", type=click.IntRange(2), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True, help="batches in each Trainer's fit")
@click.option("--trainers", type=click.IntRange(1), default=4, show_default=True, help="counted Trainers a block")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True, help="cold + warm blocks")
@click.option("--launch", is_flag=True, help="launch after launch (a loop of one's own) instead of Trainers")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one)")
@json_out_option("warm")
def command(workers, sizes, allreduce, batch, steps, trainers, rounds, launch, address, json_out):
    """Trainer after Trainer (or launch after launch): each in new worker processes vs in the warm ones the
    one before it left."""
    from distgraph.distributed import runtime

    sizes = tuple(sizes)
    runtime.init(address, num_cpus=None if address else workers)
    run_name = "launch" if launch else "Trainer"
    how = "a loop of one's own (DistributedOptimizer)" if launch else f"allreduce {allreduce}"
    click.echo(
        f"warm · MLP {'-'.join(map(str, sizes))} · {workers} workers · {how} · {steps} steps of "
        f"{batch} a {run_name} · {trainers} {run_name}{'es' if launch else 's'} × {rounds} rounds a mode · {machine()}"
    )
    res = run(workers, sizes, allreduce, batch, steps, trainers, rounds, echo=click.echo, launch=launch)
    rows = [[m, f"{r['seconds']:.3f}", f"{r['processes']:g}"] for m, r in res.items()]
    click.echo(table(["workers", f"s a {run_name} (median)", f"processes started a {run_name}"], rows))
    ratio = res["cold"]["seconds"] / res["warm"]["seconds"]
    span = "launch takes from its call to its return" if launch else "Trainer takes from its start to its close"
    click.echo(f"new processes / warm workers: {ratio:.2f}x the time a {span}")
    config = {"workers": workers, "sizes": sizes, "allreduce": allreduce, "batch": batch, "steps": steps,
              "trainers": trainers, "rounds": rounds, "launch": launch}  # fmt: skip
    write_json(json_out, {"machine": machine(), "config": config, "results": res, "cold_over_warm": ratio}, click.echo)
