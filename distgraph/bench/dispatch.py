"""`distgraph bench dispatch`: what one dispatched subgraph costs on Ray, next to a bare actor call.

Everything is measured in one run, on one local Ray instance, two actors per peer, peers
interleaved so they share the machine's noise (medians of `--repeat` samples):

(a) bare Ray: `ray.get(actor.echo.remote(x))` with a one-element float64 `x` (one round trip), and
    the same calls in each pattern distgraph runs below, with no distgraph in them. Each pattern has
    actors of its own, as each distgraph pattern has an executor of its own: an actor that the other
    patterns keep busy answers faster than one idle since the last round (seen: a lone call 1.26 ms
    on actors the chain and fan-out also ran, 1.63-1.68 ms on an actor of its own, in one run), and
    the lone call had that edge over the lone subgraph until this was fixed.
(b) distgraph: `RayPlanExecutor.run` of Plans of one-node subgraphs (`x + 1` on one element):
    one subgraph (the whole run: feed, submit, wait, outputs) against one bare round trip; a chain
    of `--n` subgraphs, each reading the one before, against a chain of bare calls passing
    ObjectRefs placed on the same actors; a fan-out of `--n` independent subgraphs against `--n`
    bare calls and one `ray.get`. Figures are per subgraph (per call).
(c) Ray Compiled Graphs (`ray.dag.InputNode` + `experimental_compile()`): a repeated step of two
    parallel actor calls, classic vs compiled, and the distgraph chain with `compiled=True` vs
    actor calls. Measured after (a)/(b), so compiled-graph actors (which wait on their channels)
    do not share the machine with those.

The issue's target: distgraph's time per dispatched subgraph ≤ 1.2× the bare calls' in the same
pattern. Ratios are distgraph / bare (lower is better) and classic / compiled (speed-up).
"""

import os

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, time_call, write_json

# Ray's logical CPUs per actor: 15 actors fit in 2 (the host's, or a test session's). Ray does not pin
# an actor to its share, and BLAS gets one thread either way, so the figures do not depend on it.
ACTOR_CPUS = 0.125


class Echo:
    def echo(self, x):
        return x

    def pid(self):
        return os.getpid()


def _idle_cpu(pids, seconds=1.0):
    """CPU-seconds per second the processes use while the driver sleeps."""
    import time

    import psutil

    procs = [psutil.Process(p) for p in pids]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(seconds)
    return [(sum(p.cpu_times()[:2]) - b) / seconds for p, b in zip(procs, before)]


def _tiny_plans(n):
    """One subgraph, a chain of n, a fan-out of n: every subgraph is `x + 1` on one float64 element."""
    import distgraph as dg
    from distgraph.graph.capture import capture
    from distgraph.graph.plan import Edge, Plan, Subgraph

    graph = capture(lambda x: x + 1, [dg.tensor(np.zeros(1))])[0]
    one = Plan("dag", (Subgraph("sg0", graph, ("v0",), ("v1",)),), (), ("v0",), ("v1",))
    chain = Plan(
        "dag",
        tuple(Subgraph(f"sg{k}", graph, (f"v{k}",), (f"v{k + 1}",)) for k in range(n)),
        tuple(Edge(f"sg{k}", f"sg{k + 1}", f"v{k + 1}", 8) for k in range(n - 1)),
        ("v0",),
        (f"v{n}",),
    )
    fan = Plan(
        "dag",
        tuple(Subgraph(f"sg{k}", graph, ("v0",), (f"out{k}",)) for k in range(n)),
        (),
        ("v0",),
        tuple(f"out{k}" for k in range(n)),
    )
    return graph, one, chain, fan


def _alternating(plan, workers=2):
    """Chain subgraphs alternate between the workers (placement would keep a chain on one worker):
    every hop then crosses actors, as a chain of stages or branches does."""
    return {sg.name: k % workers for k, sg in enumerate(plan.subgraphs)}


@click.command("dispatch")
@click.option(
    "--n", type=click.IntRange(1), default=16, show_default=True, help="subgraphs in the chain and fan-out plans"
)
@click.option(
    "--repeat", type=click.IntRange(1), default=30, show_default=True, help="samples per peer (medians are reported)"
)
@json_out_option("dispatch")
def command(n, repeat, json_out):
    """Per-subgraph dispatch overhead of RayPlanExecutor vs bare Ray actor calls and Ray Compiled Graphs."""
    import ray
    from ray.dag import InputNode, MultiOutputNode

    from distgraph.distributed import runtime
    from distgraph.distributed.plan_runner import RayPlanExecutor
    from distgraph.graph.executor import Runner

    runtime.init(num_cpus=2)  # (or the session's Ray): 7 bare actors and 4 executors of 2 workers fit in 2
    graph, one, chain, fan = _tiny_plans(n)
    x = np.zeros(1)
    runner = Runner(graph)
    compute = time_call(lambda: runner(x), repeat=repeat, inner=100)
    echo = ray.remote(num_cpus=ACTOR_CPUS)(Echo)
    lone, a, b, e, f, c, d = actors = [echo.remote() for _ in range(7)]  # (a, b) chain, (e, f) fan-out
    ray.get([h.echo.remote(x) for h in actors])
    executors = {
        "one": RayPlanExecutor(one, 2, cpus_per_worker=ACTOR_CPUS, compiled=False),
        "chain": RayPlanExecutor(chain, 2, cpus_per_worker=ACTOR_CPUS, compiled=False, placement=_alternating(chain)),
        "fan": RayPlanExecutor(fan, 2, cpus_per_worker=ACTOR_CPUS, compiled=False),
    }
    try:
        ex_chain = executors["chain"]

        def bare_chain():
            ref = x
            for k in range(n):
                ref = (a, b)[k % 2].echo.remote(ref)
            ray.get(ref)

        def bare_fan():
            ray.get([(e, f)[k % 2].echo.remote(x) for k in range(n)])

        first = interleaved(
            {
                "bare call": lambda: ray.get(lone.echo.remote(x)),
                "distgraph 1 subgraph": lambda: executors["one"].run(x),
                "bare chain": bare_chain,
                "distgraph chain": lambda: ex_chain.run(x),
                "bare fan-out": bare_fan,
                "distgraph fan-out": lambda: executors["fan"].run(x),
            },
            repeat=repeat,
        )
        with InputNode() as inp:
            dag = MultiOutputNode([c.echo.bind(inp), d.echo.bind(inp)])
        step = dag.experimental_compile()
        ray.get(step.execute(x))
        idle = _idle_cpu(ray.get([c.pid.remote(), d.pid.remote()]))
        compiled_chain = RayPlanExecutor(
            chain, 2, cpus_per_worker=ACTOR_CPUS, compiled=True, placement=_alternating(chain)
        )
        try:
            second = interleaved(
                {
                    "2-actor step, classic": lambda: ray.get([a.echo.remote(x), b.echo.remote(x)]),
                    "2-actor step, compiled": lambda: ray.get(step.execute(x)),
                    "distgraph chain, classic": lambda: ex_chain.run(x),
                    "distgraph chain, compiled": lambda: compiled_chain.run(x),
                },
                repeat=repeat,
            )
            compiled_error = compiled_chain.compiled_error
        finally:
            step.teardown()
            compiled_chain.shutdown()
    finally:
        for ex in executors.values():
            ex.shutdown()
        runtime.kill(actors)

    us = 1e6
    per = {k: v / (n if ("chain" in k or "fan" in k) else 1) for k, v in {**first, **second}.items()}
    rows = [
        ["one subgraph vs one call", per["distgraph 1 subgraph"] * us, per["bare call"] * us],
        [f"chain of {n}, per subgraph", per["distgraph chain"] * us, per["bare chain"] * us],
        [f"fan-out of {n}, per subgraph", per["distgraph fan-out"] * us, per["bare fan-out"] * us],
    ]
    rows = [r + [r[1] / r[2], r[1] / per["bare call"] / us] for r in rows]
    click.echo(f"dispatch overhead, 2 actors · {machine()}")
    click.echo(f"subgraph compute (Runner call in-process): {compute * us:.2f} µs")
    click.echo(table(["pattern", "distgraph µs", "bare Ray µs", "× bare (same pattern)", "× one bare call"], rows))
    cg = [
        ["2-actor step", per["2-actor step, classic"] * us, per["2-actor step, compiled"] * us],
        [f"distgraph chain of {n}, per subgraph", per["distgraph chain, classic"] * us,
         per["distgraph chain, compiled"] * us],
    ]  # fmt: skip
    cg = [r + [r[1] / r[2]] for r in cg]
    click.echo(table(["Ray Compiled Graphs", "classic µs", "compiled µs", "speed-up"], cg))
    click.echo(
        f"while idle, each compiled-graph actor uses {', '.join(f'{u:.2f}' for u in idle)} CPU-s/s "
        "(it polls its channel); classic actors use none"
    )
    if compiled_error:
        click.echo(f"distgraph compiled chain fell back to actor calls: {compiled_error}")
    write_json(
        json_out,
        {"n": n, "repeat": repeat, "seconds": {**first, **second}, "per_subgraph_s": per,
         "compute_s": compute, "compiled_idle_cpu": idle, "compiled_error": compiled_error, "machine": machine()},
        click.echo,
    )  # fmt: skip
