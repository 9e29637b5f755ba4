"""torch's per-family module paths under distgraph.distributions give distgraph's own classes."""

import importlib

import pytest

import distgraph as dg

torch = pytest.importorskip("torch")
DD = dg.distributions


@pytest.mark.parametrize(
    "module, name",
    [
        ("normal", "Normal"),
        ("categorical", "Categorical"),
        ("multivariate_normal", "MultivariateNormal"),
        ("independent", "Independent"),
        ("transformed_distribution", "TransformedDistribution"),
        ("mixture_same_family", "MixtureSameFamily"),
        ("kl", "kl_divergence"),
        ("transforms", "TanhTransform"),
        ("constraints", "positive"),
    ],
)
def test_torchs_per_family_module_paths_import(module, name):
    ours = importlib.import_module(f"distgraph.distributions.{module}")
    importlib.import_module(f"torch.distributions.{module}")
    assert getattr(ours, name) is getattr(DD, name) if hasattr(DD, name) else getattr(DD.constraints, name)
