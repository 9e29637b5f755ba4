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


def test_a_per_sample_dataset_is_collated_as_torch_does():
    """A list or a Dataset whose __getitem__ takes one int: read sample by sample and collated (ints
    int64, floats float64, tensors stacked, dicts by key), not indexed with an array of indices."""
    torch = pytest.importorskip("torch")

    class Pairs(dg.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": dg.tensor([float(i), 1.0]), "y": i, "name": f"s{i}"}

    batches = list(DataLoader(Pairs(), 2))
    assert [b["y"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0]["y"].dtype == dg.int64 and batches[0]["x"].shape == (2, 2)
    assert batches[0]["name"] == ["s0", "s1"]
    samples = [(1.0, 2), (3.0, 4), (5.0, 6)]
    ours = list(DataLoader(samples, 2))
    theirs = list(torch.utils.data.DataLoader(samples, 2))
    for (ox, oy), (tx, ty) in zip(ours, theirs):
        assert ox.numpy().tolist() == tx.tolist() and str(ox.dtype).split(".")[-1] == str(tx.dtype).split(".")[-1]
        assert oy.numpy().tolist() == ty.tolist() and oy.dtype == dg.int64


def test_batch_size_none_yields_samples_and_a_bad_batch_size_is_refused():
    ds = TensorDataset(dg.arange(3))
    assert [s[0].item() for s in DataLoader(ds, batch_size=None)] == [0, 1, 2]
    assert len(DataLoader(ds, batch_size=None)) == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            DataLoader(ds, batch_size=bad)


def test_tensor_dataset_takes_array_likes_and_refuses_scalars():
    ds = TensorDataset([1, 2, 3], np.zeros((3, 2)))
    assert len(ds) == 3 and ds[1][0].item() == 2
    with pytest.raises(ValueError, match="first \\(sample\\) dimension"):
        TensorDataset(dg.tensor(1.0))


def test_random_split_fractions_match_torch():
    torch = pytest.importorskip("torch")
    for n, fracs in [(13, [0.2] * 5), (10, [1.0, 0.0]), (7, [0.5, 0.5])]:
        ours = [len(s) for s in random_split(TensorDataset(dg.arange(n)), fracs)]
        assert ours == [len(s) for s in torch.utils.data.random_split(range(n), fracs)]
    for bad in ([-1, 11], [5, 5.0], [0.3, 0.3]):
        with pytest.raises(ValueError, match="random_split"):
            random_split(TensorDataset(dg.arange(10)), bad)
