"""An α-β model of data-parallel (and pipelined) training, to predict what this machine cannot run.

Weak scaling: every worker runs the same per-worker batch, so the ideal is n × the 1-GPU throughput.
One step of one worker takes

    step = compute + exposed communication + overhead

- compute: a measured `step_time` (forward + backward of one worker step), or `sample_flops · batch /
  flops` (FLOPs per sample over the FLOP/s a GPU achieves).
- all-reduce of the gradients (`params · bytes_per_grad` bytes S, sent as `buckets` separate
  all-reduces: tensor fusion or DDP buckets make it a few, one per tensor makes it hundreds):

      ring          T = buckets · 2(n−1)·α  +  2(n−1)/n · S/β
      tree          T = 2⌈log2 n⌉ · (buckets·α + S/β)      binary tree, reduce then broadcast, unpipelined
      hierarchical  ring inside each server over the intra link (reduce-scatter + all-gather), and a
                    ring across the servers: each of a server's g GPUs carries S/g over 1/g of the NIC

  With g GPUs per server a flat ring is laid out server by server (as NCCL does), so each server's
  NIC carries one ring hop: β is min(network, intra) and the bandwidth term is unchanged; what the
  hierarchy saves is latency, 2(s−1) + 2(g−1) hops instead of 2(n−1).
- overlap: gradients of the last layers are ready first, so communication can run under the rest of
  backward: only max(0, T − overlap · backward_fraction · compute) is exposed.
- pipeline: with k stages n GPUs are k stages × n/k replicas; a stage computes 1/k of the model on m
  micro-batches and idles for the bubble (k−1)/(m+k−1) of the step, so its step is
  compute/k / (1 − bubble); the n/k replicas of a stage all-reduce 1/k of the gradients (a server
  holds consecutive stages, so g/k of a stage's replicas share it). Activation transfers between
  stages are not modelled.
- contention: workers that share a node share its host — CPU cores, memory bandwidth, PCIe root —
  so a worker computes slower while its neighbours compute too. `compute_contention` is that
  slowdown (contended / alone, measured with the node's workers computing at once); it applies when
  more than one worker sits on a node (min(n, gpus_per_server) > 1). 1.0: dedicated GPUs.
- imbalance: a synchronous step waits at the all-reduce for the slowest rank, so its compute is the
  expected maximum over n ranks, not the mean. With per-step compute times of coefficient of
  variation `compute_jitter` (σ/μ) that is compute · (1 + cv · E[max of n standard normals]):
  0.56 σ for 2 ranks, 3.2 σ for 1,024 — jitter a single worker never notices costs a large job.
- update: the optimizer update, `update_time` seconds for all parameters on one worker; every rank
  repeats it (DDP), or each updates its own 1/n (`update_sharded`, ZeRO stage 1 as `zero.py` does).
- overhead: a fixed cost per step plus serial driver dispatch per worker (`dispatch_per_worker · n`).

Not modelled: input pipelines, congestion and heavy-tailed stragglers (jitter is taken as normal); so
where overlap is total and jitter zero the model predicts 100 %. No Ray here: the model is pure
arithmetic, callable with measured numbers.
"""

import math
from dataclasses import asdict, dataclass, replace
from functools import cache

from distgraph.errors import ConfigError

WORKERS = tuple(2**i for i in range(11))  # 1 .. 1,024
ALGORITHMS = ("ring", "tree", "hierarchical")


@dataclass(frozen=True)
class Config:
    step_time: float | None = None  # measured seconds of one worker step (forward + backward) at `batch`
    sample_flops: float | None = None  # or: forward + backward FLOPs per sample ...
    flops: float | None = None  # ... over the FLOP/s one GPU achieves
    batch: int = 64  # samples per worker step
    params: float = 0.0  # parameters whose gradients are all-reduced
    bytes_per_grad: int = 4  # fp32
    buckets: int = 1  # separate all-reduces per step (fused buffers, DDP buckets or tensors)
    bandwidth: float = 12.5e9  # β: bytes/s of a worker's (a server's) network link
    latency: float = 5e-6  # α: seconds per message hop
    algorithm: str = "ring"
    gpus_per_server: int = 1
    intra_bandwidth: float = 10e9  # bytes/s between the GPUs of a server (PCIe 3.0 x16 ≈ 10 GB/s)
    backward_fraction: float = 2 / 3  # backward ≈ 2 × forward
    overlap: float = 0.0  # share of the backward pass that communication can hide behind
    compute_contention: float = 1.0  # compute slowdown while a node's workers all compute (1: dedicated)
    compute_jitter: float = 0.0  # σ/μ of a worker's compute time per step (the barrier waits for the slowest)
    update_time: float = 0.0  # seconds of the optimizer update of all parameters on one worker
    update_sharded: bool = False  # each of n ranks updates its own 1/n (ZeRO stage 1) instead of all
    overhead: float = 0.0  # fixed seconds per step
    dispatch_per_worker: float = 0.0  # driver seconds per worker per step, issued one after another
    pipeline_stages: int = 1
    micro_batches: int = 1
    workers: tuple = WORKERS

    def __post_init__(self):
        """A value the arithmetic cannot take (a zero bandwidth divides by zero, an overlap above 1 hides more
        than the backward pass) is a ConfigError naming the field, not a ZeroDivisionError from inside."""
        positive = ("bandwidth", "intra_bandwidth", "batch", "bytes_per_grad", "buckets", "gpus_per_server",
                    "pipeline_stages", "micro_batches", "compute_contention")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"simulator: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("step_time", "sample_flops", "flops"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"simulator: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("params", "latency", "compute_jitter", "update_time", "overhead", "dispatch_per_worker"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"simulator: {name} must be ≥ 0, got {getattr(self, name)!r}")
        for name in ("overlap", "backward_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"simulator: {name} must be between 0 and 1, got {getattr(self, name)!r}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"simulator: algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if not any(n % self.pipeline_stages == 0 for n in self.workers):
            raise ConfigError(
                f"simulator: no worker count in {list(self.workers)} splits into {self.pipeline_stages} pipeline stages"
            )

    @property
    def grad_bytes(self):
        return self.params * self.bytes_per_grad

    def compute_time(self):
        if self.step_time is not None:
            return self.step_time
        if self.sample_flops and self.flops:
            return self.sample_flops * self.batch / self.flops
        raise ConfigError("simulator: give step_time, or sample_flops and flops, to set the compute time")


def ring_time(n, nbytes, bandwidth, latency, buckets=1):
    """Ring all-reduce (reduce-scatter + all-gather) of `nbytes` over n ranks."""
    if n <= 1:
        return 0.0
    return buckets * 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth


def tree_time(n, nbytes, bandwidth, latency, buckets=1):
    """Binary-tree reduce to the root, then broadcast back: 2⌈log2 n⌉ hops, each carrying all bytes."""
    if n <= 1:
        return 0.0
    return 2 * math.ceil(math.log2(n)) * (buckets * latency + nbytes / bandwidth)


def allreduce_time(cfg, n, nbytes=None):
    """Seconds for one step's gradient all-reduce over n data-parallel ranks."""
    nbytes = cfg.grad_bytes if nbytes is None else nbytes
    if n <= 1:
        return 0.0
    g = min(cfg.gpus_per_server, n)
    if n <= cfg.gpus_per_server:  # one server: the network is not involved
        beta = cfg.intra_bandwidth
    elif g > 1:  # a ring or tree laid out server by server crosses each NIC once per direction
        beta = min(cfg.bandwidth, cfg.intra_bandwidth)
    else:
        beta = cfg.bandwidth
    if cfg.algorithm == "tree":
        return tree_time(n, nbytes, beta, cfg.latency, cfg.buckets)
    if cfg.algorithm == "hierarchical" and g > 1:
        servers = math.ceil(n / g)
        inside = ring_time(g, nbytes, cfg.intra_bandwidth, cfg.latency, cfg.buckets)
        across = ring_time(servers, nbytes / g, cfg.bandwidth / g, cfg.latency, cfg.buckets)
        return inside + across
    return ring_time(n, nbytes, beta, cfg.latency, cfg.buckets)


@cache
def expected_max_normal(n, points=4001):
    """E[max of n independent standard normals] = ∫ x · n φ(x) Φ(x)^(n−1) dx (0 for n = 1, 1/√π for 2)."""
    if n <= 1:
        return 0.0
    lo, hi = -10.0, 10.0
    dx = (hi - lo) / (points - 1)
    total = 0.0
    for i in range(points):
        x = lo + i * dx
        pdf = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        total += x * n * pdf * (0.5 * (1 + math.erf(x / math.sqrt(2)))) ** (n - 1)
    return total * dx


def straggler_factor(jitter, n):
    """Expected slowest-of-n compute over the mean compute: 1 + jitter · E[max of n standard normals]."""
    return 1.0 + jitter * expected_max_normal(n)


def bubble(stages, micro_batches):
    """Idle share of a GPipe/1F1B pipeline step: (k−1)/(m+k−1)."""
    return (stages - 1) / (micro_batches + stages - 1)


def step_time(cfg, n):
    """The parts of one step with n GPUs (n a multiple of the pipeline stages)."""
    k = cfg.pipeline_stages
    if n % k:
        raise ConfigError(f"simulator: {n} GPUs do not split into {k} pipeline stages")
    idle = bubble(k, cfg.micro_batches)
    compute = cfg.compute_time() / k / (1 - idle)
    if min(n, cfg.gpus_per_server) > 1:  # neighbours on the node compute at the same time
        compute *= cfg.compute_contention
    wait = compute * (straggler_factor(cfg.compute_jitter, n // k) - 1)  # for the slowest replica of the stage
    # a server holds consecutive stages, so a stage's replicas share a server only g/k at a time
    replicas = replace(cfg, gpus_per_server=max(1, cfg.gpus_per_server // k))
    comm = allreduce_time(replicas, n // k, cfg.grad_bytes / k)
    hidden = cfg.overlap * cfg.backward_fraction * compute
    exposed = max(0.0, comm - hidden)
    update = cfg.update_time / k / (n // k if cfg.update_sharded else 1)
    overhead = cfg.overhead + cfg.dispatch_per_worker * n
    return {"compute": compute, "wait": wait, "bubble": idle, "comm": comm, "exposed_comm": exposed,
            "update": update, "overhead": overhead, "step": compute + wait + exposed + update + overhead}  # fmt: skip


def predict(cfg):
    """Weak scaling over cfg.workers: per worker count the step parts, samples/s and scaling efficiency.

    Efficiency is throughput(n) / (n · throughput of one GPU running the whole model alone).
    Returns {"config": ..., "compute_time": s, "grad_bytes": B, "rows": [...]}; worker counts that do
    not split into the pipeline stages are skipped.
    """
    one = replace(cfg, pipeline_stages=1, micro_batches=1)
    base = cfg.batch / step_time(one, 1)["step"]
    rows = []
    for n in cfg.workers:
        if n % cfg.pipeline_stages:
            continue
        t = step_time(cfg, n)
        throughput = (n // cfg.pipeline_stages) * cfg.batch / t["step"]
        rows.append({"workers": n, **t, "samples_per_s": throughput, "efficiency": throughput / (n * base)})
    return {"config": asdict(cfg), "compute_time": cfg.compute_time(), "grad_bytes": cfg.grad_bytes, "rows": rows}


def overlap_for(cfg, n, efficiency):
    """The overlap share at which n GPUs reach `efficiency` (None when no overlap can reach it)."""
    for overlap in (i / 1000 for i in range(1001)):
        if predict(replace(cfg, overlap=overlap, workers=(n,)))["rows"][0]["efficiency"] >= efficiency:
            return overlap
    return None


# --- Horovod's published result -------------------------------------------------------------------
# Horovod's README: "90% scaling efficiency for both Inception V3 and ResNet-101" on 128 servers with
# 4 Pascal GPUs each, connected by RoCE-capable 25 Gbit/s network interfaces.
HOROVOD_EFFICIENCY = 0.90
HOROVOD_GPUS = 512
RESNET101_PARAMS = 44.5e6  # 178 MB of fp32 gradients
# One P100, ResNet-101, batch 64, fp32: TensorFlow's published benchmarks (DGX-1, tf_cnn_benchmarks,
# batch 64, synthetic data) give 219 images/s for ResNet-50; ResNet-101 costs 7.6 vs 3.8 GFLOPs per
# image (He et al. 2016, Table 1), so ≈ 110 images/s: 64 / 110 ≈ 0.58 s per step. An assumption
# derived from published figures, not a measurement of ours.
P100_RESNET101_STEP = 0.58
HOROVOD_FUSION_BUCKETS = 3  # Horovod's tensor fusion fuses into 64 MB buffers: ⌈178 / 64⌉
RESNET101_TENSORS = 314  # weight tensors of conv, batch-norm (γ, β) and fc layers: one all-reduce each


def horovod_config(**overrides):
    """ResNet-101 on 128 servers × 4 P100 over 25 Gbit/s RoCE, as Horovod's README reports it."""
    cfg = Config(
        step_time=P100_RESNET101_STEP,
        batch=64,
        params=RESNET101_PARAMS,
        buckets=HOROVOD_FUSION_BUCKETS,
        bandwidth=25e9 / 8,
        latency=10e-6,  # RoCE verbs + NCCL per hop
        gpus_per_server=4,
        intra_bandwidth=10e9,
        workers=(1, 4, 8, 16, 32, 64, 128, 256, 512),
    )
    return replace(cfg, **overrides)
