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
        ("chi2", "Chi2"),
        ("fishersnedecor", "FisherSnedecor"),
        ("weibull", "Weibull"),
        ("pareto", "Pareto"),
        ("half_cauchy", "HalfCauchy"),
        ("inverse_gamma", "InverseGamma"),
        ("kumaraswamy", "Kumaraswamy"),
        ("negative_binomial", "NegativeBinomial"),
        ("multinomial", "Multinomial"),
        ("continuous_bernoulli", "ContinuousBernoulli"),
        ("relaxed_bernoulli", "RelaxedBernoulli"),
        ("relaxed_bernoulli", "LogitRelaxedBernoulli"),
        ("relaxed_categorical", "RelaxedOneHotCategorical"),
        ("relaxed_categorical", "ExpRelaxedCategorical"),
        ("one_hot_categorical", "OneHotCategoricalStraightThrough"),
        ("lowrank_multivariate_normal", "LowRankMultivariateNormal"),
        ("von_mises", "VonMises"),
        ("kl", "kl_divergence"),
        ("transforms", "TanhTransform"),
        ("constraints", "positive"),
    ],
)
def test_torchs_per_family_module_paths_import(module, name):
    ours = importlib.import_module(f"distgraph.distributions.{module}")
    importlib.import_module(f"torch.distributions.{module}")
    assert getattr(ours, name) is getattr(DD, name) if hasattr(DD, name) else getattr(DD.constraints, name)
