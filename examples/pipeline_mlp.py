"""An MLP captured with dg.compile, cut into pipeline stages, and run GPipe-style with micro-batches.

The graph is captured at micro-batch size; `partition.pipeline` cuts its op order into stages of
equal FLOPs; the LocalExecutor gives each stage a thread and streams the micro-batches through, so
stage 1 works on micro-batch j while stage 0 works on j+1. The result is checked against eager and
the timeline written as a Chrome trace (open it in https://ui.perfetto.dev to see the stages overlap).

    python examples/pipeline_mlp.py [--stages 2] [--micro-batches 4] [--trace bench-out/pipeline_mlp_trace.json]
"""

import argparse
import os

import numpy as np

import distgraph as dg
from distgraph import nn
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import pipeline


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,512,512,512,10", help="layer widths, comma-separated")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument("--trace", default="bench-out/pipeline_mlp_trace.json")
    args = ap.parse_args(argv)
    dg.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = mlp(sizes)
    x = dg.randn(args.batch, sizes[0])
    micro = args.batch // args.micro_batches
    with dg.no_grad():
        compiled = dg.compile(model, (x[:micro],))  # stages run once per micro-batch
        expected = model(x).array
    plan = pipeline(compiled.graph, args.stages, micro_batches=args.micro_batches)
    print(plan)
    params = [p.array for p in next(iter(compiled.variants.values()))[1]]
    executor = LocalExecutor(plan, schedule="gpipe")
    for _ in range(3):
        (out,) = executor.run(x.array, *params)
    error = float(np.max(np.abs(out - expected)))
    tol = 1e-4 * max(1.0, float(np.max(np.abs(expected))))
    print(f"max |pipeline - eager| = {error:.3g} (tolerance {tol:.3g})")
    if error > tol:
        raise SystemExit(f"pipeline result differs from eager by {error:.3g}")
    os.makedirs(os.path.dirname(args.trace) or ".", exist_ok=True)
    print(f"trace: {executor.timeline.write(args.trace)}")
    return {
        "max_error": error,
        "stages": len(plan.subgraphs),
        "micro_batches": plan.micro_batches,
        "cut_bytes": plan.meta["cut_bytes"],
        "events": len(executor.timeline.events),
        "trace": args.trace,
    }


if __name__ == "__main__":
    main()
