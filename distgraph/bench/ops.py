"""`distgraph bench ops`: per-op cost of eager autograd on tiny tensors, distgraph vs PyTorch eager.

Tiny (4x4) tensors make the numeric work negligible, so the figure is the framework's own overhead:
op dispatch, graph recording, and the backward engine. Each chain runs forward and backward; the
time is divided by the number of forward ops, counted as the autograd nodes the chain records
(`recorded_ops`, at run time: no hand count to drift from the bodies). Peers are interleaved in one run
(shared noise).

Before timing, the objects alive after the imports are frozen out of the garbage collector
(`gc.freeze()`): torch's import leaves ~170,000 tracked objects, which every full collection
triggered by distgraph's Python-level graph nodes would rescan — a cost of measuring both libraries
in one process, not one a distgraph user pays (3–8 % of distgraph's time per chain, measured here).

A second table times one convolutional chain on a small image batch, where the array work (im2col,
matmuls, pooling windows) dominates rather than the per-op overhead: the gap a small CNN sees.
"""

import gc

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json

CHAINS = {
    # name: body(y, w) using only operators/methods both libraries share; each chain keeps values
    # bounded so no overflow changes the work
    "mul-add-tanh": lambda y, w: (y * w + w).tanh(),
    "matmul-relu": lambda y, w: (y @ w).relu(),
    "sub-exp-div": lambda y, w: ((y - w).exp() / (w + 2.0)).tanh(),
    "sigmoid-mul-sum": lambda y, w: (y.sigmoid() * w).sum(1, keepdim=True).expand(4, 4),
}


CNN_SHAPES = {"input": (16, 1, 28, 28), "conv1": (8, 1, 3, 3), "conv2": (16, 8, 3, 3)}  # a LeNet-like stem


def _cnn_step(lib, tensors):
    """conv2d-relu-max_pool2d twice (3x3 padding 1, 2x2 pooling), forward + backward to both weights."""
    F = lib.nn.functional

    def run():
        x, w1, w2 = tensors
        y = F.max_pool2d(F.conv2d(x, w1, padding=1).relu(), 2)
        F.max_pool2d(F.conv2d(y, w2, padding=1).relu(), 2).sum().backward()
        w1.grad = None
        w2.grad = None

    return run


def _cnn_row(dg, torch, rng, repeat):
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in CNN_SHAPES.values()]
    ours = [dg.tensor(a, requires_grad=i > 0) for i, a in enumerate(arrays)]
    theirs = [torch.tensor(a, requires_grad=i > 0) for i, a in enumerate(arrays)]
    times = interleaved({"distgraph": _cnn_step(dg, ours), "torch": _cnn_step(torch, theirs)}, repeat=repeat, warmup=3)
    ms = {k: v * 1e3 for k, v in times.items()}
    return {"ms_per_step": ms, "ratio": ms["distgraph"] / ms["torch"]}


def _chain(x, w, body, links):
    y = x
    for _ in range(links):
        y = body(y, w)
    return y.sum()


def recorded_ops(lib_tensor, body, links):
    """Forward ops of a chain of `links` links and its final sum: the autograd nodes reachable from the
    output's grad_fn (through `next_functions`, which distgraph and torch both have; torch's AccumulateGrad
    leaves are not ops)."""
    seen, stack = {}, [_chain(*lib_tensor, body, links).grad_fn]  # id -> node: kept alive, so ids stay unique
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or type(node).__name__ == "AccumulateGrad":
            continue
        seen[id(node)] = node
        stack += [n for n, _ in node.next_functions]
    return len(seen)


def _step(lib_tensor, body, links):
    def run():
        x, w = lib_tensor
        _chain(x, w, body, links).backward()
        x.grad = None
        w.grad = None

    return run


@click.command("ops")
@click.option(
    "--links", type=click.IntRange(1), default=50, show_default=True, help="links per chain (ops per link vary)"
)
@click.option("--repeat", type=click.IntRange(1), default=30, show_default=True)
@json_out_option("ops")
def command(links, repeat, json_out):
    """Eager per-op overhead on 4x4 tensors, forward + backward, vs PyTorch eager."""
    import distgraph as dg

    try:
        import torch
    except ImportError:
        raise click.ClickException("bench ops compares against PyTorch: pip install 'distgraph[bench]'") from None
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # one BLAS thread each, as the table says: numpy's OpenBLAS left at 2 threads on a
    threadpool_limits(1)  # busy 2-core host ran the CNN chain's small matmuls up to 16x slower (spinning threads)
    gc.collect()
    gc.freeze()
    rng = np.random.default_rng(0)
    rows, results = [], {}
    for name, body in CHAINS.items():
        a = rng.random((4, 4), dtype=np.float32) * 0.5
        b = rng.random((4, 4), dtype=np.float32) * 0.5
        ours = (dg.tensor(a, requires_grad=True), dg.tensor(b, requires_grad=True))
        theirs = (torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True))
        times = interleaved(
            {"distgraph": _step(ours, body, links), "torch": _step(theirs, body, links)}, repeat=repeat, warmup=3
        )
        n_ops = recorded_ops(ours, body, links)
        us = {k: v / n_ops * 1e6 for k, v in times.items()}
        ratio = us["distgraph"] / us["torch"]
        results[name] = {"us_per_op": us, "ratio": ratio, "forward_ops": n_ops}
        rows.append([name, f"{us['distgraph']:.2f}", f"{us['torch']:.2f}", f"{ratio:.2f}x"])
    geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in results.values()])))
    rows.append(["geometric mean", "", "", f"{geo:.2f}x"])
    click.echo(f"eager autograd, 4x4 float32, forward+backward, µs per forward op — {machine()}")
    click.echo(table(["chain", "distgraph µs/op", "torch µs/op", "distgraph / torch"], rows))
    click.echo("target: distgraph <= 1.0x PyTorch per op")
    cnn = _cnn_row(dg, torch, rng, repeat)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in CNN_SHAPES.items())
    click.echo(f"\nconv2d-relu-max_pool2d x2, float32, forward+backward, ms per step ({shapes})")
    ms = cnn["ms_per_step"]
    click.echo(table(["chain", "distgraph ms", "torch ms", "distgraph / torch"],
                     [["conv-relu-maxpool", f"{ms['distgraph']:.2f}", f"{ms['torch']:.2f}", f"{cnn['ratio']:.2f}x"]]))  # fmt: skip
    write_json(json_out, {"machine": machine(), "results": results, "geomean_ratio": geo, "cnn": cnn}, click.echo)
