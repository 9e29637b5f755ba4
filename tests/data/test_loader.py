import numpy as np
import pytest

import distgraph as dg
from distgraph.data import DataLoader, TensorDataset, random_split


def test_loader_covers_every_sample_once_and_seed_fixes_order():
    ds = TensorDataset(dg.randn(10, 3), dg.arange(10))
    dg.manual_seed(3)
    first = [b[1].tolist() for b in DataLoader(ds, 4, shuffle=True)]
    dg.manual_seed(3)
    second = [b[1].tolist() for b in DataLoader(ds, 4, shuffle=True)]
    assert first == second
    assert sorted(sum(first, [])) == list(range(10))
    assert [len(b) for b in first] == [4, 4, 2]


def test_drop_last_and_len():
    ds = TensorDataset(np.zeros((10, 2)), np.arange(10))
    loader = DataLoader(ds, 4, drop_last=True)
    assert len(loader) == 2
    assert [b[0].shape for b in loader] == [(4, 2), (4, 2)]


def test_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(dg.zeros(3, 2), dg.zeros(4))


def test_random_split_partitions():
    ds = TensorDataset(dg.arange(20))
    a, b = random_split(ds, [0.75, 0.25])
    got = sorted(a[np.arange(len(a))][0].tolist() + b[np.arange(len(b))][0].tolist())
    assert got == list(range(20))
