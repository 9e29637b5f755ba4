"""The α-β scaling model: its formulas, its predictions' shape, and the Horovod comparison it prints."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner

from distgraph.bench import simulator_model as sm
from distgraph.bench.simulate import command
from distgraph.errors import ConfigError


def test_ring_allreduce_is_2_n_minus_1_latencies_plus_2_n_minus_1_over_n_bytes_over_beta():
    assert sm.ring_time(1, 1e9, 1e9, 1e-5) == 0.0
    assert sm.ring_time(4, 1e9, 1e9, 1e-5) == pytest.approx(2 * 3 * 1e-5 + 2 * 3 / 4 * 1.0)
    assert sm.ring_time(4, 1e9, 1e9, 1e-5, buckets=3) == pytest.approx(3 * 2 * 3 * 1e-5 + 1.5)
    # the bandwidth term tends to 2·S/β: a ring's traffic per rank does not grow with n
    assert sm.ring_time(1024, 1e9, 1e9, 0.0) == pytest.approx(2 * 1023 / 1024)


def test_tree_allreduce_pays_log2_n_hops_each_carrying_all_bytes():
    assert sm.tree_time(8, 1e6, 1e9, 1e-5) == pytest.approx(2 * 3 * (1e-5 + 1e-3))
    assert sm.tree_time(5, 1e6, 1e9, 0.0) == pytest.approx(2 * 3 * 1e-3)  # ⌈log2 5⌉ = 3
    cfg = sm.Config(step_time=1.0, params=1e3, bandwidth=1e9, latency=1e-5, algorithm="tree")
    assert sm.allreduce_time(cfg, 8) == pytest.approx(sm.tree_time(8, 4e3, 1e9, 1e-5))


def test_hierarchical_allreduce_saves_latency_hops_not_bandwidth():
    cfg = sm.horovod_config(latency=1e-5)
    flat, hier = sm.allreduce_time(cfg, 512), sm.allreduce_time(replace(cfg, algorithm="hierarchical"), 512)
    no_latency = replace(cfg, latency=0.0)
    flat_bw, hier_bw = (
        sm.allreduce_time(no_latency, 512),
        sm.allreduce_time(replace(no_latency, algorithm="hierarchical"), 512),
    )
    assert flat - flat_bw == pytest.approx(3 * 2 * 511 * 1e-5)  # 1,022 hops per fused buffer
    assert hier - hier_bw == pytest.approx(3 * (2 * 127 + 2 * 3) * 1e-5)  # 254 across + 6 inside
    assert hier_bw >= flat_bw  # the same NIC term, plus the PCIe phase inside the server


def test_pipeline_bubble_is_k_minus_1_over_m_plus_k_minus_1():
    assert sm.bubble(1, 1) == 0.0
    assert sm.bubble(4, 12) == pytest.approx(3 / 15)
    assert sm.bubble(8, 1) == pytest.approx(7 / 8)
    cfg = sm.Config(step_time=1.0, params=0.0, pipeline_stages=4, micro_batches=12, workers=(1, 2, 4, 8))
    rows = sm.predict(cfg)["rows"]
    assert [r["workers"] for r in rows] == [4, 8]  # only counts that split into 4 stages
    assert rows[0]["compute"] == pytest.approx(1.0 / 4 / (1 - 3 / 15))
    assert rows[0]["efficiency"] == pytest.approx(1 - 3 / 15)  # with free communication, only the bubble is lost


def test_pipeline_replicas_of_a_stage_sit_on_different_servers():
    cfg = sm.Config(step_time=1.0, params=8e6, bandwidth=1e9, intra_bandwidth=100e9, latency=0.0,
                    gpus_per_server=8, pipeline_stages=8, micro_batches=8, workers=(16,))  # fmt: skip
    row = sm.predict(cfg)["rows"][0]
    assert row["comm"] == pytest.approx(sm.ring_time(2, 32e6 / 8, 1e9, 0.0))  # 1/8 of 32 MB, over the network


def test_efficiency_falls_monotonically_and_samples_per_s_follow_the_step_time():
    cfg = sm.Config(step_time=0.01, batch=32, params=100e6, bandwidth=1e9, overlap=0.5)
    rows = sm.predict(cfg)["rows"]
    eff = [r["efficiency"] for r in rows]
    assert [r["workers"] for r in rows] == list(sm.WORKERS) and sm.WORKERS[-1] == 1024
    assert eff[0] == 1.0 and all(a >= b for a, b in zip(eff, eff[1:])) and eff[-1] < 0.1
    for r in rows:
        assert r["samples_per_s"] == pytest.approx(r["workers"] * 32 / r["step"])
        assert r["step"] == pytest.approx(r["compute"] + r["exposed_comm"] + r["overhead"])


def test_overlap_hides_communication_behind_backward_up_to_its_share():
    cfg = sm.Config(step_time=0.3, params=10e6, bandwidth=1e9, latency=0.0, workers=(8,))
    comm = sm.allreduce_time(cfg, 8)  # 2·7/8·40 MB / 1 GB/s = 70 ms
    for overlap in (0.0, 0.25, 1.0):
        row = sm.predict(replace(cfg, overlap=overlap))["rows"][0]
        assert row["exposed_comm"] == pytest.approx(max(0.0, comm - overlap * 2 / 3 * 0.3))


def test_compute_time_from_flops_or_measured_step_time():
    assert sm.Config(sample_flops=2e9, flops=1e12, batch=100).compute_time() == pytest.approx(0.2)
    assert sm.Config(step_time=0.05, sample_flops=2e9, flops=1e12).compute_time() == 0.05  # measured wins
    with pytest.raises(ConfigError, match="step_time"):
        sm.Config(params=1.0).compute_time()
    with pytest.raises(ConfigError, match="algorithm"):
        sm.Config(step_time=1.0, params=1.0, algorithm="butterfly")


def test_predict_takes_measured_numbers_and_returns_plain_data():
    out = sm.predict(sm.Config(step_time=0.004, batch=128, params=400e3, bandwidth=2e9, latency=30e-6,
                               overhead=0.001, workers=(1, 2)))  # fmt: skip
    json.dumps(out)  # serialisable as it is
    assert out["grad_bytes"] == 1.6e6 and out["compute_time"] == 0.004
    two = out["rows"][1]
    assert two["comm"] == pytest.approx(2 * 30e-6 + 1.6e6 / 2e9)
    assert two["step"] == pytest.approx(0.004 + two["comm"] + 0.001)


def test_expected_max_of_n_normals_matches_known_values():
    assert sm.expected_max_normal(1) == 0.0
    assert sm.expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-6)
    assert sm.expected_max_normal(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)), rel=1e-6)
    assert 3.1 < sm.expected_max_normal(1024) < 3.3  # ≈ √(2 ln n) − a correction


def test_contention_slows_compute_only_where_workers_share_a_node():
    cfg = sm.Config(
        step_time=0.01, params=0.0, latency=0.0, compute_contention=1.5, gpus_per_server=4, workers=(1, 2, 4, 8)
    )
    rows = {r["workers"]: r for r in sm.predict(cfg)["rows"]}
    assert rows[1]["compute"] == 0.01  # alone on its node
    assert rows[2]["compute"] == rows[8]["compute"] == pytest.approx(0.015)
    assert rows[8]["efficiency"] == pytest.approx(1 / 1.5)
    dedicated = sm.predict(replace(cfg, gpus_per_server=1))["rows"]
    assert all(r["compute"] == 0.01 for r in dedicated)


def test_jitter_makes_the_step_wait_for_the_slowest_of_n_ranks():
    cfg = sm.Config(step_time=0.01, params=0.0, latency=0.0, compute_jitter=0.1, workers=(1, 2, 1024))
    one, two, many = sm.predict(cfg)["rows"]
    assert one["wait"] == 0.0
    assert two["wait"] == pytest.approx(0.01 * 0.1 / math.sqrt(math.pi), rel=1e-6)
    assert many["wait"] == pytest.approx(0.01 * 0.1 * sm.expected_max_normal(1024))
    assert many["step"] == pytest.approx(many["compute"] + many["wait"])


def test_sharded_update_costs_one_nth_of_the_replicated_one():
    cfg = sm.Config(step_time=0.01, params=0.0, latency=0.0, update_time=0.004, workers=(1, 4))
    assert [r["update"] for r in sm.predict(cfg)["rows"]] == [0.004, 0.004]  # DDP: every rank updates all
    sharded = sm.predict(replace(cfg, update_sharded=True))["rows"]
    assert [r["update"] for r in sharded] == [0.004, 0.001]
    assert sharded[1]["efficiency"] == pytest.approx(0.014 / 0.011)  # ZeRO-1 beats the 1-GPU baseline here


def test_cli_passes_contention_jitter_and_update():
    args = ["--step-time", "0.1", "--params", "0", "--gpus-per-server", "8", "--contention", "1.1", "--jitter", "0.05"]
    out = CliRunner().invoke(command, [*args, "--update-time", "0.01", "--update-sharded"])
    assert out.exit_code == 0, out.output
    line = next(row for row in out.output.splitlines() if row.startswith("| 2 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["2", f"{110 + 110 * 0.05 / math.sqrt(math.pi) + 5:.1f}", "110.0", "3.1"]


def test_validation_inputs_come_from_the_probe_figures_by_the_model_formulas():
    from distgraph.bench._simulate_validate import SMALL_BYTES, model_inputs

    s = 1.6e6
    best = {"full": 8e-3, "half": 4e-3, "contended": 5e-3, "spread": 0.6745 * math.sqrt(2) * 5e-4,
            "small": 2 * 10e-6 + SMALL_BYTES / 8e9, "big": 2 * 10e-6 + s / 8e9, "update": 2e-4}  # fmt: skip
    m = model_inputs(best, s)
    assert m["beta"] == pytest.approx(8e9) and m["alpha"] == pytest.approx(10e-6)
    assert m["contention"] == pytest.approx(1.25) and m["jitter"] == pytest.approx(0.1)
    cfg = sm.Config(step_time=m["t_half"], params=s / 4, bandwidth=m["beta"], intra_bandwidth=m["beta"],
                    latency=m["alpha"], gpus_per_server=2, compute_contention=m["contention"],
                    compute_jitter=m["jitter"], update_time=m["update"], update_sharded=True)  # fmt: skip
    two = sm.step_time(cfg, 2)
    assert two["comm"] == pytest.approx(best["big"])  # the reduction the probes timed, back out of the model
    assert two["step"] == pytest.approx(5e-3 * (1 + 0.1 / math.sqrt(math.pi)) + best["big"] + 1e-4)


def test_horovod_preset_prints_the_published_90_percent_the_prediction_and_the_gap():
    out = CliRunner().invoke(command, ["--horovod"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "90% scaling efficiency" in text and "vs published 90%" in text and "512 GPUs" in text
    cfg = sm.horovod_config()
    assert cfg.grad_bytes == pytest.approx(178e6) and cfg.step_time == 0.58 and cfg.bandwidth == 25e9 / 8
    base = sm.predict(replace(cfg, workers=(512,)))["rows"][0]
    # no overlap: 0.58 / (0.58 + 114 ms bandwidth + 31 ms latency) ≈ 80 %
    assert base["comm"] == pytest.approx(2 * 511 / 512 * 178e6 / (25e9 / 8) + 3 * 2 * 511 * 10e-6)
    assert base["efficiency"] == pytest.approx(0.80, abs=0.01)
    assert f"{100 * base['efficiency']:.1f}%" in text
    need = sm.overlap_for(cfg, 512, 0.90)
    assert 0.15 < need < 0.3 and f"once {100 * need:.0f}% of the backward pass" in text
    per_tensor = sm.predict(replace(cfg, workers=(512,), buckets=sm.RESNET101_TENSORS))["rows"][0]
    assert per_tensor["efficiency"] < 0.2  # without tensor fusion latency dominates


def test_cli_table_json_and_plot(tmp_path):
    args = ["--step-time", "0.2", "--params", "25e6", "--bandwidth", "10", "--latency", "5", "--overlap", "0.5"]
    out = CliRunner().invoke(command, [*args, "--json-out", str(tmp_path / "p.json")])
    assert out.exit_code == 0, out.output
    assert "| 1024 " in out.output and "efficiency" in out.output
    rows = json.loads((tmp_path / "p.json").read_text())["prediction"]["rows"]
    assert len(rows) == 11 and rows[0]["efficiency"] == 1.0
    flops = CliRunner().invoke(command, ["--sample-flops", "3e9", "--flops", "1e12", "--batch", "64"])
    assert "compute 192.0 ms" in flops.output


def test_cli_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    out = CliRunner().invoke(command, ["--step-time", "0.2", "--params", "25e6", "--plot", str(png)])
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_and_command_import_no_ray():
    code = "import sys, distgraph.bench.simulate; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("bandwidth", 0.0, "bandwidth must be positive"),
        ("step_time", 0.0, "step_time must be positive"),
        ("latency", -1e-6, "latency must be ≥ 0"),
        ("overlap", 2.0, "overlap must be between 0 and 1"),
        ("algorithm", "mesh", "algorithm must be one of ring, tree, hierarchical"),
        ("pipeline_stages", 3, "no worker count in .* splits into 3 pipeline stages"),
    ],
)
def test_a_config_the_arithmetic_cannot_take_is_refused_by_field(field, value, says):
    with pytest.raises(ConfigError, match=f"simulator: {says}"):
        sm.Config(**{"step_time": 0.1, field: value})


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sample-flops", "3e9"], "--sample-flops and --flops go together"),
        (["--flops", "1e12"], "--sample-flops and --flops go together"),
        (["--step-time", "0.1", "--sample-flops", "3e9", "--flops", "1e12"], "give --step-time or --sample-flops"),
        (["--horovod", "--params", "1e6", "--overlap", "0.5"], "--horovod sets the model's inputs itself and ignores "
         "--overlap, --params"),
        (["--validate", "--plot", "v.png"], "--validate sets the model's inputs itself and ignores --plot (it writes"),
        (["--validate", "--horovod"], "--validate and --horovod are two different reports: give one"),
    ],
)  # fmt: skip
def test_options_that_would_be_ignored_or_overridden_are_usage_errors(args, says):
    out = CliRunner().invoke(command, [*args, "--json-out", ""])
    assert out.exit_code == 2 and says in out.output, out.output
    assert "α-β model" not in out.output and "Horovod README" not in out.output  # nothing computed


def test_a_plot_path_it_cannot_write_is_a_usage_error(tmp_path):
    (tmp_path / "afile").write_text("")
    out = CliRunner().invoke(command, ["--step-time", "0.1", "--plot", str(tmp_path / "afile" / "s.png")])
    assert out.exit_code == 2 and "Invalid value for '--plot'" in out.output and "Traceback" not in out.output
