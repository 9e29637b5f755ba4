"""DistributedSampler against torch's: the same shares, padding and drop_last rules (exact without
shuffling); with shuffling, a permutation shared by the ranks, new each epoch (numpy's numbers)."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import DistributedSampler
from distgraph.errors import ConfigError
from distgraph.ops.collective import using_group

torch = pytest.importorskip("torch")
from torch.utils.data.distributed import DistributedSampler as TorchSampler  # noqa: E402


class Place:
    """What the sampler reads of a process group: this rank and the number of ranks."""

    def __init__(self, rank, world_size):
        self.rank, self.world_size = rank, world_size


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 3])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shares_without_shuffling_are_torchs(n, replicas, drop_last):
    data = list(range(n))
    for rank in range(replicas):
        mine = DistributedSampler(data, replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(data, replicas, rank, shuffle=False, drop_last=drop_last)
        assert list(mine) == list(theirs) and len(mine) == len(theirs)


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_shares_split_one_permutation_and_change_with_the_epoch(drop_last):
    data = range(23)
    samplers = [DistributedSampler(data, 4, r, seed=7, drop_last=drop_last) for r in range(4)]
    orders = []
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        shares = [list(s) for s in samplers]
        assert {len(share) for share in shares} == {len(samplers[0])}
        seen = sorted(i for share in shares for i in share)
        if drop_last:
            assert len(seen) == 20 and len(set(seen)) == 20  # three of 23 dropped, none twice
        else:
            assert sorted(set(seen)) == list(range(23)) and len(seen) == 24  # one padded from the head
        orders.append(shares)
        fresh = [DistributedSampler(data, 4, r, seed=7, drop_last=drop_last) for r in range(4)]
        for s in fresh:
            s.set_epoch(epoch)
        assert shares == [list(s) for s in fresh]  # every rank's sampler draws the same permutation
    assert orders[0] != orders[1] != orders[2]
    assert [list(s) for s in samplers] == orders[2]  # the same epoch, the same order


def test_the_ranks_default_to_the_installed_group_and_to_one_alone():
    data = range(10)
    with using_group(Place(1, 3)):
        sampler = DistributedSampler(data, shuffle=False)
    assert (sampler.num_replicas, sampler.rank, list(sampler)) == (3, 1, [1, 4, 7, 0])  # 0: the padding
    alone = DistributedSampler(data, shuffle=False)
    assert (alone.num_replicas, alone.rank, list(alone)) == (1, 0, list(range(10)))


def test_a_data_loader_takes_it_as_its_sampler():
    x = np.arange(12, dtype=np.float32)
    loader = dg.data.DataLoader(
        dg.data.TensorDataset(dg.tensor(x)), batch_size=2, sampler=DistributedSampler(x, 2, 1, shuffle=False)
    )
    assert [b[0].numpy().tolist() for b in loader] == [[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]]


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(range(4), 2, 2)
    with pytest.raises(ConfigError, match="num_replicas must be a positive int, got 0"):
        DistributedSampler(range(4), 0, 0)
    with pytest.raises(ConfigError, match="seed must be an int"):
        DistributedSampler(range(4), 2, 0, seed=1.5)


@pytest.mark.parametrize("seed", [-1, -(2**70), 2**64 + 3])
def test_any_int_seed_shuffles_as_in_torch(seed):
    """torch folds any int seed into its generator's range; numpy refuses a negative seed, so it is folded
    (seed + epoch modulo 2**64) before it seeds the permutation."""
    data = range(9)
    assert sorted(TorchSampler(data, 1, 0, seed=-1)) == list(data)  # torch takes a negative seed
    shares = [list(DistributedSampler(data, 3, r, seed=seed)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(data)
    assert shares[0] == list(DistributedSampler(data, 3, 0, seed=seed))
    sampler = DistributedSampler(data, 3, 0, seed=seed)
    sampler.set_epoch(1)
    assert list(sampler) == list(DistributedSampler(data, 3, 0, seed=seed + 1))
