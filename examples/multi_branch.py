"""A four-tower model: capture it with dg.compile, let the partitioner find the towers, run them
concurrently with the LocalExecutor, check the result against eager, and write a Chrome trace.

    python examples/multi_branch.py [--trace bench-out/multi_branch_trace.json] [--backend ray --workers N]
Open the trace in https://ui.perfetto.dev to see the towers overlap on two threads (with
--backend ray: on N Ray worker actors, the RayPlanExecutor).
"""

import argparse
import os

import numpy as np

import distgraph as dg
from distgraph import nn
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import independent


class FourTowers(nn.Module):
    def __init__(self, d=128, h=256, k=4):
        super().__init__()
        self.towers = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 4)) for _ in range(k)]
        )

    def forward(self, x):  # (B, d) -> (B,)
        return dg.cat([tower(x) for tower in self.towers], 1).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="bench-out/multi_branch_trace.json")
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    dg.manual_seed(0)
    dg.set_default_dtype(dg.float64)
    model = FourTowers()
    x = dg.randn(128, 128)
    with dg.no_grad():
        compiled = dg.compile(model, (x,))
        expected = model(x).array
    plan = independent(compiled.graph)
    print(plan)
    if args.backend == "ray":
        from distgraph.distributed import init
        from distgraph.distributed.plan_runner import RayPlanExecutor

        init(num_cpus=max(args.workers, os.cpu_count() or 1))
        executor = RayPlanExecutor(plan, workers=args.workers)
        print("placement:", executor.placement)
    else:
        executor = LocalExecutor(plan, workers=args.workers)
    params = [p.array for p in model.parameters()]
    for _ in range(3):
        (out,) = executor.run(x.array, *params)
    print(f"max |executor - eager| = {np.max(np.abs(out - expected)):.3g}")
    print(f"trace: {executor.timeline.write(args.trace)}")
    executor.shutdown()


if __name__ == "__main__":
    main()
