"""The parameter store applies each version's gradient exactly once and shards deterministically."""

import numpy as np
import pytest

from distgraph.distributed.param_store import ParameterShard, partition_parameters
from distgraph.errors import DistributedError


def test_partition_balances_bytes_and_is_deterministic():
    sizes = [400, 100, 300, 200, 50]
    owner = partition_parameters(sizes, 2)
    assert owner == partition_parameters(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owner) if o == k) for k in range(2)]
    assert max(loads) - min(loads) <= 100


def test_sync_apply_is_exactly_once_and_in_order():
    shard = ParameterShard(0, [0], [np.ones(3)], "sgd", [{"lr": 0.5}])
    shard.apply(0, [np.ones(3)])
    shard.apply(0, [np.ones(3)])  # replayed step: answered, not applied
    assert shard.version == 1 and np.array_equal(shard.params[0], np.full(3, 0.5))
    with pytest.raises(DistributedError, match="version 3 but the store is at version 1"):
        shard.apply(3, [np.ones(3)])


def test_async_push_fences_dropped_workers_and_checkpoint_round_trip():
    shard = ParameterShard(0, [0], [np.zeros(2)], "adam", [{"lr": 0.1}])
    shard.push(1, [np.ones(2)])
    shard.fence(1)
    v, _, applied = shard.push(1, [np.ones(2)])
    assert v == 1 and not applied and shard.applied == 1
    sd = shard.state_dict()
    other = ParameterShard(0, [0], [np.zeros(2)], "adam", [{"lr": 0.1}])
    other.load_state_dict(sd)
    shard.push(2, [np.ones(2)])
    other.push(2, [np.ones(2)])
    assert np.array_equal(shard.params[0], other.params[0])
