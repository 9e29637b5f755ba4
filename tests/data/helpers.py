"""Comparing a DataLoader's batches with torch's: every array, in order, equal values and dtypes."""

import numpy as np


def flat(batches):
    """Every array of a list of batches (nested tuples/lists/dicts of distgraph or torch tensors), in order."""
    if hasattr(batches, "numpy"):
        return [np.asarray(batches.numpy())]
    if isinstance(batches, dict):
        return [a for k in sorted(batches) for a in flat(batches[k])]
    if isinstance(batches, list | tuple):
        return [a for b in batches for a in flat(b)]
    return [np.asarray(batches)]


def assert_same_batches(ours, theirs):
    ours, theirs = flat(list(ours)), flat(list(theirs))
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        np.testing.assert_array_equal(o, t)
        assert o.dtype == t.dtype
