"""Datasets a config can name: real data that ships with scikit-learn, or data generated on the spot.

Nothing is downloaded at run time. `digits` is scikit-learn's 1,797 8×8 digits (standardized with
the training split's statistics); `teacher` is a classification task labelled by a fixed random
network, sized as asked, for benchmarks that need more data than digits has.
"""

import inspect

import numpy as np

from distgraph.errors import ConfigError


def digits(seed=0, test_fraction=0.25):
    """((x_train, y_train), (x_test, y_test)): float32 (N, 64) inputs, int64 labels, fixed split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError("dataset 'digits' needs scikit-learn: pip install 'distgraph[examples]'") from None
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3
    x = (x - mean) / std
    return (x[train], y[train]), (x[test], y[test])


def teacher(samples=10000, features=64, classes=10, hidden=128, seed=0, test_fraction=0.2):
    """Inputs ~ N(0, 1), labels = argmax of a fixed random two-layer tanh network."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features)).astype(np.float32)
    w1 = rng.standard_normal((features, hidden)) / np.sqrt(features)
    w2 = rng.standard_normal((hidden, classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int64)
    n_test = int(samples * test_fraction)
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


DATASETS = {"digits": digits, "teacher": teacher}


def check(data, source="config"):
    """Raise a ConfigError naming `source` and the key when a config's `data` section cannot load: an
    unknown dataset, a key its function does not take, or a size or fraction that yields no data."""
    name = data.get("name")
    if name not in DATASETS:
        raise ConfigError(f"{source}: data.name: unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    takes = [p for p in inspect.signature(DATASETS[name]).parameters]
    for key, value in data.items():
        if key != "name" and key not in takes:
            raise ConfigError(f"{source}: data.{key}: dataset {name!r} takes no such key (takes: {', '.join(takes)})")
        if key in ("samples", "features", "classes", "hidden") and not value >= 1:
            raise ConfigError(f"{source}: data.{key} must be ≥ 1, got {value!r}")
        if key == "test_fraction" and not 0 < value < 1:
            raise ConfigError(f"{source}: data.test_fraction must lie between 0 and 1 (exclusive), got {value!r}")
        if key == "seed" and not value >= 0:
            raise ConfigError(f"{source}: data.seed must be ≥ 0, got {value!r}")


def load(name, **kwargs):
    check({"name": name, **kwargs}, "data")
    return DATASETS[name](**kwargs)
