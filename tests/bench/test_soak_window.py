"""`bench soak`'s and `bench scaling`'s judgement without Ray: a series needs two samples after warm-up to be
judged, the command refuses settings that leave fewer, and an efficiency without a 1-worker run says why."""

import pytest
from click.testing import CliRunner


def test_verdicts_say_efficiency_needs_a_one_worker_run():
    from distgraph.bench.scaling_report import add_ratios, rows, verdicts

    points = [
        {"mode": "weak", "workers": w, "system": "distgraph", "samples_per_s": 100.0 * w, "step_ms": 1.0,
         "global_batch": 64 * w, "breakdown_ms": {}}
        for w in (2, 4)
    ]  # fmt: skip
    add_ratios(points)
    assert [r[-1] for r in rows(points)] == ["—", "—"]
    assert verdicts(points) == [
        "efficiency: — (samples/s ÷ (W × 1-worker samples/s) needs a 1-worker baseline: put 1 in --workers, "
        "e.g. --workers 1,4)"
    ]


def test_soak_judges_no_series_from_fewer_than_two_samples():
    from distgraph.bench.soak import flatness, verdict

    one = [{"step": s, "store_bytes": 10, "store_objects": 1, "refs": 2, "private:driver": 5, "rss:driver": 9}
           for s in (0, 100)]  # fmt: skip
    assert flatness(one, "refs", warmup=200) == {
        "first": None, "last": None, "growth": None, "slope_per_1000_steps": None, "samples": 0,
    }  # fmt: skip
    assert flatness(one, "refs", warmup=100)["growth"] is None
    assert flatness(one, "refs", warmup=0)["growth"] == 0
    figures = verdict({"samples": one, "settled": one}, warmup=100)
    assert all(f["flat"] is None for f in figures.values())  # "—" in the table, not "yes"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "100"], "'--steps' / '--warmup': --steps 100 with --warmup 200 leaves 0 settled sample(s)"),
        (["--steps", "300", "--warmup", "250"], "leaves 1 settled sample(s) after warm-up"),
        (["--steps", "250"], "'--steps': 250 is not a multiple of 100: the soak runs whole epochs of 100 steps"),
        (["--steps", "300", "--sample-every", "250", "--warmup", "1"], "'--sample-every': --steps 300, --warmup 1"),
    ],
)
def test_soak_refuses_a_window_too_short_to_judge_before_starting_ray(monkeypatch, args, says):
    from distgraph.bench import soak
    from distgraph.distributed import runtime

    monkeypatch.setattr(runtime, "init", lambda *a, **k: pytest.fail("started Ray"))
    result = CliRunner().invoke(soak.command, [*args, "--json-out", ""])
    assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output
    assert soak.window_samples(1000, 200, 10) == (81, 9)
    soak.check_window(300, 200, 10)  # 200 and 300 settled: enough
