"""shm all-reduce between real Ray actors: correct, deterministic, cleaned up, and never hangs."""

import os

import numpy as np
import pytest

from distgraph.distributed.allreduce import ReduceRank, ShmAllReduce
from distgraph.errors import DistributedError

pytestmark = pytest.mark.ray


def ranks(ray, world, group):
    cls = ray.remote(num_cpus=0.5)(ReduceRank)
    return [cls.remote(r, world, group) for r in range(world)]


def test_sum_and_mean_match_numpy_for_odd_sizes_and_dtypes(ray_session):
    ray = ray_session
    actors = ranks(ray, 2, "dgtest_sum")
    rng = np.random.default_rng(0)
    inputs = [[rng.standard_normal(7).astype(np.float32), rng.standard_normal((3, 5))] for _ in range(2)]
    outs = ray.get([a.reduce.remote(inputs[r]) for r, a in enumerate(actors)])
    for i in range(2):
        expect = inputs[0][i] + inputs[1][i]
        for out in outs:
            assert out[i].dtype == expect.dtype and np.array_equal(out[i], expect)
    means = ray.get([a.reduce.remote(inputs[r], "mean") for r, a in enumerate(actors)])
    np.testing.assert_allclose(means[0][1], (inputs[0][1] + inputs[1][1]) / 2)
    again = ray.get([a.reduce.remote(inputs[r]) for r, a in enumerate(actors)])
    assert all(np.array_equal(x, y) for x, y in zip(outs[0], again[0]))  # bit-identical repeat
    ray.get([a.close.remote() for a in actors])
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("dgtest_sum")]


def test_missing_peer_raises_instead_of_hanging(ray_session):
    comm = ShmAllReduce(0, 2, "dgtest_alone", timeout_s=0.5)
    with pytest.raises(DistributedError, match=r"rank\(s\) \[1\] did not reach barrier"):
        comm.allreduce([np.ones(4)])
    comm.close()
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("dgtest_alone")]
