"""`distgraph bench graph`: what capturing a step into a graph buys, each figure a ratio from one run.

1. overhead: a chain of tiny (4x4) ops, captured (dg.compile: one generated function, graph/codegen.py)
   vs PyTorch eager, per op; 100 interleaved samples of 10 calls each, as the figures are microseconds.
2. MLP train step (forward, cross-entropy, backward, SGD update) captured as ONE graph (dg.compile with
   optimizer=) vs PyTorch eager (zero_grad, backward, step) vs the same math written as straight numpy
   calls (the floor for a numpy engine); and the compute-bound MLP's captured step in GFLOP/s against
   its matmuls timed alone (five: the first layer's input gets no gradient; `bench.mlp._flops`).
3. four independent towers: the `independent` plan on a 2-thread LocalExecutor vs the whole graph run
   on one thread, best of 30 interleaved runs each; inference, and the training step of the towers
   under a linear head (cross-entropy), whose backward is split by tower too.
4. memory: peak bytes of intermediates measured with tracemalloc (numpy allocations are traced) for a
   runner with memory planning vs one without; checkpointing (√n segments) a 64-layer MLP train step:
   peak and step time vs no checkpointing (the two interleaved, median of 15).

BLAS and torch are pinned to one thread (threadpoolctl, torch.set_num_threads) so ratios measure the
engine, and the 2-thread figure measures the executor's concurrency, not BLAS's. The 64-layer MLP is
128 wide at batch 1024 so activations, not the parameter gradients every step returns, set the peak.
The load average is printed: on a machine whose cores are busy the 2-thread ratio cannot show.
"""

import os
import tracemalloc

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json
from distgraph.bench.mlp import MODELS, _flops, _matmul_only

TARGETS = {
    "overhead": ("≤ 0.3x torch", lambda r: r <= 0.3),
    "mlp_vs_numpy": ("≤ 1.1x numpy", lambda r: r <= 1.1),
    "mlp_vs_torch": ("≈0.75x torch", lambda r: r <= 0.75),
    "matmul_rate": ("≥ 95% of matmul", lambda r: r >= 0.95),
    "branches": ("≥ 1.6x", lambda r: r >= 1.6),
    "memory_plan": ("≤ 0.7x", lambda r: r <= 0.7),
    "ckpt_peak": ("≤ 0.3x", lambda r: r <= 0.3),
    "ckpt_time": ("≤ 1.4x", lambda r: r <= 1.4),
}


# ---- 1. per-op overhead -------------------------------------------------------------------------
def _chain(x, y, n):
    """n elementwise/matmul ops on small tensors: cost is all dispatch."""
    for _ in range(n // 4):
        x = (x @ y).tanh() * y + x
    return x


def overhead(n_ops=32, repeat=1000):
    import torch

    import distgraph as dg

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((4, 4)).astype(np.float32) * 0.5 for _ in range(2))
    x, y = dg.tensor(a), dg.tensor(b)
    with dg.no_grad():
        fused = dg.compile(lambda u, v: _chain(u, v, n_ops), (x, y))
        unfused = dg.compile(lambda u, v: _chain(u, v, n_ops), (x, y), passes=())
    tx, ty = torch.from_numpy(a), torch.from_numpy(b)

    def eager_torch():
        with torch.no_grad():
            _chain(tx, ty, n_ops)

    t = interleaved(
        {"captured": lambda: fused(x, y), "captured_nopass": lambda: unfused(x, y), "torch": eager_torch},
        repeat=repeat // 10,
        inner=10,
    )
    return {k: v / n_ops for k, v in t.items()}


# ---- 2. MLP train step ----------------------------------------------------------------------------
def _mlp(sizes):
    from distgraph import nn

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _captured_step(sizes, batch, rng, update=True):
    """The whole train step as one graph: with `update`, SGD's step is captured into it too (so the
    captured step does the same work as the hand-written one: forward, loss, backward, update)."""
    import distgraph as dg

    model = _mlp(sizes)
    x = dg.tensor(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = dg.tensor(rng.integers(0, sizes[-1], batch))
    opt = dg.optim.SGD(model.parameters(), lr=0.01) if update else None
    compiled = dg.compile(model, (x, y), loss_fn=dg.nn.functional.cross_entropy, optimizer=opt)
    return (lambda: compiled(x, y)), model, compiled, x, y


def _numpy_step(model, x, y, lr=0.01):
    """The same train step hand-written on numpy arrays: the floor for an engine built on numpy."""
    ws = [p.array for p in model.parameters()][0::2]
    bs = [p.array for p in model.parameters()][1::2]
    x, y = x.array, y.array
    n = x.shape[0]
    rows = np.arange(n)

    def step():
        hs = [x]
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = hs[-1] @ w.T + b
            hs.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
        z = hs[-1]
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()
        g = p
        g[rows, y] -= 1
        g /= n
        for i in range(len(ws) - 1, -1, -1):
            gw, gb = g.T @ hs[i], g.sum(0)
            if i:
                g = (g @ ws[i]) * (hs[i] > 0)
            ws[i] -= lr * gw
            bs[i] -= lr * gb
        return loss

    return step


def mlp(repeat=20):
    from distgraph.bench.mlp import _torch_step

    out = {}
    for name, (sizes, batch) in MODELS.items():
        rng = np.random.default_rng(0)
        ours, model, _, x, y = _captured_step(sizes, batch, rng)
        fns = {"captured": ours, "torch": _torch_step(sizes, batch, rng, model)}
        if name == "overhead-bound":
            fns["numpy"] = _numpy_step(_mlp(sizes), x, y)
        else:
            fns["matmul"] = _matmul_only(sizes, batch, rng)
        reps = repeat if name == "compute-bound" else repeat * 10
        t = interleaved(fns, repeat=reps, warmup=3)
        gflop = _flops(sizes, batch) / 1e9
        out[name] = {"seconds": t, "gflops": {k: gflop / v for k, v in t.items()}}
    return out


# ---- 3. four independent branches ------------------------------------------------------------------
def branches(d=256, h=512, batch=256, repeat=30, train=False):
    """Best of `repeat` interleaved runs each: a 2-thread run loses whenever either core is taken by
    another process, so its median measures the machine's neighbours more than the executor.
    `train`: the captured training step (forward, cross-entropy, backward) of the same towers under a
    linear head, whose backward `independent` splits by tower as well."""
    import distgraph as dg
    from distgraph import nn
    from distgraph.graph.executor import LocalExecutor, Runner
    from distgraph.graph.partition import independent

    dg.manual_seed(0)
    towers = nn.ModuleList(
        [nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 4)) for _ in range(4)]
    )
    x = dg.tensor(np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32))
    if train:

        class Towers(nn.Module):
            def __init__(self):
                super().__init__()
                self.towers, self.head = towers, nn.Linear(16, 10)

            def forward(self, v):
                return self.head(dg.cat([t(v) for t in self.towers], 1))

        model = Towers()
        y = dg.tensor(np.arange(batch) % 10)
        compiled, inputs = dg.compile(model, (x, y), loss_fn=dg.nn.functional.cross_entropy), (x.array, y.array)
    else:
        with dg.no_grad():
            compiled = dg.compile(lambda v: dg.cat([t(v) for t in towers], 1).sum(1), (x,))
        inputs = (x.array,)
    arrays = (*inputs, *[p.array for p in next(iter(compiled.variants.values()))[1]])
    plan = independent(compiled.graph)
    whole = Runner(compiled.graph)
    with LocalExecutor(plan, workers=2) as parallel:
        t = interleaved(
            {"2 threads": lambda: parallel.run(*arrays), "sequential": lambda: whole(*arrays)}, repeat=repeat, stat=min
        )
    t["subgraphs"] = len(plan.subgraphs)
    return t


# ---- 4. memory ------------------------------------------------------------------------------------
def _peak(fn):
    """Peak bytes numpy allocates during fn() (tracemalloc sees numpy's data buffers)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def memory(layers=64, width=128, batch=1024, repeat=15):
    from distgraph.graph.executor import Runner
    from distgraph.graph.passes import memory as mem
    from distgraph.graph.passes.checkpoint import checkpoint

    rng = np.random.default_rng(0)
    sizes = (width,) * layers + (10,)
    _, _, compiled, x, y = _captured_step(sizes, batch, rng, update=False)
    graph = compiled.graph
    params = [p.array for p in next(iter(compiled.variants.values()))[1]]
    args = (x.array, y.array, *params)
    planned, unplanned = Runner(graph), Runner(graph, plan_memory=False)
    ckpt_graph = checkpoint(graph)
    ckpt = Runner(ckpt_graph)
    return {
        "plan_on": _peak(lambda: planned(*args)),
        "plan_off": _peak(lambda: unplanned(*args)),
        "ckpt_on": _peak(lambda: ckpt(*args)),
        "planned_peak": mem.plan(graph).peak_bytes,
        "planned_peak_ckpt": mem.plan(ckpt_graph).peak_bytes,
        "naive": mem.plan(graph).naive_bytes,
        **{
            f"time_{k}": v
            for k, v in interleaved(
                {"plain": lambda: planned(*args), "ckpt": lambda: ckpt(*args)}, repeat=repeat, warmup=1
            ).items()
        },
        "layers": layers,
    }


# ---- report ---------------------------------------------------------------------------------------
def _row(what, ours, ref, ratio, key):
    target, ok = TARGETS[key]
    return [what, ours, ref, f"{ratio:.2f}x" if key != "matmul_rate" else f"{100 * ratio:.0f}%", target,
            "met" if ok(ratio) else "NOT met"]  # fmt: skip


def run_all(repeat=20, small=False):
    """Every measurement; `small` shrinks sizes for a smoke test."""
    res = {"overhead": overhead(n_ops=8 if small else 32, repeat=20 if small else 1000)}
    res["mlp"] = mlp(repeat=2 if small else repeat)
    res["branches"] = branches(d=32, h=32, batch=16, repeat=2) if small else branches()
    res["branches_train"] = branches(d=32, h=32, batch=16, repeat=2, train=True) if small else branches(train=True)
    res["memory"] = memory(layers=8, width=32, batch=16, repeat=1) if small else memory()
    return res


def rows(res):
    us = lambda s: f"{s * 1e6:.1f} µs"  # noqa: E731
    ms = lambda s: f"{s * 1e3:.2f} ms"  # noqa: E731
    mb = lambda b: f"{b / 1e6:.2f} MB"  # noqa: E731
    o, m, b, bt, mem = res["overhead"], res["mlp"], res["branches"], res["branches_train"], res["memory"]
    ob, cb = m["overhead-bound"]["seconds"], m["compute-bound"]
    return [
        _row("per-op, 4x4, captured vs torch eager", us(o["captured"]), us(o["torch"]), o["captured"] / o["torch"], "overhead"),
        _row("  same, no passes (no fusion)", us(o["captured_nopass"]), us(o["torch"]), o["captured_nopass"] / o["torch"], "overhead"),
        _row("MLP 64-128-128-10 b64 step vs numpy", ms(ob["captured"]), ms(ob["numpy"]), ob["captured"] / ob["numpy"], "mlp_vs_numpy"),
        _row("  same vs torch eager", ms(ob["captured"]), ms(ob["torch"]), ob["captured"] / ob["torch"], "mlp_vs_torch"),
        _row("MLP 784-1024-1024-10 b256 GFLOP/s vs matmul", f"{cb['gflops']['captured']:.1f}", f"{cb['gflops']['matmul']:.1f}",
             cb["gflops"]["captured"] / cb["gflops"]["matmul"], "matmul_rate"),
        _row(f"4 towers, {b['subgraphs']} subgraphs: sequential / 2 threads", ms(b["2 threads"]), ms(b["sequential"]),
             b["sequential"] / b["2 threads"], "branches"),
        _row(f"  same, train step, {bt['subgraphs']} subgraphs", ms(bt["2 threads"]), ms(bt["sequential"]),
             bt["sequential"] / bt["2 threads"], "branches"),
        _row("peak bytes, memory plan on vs off", mb(mem["plan_on"]), mb(mem["plan_off"]), mem["plan_on"] / mem["plan_off"], "memory_plan"),
        _row(f"{mem['layers']}-layer MLP step peak, checkpoint vs not", mb(mem["ckpt_on"]), mb(mem["plan_on"]),
             mem["ckpt_on"] / mem["plan_on"], "ckpt_peak"),
        _row("  same, step time", ms(mem["time_ckpt"]), ms(mem["time_plain"]), mem["time_ckpt"] / mem["time_plain"], "ckpt_time"),
    ]  # fmt: skip


@click.command("graph")
@click.option("--repeat", type=click.IntRange(1), default=20, show_default=True)
@json_out_option("graph")
def command(repeat, json_out):
    """Captured graphs vs eager: per-op overhead, MLP step, branch concurrency, memory planning, checkpointing."""
    try:
        import torch
    except ImportError:
        raise click.ClickException("bench graph compares against PyTorch: pip install 'distgraph[bench]'") from None
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        res = run_all(repeat=repeat)
    load = os.getloadavg()[0]
    click.echo(f"Captured graphs (dg.compile), float32, 1 BLAS thread — {machine()} · load {load:.1f} at the end")
    click.echo(table(["measure", "distgraph", "reference", "ratio", "target", ""], rows(res)))
    write_json(json_out, {"machine": machine(), "results": res}, click.echo)
