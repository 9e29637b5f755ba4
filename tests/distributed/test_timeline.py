"""Step timeline: the period splits into compute/comm/wait/overhead; one step exports as a Chrome trace."""

import pytest

from distgraph.distributed.timeline import StepClock, Timeline, split_step


def record(start, install, compute, comm):
    return {
        "t_start": start, "t_install": install, "t_compute": compute, "t_comm": comm,
        "t_end": start + install + compute + comm,
    }  # fmt: skip


def two_ranks():
    # rank 0 reaches the all-reduce at 1.0 + 0.1 + 0.5 = 1.6, rank 1 at 1.0 + 0.1 + 0.8 = 1.9:
    # rank 0 waits 0.3 of its 0.4 in the all-reduce, both transfer for 0.1
    return [record(1.0, 0.1, 0.5, 0.4), record(1.0, 0.1, 0.8, 0.1)]


def test_wait_is_the_gap_to_the_last_rank_arriving_at_the_allreduce():
    r0, r1 = split_step(two_ranks())
    assert r0["wait"] == pytest.approx(0.3) and r0["comm"] == pytest.approx(0.1)
    assert r1["wait"] == 0.0 and r1["comm"] == pytest.approx(0.1)


def test_breakdown_sums_to_the_driver_period():
    tl = Timeline()
    tl.add(0, [{**r, "loss_sum": 1.0, "count": 4} for r in two_ranks()])
    b = tl.breakdown(1.5)
    assert b["compute"] == pytest.approx(0.65) and b["wait"] == pytest.approx(0.15) and b["comm"] == pytest.approx(0.1)
    assert b["compute"] + b["comm"] + b["wait"] + b["overhead"] == pytest.approx(1.5)


def test_the_wait_at_the_barrier_after_the_update_counts_as_wait_and_shows_in_the_trace():
    """Rank 0 updates its chunk in 0.05 and then waits 0.15 for rank 1's 0.2: that is waiting for a
    peer, not optimizer work."""
    tl = Timeline()
    ranks = [record(1.0, 0.1, 0.5, 0.4), record(1.0, 0.1, 0.8, 0.1)]
    for r, update, publish in zip(ranks, (0.05, 0.2), (0.15, 0.0)):
        r.update(t_update=update, t_publish=publish, t_end=r["t_end"] + update + publish)
    tl.add(0, ranks)
    b = tl.breakdown(1.5)
    assert b["update"] == pytest.approx(0.125) and b["wait"] == pytest.approx(0.15 + 0.075)
    assert b["compute"] + b["comm"] + b["wait"] + b["update"] + b["overhead"] == pytest.approx(1.5)
    rank0 = [e for e in tl.chrome_trace()["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
    assert [e["name"] for e in rank0][-2:] == ["optimizer update (own chunk)", "parameters: wait for peers' updates"]
    assert rank0[-1]["ts"] == pytest.approx(1.05e6) and rank0[-1]["dur"] == pytest.approx(1.5e5)


def test_statistics_without_timings_are_ignored():
    tl = Timeline()
    tl.add(0, [{"loss_sum": 1.0, "count": 4}])
    assert len(tl) == 0 and tl.breakdown(1.0) == {}


def test_chrome_trace_has_one_process_per_rank_and_ordered_phases():
    tl = Timeline()
    tl.add(3, two_ranks())
    trace = tl.chrome_trace()
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert names == {"distgraph worker 0", "distgraph worker 1"}
    rank0 = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
    assert [e["name"] for e in rank0] == [
        "install parameters", "forward + backward", "all-reduce: wait for peers", "all-reduce: transfer",
    ]  # fmt: skip
    assert [e["ts"] for e in rank0] == pytest.approx([0, 1e5, 6e5, 9e5])
    assert trace["otherData"] == {"step": 3, "workers": 2}


def test_step_clock_accumulates_laps():
    clock = StepClock()
    clock.lap("install")
    clock.lap("compute")
    clock.lap("compute")
    stats = clock.stats()
    assert stats["t_comm"] == 0.0 and stats["t_publish"] == 0.0 and stats["t_end"] >= stats["t_start"]
    assert stats["t_install"] + stats["t_compute"] == pytest.approx(stats["t_end"] - stats["t_start"])


def async_row(rank, base, version, claim, computed, pushed):
    return {
        "rank": rank,
        "base": base,
        "version": version,
        "t_claim": claim,
        "t_computed": computed,
        "t_pushed": pushed,
    }


def test_async_timeline_counts_staleness_waits_and_draws_every_step():
    from distgraph.distributed.timeline import AsyncTimeline

    tl = AsyncTimeline()
    # worker 1 computes step 0 on version 0 for 2 s; worker 0 pushes steps 1 and 2 meanwhile (versions 1, 2),
    # then waits 0.5 s before claiming step 3; worker 1's push makes version 3: 2 pushes landed in between
    tl.add(0, [async_row(1, 0, 3, 0.0, 2.0, 2.1)])
    tl.add(1, [async_row(0, 0, 1, 0.0, 0.9, 1.0)])
    tl.add(2, [async_row(0, 1, 2, 1.0, 1.9, 2.0)])
    tl.add(3, [async_row(0, 3, 4, 2.5, 3.4, 3.5)])
    tl.add(4, [{"loss_sum": 1.0, "count": 2}])  # no schedule columns (store actors): ignored
    assert tl.staleness() == [2, 0, 0, 0]
    w = tl.per_worker()
    assert w[0]["steps"] == 3 and w[0]["wait_s"] == pytest.approx(0.5) and w[0]["compute_s"] == pytest.approx(2.7)
    assert w[1] == {"steps": 1, "compute_s": 2.0, "push_s": pytest.approx(0.1), "wait_s": 0}
    trace = tl.chrome_trace()
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 8 and {e["pid"] for e in spans} == {0, 1}
    assert spans[0]["name"] == "step 0 on version 0" and spans[1]["name"] == "push → version 3"
    assert spans[0]["dur"] == pytest.approx(2e6)
