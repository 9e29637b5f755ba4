"""`distgraph bench allreduce`: distgraph's shm all-reduce against torch gloo, same ranks, same run.

Each rank times its own all-reduce calls (median); sizes are interleaved peer by peer so machine
noise hits both. busbw = algbw × 2(n−1)/n (the nccl-tests convention), algbw = bytes / time.
"""

import socket

import click

from distgraph.bench._util import machine, table, write_json


class GlooRank:
    """torch.distributed with the gloo backend in one Ray actor: the peer distgraph is measured against."""

    def __init__(self, rank, world, port):
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        self.torch, self.dist = torch, dist

    def time_reduce(self, nbytes, iters, dtype="float32"):
        import time

        import numpy as np

        t = self.torch.ones(nbytes // 4, dtype=self.torch.float32)
        self.dist.all_reduce(t)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            self.dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def close(self):
        self.dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@click.command("allreduce")
@click.option("--ranks", default=2, show_default=True, help="number of ranks (Ray actors)")
@click.option("--sizes", default="1,4,16,64,256", show_default=True, help="buffer sizes in MB")
@click.option("--iters", default=10, show_default=True)
@click.option("--json-out", default=None, help="write the figures as JSON here")
def command(ranks, sizes, iters, json_out):
    """All-reduce bandwidth: distgraph shm vs torch gloo."""
    import uuid

    from distgraph.distributed import runtime
    from distgraph.distributed.allreduce import ReduceRank

    runtime.init(num_cpus=ranks)
    group = f"dgbench{uuid.uuid4().hex[:8]}"
    ours = runtime.spawn(ReduceRank, [(r, ranks, group) for r in range(ranks)], num_cpus=0.5)
    try:
        port = _free_port()
        gloo = runtime.spawn(GlooRank, [(r, ranks, port) for r in range(ranks)], num_cpus=0.5)
    except ImportError:
        gloo = None
    rows, records = [], []
    factor = 2 * (ranks - 1) / ranks
    for mb in [float(s) for s in sizes.split(",")]:
        nbytes = int(mb * 2**20)
        n_iter = max(3, iters if mb <= 64 else iters // 2)
        t_ours = max(runtime.gather([a.time_reduce.remote(nbytes, n_iter) for a in ours]))
        t_gloo = max(runtime.gather([a.time_reduce.remote(nbytes, n_iter) for a in gloo])) if gloo else float("nan")
        t_slot = max(runtime.gather([a.time_reduce.remote(nbytes, n_iter, in_place=True) for a in ours]))
        bus = {k: nbytes / t * factor / 1e9 for k, t in (("shm", t_ours), ("slot", t_slot), ("gloo", t_gloo))}
        rows.append(
            [f"{mb:g}", bus["shm"], bus["slot"], bus["gloo"], bus["shm"] / bus["gloo"], bus["slot"] / bus["gloo"]]
        )
        records.append(
            {"mb": mb, "seconds": {"shm": t_ours, "shm_in_place": t_slot, "gloo": t_gloo}, "busbw_GBps": bus}
        )
    runtime.gather([a.close.remote() for a in ours])
    click.echo(f"all-reduce, {ranks} ranks, float32 · {machine()}")
    click.echo(table(["MB", "shm busbw", "shm in-place busbw", "gloo busbw", "shm / gloo", "in-place / gloo"], rows))
    click.echo(
        "busbw in GB/s = bytes/time × 2(n−1)/n; shm packs separate arrays into the segment, in-place reduces a "
        "gradient buffer that already lives in it (gradient_as_bucket_view)"
    )
    if json_out:
        write_json(json_out, {"ranks": ranks, "results": records, "machine": machine()})
