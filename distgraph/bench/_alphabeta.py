"""An α-β model of data-parallel and pipeline training, to predict what this machine cannot run.

Per step and worker: compute `t_compute` (forward + backward; backward is `backward_fraction` of it),
then the gradient all-reduce of `grad_bytes`:

    ring      T = 2(n−1)·α + 2(n−1)/n · bytes/β
    tree      T = 2·⌈log2 n⌉·(α + bytes/β)        (latency-bound small messages)
    hierarchical (g GPUs per server): ring inside the server over the intra link, ring across
              servers over the network for 1/g of the bytes per GPU, all-gather inside the server

Communication overlaps the backward pass (gradients of late layers are ready first): only
max(0, T − overlap·t_backward) is exposed. Pipeline stages add the bubble (k−1)/(m+k−1) of
GPipe/1F1B with m micro-batches. Weak-scaling efficiency is t_step(1)/t_step(n).
"""

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    t_compute: float  # seconds per step on one worker (forward + backward), at the per-worker batch
    grad_bytes: float  # bytes all-reduced per step
    bandwidth: float  # bytes/s per worker on the network link (β)
    latency: float = 5e-6  # seconds per message (α)
    backward_fraction: float = 2 / 3
    overlap: float = 1.0  # share of the backward pass communication may hide behind
    algorithm: str = "ring"  # ring | tree | hierarchical
    gpus_per_server: int = 1
    intra_bandwidth: float = 10e9  # bytes/s inside a server (PCIe/NVLink) for hierarchical
    overhead: float = 0.0  # fixed seconds per step (framework)
    overhead_per_call: float = 0.0  # driver seconds per dispatched actor call; a data-parallel step makes
    # 2n calls (n worker steps + n parameter-store shard updates), submitted one after another
    pipeline_stages: int = 1
    micro_batches: int = 1


def allreduce_time(n, nbytes, bandwidth, latency, algorithm="ring", gpus_per_server=1, intra_bandwidth=10e9):
    if n <= 1:
        return 0.0
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(n)) * (latency + nbytes / bandwidth)
    if algorithm == "hierarchical" and gpus_per_server > 1:
        g = min(gpus_per_server, n)
        servers = math.ceil(n / g)
        inside = 2 * (g - 1) * latency + 2 * (g - 1) / g * nbytes / intra_bandwidth
        # g rings (one per GPU's 1/g share) cross the servers at once, sharing the server's NIC
        across = allreduce_time(servers, nbytes / g, bandwidth / g, latency, "ring")
        return inside + across
    return 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth


def bubble(stages, micro_batches):
    return (stages - 1) / (micro_batches + stages - 1)


def step_time(cfg, n):
    comm = allreduce_time(n, cfg.grad_bytes, cfg.bandwidth, cfg.latency, cfg.algorithm, cfg.gpus_per_server,
                          cfg.intra_bandwidth)  # fmt: skip
    hidden = cfg.overlap * cfg.backward_fraction * cfg.t_compute
    exposed = max(0.0, comm - hidden)
    compute = cfg.t_compute
    if cfg.pipeline_stages > 1:
        compute = compute / (1 - bubble(cfg.pipeline_stages, cfg.micro_batches))
    overhead = cfg.overhead + cfg.overhead_per_call * 2 * n
    return {"compute": compute, "comm": comm, "exposed_comm": exposed, "overhead": overhead,
            "step": compute + exposed + overhead}  # fmt: skip


def predict(cfg, workers, samples_per_step=1):
    """Weak scaling over `workers`: per point the step-time parts, samples/s and efficiency vs 1 worker."""
    base = step_time(replace(cfg), 1)["step"]
    rows = []
    for n in workers:
        t = step_time(cfg, n)
        rows.append(
            {"workers": n, **t, "samples_per_s": n * samples_per_step / t["step"], "efficiency": base / t["step"]}
        )
    return rows


# Horovod's README: "90% scaling efficiency for both Inception V3 and ResNet-101" on 128 servers with
# 4 Pascal GPUs each, connected by RoCE-capable 25 Gbit/s network interfaces.
HOROVOD_PUBLISHED_EFFICIENCY = 0.90
RESNET101_PARAMS = 44.5e6


def horovod_config(t_compute=0.46, algorithm="hierarchical", overlap=1.0):
    """ResNet-101 on P100s: 44.5 M fp32 gradients (178 MB); 25 Gbit/s shared by a server's 4 GPUs.

    t_compute 0.46 s: batch 64 per GPU at ~140 images/s, the order of published fp32 ResNet-101
    training throughput on one P100 in TensorFlow (tf_cnn_benchmarks-era figures) — an assumption
    stated here, not a measurement of ours.
    """
    return Config(
        t_compute=t_compute,
        grad_bytes=RESNET101_PARAMS * 4,
        bandwidth=25e9 / 8 / (4 if algorithm == "ring" else 1),  # the NIC (a flat ring: shared by 4 GPUs)
        latency=10e-6,
        algorithm=algorithm,
        gpus_per_server=4,
        intra_bandwidth=10e9,  # PCIe 3.0 x16 between a server's GPUs
        overlap=overlap,
    )
