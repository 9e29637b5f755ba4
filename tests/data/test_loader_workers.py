"""DataLoader with num_workers > 0 on map-style datasets: the batches of torch's DataLoader (and of
num_workers=0), per-worker seeding from the loader's generator, worker_init_fn, persistent workers,
prefetch_factor, in_order, pin_memory, a spawn context, and torch's option errors."""

import multiprocessing
import os
import random
import time

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import DataLoader, Dataset, TensorDataset, get_worker_info
from distgraph.errors import ConfigError
from tests.data.helpers import assert_same_batches

torch = pytest.importorskip("torch")
tdata = torch.utils.data

SAMPLES = [(float(i), i * 10) for i in range(7)]


def test_batches_with_workers_equal_torchs_with_workers():
    for kwargs in (
        {"batch_size": 3},
        {"batch_size": 2, "drop_last": True, "sampler": [6, 0, 3, 3, 5]},
        {"batch_sampler": [[0, 1], [5], [2, 3, 4]]},
        {"batch_size": None},
        {"batch_size": 2, "collate_fn": lambda batch: [x for x, _ in batch]},
    ):
        ours = list(DataLoader(SAMPLES, num_workers=2, **kwargs))
        assert_same_batches(ours, list(tdata.DataLoader(SAMPLES, num_workers=2, **kwargs)))
        assert_same_batches(ours, list(DataLoader(SAMPLES, **kwargs)))


def test_a_tensor_dataset_with_workers_equals_torchs_and_shuffles_as_num_workers_0():
    x, y = np.arange(30, dtype=np.float64).reshape(10, 3), np.arange(10)
    ours = list(DataLoader(TensorDataset(x, y), batch_size=4, num_workers=2, prefetch_factor=1, pin_memory=True))
    theirs = tdata.DataLoader(tdata.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=4, num_workers=2)
    assert_same_batches(ours, list(theirs))
    single = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True, generator=5)
    multi = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True, generator=5, num_workers=2)
    for _ in range(2):  # the same order every epoch: the workers' base seed does not move the sampler's stream
        assert_same_batches(list(multi), list(single))


class RandomDraws(Dataset):
    """Each sample: draws from numpy's legacy generator, Python's random and distgraph's generator, and
    the worker's id and seed."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = get_worker_info()
        return np.array([np.random.random(), random.random(), dg.rand(1).item()]), info.id, info.seed


def draws(loader):
    """(the draws, worker ids, worker seeds) of one epoch, one row per sample."""
    batches = list(loader)
    return [np.concatenate([b[k].numpy() for b in batches]) for k in range(3)]


def test_workers_are_seeded_from_the_loaders_generator_as_torch_seeds_them():
    """seed = base_seed + worker_id seeds random and dg; numpy gets torch's _generate_state: so the
    first draws of each worker follow from its seed, differ between workers and epochs, and repeat for
    the same generator seed."""
    from torch.utils.data._utils.worker import _generate_state

    loader = DataLoader(RandomDraws(), batch_size=2, num_workers=2, generator=7)
    first, second = draws(loader), draws(loader)
    for values, ids, seeds in (first, second):
        assert ids.tolist() == [0, 0, 1, 1] and seeds[2] == seeds[0] + 1
        for row, wid in ((0, 0), (2, 1)):  # each worker's first sample: its first draws
            seed = int(seeds[row])
            assert values[row, 0] == np.random.RandomState(_generate_state(seed - wid, wid)).random_sample()
            assert values[row, 1] == random.Random(seed).random()
            dg.manual_seed(seed)
            assert values[row, 2] == dg.rand(1).item()
        assert not np.isin(values[:2], values[2:]).any()  # the workers draw different numbers
    assert first[2][0] != second[2][0]  # a new base seed every epoch
    again = draws(DataLoader(RandomDraws(), batch_size=2, num_workers=2, generator=7))
    for got, want in zip(again, first):
        np.testing.assert_array_equal(got, want)
    dg.manual_seed(3)
    unseeded = draws(DataLoader(RandomDraws(), batch_size=2, num_workers=2))[0]
    dg.manual_seed(3)
    np.testing.assert_array_equal(draws(DataLoader(RandomDraws(), batch_size=2, num_workers=2))[0], unseeded)


class Offsets(Dataset):
    offset = 0

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return i + self.offset, os.getpid()


def shift_by_worker(worker_id):
    get_worker_info().dataset.offset = 100 * worker_id


def test_worker_init_fn_runs_in_each_worker_on_its_copy_of_the_dataset():
    batches = list(DataLoader(Offsets(), batch_size=2, num_workers=2, worker_init_fn=shift_by_worker))
    assert [b[0].tolist() for b in batches] == [[0, 1], [102, 103], [4, 5]]
    assert Offsets.offset == 0 and len({b[1][0].item() for b in batches}) == 2


def test_persistent_workers_are_the_same_processes_every_epoch_and_restart_a_broken_off_epoch():
    def pids(loader):
        return {p for b in loader for p in b[1].tolist()}

    loader = DataLoader(Offsets(), batch_size=2, num_workers=2, persistent_workers=True)
    it = iter(loader)
    assert next(it)[0].tolist() == [0, 1]  # the epoch is broken off here
    first = pids(loader)
    assert pids(loader) == first and len(first) == 2
    assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5]]
    fresh = DataLoader(Offsets(), batch_size=2, num_workers=2)
    assert pids(fresh).isdisjoint(pids(fresh))


class Slow(Dataset):
    """Sample 0 (worker 0's batch) waits for `go`: set when worker 1 reads sample 3 (then 0.2 s more), or,
    with `by_main`, only by the test once it holds a batch — so worker 1's batch surely comes first."""

    def __init__(self, by_main=False):
        self.go, self.by_main = multiprocessing.get_context("fork").Event(), by_main

    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 0:
            self.go.wait(10)
            time.sleep(0.2)
        if i == 3 and not self.by_main:
            self.go.set()
        return i


def test_in_order_false_returns_batches_as_they_come():
    assert [b.tolist() for b in DataLoader(Slow(), batch_size=2, num_workers=2)] == [[0, 1], [2, 3]]
    # Not the 0.2 s alone (a loaded CI host may not run worker 1 for that long): worker 0's batch waits
    # until the test has received one; a loader that waited for batch 0 first would wait out the 10 s
    slow, out_of_order = Slow(by_main=True), []
    for batch in DataLoader(slow, batch_size=2, num_workers=2, in_order=False):
        out_of_order.append(batch.tolist())
        slow.go.set()
    assert out_of_order == [[2, 3], [0, 1]]


def test_a_spawn_context_builds_the_same_batches():
    ds = TensorDataset(np.arange(12.0).reshape(6, 2), np.arange(6))
    spawned = DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    assert_same_batches(list(spawned), list(DataLoader(ds, batch_size=4)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_workers": -1}, "num_workers option should be a non-negative int"),
        ({"timeout": -1}, "timeout option should be non-negative"),
        ({"prefetch_factor": 2}, "prefetch_factor option could only be specified in multiprocessing"),
        ({"num_workers": 1, "prefetch_factor": -1}, "prefetch_factor option should be a positive int"),
        ({"persistent_workers": True}, "persistent_workers option needs num_workers > 0"),
        ({"multiprocessing_context": "spawn"}, "multiprocessing_context can only be used with multi-process"),
        (
            {"num_workers": 1, "multiprocessing_context": "thread"},
            "multiprocessing_context option should specify a valid start method",
        ),
    ],
)
def test_bad_worker_options_fail_where_torch_fails_naming_them(kwargs, match):
    with pytest.raises(ValueError):
        tdata.DataLoader(SAMPLES, **kwargs)
    with pytest.raises(ConfigError, match=f"DataLoader: {match}"):
        DataLoader(SAMPLES, **kwargs)


def test_a_multiprocessing_context_that_is_not_one_is_a_type_error_as_in_torch():
    with pytest.raises(TypeError):
        tdata.DataLoader(SAMPLES, num_workers=1, multiprocessing_context=3)
    with pytest.raises(TypeError, match="multiprocessing_context option should be a valid context"):
        DataLoader(SAMPLES, num_workers=1, multiprocessing_context=3)
