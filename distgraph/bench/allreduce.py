"""`distgraph bench allreduce`: distgraph's shm all-reduce against torch gloo, same ranks, same run.

One Ray actor per rank hosts every peer, so all peers run in the same processes on the same cores:

- `shm`        distgraph's shm backend on a private numpy array, result written back into it
               (the cost a caller with its own gradient array pays);
- `shm slot`   the same backend on a buffer that already lives in the shared segment (what the
               GradBucketer does: gradients are packed into the bucket as backward produces them);
- `ray gloo`   distgraph's gloo backend: `ray.util.collective`, which Ray 2.60 runs on torch.distributed;
- `torch gloo` `torch.distributed.all_reduce` with the gloo backend: the reference.

Sizes are MiB (2**20 bytes; bandwidths are GB/s, 1e9 bytes). Each rank times its own calls; for every size the peers take turns, round by round, so machine noise
hits all of them; a round's time is the slowest rank's median, a peer's time the median over rounds.
algbw = bytes / time, busbw = algbw × 2(n−1)/n (the nccl-tests convention). The memcpy row is one
rank copying a private buffer of the same size: the ceiling of anything that moves the data once.

What bounds shm beyond a few MB is DRAM traffic, not synchronisation. Per rank, for S bytes and two
ranks (each store also reads its cache line first): `shm slot` reads 2 × S/2 and writes S/2 → ~2 S;
`shm` also packs S/2 into the segment, writes its reduced half back and copies the peer's half out
→ ~5.5 S. Measured here the two run at ~22 GB/s of combined traffic, hence slot ≈ 3× shm.
"""

import socket
import statistics
import time
import uuid

import click
import numpy as np

from distgraph.bench._util import CommaList, json_out_option, machine, table, write_json

PEERS = ("shm", "shm slot", "ray gloo", "torch gloo")


class BenchRank:
    """One rank with every peer's communicator (a plain class: the bench spawns it as a Ray actor)."""

    def __init__(self, rank, world, group, port):
        from distgraph.distributed.allreduce import make_allreduce

        self.shm = make_allreduce(rank, world, "shm", group)
        self.dist = self.ray_gloo = None
        self.buffers = {}
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        self.torch, self.dist = torch, dist
        self.ray_gloo = make_allreduce(rank, world, "gloo", f"{group}gloo")

    def peers(self):
        return [p for p in PEERS if "gloo" not in p or self.dist is not None]

    def _call(self, peer, nbytes):
        """The timed operation of `peer` for `nbytes` (its buffer is made, and warmed up, on first use)."""
        key = (peer, nbytes)
        if key not in self.buffers:
            count = nbytes // 4
            if peer == "shm slot":
                buf = self.shm.buffer(np.float32, count, tag="bench")
                buf[:] = 1
                self.buffers[key] = lambda: self.shm.allreduce(buf)
            elif peer == "torch gloo":
                t = self.torch.ones(count, dtype=self.torch.float32)
                self.buffers[key] = lambda: self.dist.all_reduce(t)
            elif peer == "memcpy":
                src, dst = np.ones(count, np.float32), np.zeros(count, np.float32)
                self.buffers[key] = lambda: np.copyto(dst, src)
            else:
                comm = self.shm if peer == "shm" else self.ray_gloo
                arr = np.ones(count, np.float32)
                self.buffers[key] = lambda: comm.allreduce(arr)
            self.buffers[key]()
        return self.buffers[key]

    def time(self, peer, nbytes, iters):
        """Median seconds of `iters` calls, timed inside this rank."""
        call, times = self._call(peer, nbytes), []
        for _ in range(iters):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def drop(self, nbytes):
        """Free the buffers of one size (256 MiB × 4 peers adds up)."""
        self.buffers = {k: v for k, v in self.buffers.items() if k[1] != nbytes}

    def close(self):
        self.shm.close()
        if self.dist is not None:
            self.ray_gloo.close()
            self.dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plan(mb, iters):
    """(rounds, calls per round) for a size: fewer calls for big buffers keeps the run short."""
    if mb >= 256:
        return 3, 1
    if mb >= 64:
        return 3, 2
    return 3, max(2, iters // 3)


HEADERS = ["MiB", "peer", "ms", "algbw GB/s", "busbw GB/s", "speed-up vs torch gloo"]


def size_rows(mib, nbytes, seconds, copy, factor):
    """The table's rows for one size: each peer's ms, algbw, busbw and speed-up (torch gloo's time ÷ the
    peer's, as `bench io`'s: higher is better), then the one-rank memcpy."""
    ref = seconds.get("torch gloo")
    rows = []
    for p, t in seconds.items():
        alg = nbytes / t / 1e9
        rows.append([f"{mib:g}", p, t * 1e3, alg, alg * factor, ref / t if ref else float("nan")])
    return rows + [[f"{mib:g}", "memcpy (1 rank)", copy * 1e3, nbytes / copy / 1e9, "", ""]]


@click.command("allreduce")
@click.option(
    "--ranks", type=click.IntRange(1), default=2, show_default=True, help="number of ranks (one Ray actor each)"
)
@click.option(
    "--sizes", type=CommaList(float), default="1,4,16,64,256", show_default=True, help="buffer sizes in MiB (float32)"
)
@click.option(
    "--iters", type=click.IntRange(1), default=15, show_default=True, help="calls per peer and size (small sizes)"
)
@json_out_option("allreduce")
def command(ranks, sizes, iters, json_out):
    """All-reduce algbw/busbw: distgraph shm (and its gloo backend) vs torch.distributed gloo."""
    from distgraph.distributed import runtime

    runtime.init(num_cpus=ranks)
    group = f"dgbench{uuid.uuid4().hex[:8]}"
    port = _free_port()
    actors = runtime.spawn(BenchRank, [(r, ranks, group, port) for r in range(ranks)], num_cpus=1)
    peers = runtime.gather(actors[0].peers.remote(), timeout_s=120)
    factor = 2 * (ranks - 1) / ranks
    rows, records = [], []
    try:
        for mb in sizes:
            nbytes = int(mb * 2**20) // 4 * 4
            rounds, calls = _plan(mb, iters)
            samples = {p: [] for p in peers}
            for _ in range(rounds):
                for p in peers:
                    samples[p].append(max(runtime.gather([a.time.remote(p, nbytes, calls) for a in actors])))
            copy = runtime.gather(actors[0].time.remote("memcpy", nbytes, calls))
            runtime.gather([a.drop.remote(nbytes) for a in actors])
            seconds = {p: statistics.median(v) for p, v in samples.items()}
            rows += size_rows(mb, nbytes, seconds, copy, factor)
            records.append(
                {
                    "mb": mb,
                    "seconds": seconds,
                    "algbw_GBps": {p: nbytes / t / 1e9 for p, t in seconds.items()},
                    "busbw_GBps": {p: nbytes / t / 1e9 * factor for p, t in seconds.items()},
                    "memcpy_GBps": nbytes / copy / 1e9,
                    "rounds": rounds,
                    "calls_per_round": calls,
                }
            )
    finally:
        runtime.gather([a.close.remote() for a in actors])
        runtime.kill(actors)
    click.echo(f"all-reduce, {ranks} ranks, float32 · {machine()}")
    click.echo(table(HEADERS, rows))
    click.echo(
        f"busbw = algbw × 2(n−1)/n = algbw × {factor:g}; speed-up vs torch gloo = torch gloo's time ÷ the peer's "
        "(> 1: faster than torch gloo)"
    )
    write_json(json_out, {"ranks": ranks, "results": records, "machine": machine()}, click.echo)
