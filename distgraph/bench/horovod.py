"""`distgraph bench horovod`: the latency of Horovod's collectives against `dist.all_reduce`, on launched ranks.

Each rank of one `dg.distributed.launch` calls each collective `--calls` times on a small float32 tensor
(`--numel`), the collectives interleaved round by round (`--repeat` rounds, median per collective), so they share
the machine's noise; a barrier starts each round's timing. The figure of a call is the slowest rank's. Horovod's
collectives over the global set each take a join round (`distributed/horovod_join.py`); a tensor that fits rides
in it, and the round is then the whole collective: this shows what that leaves against torch's plain all-reduce.
"""

import time

import click
import numpy as np

from distgraph.bench._util import json_out_option, machine, table, write_json


def _cases(numel):
    import distgraph as dg
    import distgraph.distributed as dist
    import distgraph.distributed.horovod as hvd

    x = dg.tensor(np.ones(numel, np.float32))
    ints = dg.tensor(np.ones(numel, np.int64))
    return {
        "dist.all_reduce": lambda: dist.all_reduce(x, op=dist.ReduceOp.SUM),
        "hvd.allreduce (Sum)": lambda: hvd.allreduce(x, op=hvd.Sum),
        "hvd.allreduce (Average)": lambda: hvd.allreduce(x),
        "hvd.allreduce (int, Average)": lambda: hvd.allreduce(ints),
        "hvd.broadcast": lambda: hvd.broadcast(x, root_rank=0),
        "hvd.allgather": lambda: hvd.allgather(x),
    }


def _on_each_rank(numel, calls, repeat):
    """{collective: median over the rounds of µs per call} on this rank."""
    import distgraph.distributed.horovod as hvd

    hvd.init()
    cases = _cases(numel)
    times = {name: [] for name in cases}
    for _ in range(repeat):
        for name, call in cases.items():
            for _ in range(min(20, calls)):  # warm: segments made, digests cached
                call()
            hvd.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: float(np.median(t)) for name, t in times.items()}


@click.command("horovod")
@click.option("--workers", type=click.IntRange(2), default=2, show_default=True, help="ranks")
@click.option("--numel", type=click.IntRange(1), default=256, show_default=True, help="float32 elements a call")
@click.option("--calls", type=click.IntRange(1), default=200, show_default=True, help="calls a round")
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True, help="rounds (median)")
@json_out_option("horovod")
def command(workers, numel, calls, repeat, json_out):
    """Horovod's collectives (hvd.allreduce, broadcast, allgather) against dist.all_reduce: µs per call."""
    import distgraph.distributed as dist
    from distgraph.distributed import runtime

    click.echo(f"horovod · {workers} ranks · {numel} float32 a call · {machine()}")
    runtime.init(None, num_cpus=workers)
    per_rank = dist.launch(_on_each_rank, workers=workers, args=(numel, calls, repeat), cpus_per_worker=1)
    us = {name: max(r[name] for r in per_rank) for name in per_rank[0]}  # a call ends when its slowest rank's does
    base = us["dist.all_reduce"]
    click.echo(
        table(
            ["call", "µs per call", "÷ dist.all_reduce"], [[n, f"{t:.1f}", f"{t / base:.2f}x"] for n, t in us.items()]
        )
    )
    config = {"workers": workers, "numel": numel, "calls": calls, "repeat": repeat}
    write_json(json_out, {"machine": machine(), "config": config, "us_per_call": us, "per_rank": per_rank}, click.echo)
