"""`distgraph bench layers`: the common layers of transformers and CNNs on mid-sized tensors vs PyTorch eager.

`bench ops` times tiny tensors, where the per-op bookkeeping is the cost, and `bench mlp` a matmul-bound step;
between them lie the activations, normalizations, softmaxes and lookups of a real model at batch sizes people
train with (a (256, 1024) activation, a 32-image CNN batch), where the array work itself decides: how many
passes over memory an op and its backward make, and whether numpy has a fast loop for it. Each row is one
op's forward and backward (`op(inputs).sum().backward()`, gradients to every float input), float32, one
thread for both libraries, the two interleaved so machine noise is shared.
"""

import math

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json

ACT = (256, 1024)
_MODULES = {}  # lib -> the module a row uses (made once, with that library's default init)


def _module(lib, make):
    if lib not in _MODULES:
        _MODULES[lib] = make(lib)
    return _MODULES[lib]


ROWS = {  # name: (input shapes, fn(lib, F, *tensors) -> tensor)
    "softmax": ([ACT], lambda lib, F, x: F.softmax(x, -1) * x),
    "log_softmax": ([ACT], lambda lib, F, x: F.log_softmax(x, -1)),
    "layer_norm": ([ACT, (1024,), (1024,)], lambda lib, F, x, w, b: F.layer_norm(x, (1024,), w, b)),
    "gelu": ([ACT], lambda lib, F, x: F.gelu(x)),
    "gelu (tanh)": ([ACT], lambda lib, F, x: F.gelu(x, approximate="tanh")),
    "silu": ([ACT], lambda lib, F, x: F.silu(x)),
    "sigmoid": ([ACT], lambda lib, F, x: lib.sigmoid(x)),
    "tanh": ([ACT], lambda lib, F, x: lib.tanh(x)),
    "softplus": ([ACT], lambda lib, F, x: F.softplus(x)),
    "mish": ([ACT], lambda lib, F, x: F.mish(x)),
    "x ** 3": ([ACT], lambda lib, F, x: x**3),
    "linear, 3-d input": ([(32, 128, 512), (512, 512)], lambda lib, F, x, w: F.linear(x, w)),
    "cross_entropy": ([(256, 1000)], lambda lib, F, x: F.cross_entropy(x, lib.arange(256) % 1000)),
    "batch_norm (train)": (
        [(32, 32, 16, 16), (32,), (32,)],
        lambda lib, F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    ),
    "conv2d 3x3": ([(32, 16, 32, 32), (32, 16, 3, 3)], lambda lib, F, x, w: F.conv2d(x, w, padding=1)),
    "max_pool2d": ([(32, 32, 32, 32)], lambda lib, F, x: F.max_pool2d(x, 2)),
    "embedding": ([(10000, 256)], lambda lib, F, w: F.embedding(lib.arange(4096) * 7 % 10000, w)),
    "rows x[ids]": ([(10000, 64)], lambda lib, F, x: x[lib.arange(2048) * 3 % 10000]),
    "LSTM(128, 256), 35 steps": (
        [(35, 32, 128)],
        lambda lib, F, x: _module(lib, lambda lib: lib.nn.LSTM(128, 256))(x)[0],
    ),
    "attention (sdpa)": (
        [(8, 4, 128, 64)] * 3,
        lambda lib, F, q, k, v: F.scaled_dot_product_attention(q, k, v),
    ),
}


def _step(lib, F, fn, tensors):
    def run():
        fn(lib, F, *tensors).sum().backward()
        for t in tensors:
            t.grad = None

    return run


@click.command("layers")
@click.option("--repeat", type=click.IntRange(1), default=20, show_default=True)
@click.option("--only", multiple=True, help="row names to run (repeatable); all by default")
@json_out_option("layers")
def command(repeat, only, json_out):
    """Common layers on mid-sized float32 tensors, forward + backward, distgraph vs PyTorch eager."""
    try:
        import torch
    except ImportError:
        raise click.ClickException("bench layers compares against PyTorch: pip install 'distgraph[bench]'") from None
    from threadpoolctl import threadpool_limits

    import distgraph as dg

    unknown = set(only) - set(ROWS)
    if unknown:
        raise click.ClickException(f"bench layers: no row named {sorted(unknown)}; rows: {sorted(ROWS)}")
    torch.set_num_threads(1)
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    rows, results = [], {}
    for name, (shapes, fn) in ROWS.items():
        if only and name not in only:
            continue
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        ours = [dg.tensor(a, requires_grad=True) for a in arrays]
        theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
        steps = {
            "distgraph": _step(dg, dg.nn.functional, fn, ours),
            "torch": _step(torch, torch.nn.functional, fn, theirs),
        }
        t = interleaved(steps, repeat=repeat, warmup=3)
        ratio = t["distgraph"] / t["torch"]
        results[name] = {"shapes": shapes, "ms": {k: v * 1e3 for k, v in t.items()}, "ratio": ratio}
        rows.append([name, f"{t['distgraph'] * 1e3:.3f}", f"{t['torch'] * 1e3:.3f}", f"{ratio:.2f}x"])
    geomean = math.exp(sum(math.log(r["ratio"]) for r in results.values()) / len(results))
    rows.append(["geometric mean", "", "", f"{geomean:.2f}x"])
    click.echo(f"layers, float32, forward + backward, 1 thread each, ms per step — {machine()}")
    click.echo(table(["layer", "distgraph ms", "torch ms", "distgraph / torch"], rows))
    click.echo("target: distgraph ≤ 1.0x torch per layer")
    write_json(json_out, {"machine": machine(), "results": results, "geomean": geomean}, click.echo)
