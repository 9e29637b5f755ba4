"""IterableDataset in a DataLoader, in this process and in workers, against torch's DataLoader: batches
(also with drop_last and batch_size=None), the worker interleaving, len() and the options it refuses."""

import pytest

from distgraph.data import DataLoader, IterableDataset, get_worker_info
from distgraph.errors import ConfigError
from tests.data.helpers import assert_same_batches

torch = pytest.importorskip("torch")
tdata = torch.utils.data


def _shard(n, info):
    """range(n), split between workers by get_worker_info() as torch's docs do it."""
    return iter(range(n)) if info is None else iter(range(info.id, n, info.num_workers))


class Sharded(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return _shard(self.n, get_worker_info())


class TorchSharded(tdata.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return _shard(self.n, tdata.get_worker_info())


class Sized(Sharded):
    def __len__(self):
        return self.n


class TorchSized(TorchSharded):
    def __len__(self):
        return self.n


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"batch_size": 3},
        {"batch_size": 3, "drop_last": True},
        {"batch_size": None},
        {"batch_size": 4, "collate_fn": list},
    ],
)
def test_batches_in_the_main_process_match_torch(kwargs):
    assert_same_batches(DataLoader(Sharded(10), **kwargs), tdata.DataLoader(TorchSharded(10), **kwargs))


def test_workers_interleave_their_shards_as_torchs_do_and_drop_their_own_last_short_batch():
    for kwargs in ({"batch_size": 2}, {"batch_size": 2, "drop_last": True}):
        ours = DataLoader(Sharded(11), num_workers=2, **kwargs)
        theirs = tdata.DataLoader(TorchSharded(11), num_workers=2, **kwargs)
        assert_same_batches(ours, theirs)


def test_persistent_workers_iterate_their_copy_afresh_every_epoch():
    loader = DataLoader(Sharded(7), batch_size=2, num_workers=2, persistent_workers=True)
    theirs = list(tdata.DataLoader(TorchSharded(7), batch_size=2, num_workers=2))
    for _ in range(2):
        assert_same_batches(loader, theirs)


def test_an_unsplit_iterable_is_replicated_in_every_worker_as_in_torch():
    class Whole(IterableDataset):
        def __iter__(self):
            return iter(range(5))

    got = [b.tolist() for b in DataLoader(Whole(), batch_size=2, num_workers=2)]
    assert got == [[0, 1], [0, 1], [2, 3], [2, 3], [4], [4]]


def test_len_follows_torchs_rules_and_is_a_type_error_without_dataset_len():
    for kwargs in ({"batch_size": 3}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}):
        assert len(DataLoader(Sized(10), **kwargs)) == len(tdata.DataLoader(TorchSized(10), **kwargs))
    with pytest.raises(TypeError):
        len(tdata.DataLoader(TorchSharded(10)))
    with pytest.raises(TypeError, match="has no len"):
        len(DataLoader(Sharded(10)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shuffle": True}, "expected unspecified shuffle option, but got shuffle=True"),
        ({"sampler": [0, 1]}, "expected unspecified sampler option"),
        ({"batch_sampler": [[0, 1]]}, "expected unspecified batch_sampler option"),
    ],
)
def test_sampler_shuffle_and_batch_sampler_are_refused_as_torch_refuses_them(kwargs, match):
    with pytest.raises(ValueError):
        tdata.DataLoader(TorchSharded(4), **kwargs)
    with pytest.raises(ConfigError, match=f"DataLoader with IterableDataset: {match}"):
        DataLoader(Sharded(4), **kwargs)
    DataLoader(Sharded(4), shuffle=False)  # torch accepts an explicit shuffle=False


def test_an_error_in_a_workers_iter_names_the_worker():
    class Broken(IterableDataset):
        def __iter__(self):
            if get_worker_info().id == 1:
                raise OSError("shard 1 is missing")
            return iter(range(3))

    with pytest.raises(
        OSError, match="(?s)Caught OSError in DataLoader worker process 1.*in __iter__.*shard 1 is missing"
    ):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))
