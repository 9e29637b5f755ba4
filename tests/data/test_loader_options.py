"""DataLoader's sampler, batch_sampler, collate_fn and generator options against torch's DataLoader."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import BatchSampler, DataLoader, SequentialSampler, SubsetRandomSampler, TensorDataset
from distgraph.errors import ConfigError

torch = pytest.importorskip("torch")
tdata = torch.utils.data


def as_lists(batches):
    """Batches as nested Python lists, so distgraph's and torch's can be compared."""
    if isinstance(batches, dg.Tensor | torch.Tensor):
        return batches.numpy().tolist()
    if isinstance(batches, dict):
        return {k: as_lists(v) for k, v in batches.items()}
    if isinstance(batches, list | tuple):
        return [as_lists(b) for b in batches]
    return batches


SAMPLES = [(float(i), i * 10) for i in range(7)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 3},
        {"batch_size": 3, "drop_last": True},
        {"sampler": [6, 0, 3, 3]},
        {"sampler": SequentialSampler(SAMPLES), "batch_size": 2},
        {"batch_sampler": [[0, 1], [5], [2, 3, 4]]},
        {"batch_size": None},
        {"batch_size": None, "sampler": [4, 2]},
        {"batch_size": 2, "collate_fn": lambda batch: [x for x, _ in batch]},
        {"batch_size": None, "collate_fn": lambda sample: sample[1] + 1},
    ],
)
def test_batches_and_len_match_torch(kwargs):
    ours = DataLoader(SAMPLES, **kwargs)
    theirs = tdata.DataLoader(SAMPLES, **kwargs)
    assert as_lists(list(ours)) == as_lists(list(theirs))
    assert len(ours) == len(theirs)


def test_a_tensor_dataset_with_a_sampler_or_batch_sampler_matches_torch():
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    y = np.arange(8)
    ours_ds, theirs_ds = TensorDataset(x, y), tdata.TensorDataset(torch.tensor(x), torch.tensor(y))
    for kwargs in ({"sampler": [7, 1, 1, 4], "batch_size": 3}, {"batch_sampler": [[2, 0], [7, 6, 5]]}):
        assert as_lists(list(DataLoader(ours_ds, **kwargs))) == as_lists(list(tdata.DataLoader(theirs_ds, **kwargs)))
    pairs = lambda batch: (np.stack([b[0].numpy() for b in batch]), np.array([b[1].item() for b in batch]))  # noqa: E731
    got = list(DataLoader(ours_ds, batch_size=5, collate_fn=pairs))
    assert [b[0].shape for b in got] == [(5, 3), (3, 3)] and got[1][1].tolist() == [5, 6, 7]


def test_shuffle_with_a_generator_visits_every_sample_in_a_new_order_each_epoch_reproducibly():
    ds = TensorDataset(dg.arange(20))
    loader = DataLoader(ds, batch_size=6, shuffle=True, generator=np.random.default_rng(5))
    epochs = [np.concatenate([b[0].numpy() for b in loader]).tolist() for _ in range(3)]
    assert all(sorted(e) == list(range(20)) for e in epochs) and epochs[0] != epochs[1]
    again = DataLoader(ds, batch_size=6, shuffle=True, generator=5)
    assert [np.concatenate([b[0].numpy() for b in again]).tolist() for _ in range(3)] == epochs
    assert len(loader) == len(tdata.DataLoader(range(20), batch_size=6, shuffle=True)) == 4


def test_a_custom_sampler_class_drives_the_order():
    class Reversed(dg.data.Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(self.n - 1, -1, -1))

        def __len__(self):
            return self.n

    got = [b[0].tolist() for b in DataLoader(TensorDataset(dg.arange(5)), batch_size=2, sampler=Reversed(5))]
    assert got == [[4, 3], [2, 1], [0]]
    subset = DataLoader(TensorDataset(dg.arange(10)), batch_size=10, sampler=SubsetRandomSampler([1, 5, 9]))
    assert sorted(next(iter(subset))[0].tolist()) == [1, 5, 9]
    batches = DataLoader(TensorDataset(dg.arange(5)), batch_sampler=BatchSampler(Reversed(5), 3, drop_last=True))
    assert [b[0].tolist() for b in batches] == [[4, 3, 2]] and len(batches) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": [0, 1], "shuffle": True}, "sampler option is mutually exclusive with shuffle"),
        ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually exclusive with batch_size"),
        ({"batch_sampler": [[0]], "shuffle": True}, "batch_sampler option is mutually exclusive"),
        ({"batch_sampler": [[0]], "sampler": [0]}, "batch_sampler option is mutually exclusive"),
        ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually exclusive"),
        ({"batch_size": None, "drop_last": True}, "batch_size=None .*mutually exclusive with drop_last"),
    ],
)
def test_clashing_options_fail_where_torch_fails_naming_them(kwargs, match):
    with pytest.raises(ValueError):
        tdata.DataLoader(SAMPLES, **kwargs)
    with pytest.raises(ConfigError, match=f"DataLoader: .*{match}"):
        DataLoader(SAMPLES, **kwargs)
