"""DataLoader details torch users rely on: len(iter(loader)) with and without workers, and a sampler's
non-integer indices refused with torch's IndexError instead of floored to other rows."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import DataLoader, IterableDataset, TensorDataset

torch = pytest.importorskip("torch")
tdata = torch.utils.data


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kwargs", [dict(batch_size=4), dict(batch_size=4, drop_last=True), dict(batch_size=None)])
def test_len_of_the_iterator_is_torchs(num_workers, kwargs):
    ours = iter(DataLoader(list(range(10)), num_workers=num_workers, **kwargs))
    theirs = iter(tdata.DataLoader(list(range(10)), num_workers=num_workers, **kwargs))
    assert len(ours) == len(theirs)
    next(ours), next(theirs)
    assert len(ours) == len(theirs)  # the whole pass, not what is left
    assert len(list(ours)) == len(list(theirs))


def test_persistent_workers_iterator_keeps_its_len():
    loader = DataLoader(list(range(9)), batch_size=2, num_workers=1, persistent_workers=True)
    for _ in range(2):
        it = iter(loader)
        assert len(it) == len(loader) == 5 and len(list(it)) == 5


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(range(5))

    def __len__(self):
        return 5


def test_iterable_dataset_iterator_has_no_len_as_torch():
    loader = DataLoader(_Stream(), batch_size=2)
    assert len(loader) == 3
    with pytest.raises(TypeError, match="IterableDataset"):
        len(iter(loader))


@pytest.mark.parametrize("sampler", [[1.7, 4.2], [2.0, 3.0], np.array([1.5, 2.0])], ids=["frac", "whole", "numpy"])
def test_float_indices_raise_index_error_like_torch(sampler):
    ours = DataLoader(TensorDataset(dg.arange(6)), batch_size=2, sampler=sampler)
    theirs = tdata.DataLoader(tdata.TensorDataset(torch.arange(6)), batch_size=2, sampler=sampler)
    with pytest.raises(IndexError):
        list(theirs)
    with pytest.raises(IndexError, match=r"sampler gave index (1\.7|2\.0|1\.5) \(float64\)"):
        list(ours)


def test_integer_indices_of_any_kind_still_load_torchs_rows():
    for sampler in ([4, 1, 5], np.array([4, 1, 5], dtype=np.int32), range(3)):
        ours = [b[0].tolist() for b in DataLoader(TensorDataset(dg.arange(6) * 10), batch_size=2, sampler=sampler)]
        theirs = [
            b[0].tolist() for b in tdata.DataLoader(tdata.TensorDataset(torch.arange(6) * 10), 2, sampler=sampler)
        ]
        assert ours == theirs
