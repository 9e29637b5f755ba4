"""The α-β scaling model: its formulas, and the Horovod comparison it prints."""

import pytest
from click.testing import CliRunner

from distgraph.bench import _alphabeta as ab
from distgraph.bench.simulate import command


def test_ring_allreduce_formula():
    assert ab.allreduce_time(1, 1e9, 1e9, 1e-5) == 0.0
    assert ab.allreduce_time(4, 1e9, 1e9, 1e-5) == pytest.approx(2 * 3 * 1e-5 + 2 * 3 / 4 * 1.0)


def test_hierarchical_moves_a_gpus_share_over_the_network():
    flat = ab.allreduce_time(512, 178e6, 25e9 / 8 / 4, 1e-5, "ring")
    hier = ab.allreduce_time(512, 178e6, 25e9 / 8, 1e-5, "hierarchical", gpus_per_server=4, intra_bandwidth=10e9)
    assert hier < flat / 3


def test_pipeline_bubble_and_efficiency_fall_with_workers():
    assert ab.bubble(4, 12) == pytest.approx(3 / 15)
    cfg = ab.Config(t_compute=0.01, grad_bytes=400e6, bandwidth=1e9, overlap=0.5)
    eff = [p["efficiency"] for p in ab.predict(cfg, [1, 2, 8, 64, 1024])]
    assert eff[0] == 1.0 and all(a >= b for a, b in zip(eff, eff[1:])) and eff[-1] < 0.2


def test_horovod_comparison_prints_the_published_90_percent_and_the_gap():
    out = CliRunner().invoke(command, ["--horovod"]).output
    assert "90% scaling efficiency" in out and "hierarchical | 0.3" in out and "vs 90%" in out
    ninety = ab.predict(ab.horovod_config(algorithm="hierarchical", overlap=0.3), [512])[0]["efficiency"]
    assert abs(ninety - 0.90) < 0.02
