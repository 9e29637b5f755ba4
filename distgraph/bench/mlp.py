"""`distgraph bench mlp`: one training step (forward, cross-entropy, backward, SGD) vs PyTorch eager.

Two models: compute-bound (784-1024-1024-10, batch 256), where the step is almost all matmul and the
question is how close distgraph gets to the BLAS rate; and overhead-bound (64-128-128-10, batch 64,
digits-sized), where per-op cost dominates. Both libraries get the same number of BLAS threads
(--threads, default 1: torch.set_num_threads and threadpoolctl for numpy's BLAS). One thread is the
default because interleaving two multi-threaded BLAS runtimes in one process makes each one's idle
spinning threads slow the other (measured here: both libraries' steps and the bare matmuls ran 1.1–6×
slower with 2 threads each than apart). Steps are interleaved so machine noise is shared. The matmul
rate is the step's own matmuls timed alone: per layer forward, weight gradient and input gradient, but
no input gradient for the first layer (its input needs none: distgraph's linear backward and torch's
skip it), so five for three layers; GFLOP/s count those same products.

`--device cuda`: distgraph on cupy against torch on the same GPU, each step timed to its kernels' end (a
synchronize after each: a GPU call returns once its kernels are queued); the matmul rate is cupy's.
"""

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json

MODELS = {"compute-bound": ((784, 1024, 1024, 10), 256), "overhead-bound": ((64, 128, 128, 10), 64)}


def _flops(sizes, batch):
    """Forward + backward FLOPs of the step's matmuls, 2·B·in·out each: per layer forward, dW and dX,
    except the first layer's dX (the data needs no gradient, and neither library computes it)."""
    return sum((2 if i == 0 else 3) * 2 * batch * a * b for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))


def _synced(step, dev, sync):
    """`step`, then a wait for its kernels on a GPU (cupy's or torch's `sync`): what a timer must see."""
    if dev == "cpu":
        return step

    def run():
        step()
        sync()

    return run


def _dg_step(sizes, batch, rng, dev="cpu"):
    import distgraph as dg

    nn = dg.nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(dev)
    opt = dg.optim.SGD(model.parameters(), lr=0.01)
    x = dg.tensor(rng.standard_normal((batch, sizes[0])).astype(np.float32), device=dev)
    y = dg.tensor(rng.integers(0, sizes[-1], batch), device=dev)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return _synced(step, dev, lambda: dg.backend.synchronize(dev)), model


def _torch_step(sizes, batch, rng, model_dg, dev="cpu"):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():  # same weights as distgraph's model
        for p, q in zip(model.parameters(), model_dg.parameters()):
            p.copy_(torch.from_numpy(q.detach().cpu().numpy()))
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32)).to(dev)
    y = torch.from_numpy(rng.integers(0, sizes[-1], batch)).to(dev)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return _synced(step, dev, torch.cuda.synchronize)


def _matmul_only(sizes, batch, rng, dev="cpu"):
    """The step's matmuls (`_flops`'s: no input gradient for the first layer) on the device's arrays (numpy's,
    cupy's): the rate the step can at best reach."""
    import distgraph as dg

    xp = dg.device(dev).xp
    arrays = lambda *shape: xp.asarray(rng.standard_normal(shape).astype(np.float32))
    xs = [arrays(batch, a) for a in sizes[:-1]]
    ws = [arrays(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    gs = [arrays(batch, b) for b in sizes[1:]]

    def run():
        for i, (x, w, g) in enumerate(zip(xs, ws, gs)):
            x @ w.T
            if i:  # the first layer's input (the data) gets no gradient
                g @ w
            g.T @ x

    return _synced(run, dev, lambda: dg.backend.synchronize(dev))


@click.command("mlp")
@click.option("--repeat", type=click.IntRange(1), default=20, show_default=True)
@click.option("--model", "which", type=click.Choice(["all", *MODELS]), default="all")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="BLAS threads for both libraries")
@click.option(
    "--device", "dev", default="cpu", show_default=True, help="cpu, or cuda (distgraph on cupy, torch on the GPU)"
)
@json_out_option("mlp")
def command(repeat, which, threads, dev, json_out):
    """MLP train step, distgraph vs PyTorch eager, with the achieved GFLOP/s vs the matmul rate."""
    try:
        import torch
    except ImportError:
        raise click.ClickException("bench mlp compares against PyTorch: pip install 'distgraph[bench]'") from None
    from threadpoolctl import threadpool_limits

    import distgraph as dg

    try:
        dev = str(dg.device(dev))
    except dg.errors.DeviceError as exc:
        raise click.ClickException(f"bench mlp: {exc}") from None
    if dev != "cpu" and not torch.cuda.is_available():
        raise click.ClickException(f"bench mlp --device {dev}: this torch ({torch.__version__}) sees no CUDA GPU")
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    rows, results = [], {}
    for name, (sizes, batch) in MODELS.items():
        if which not in ("all", name):
            continue
        rng = np.random.default_rng(0)
        ours, model = _dg_step(sizes, batch, rng, dev)
        theirs = _torch_step(sizes, batch, rng, model, dev)
        mm = _matmul_only(sizes, batch, rng, dev)
        reps = repeat if name == "compute-bound" else repeat * 10
        t = interleaved({"distgraph": ours, "torch": theirs, "matmul": mm}, repeat=reps, warmup=3)
        gflop = _flops(sizes, batch) / 1e9
        rate = {k: gflop / v for k, v in t.items()}
        results[name] = {"seconds": t, "gflops": rate, "ratio": t["distgraph"] / t["torch"]}
        rows.append([
            name, f"{t['distgraph'] * 1e3:.3f}", f"{t['torch'] * 1e3:.3f}", f"{t['distgraph'] / t['torch']:.2f}x",
            f"{rate['distgraph']:.1f}", f"{rate['matmul']:.1f}", f"{100 * rate['distgraph'] / rate['matmul']:.0f}%",
        ])  # fmt: skip
    where = f"{threads} BLAS threads" if dev == "cpu" else f"on {dev}"
    click.echo(f"MLP train step (forward, cross-entropy, backward, SGD), float32, {where} — {machine()}")
    click.echo(
        table(["model", "distgraph ms", "torch ms", "ratio", "distgraph GFLOP/s", "matmul GFLOP/s", "of matmul"], rows)
    )
    click.echo("targets: compute-bound ≥ 90% of the matmul rate and ≤ 1.05x torch; overhead-bound ≤ 1.0x torch")
    write_json(json_out, {"machine": machine(), "device": dev, "results": results}, click.echo)
