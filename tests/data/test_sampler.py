"""Samplers: torch's semantics (not its random streams) — permutations, replacement, num_samples,
weights' frequencies, a new order every epoch, the same orders for the same seed — and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from distgraph.errors import ConfigError, DTypeError

torch = pytest.importorskip("torch")
tdata = torch.utils.data


def test_sequential_and_batch_samplers_give_torchs_indices_and_lengths():
    data = list(range(10))
    assert list(SequentialSampler(data)) == list(tdata.SequentialSampler(data))
    for size in (1, 3, 4, 10, 11):
        for drop_last in (False, True):
            ours = BatchSampler(SequentialSampler(data), size, drop_last)
            theirs = tdata.BatchSampler(tdata.SequentialSampler(data), size, drop_last)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_random_sampler_is_a_permutation_per_epoch_new_each_epoch_and_fixed_by_the_seed():
    data = range(50)
    sampler = RandomSampler(data, generator=7)
    epochs = [list(sampler) for _ in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs) and len(sampler) == 50
    assert epochs[0] != epochs[1] != epochs[2]
    again = RandomSampler(data, generator=np.random.default_rng(7))
    assert [list(again) for _ in range(3)] == epochs  # an int seed is that seed's numpy Generator
    dg.manual_seed(3)
    first = list(RandomSampler(data))
    dg.manual_seed(3)
    assert list(RandomSampler(data)) == first != list(RandomSampler(data))  # the global stream, reseeded


def test_random_sampler_num_samples_and_replacement_as_torch():
    data = range(10)
    for replacement in (False, True):
        for num_samples in (3, 10, 25):
            ours = list(RandomSampler(data, replacement, num_samples, generator=0))
            theirs = list(tdata.RandomSampler(data, replacement, num_samples))
            assert len(ours) == len(theirs) == num_samples and all(0 <= i < 10 for i in ours)
    # without replacement, more samples than data: whole permutations, then part of one
    ours = list(RandomSampler(data, num_samples=25, generator=0))
    assert sorted(ours[:10]) == sorted(ours[10:20]) == list(range(10)) and len(set(ours[20:])) == 5
    # with replacement: repeats appear (50 draws from 10 without one has probability 0)
    assert len(set(RandomSampler(data, True, 50, generator=0))) < 50


def test_subset_random_sampler_permutes_the_given_indices():
    indices = [3, 8, 11, 20]
    sampler = SubsetRandomSampler(indices, generator=1)
    orders = [list(sampler) for _ in range(6)]
    assert all(sorted(o) == indices for o in orders) and len({tuple(o) for o in orders}) > 1
    assert len(sampler) == len(tdata.SubsetRandomSampler(indices))


def test_weighted_sampler_frequencies_follow_the_weights():
    weights = [1.0, 2.0, 0.0, 7.0]
    n = 20000
    draws = np.array(list(WeightedRandomSampler(weights, n, generator=0)))
    freq = np.bincount(draws, minlength=4) / n
    p = np.array(weights) / sum(weights)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)  # 5 sigma, zero weight never drawn
    assert len(WeightedRandomSampler(weights, n)) == len(tdata.WeightedRandomSampler(weights, n)) == n
    no_repeat = list(WeightedRandomSampler(dg.tensor(weights), 3, replacement=False, generator=0))
    assert sorted(no_repeat) == [0, 1, 3]
    # as torch: without replacement, zero weights are drawn only once the others are used up
    assert list(WeightedRandomSampler([0.0, 1.0, 0.0], 3, replacement=False, generator=0))[0] == 1
    assert sorted(tdata.WeightedRandomSampler([0.0, 1.0, 0.0], 3, replacement=False)) == [0, 1, 2]
    firsts = np.bincount(
        [next(iter(WeightedRandomSampler(weights, 2, False, generator=s))) for s in range(4000)], minlength=4
    )
    assert np.all(np.abs(firsts / 4000 - p) <= 5 * np.sqrt(p * (1 - p) / 4000) + 1e-12)


@pytest.mark.parametrize(
    ("ours", "theirs", "match"),
    [
        (lambda: RandomSampler(range(3), replacement=1), lambda: tdata.RandomSampler(range(3), replacement=1),
         "replacement should be a boolean"),
        (lambda: RandomSampler(range(3), num_samples=0), lambda: tdata.RandomSampler(range(3), num_samples=0),
         "num_samples should be a positive integer"),
        (lambda: RandomSampler([]), lambda: tdata.RandomSampler([]), "num_samples should be a positive integer"),
        (lambda: WeightedRandomSampler([1.0], True), lambda: tdata.WeightedRandomSampler([1.0], True),
         "num_samples should be a positive integer"),
        (lambda: WeightedRandomSampler([1.0], 1, replacement=None),
         lambda: tdata.WeightedRandomSampler([1.0], 1, replacement=None), "replacement should be a boolean"),
        (lambda: WeightedRandomSampler([[1.0]], 1), lambda: tdata.WeightedRandomSampler([[1.0]], 1),
         "weights should be a 1d sequence"),
        (lambda: WeightedRandomSampler([1.0, 0.0], 3, replacement=False),
         lambda: list(tdata.WeightedRandomSampler([1.0, 0.0], 3, replacement=False)), "without replacement"),
        (lambda: WeightedRandomSampler([1.0, -1.0], 1), lambda: list(tdata.WeightedRandomSampler([1.0, -1.0], 1)),
         "non-negative"),
        (lambda: BatchSampler(range(3), 0, False), lambda: tdata.BatchSampler(range(3), 0, False),
         "batch_size should be a positive integer"),
        (lambda: BatchSampler(range(3), 2, 1), lambda: tdata.BatchSampler(range(3), 2, 1),
         "drop_last should be a boolean"),
    ],
)  # fmt: skip
def test_bad_sampler_arguments_fail_where_torch_fails_naming_the_class_and_option(ours, theirs, match):
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        theirs()
    with pytest.raises((ConfigError, DTypeError), match=match) as err:
        ours()
    assert "Sampler" in str(err.value)


def test_a_non_bool_replacement_is_a_type_error_as_in_torch():
    with pytest.raises(TypeError):
        tdata.RandomSampler(range(3), replacement=1)
    with pytest.raises(DTypeError, match="RandomSampler: replacement should be a boolean value, but got replacement=1"):
        RandomSampler(range(3), replacement=1)


def test_a_bad_generator_is_refused_and_the_base_class_needs_iter():
    with pytest.raises(ConfigError, match="RandomSampler: generator must be a numpy.random.Generator or an int"):
        RandomSampler(range(3), generator="seed")
    with pytest.raises(NotImplementedError):
        iter(Sampler())
