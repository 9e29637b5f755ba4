"""Datasets against torch's: a subclass's own __getitem__ (or __getitems__) is what the DataLoader calls,
Subset keeps its indices as given, random_split takes a generator, ConcatDataset and `+`."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import ConcatDataset, DataLoader, Dataset, IterableDataset, Subset, TensorDataset, random_split
from distgraph.errors import ConfigError, IndexOutOfRangeError
from tests.data.helpers import assert_same_batches

X = np.arange(24, dtype=np.float64).reshape(8, 3)
Y = np.arange(8)


def _shifted(base):
    """A TensorDataset subclass with a per-sample transform (each row minus its first value): handed a
    whole batch of indices it would subtract the batch's first row instead, silently."""

    class Shifted(base):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x - x[0], y

    return Shifted


def _shifted_subset(base, with_getitems):
    class ShiftedSubset(base):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x - x[0], y

        if with_getitems:  # torch refuses a Subset subclass that overrides __getitem__ alone

            def __getitems__(self, indices):
                return [self[i] for i in indices]

    return ShiftedSubset


def _datasets(data, as_tensor):
    """The same datasets built from torch's classes (`data` = torch.utils.data) or from distgraph's."""
    x, y = as_tensor(X), as_tensor(Y)
    plain = data.TensorDataset(x, y)
    shifted = _shifted(data.TensorDataset)(x, y)
    with_getitems = data is not dg.data
    return {
        "subclass": shifted,
        "subset of subclass": data.Subset(shifted, [5, 0, 7, 2, 3]),
        "subclass of subset": _shifted_subset(data.Subset, with_getitems)(plain, [5, 0, 7, 2, 3]),
        "subset of subset subclass": data.Subset(
            _shifted_subset(data.Subset, with_getitems)(plain, [5, 0, 7, 2, 3]), [4, 1, 0]
        ),
        "subset of subset": data.Subset(data.Subset(plain, [5, 0, 7, 2, 3]), [4, 1, 0]),
    }


@pytest.mark.parametrize(
    "name", ["subclass", "subset of subclass", "subclass of subset", "subset of subset subclass", "subset of subset"]
)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_overriding_getitem_is_read_sample_by_sample_as_torch(name, num_workers):
    torch = pytest.importorskip("torch")
    ours = _datasets(dg.data, lambda a: dg.tensor(a))[name]
    theirs = _datasets(torch.utils.data, torch.tensor)[name]
    loader = DataLoader(ours, 2, num_workers=num_workers)  # workers build the batch with the same fetcher
    assert_same_batches(loader, torch.utils.data.DataLoader(theirs, 2))


def test_a_dataset_with_getitems_is_handed_each_batch_as_in_torch():
    torch = pytest.importorskip("torch")

    def make(base):
        class Batched(base):
            def __init__(self):
                self.calls = []

            def __len__(self):
                return 5

            def __getitem__(self, i):
                raise AssertionError("__getitems__ is there: the loader should not read sample by sample")

            def __getitems__(self, indices):
                self.calls.append(list(indices))
                return [(float(i), i) for i in indices]

        return Batched()

    ours, theirs = make(Dataset), make(torch.utils.data.Dataset)
    assert_same_batches(DataLoader(ours, 2), torch.utils.data.DataLoader(theirs, 2))
    assert ours.calls == theirs.calls == [[0, 1], [2, 3], [4]]
    # a Subset passes the batch on, mapped through its indices, as torch's does
    ours.calls.clear(), theirs.calls.clear()
    loader = DataLoader(Subset(ours, [4, 3, 2]), 2)
    assert_same_batches(loader, torch.utils.data.DataLoader(torch.utils.data.Subset(theirs, [4, 3, 2]), 2))
    assert ours.calls == theirs.calls == [[4, 3], [2]]


def test_a_plain_tensor_dataset_batch_is_a_list_as_in_torch():
    """The batch fast path (one fancy-index per tensor) gives what per-sample collation gives: a list."""
    torch = pytest.importorskip("torch")
    ours = next(iter(DataLoader(Subset(TensorDataset(X, Y), [3, 1]), 2)))
    theirs = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(torch.utils.data.TensorDataset(
        torch.tensor(X), torch.tensor(Y)), [3, 1]), 2)))  # fmt: skip
    assert type(ours) is type(theirs) is list
    assert_same_batches([ours], [theirs])


def test_subset_keeps_its_indices_and_hands_the_dataset_python_ints():
    torch = pytest.importorskip("torch")

    def make(base):
        class Recorder(base):
            def __init__(self):
                self.seen = []

            def __len__(self):
                return 10

            def __getitem__(self, i):
                self.seen.append(type(i))
                return i

        return Recorder()

    for data, recorder in ((dg.data, make(Dataset)), (torch.utils.data, make(torch.utils.data.Dataset))):
        a, b = data.random_split(recorder, [6, 4])
        assert type(a.indices) is list and sorted(a.indices + b.indices) == list(range(10))
        assert [a[i] for i in range(len(a))] == a.indices
        assert set(recorder.seen) == {int}
    ours = Subset(make(Dataset), np.array([3, 1]))
    assert isinstance(ours.indices, np.ndarray) and ours[0] == 3 and ours.dataset.seen == [int]
    assert Subset(TensorDataset(Y), range(2, 6))[np.array([0, 3])][0].tolist() == [2, 5]


def test_random_split_takes_a_generator_as_the_samplers_do():
    ds = TensorDataset(Y)
    by_seed = [s.indices for s in random_split(ds, [5, 3], generator=7)]
    assert by_seed == [s.indices for s in random_split(ds, [5, 3], generator=7)]
    assert by_seed == [s.indices for s in random_split(ds, [5, 3], generator=np.random.default_rng(7))]
    assert sorted(sum(by_seed, [])) == list(range(8))
    dg.manual_seed(1)
    first = [s.indices for s in random_split(ds, [0.5, 0.5])]
    dg.manual_seed(1)
    assert first == [s.indices for s in random_split(ds, [0.5, 0.5], generator=None)]
    with pytest.raises(ConfigError, match="random_split: generator must be"):
        random_split(ds, [4, 4], generator="seed")


def test_concat_dataset_indexes_its_members_as_torch():
    torch = pytest.importorskip("torch")
    parts = [list(range(3)), [], list(range(10, 15)), [99]]
    ours, theirs = ConcatDataset(parts), torch.utils.data.ConcatDataset(parts)
    assert len(ours) == len(theirs) == 9 and ours.cumulative_sizes == theirs.cumulative_sizes
    assert ours.datasets == parts
    for i in range(-9, 9):
        assert ours[i] == theirs[i]
    assert ours[np.int64(-1)] == 99
    for bad in (9, -10):
        with pytest.raises(IndexOutOfRangeError, match="ConcatDataset: index"):
            ours[bad]
    assert list(ours) == list(theirs)  # iteration stops at the IndexError


def test_concat_dataset_is_read_per_sample_by_the_loader_as_torch():
    torch = pytest.importorskip("torch")
    ours = TensorDataset(X[:5], Y[:5]) + _shifted(TensorDataset)(X[5:], Y[5:])
    tdata = torch.utils.data
    theirs = tdata.TensorDataset(torch.tensor(X[:5]), torch.tensor(Y[:5])) + _shifted(tdata.TensorDataset)(
        torch.tensor(X[5:]), torch.tensor(Y[5:])
    )
    assert isinstance(ours, ConcatDataset) and isinstance(theirs, tdata.ConcatDataset)
    assert_same_batches(DataLoader(ours, 3), tdata.DataLoader(theirs, 3))
    assert_same_batches(DataLoader(Subset(ours, [7, 0, 4]), 2), tdata.DataLoader(tdata.Subset(theirs, [7, 0, 4]), 2))


def test_concat_dataset_refuses_no_members_and_iterable_members():
    from distgraph.utils.data import ConcatDataset as FromUtils

    assert FromUtils is ConcatDataset

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(ConfigError, match="ConcatDataset: datasets should not be empty"):
        ConcatDataset([])
    with pytest.raises(ConfigError, match=r"ConcatDataset: datasets\[1\] is an IterableDataset"):
        ConcatDataset([[1], Stream()])
    with pytest.raises(ValueError, match="IterableDataset"):
        TensorDataset(Y) + Stream()
