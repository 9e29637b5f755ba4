"""`distgraph bench optim`: one optimizer step on an MLP's parameters vs PyTorch eager's torch.optim.

The step a training loop pays after backward, alone: on the 784-1024-1024-10 MLP's 1.86 M float32
parameters it is a handful of elementwise passes over every parameter, memory-bound, so it shows the
per-element cost of distgraph's update (and its temporaries) that `bench mlp` hides behind the matmuls.
Gradients are fixed random arrays set once, so only `step()` is timed. torch runs each optimizer with its
default options, which on CPU is the single-tensor for-loop (foreach and fused are CUDA-only defaults).
Both libraries get the same BLAS threads (--threads, default 1, as `bench mlp`) and the steps are
interleaved so machine noise is shared. Both start from the same parameters and take the same number of
steps on the same gradients, so after timing their parameters must agree: `max abs Δparam` checks that the
speed is the right update's (float32 rounding only, ~1e-6), not a target.
"""

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json

SHAPES = ((1024, 784), (1024,), (1024, 1024), (1024,), (10, 1024), (10,))  # 784-1024-1024-10 weights, biases
OPTIMIZERS = (
    ("SGD", {"lr": 0.01}),
    ("SGD", {"lr": 0.01, "momentum": 0.9}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}),
    ("Adam", {"lr": 1e-3}),
    ("AdamW", {"lr": 1e-3}),
    ("RMSprop", {"lr": 1e-3}),
    ("Adagrad", {"lr": 1e-2}),
)
WARMUP = 3


def label(name, options):
    """The row's name, written as the constructor call: "SGD(lr=0.01, momentum=0.9)"."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"


def _arrays(rng):
    """Parameters at a Linear layer's init scale and gradients of a typical size, float32."""
    params = [(rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for s in SHAPES]
    grads = [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]
    return params, grads


@click.command("optim")
@click.option("--repeat", type=click.IntRange(1), default=30, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="BLAS threads for both libraries")
@json_out_option("optim")
def command(repeat, threads, json_out):
    """One optimizer step() on an MLP's 1.86 M parameters, distgraph vs torch.optim, with their difference."""
    try:
        import torch
    except ImportError:
        raise click.ClickException("bench optim compares against PyTorch: pip install 'distgraph[bench]'") from None
    from threadpoolctl import threadpool_limits

    import distgraph as dg

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    params, grads = _arrays(np.random.default_rng(0))
    rows, results = [], {}
    for name, options in OPTIMIZERS:
        ours = [dg.nn.Parameter(dg.tensor(a.copy())) for a in params]
        theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = dg.tensor(g)
            q.grad = torch.from_numpy(g.copy())
        opt_dg = getattr(dg.optim, name)(ours, **options)
        opt_torch = getattr(torch.optim, name)(theirs, **options)
        # interleaved calls each peer warmup + repeat times, so both took the same steps when it returns
        t = interleaved({"distgraph": opt_dg.step, "torch": opt_torch.step}, repeat=repeat, warmup=WARMUP)
        diff = max(float(np.abs(p.detach().numpy() - q.detach().numpy()).max()) for p, q in zip(ours, theirs))
        ratio = t["distgraph"] / t["torch"]
        key = label(name, options)
        results[key] = {"seconds": t, "ratio": ratio, "steps": WARMUP + repeat, "max_abs_param_diff": diff}
        rows.append([key, f"{t['distgraph'] * 1e3:.3f}", f"{t['torch'] * 1e3:.3f}", f"{ratio:.2f}x", f"{diff:.1e}"])
    n = sum(int(np.prod(s)) for s in SHAPES)
    click.echo(
        f"optimizer step on MLP 784-1024-1024-10 ({n / 1e6:.2f} M float32 params), {threads} BLAS threads — {machine()}"
    )
    click.echo(table(["optimizer", "distgraph ms", "torch ms", "ratio", "max abs Δparam"], rows))
    click.echo("target: every optimizer ≤ 1.0x torch's step time")
    write_json(json_out, {"machine": machine(), "threads": threads, "parameters": n, "results": results}, click.echo)
