"""`distgraph bench syncbn`: what SyncBatchNorm costs a synchronous data-parallel step, and what it buys.

What is measured: two `dg.Trainer(..., backend="ray", workers=N)` kept alive side by side on the same MLP
with a batch-norm layer after each hidden linear layer, one with `nn.BatchNorm1d` (each worker normalizes
by its shard's statistics, DDP's default) and one with the same model converted by
`nn.SyncBatchNorm.convert_sync_batchnorm` (statistics over the global batch: one all-reduce in forward and one
in backward per layer). Their epochs alternate `--repeat` times so the host's load hits both alike; each
figure is the median epoch's samples/s (the Trainer's own timing), and the cost is the step time SyncBN
adds, in ms and per layer.

What it buys, printed beside: after the first (warm-up) epoch of 3 steps, each model's largest parameter
difference from the same steps in one process on the global batches (`backend="local"`, one worker).
SyncBN's is float32 rounding; BatchNorm's is a different model. (Measured later, training amplifies the
rounding: a 1-ulp change of the inputs grew to 1e-4 within 20 steps on the default MLP, in
jumps.) torch's SyncBatchNorm runs only on GPUs, so it has
no peer on this machine.
"""

import statistics

import click
import numpy as np

from distgraph.bench._util import CommaList, json_out_option, machine, table, write_json

LR = 0.05
WARM_STEPS = 3  # the first epoch: warms the workers, and the models are compared after it


def _model(sizes, sync, seed):
    import distgraph as dg
    from distgraph import nn

    dg.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU()]
    model = nn.Sequential(*layers)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync else model


def _trainer(sizes, sync, workers, backend, cpus, seed):
    import distgraph as dg
    import distgraph.nn.functional as F
    from distgraph import optim

    model = _model(sizes, sync, seed)
    return dg.Trainer(
        model, F.cross_entropy, optim.SGD(model.parameters(), lr=LR, momentum=0.9), workers=workers,
        backend=backend, cpus_per_worker=cpus, progress=False, seed=seed,
    )  # fmt: skip


def _epoch(trainer, data, batch, steps):
    x, y = data
    n = steps * batch
    return trainer.fit((x[:n], y[:n]), epochs=trainer.epoch + 1, batch_size=batch).epochs[-1]


def run(workers, sizes, batch, steps, repeat, cpus, seed=0, echo=print):
    """{"batchnorm" | "syncbn": {"samples_per_s", "step_ms", "repeats", "max_diff_from_one_process"}}."""
    from distgraph.datasets import teacher

    (x, y), _ = teacher(samples=int(steps * batch / 0.8) + 8, features=sizes[0], classes=sizes[-1], seed=seed)
    share = min(1.0, cpus / (2 * workers))  # both systems alive at once; only one computes at a time
    names = {"batchnorm": False, "syncbn": True}
    trainers, runs, out = {}, {name: [] for name in names}, {}
    try:
        for name, sync in names.items():
            trainers[name] = t = _trainer(sizes, sync, workers, "ray", share, seed)
            _epoch(t, (x, y), batch, WARM_STEPS)  # starts the cluster, warms the workers
            out[name] = {"max_diff_from_one_process": _distance_from_one_process(t, sizes, sync, (x, y), batch)}
        for r in range(repeat):
            for name, t in trainers.items():
                runs[name].append(_epoch(t, (x, y), batch, steps)["samples_per_s"])
            echo(f"  round {r + 1}/{repeat}: " + ", ".join(f"{m} {v[-1]:,.0f}/s" for m, v in runs.items()))
    finally:
        for t in trainers.values():
            t.close()
    for name in names:
        rate = statistics.median(runs[name])
        out[name] |= {"samples_per_s": rate, "step_ms": batch / rate * 1e3, "repeats": runs[name]}
    return out


def _distance_from_one_process(trainer, sizes, sync, data, batch):
    """Largest parameter difference between `trainer`'s model and the same warm-up steps in one process."""
    local = _trainer(sizes, sync, 1, "local", 1, trainer.seed)
    _epoch(local, data, batch, WARM_STEPS)
    return max(
        float(np.max(np.abs(a.detach().numpy() - b.detach().numpy())))
        for a, b in zip(trainer.model.parameters(), local.model.parameters())
    )


@click.command("syncbn")
@click.option("--workers", type=click.IntRange(2), default=2, show_default=True, help="workers per system")
@click.option("--sizes", type=CommaList(), default="256,512,512,10", show_default=True, help="MLP layer sizes")
@click.option("--batch", type=click.IntRange(2), default=1024, show_default=True, help="global batch")
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="batches per measured epoch")
@click.option("--repeat", type=click.IntRange(1), default=9, show_default=True, help="measured epochs per system")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one)")
@json_out_option("syncbn")
def command(workers, sizes, batch, steps, repeat, address, json_out):
    """BatchNorm vs SyncBatchNorm on N Ray workers: samples/s, the step time SyncBN adds, and each one's
    distance from one process training on the global batches."""
    from distgraph.distributed import runtime

    layer_sizes = tuple(sizes)
    runtime.init(address, num_cpus=None if address else workers)
    cpus = runtime.cluster_summary()["resources"].get("CPU", 0)
    layers = len(layer_sizes) - 2
    click.echo(
        f"syncbn · MLP {'-'.join(map(str, layer_sizes))} with {layers} batch-norm layers · {workers} workers · "
        f"global batch {batch} · {machine()}"
    )
    res = run(workers, layer_sizes, batch, steps, repeat, cpus, echo=click.echo)
    rows = [
        [m, f"{r['samples_per_s']:,.0f}", f"{r['step_ms']:.2f}", f"{r['max_diff_from_one_process']:.2e}"]
        for m, r in res.items()
    ]
    click.echo(
        table(["norm", "samples/s (median)", "step ms", f"max |Δparam| vs one process ({WARM_STEPS} steps)"], rows)
    )
    extra = res["syncbn"]["step_ms"] - res["batchnorm"]["step_ms"]
    ratio = res["syncbn"]["samples_per_s"] / res["batchnorm"]["samples_per_s"]
    click.echo(
        f"SyncBatchNorm / BatchNorm samples/s = {ratio:.3f}x; it adds {extra:.3f} ms a step "
        f"({extra / max(layers, 1) * 1e3:.0f} µs per layer, 2 all-reduces each)"
    )
    config = {"workers": workers, "sizes": layer_sizes, "batch": batch, "steps": steps, "repeat": repeat}
    payload = {"machine": machine(), "config": config, "results": res, "syncbn_over_batchnorm": ratio}
    write_json(json_out, payload, click.echo)
