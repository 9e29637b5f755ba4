"""Datasets a config can name: real data that ships with scikit-learn, or data generated on the spot.

Nothing is downloaded at run time. `digits` is scikit-learn's 1,797 8×8 digits (standardized with
the training split's statistics); `teacher` is a classification task labelled by a fixed random
network, sized as asked, for benchmarks that need more data than digits has.
"""

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


def load(name, **kwargs):
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name](**kwargs)
