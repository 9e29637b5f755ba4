"""Per-step timing records from the workers: where a data-parallel step's time goes.

Each worker stamps its step with the wall clock (`StepClock`) and returns the figures inside its
statistics dict (`t_start`, `t_install`, `t_compute`, `t_comm`, `t_end`: plain floats, so the
scheduler's statistics merge ignores them). The driver collects them per step and rank in a
`Timeline` (`scheduler.on_worker_stats = timeline.add`), which splits the step period into

- compute:  forward, loss and backward of the worker's shard;
- comm:     the all-reduce, less the time it spent waiting for slower ranks;
- update:   the optimizer update of the worker's own chunk (the parameter store sharded across the
            workers, `zero.py`; 0 where store actors apply updates, which then counts as overhead);
- wait:     waiting for peers, i.e. load imbalance: inside the all-reduce, for the last rank to arrive
            (max over ranks of the arrival time at the all-reduce, minus this rank's arrival), and after
            the update, at the barrier that makes every rank's chunk everyone's (`t_publish`);
- overhead: the rest of the driver-measured step period: Ray task dispatch and argument transfer,
            the parameter store's update, installing the new parameters in the worker.

Wait is computed across ranks from wall-clock stamps, so it is exact on one node and as good as
the clock synchronization between nodes elsewhere. `chrome_trace` writes one step of every rank as
a Chrome trace (the JSON format Perfetto and chrome://tracing load).
"""

import statistics
import time

TIMING_KEYS = ("t_start", "t_install", "t_compute", "t_comm", "t_update", "t_publish", "t_end")


def trace_event(name, cat, pid, start_s, dur_s, args):
    """A Chrome-trace complete event ("X") on thread 0 of process `pid`: start and duration in seconds,
    written in µs (the trace's unit)."""
    us = lambda seconds: round(seconds * 1e6, 3)
    return {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": 0, "ts": us(start_s), "dur": us(dur_s),
            "args": args}  # fmt: skip


def process_name(pid, name):
    """The metadata event that names process `pid` in the trace viewer (one process per rank)."""
    return {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}


class StepClock:
    """Wall-clock laps of one worker step: `lap("install")`, `lap("compute")`, ...; `stats()` → dict."""

    def __init__(self):
        self.start = self.last = time.time()
        self.laps = {}

    def lap(self, name):
        now = time.time()
        self.laps[f"t_{name}"] = self.laps.get(f"t_{name}", 0.0) + now - self.last
        self.last = now

    def stats(self):
        return {
            "t_install": 0.0,
            "t_compute": 0.0,
            "t_comm": 0.0,
            "t_update": 0.0,
            "t_publish": 0.0,
            **self.laps,
            "t_start": self.start,
            "t_end": self.last,
        }


def split_step(records):
    """Per-rank {compute, comm, wait, update, publish, install, start, arrive, end} of one step from its
    rank records (`wait`: in the all-reduce; `publish`: at the barrier after the update)."""
    arrive = [r["t_start"] + r["t_install"] + r["t_compute"] for r in records]
    last = max(arrive)
    out = []
    for r, a in zip(records, arrive):
        wait = min(max(last - a, 0.0), r["t_comm"])
        out.append({
            "install": r["t_install"], "compute": r["t_compute"], "wait": wait, "comm": r["t_comm"] - wait,
            "update": r.get("t_update", 0.0), "publish": r.get("t_publish", 0.0),
            "start": r["t_start"], "arrive": a, "end": r["t_end"],
        })  # fmt: skip
    return out


class Timeline:
    """Timing records of the steps a scheduler ran: {step: [record of rank 0, rank 1, ...]}."""

    def __init__(self):
        self.steps = {}

    def add(self, step, parts):
        """Keep the timing keys of each rank's statistics (a replayed step replaces its first try)."""
        if all("t_start" in p for p in parts):
            self.steps[step] = [{k: float(p.get(k, 0.0)) for k in TIMING_KEYS} for p in parts]

    def __len__(self):
        return len(self.steps)

    def clear(self):
        self.steps = {}

    def breakdown(self, period_s):
        """Mean seconds per step of compute, comm, wait (both waits for peers), update, install and
        overhead (= period − the others).

        `period_s` is the driver-measured seconds per step; compute, comm and wait are means over
        ranks and steps, so their sum is the time the average rank spends inside its step."""
        if not self.steps:
            return {}
        per_step = [split_step(records) for records in self.steps.values()]
        mean = lambda key: statistics.fmean(statistics.fmean(r[key] for r in ranks) for ranks in per_step)
        out = {k: mean(k) for k in ("compute", "comm", "wait", "update", "install")}
        out["wait"] += mean("publish")
        out["overhead"] = max(period_s - out["compute"] - out["comm"] - out["wait"] - out["update"], 0.0)
        out["period"] = period_s
        return out

    def median_step(self):
        """The recorded step whose span (first rank start to last rank end) is the median one."""
        spans = sorted((max(r["t_end"] for r in rs) - min(r["t_start"] for r in rs), t) for t, rs in self.steps.items())
        return spans[len(spans) // 2][1]

    def chrome_trace(self, step=None, label="distgraph"):
        """One step of every rank as Chrome-trace events (µs from the step's first start), one process per rank."""
        step = self.median_step() if step is None else step
        ranks = split_step(self.steps[step])
        origin = min(r["start"] for r in ranks)
        events = []
        for rank, r in enumerate(ranks):
            events.append(process_name(rank, f"{label} worker {rank}"))
            t = r["start"] - origin
            for name, dur in (
                ("install parameters", r["install"]),
                ("forward + backward", r["compute"]),
                ("all-reduce: wait for peers", r["wait"]),
                ("all-reduce: transfer", r["comm"]),
                ("optimizer update (own chunk)", r["update"]),
                ("parameters: wait for peers' updates", r["publish"]),
            ):
                if dur > 0:
                    events.append(trace_event(name, "step", rank, t, dur, {"step": step, "rank": rank}))
                t += dur
        return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"step": step, "workers": len(ranks)}}


class AsyncTimeline:
    """The schedule of an async run (`scheduler.on_worker_stats = timeline.add` on the shared store):
    per step, which worker computed it on which version, which version its push made, and when.

    Staleness of a step = the pushes that landed between its claim and its own push (version − 1 −
    base): 0 when nobody else pushed meanwhile. A worker's wait = the gap between its push and its
    next claim: the version bound holding it back, or the end of a call."""

    KEYS = ("rank", "base", "version", "t_claim", "t_computed", "t_pushed")

    def __init__(self):
        self.records = []

    def add(self, step, parts):
        for p in parts:
            if "t_claim" in p:
                self.records.append({"step": step, **{k: float(p[k]) for k in self.KEYS}})

    def clear(self):
        self.records = []

    def staleness(self):
        return [int(r["version"] - 1 - r["base"]) for r in self.records]

    def per_worker(self):
        """{rank: {steps, compute_s, push_s, wait_s}} — totals over the recorded steps."""
        out = {}
        for rank in sorted({int(r["rank"]) for r in self.records}):
            mine = sorted((r for r in self.records if int(r["rank"]) == rank), key=lambda r: r["t_claim"])
            gaps = [b["t_claim"] - a["t_pushed"] for a, b in zip(mine, mine[1:])]
            out[rank] = {
                "steps": len(mine),
                "compute_s": sum(r["t_computed"] - r["t_claim"] for r in mine),
                "push_s": sum(r["t_pushed"] - r["t_computed"] for r in mine),
                "wait_s": sum(g for g in gaps if g > 0),
            }
        return out

    def chrome_trace(self, label="distgraph async"):
        """Every recorded step as Chrome-trace events (µs from the first claim), one process per worker."""
        if not self.records:
            return {"traceEvents": [], "displayTimeUnit": "ms"}
        origin = min(r["t_claim"] for r in self.records)
        events = [
            process_name(rank, f"{label} worker {rank}") for rank in sorted({int(r["rank"]) for r in self.records})
        ]
        for r in self.records:
            rank, args = int(r["rank"]), {"step": r["step"], "base": int(r["base"]), "version": int(r["version"])}
            for name, a, b in (
                (f"step {r['step']} on version {int(r['base'])}", r["t_claim"], r["t_computed"]),
                (f"push → version {int(r['version'])}", r["t_computed"], r["t_pushed"]),
            ):
                events.append(trace_event(name, "async", rank, a - origin, b - a, args))
        return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"steps": len(self.records)}}
