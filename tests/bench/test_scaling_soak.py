"""`bench scaling` and `bench soak` on small settings: every output is written and memory stays flat."""

import json
import time

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_scaling_writes_table_json_plot_and_trace(ray_session, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from distgraph.bench.scaling import command

    args = "--workers 1,2 --sizes 32,64,10 --batch 64 --weak-batch 32 --steps 4 --repeat 1 --strategy data,pipeline"
    result = CliRunner().invoke(command, [*args.split(), "--json-out", str(tmp_path / "scaling.json")])
    assert result.exit_code == 0, result.output
    assert "torch-ddp" in result.output and "distgraph-gloo" in result.output
    assert "target efficiency 1→2 workers ≥ 90% (weak scaling)" in result.output
    assert "target ≥ 1.1x DDP's samples/s at 2 workers: strong" in result.output

    report = json.loads((tmp_path / "scaling.json").read_text())
    points = {(p["mode"], p["system"], p["workers"]): p for p in report["points"]}
    assert set(points) == {
        (mode, system, w)
        for mode in ("strong", "weak")
        for system, w in [
            ("distgraph", 1), ("distgraph", 2), ("distgraph-gloo", 2), ("distgraph-pipeline", 2), ("torch-ddp", 1),
            ("torch-ddp", 2),
        ]
    }  # fmt: skip
    assert (
        points["strong", "distgraph", 2]["global_batch"] == 64 and points["weak", "distgraph", 2]["global_batch"] == 64
    )
    assert all(p["samples_per_s"] > 0 and p["efficiency"] > 0 for p in points.values())
    assert points["strong", "distgraph", 1]["efficiency"] == 1.0
    two = points["strong", "distgraph", 2]["breakdown_ms"]
    assert two["compute"] > 0 and two["comm"] > 0 and two["overhead"] >= 0
    assert points["strong", "distgraph", 1]["breakdown_ms"]["comm"] == 0.0  # one worker: no all-reduce
    # the host's ceiling: distgraph's weak-scaling steps computed on every worker at once, nothing exchanged
    assert points["weak", "distgraph", 1]["ceiling"] == 1.0 and points["weak", "distgraph", 2]["ceiling"] > 0
    assert all(p.get("ceiling") is None for k, p in points.items() if k[:2] != ("weak", "distgraph"))
    assert "the compute alone, no exchange (the host's ceiling): " in result.output

    trace = json.loads((tmp_path / "scaling.trace.json").read_text())
    assert {e["pid"] for e in trace["traceEvents"]} == {0, 1}
    assert any(e["name"] == "all-reduce: transfer" for e in trace["traceEvents"])
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["config"]["pause"] is True  # the other systems were stopped during each one's epochs
    assert report["config"]["bind_to"] == "core" and "each worker bound to a core of its own" in result.output


def test_paused_stops_every_system_but_the_one_running_and_release_continues_all():
    """Real processes: `only(key)` leaves key's running and stops the others'; a system with no processes
    yet (a Trainer before its first fit) is asked again later; `release()` continues every one."""
    import subprocess

    psutil = pytest.importorskip("psutil")
    from distgraph.bench._pause import Paused

    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]

    class Peer:
        def __init__(self, pids):
            self.given = pids

        def pids(self):
            return self.given

    late = Peer([])
    peers = {"a": Peer([procs[0].pid]), "b": Peer([procs[1].pid]), "late": late}

    def status(p, want):  # a signal takes effect soon, not at once
        deadline = time.monotonic() + 5
        while psutil.Process(p.pid).status() != want and time.monotonic() < deadline:
            time.sleep(0.01)
        return psutil.Process(p.pid).status()

    running, stopped = psutil.STATUS_SLEEPING, psutil.STATUS_STOPPED  # `sleep` runs by sleeping
    try:
        paused = Paused(peers)
        paused.only("a")
        assert (status(procs[0], running), status(procs[1], stopped)) == (running, stopped)
        late.given = [procs[2].pid]  # its workers have started
        paused.only("b")
        want = [stopped, running, stopped]
        assert [status(p, w) for p, w in zip(procs, want)] == want
        paused.release()
        assert [status(p, running) for p in procs] == [running] * 3
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("sync", ["sync", "async"])
def test_soak_short_run_stays_flat_after_warmup(ray_session, sync):
    from distgraph.bench.soak import run_soak, verdict

    result = run_soak(steps=200, workers=2, sample_every=10, warmup=50, epoch_steps=50, sync=sync)
    assert result["steps"] == 200 and len(result["samples"]) == 21 and len(result["settled"]) == 5
    figures = verdict(result, warmup=50, mem_tol_mb=8.0, store_tol_mb=1.0, refs_tol=4)
    judged = {k: f for k, f in figures.items() if f["flat"] is not None}
    assert {"store bytes (settled)", "driver ObjectRefs (settled)", "private driver", "private worker 1"} <= set(judged)
    assert all(f["flat"] for f in judged.values()), {k: f["growth"] for k, f in judged.items()}


def test_verdicts_judge_weak_scaling_efficiency_and_both_ratios_to_ddp():
    from distgraph.bench.scaling_report import verdicts

    def point(mode, workers, efficiency, vs_ddp, system="distgraph"):
        return {"mode": mode, "workers": workers, "system": system, "efficiency": efficiency, "vs_ddp": vs_ddp}

    points = [point("strong", 1, 1.0, 1.0), point("weak", 1, 1.0, 1.0), point("strong", 2, 0.86, 1.3),
              point("weak", 2, 0.91, 1.05), point("weak", 2, 0.7, 1.0, system="torch-ddp")]  # fmt: skip
    efficiency, ratio = verdicts(points)
    assert efficiency == "target efficiency 1→2 workers ≥ 90% (weak scaling): 91.0% met; strong scaling 86%"
    assert ratio == "target ≥ 1.1x DDP's samples/s at 2 workers: strong 1.30x, weak 1.05x NOT met"
    assert verdicts([point("weak", 1, 1.0, None)]) == []
    points[2]["vs_ddp"], points[3]["vs_ddp"] = 1.0968, 1.1049  # a miss that two decimals would round onto 1.10
    assert verdicts(points)[1] == "target ≥ 1.1x DDP's samples/s at 2 workers: strong 1.097x, weak 1.10x NOT met"
    points[2]["vs_ddp"], points[3]["vs_ddp"] = 1.3, 1.05
    points[3]["best_efficiency"] = 0.95
    assert verdicts(points)[0].endswith("91.0% met; strong scaling 86%; best epochs: weak 95%")
    points[3]["ceiling"] = 0.97
    assert verdicts(points)[0].endswith(
        "best epochs: weak 95%; the compute alone, no exchange (the host's ceiling): 97%"
    )
    points[3]["efficiency_interval"] = [0.87, 0.93]
    assert (
        "91.0% met (95% interval over the epochs 87–93% — 90% lies inside it: not told apart by this run)"
        in (verdicts(points)[0])
    )
    points[3]["efficiency_interval"] = [0.905, 0.93]
    assert "91.0% met (95% interval over the epochs 90–93%); strong" in verdicts(points)[0]


def test_efficiency_interval_resamples_whole_rounds():
    from distgraph.bench.scaling_report import efficiency_interval

    assert efficiency_interval([100.0] * 4, [180.0] * 4, 2) is None  # too few rounds to say
    assert efficiency_interval([100.0] * 6, [180.0] * 6, 2) == [0.9, 0.9]  # no noise: no width
    one = [100.0, 98.0, 103.0, 101.0, 99.0, 102.0, 100.0]
    tracking = [x * 1.8 for x in one]  # the host's drift moved both epochs of each round alike
    assert efficiency_interval(one, tracking, 2) == [pytest.approx(0.9), pytest.approx(0.9)]
    many = [181.0, 175.0, 186.0, 182.0, 177.0, 185.0, 179.0]
    lo, hi = efficiency_interval(one, many, 2)
    assert lo < 0.9 < hi and hi - lo < 0.05
    noisy = [180.0, 150.0, 200.0, 170.0, 185.0, 160.0, 195.0]
    lo2, hi2 = efficiency_interval(one, noisy, 2)
    assert hi2 - lo2 > hi - lo  # a noisier 2-worker series: a wider interval


def test_best_efficiency_compares_each_systems_best_epoch():
    from distgraph.bench.scaling_report import add_ratios

    one = {"mode": "weak", "system": "distgraph", "workers": 1, "samples_per_s": 100.0, "repeats": [90.0, 100.0, 110.0]}
    two = {
        "mode": "weak",
        "system": "distgraph",
        "workers": 2,
        "samples_per_s": 170.0,
        "repeats": [150.0, 170.0, 209.0],
    }
    add_ratios([one, two])
    assert two["efficiency"] == 170.0 / 200.0
    assert two["best_efficiency"] == 209.0 / 220.0
    assert two["ceiling"] is None  # no compute-alone run: no ceiling
    one["compute_alone_samples_per_s"], two["compute_alone_samples_per_s"] = 120.0, 228.0
    add_ratios([one, two])
    assert one["ceiling"] == 1.0 and two["ceiling"] == 228.0 / 240.0
