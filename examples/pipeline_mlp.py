"""An MLP's training step captured with dg.compile, cut into pipeline stages, run with micro-batches (1F1B).

The step (forward, cross-entropy, backward) is captured at micro-batch size; `partition.pipeline`
cuts the forward into stages of equal FLOPs and gives each stage the backward of its own layers
(`stage0.fwd`, `stage1.fwd`, `stage1.bwd`, `stage0.bwd`). Each stage gets a worker — a thread of
the LocalExecutor, or with `--backend ray` a Ray actor of the RayPlanExecutor — and its micro-batches
run in the schedule's order: GPipe (all forwards, then all backwards) or 1F1B (after k − 1 − s
warm-up forwards, one forward then one backward: at most k micro-batches' activations alive per
stage). The loss and gradients are checked against eager, and the timeline written as a Chrome trace
(open it in https://ui.perfetto.dev to see the stages interleave).

    python examples/pipeline_mlp.py [--stages 2] [--micro-batches 4] [--schedule 1f1b] [--backend ray]
"""

import argparse

import numpy as np

import distgraph as dg
from distgraph import nn
from distgraph.graph.partition import pipeline


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def executor_for(plan, args):
    if args.backend == "ray":
        from distgraph.distributed.plan_runner import RayPlanExecutor

        dg.distributed.init()
        return RayPlanExecutor(plan, workers=args.stages, schedule=args.schedule, compiled=False)
    from distgraph.graph.executor import LocalExecutor

    return LocalExecutor(plan, workers=args.stages, schedule=args.schedule)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,512,512,512,10", help="layer widths, comma-separated")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument("--schedule", choices=("gpipe", "1f1b"), default="1f1b")
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    ap.add_argument("--trace", default="bench-out/pipeline_mlp_trace.json")
    args = ap.parse_args(argv)
    dg.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = mlp(sizes)
    x = dg.randn(args.batch, sizes[0])
    y = dg.randint(0, sizes[-1], (args.batch,))
    micro = args.batch // args.micro_batches
    step = dg.compile(model, (x[:micro], y[:micro]), loss_fn=nn.functional.cross_entropy)  # one micro-batch
    loss = nn.functional.cross_entropy(model(x), y)  # eager reference, whole batch
    loss.backward()
    expected = [loss.item()] + [p.grad.numpy() for p in step.params]
    runner, params, _, _ = next(iter(step.variants.values()))
    plan = pipeline(runner.graph, args.stages, micro_batches=args.micro_batches, batch_inputs=(0, 1),
                    combine=["mean"] * len(runner.graph.outputs))  # fmt: skip
    print(plan)
    executor = executor_for(plan, args)
    try:
        for _ in range(3):
            outs = executor.run(x.array, y.array, *[p.array for p in params])
        timeline = executor.timeline
    finally:
        executor.shutdown()
    error = max(float(np.max(np.abs(np.asarray(o) - e))) for o, e in zip(outs, expected))
    tol = 1e-4 * max(1.0, max(float(np.max(np.abs(e))) for e in expected))
    print(f"max |pipeline - eager| over the loss and {len(expected) - 1} gradients = {error:.3g} (tolerance {tol:.3g})")
    if error > tol:
        raise SystemExit(f"pipeline result differs from eager by {error:.3g}")
    print(f"trace: {timeline.write(args.trace)}")
    return {
        "max_error": error,
        "subgraphs": len(plan.subgraphs),
        "stages": plan.meta["stages"],
        "micro_batches": plan.micro_batches,
        "cut_bytes": plan.meta["cut_bytes"],
        "events": len(timeline.events),
        "trace": args.trace,
    }


if __name__ == "__main__":
    main()
