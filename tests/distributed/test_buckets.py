"""Gradient buckets: deterministic layout, correct reduced gradients, reduction overlapping backward."""

import sys
import time
import uuid

import numpy as np
import pytest

from distgraph.distributed.allreduce import ShmAllReduce, make_allreduce
from distgraph.distributed.buckets import GradBucketer, plan_buckets
from distgraph.errors import DistributedError, ShapeError

MB = 2**20


def layout(buckets):
    return [(b.dtype.name, b.members, b.offsets, b.count) for b in buckets]


def test_layout_walks_parameters_backwards_and_closes_buckets_at_the_cap():
    f4 = np.float32
    specs = [((MB // 4,), f4), ((10,), f4), ((MB // 8,), f4), ((MB // 8,), f4), ((3, 2), f4)]
    assert layout(plan_buckets(specs, bucket_mb=0.25)) == [
        ("float32", [4, 3], [0, 6], 6 + MB // 8),
        ("float32", [2], [0], MB // 8),
        ("float32", [1, 0], [0, 10], 10 + MB // 4),
    ]


def test_layout_keeps_one_dtype_per_bucket_and_is_deterministic():
    specs = [((4,), np.float64), ((5,), np.float32), ((6,), np.float64), ((7,), np.float32)]
    first = layout(plan_buckets(specs))
    assert first == [("float32", [3, 1], [0, 7], 12), ("float64", [2, 0], [0, 6], 10)]
    assert layout(plan_buckets(list(specs))) == first


def test_single_rank_bucketer_returns_every_gradient_in_place():
    comm = ShmAllReduce(0, 1, f"dgb{uuid.uuid4().hex[:8]}", bucket_mb=1)
    params = [np.zeros((300, 500), np.float32), np.zeros(7, np.float32), np.zeros((2, 3))]
    bucketer = GradBucketer(comm, params, op="mean")
    assert [b.members for b in bucketer.buckets] == [[2], [1, 0]]  # float64 alone; 600 kB of float32 < 1 MB
    grads = [np.full(p.shape, i + 1.0, p.dtype) for i, p in enumerate(params)]
    for i in reversed(range(3)):
        bucketer.ready(i, grads[i])
    out = bucketer.wait(timeout_s=10)
    assert all(o is g for o, g in zip(out, grads))
    assert all(np.all(g == i + 1.0) for i, g in enumerate(out))
    with pytest.raises(ShapeError, match="parameter 1"):
        bucketer.ready(1, np.zeros(8, np.float32))
    bucketer.close()
    comm.close()


class BucketRank:
    """One rank of a 2-rank group that plays a backward pass into a GradBucketer."""

    def __init__(self, rank, group, shapes, bucket_mb):
        self.rank = rank
        self.comm = make_allreduce(rank, 2, "shm", group, timeout_s=20.0, bucket_mb=bucket_mb)
        self.bucketer = GradBucketer(self.comm, [np.zeros(s, np.float32) for s in shapes])

    def step(self, grads, skip=()):
        """ready() in reverse order (as backward produces them); reports, before the last gradient is
        given, how many buckets were already reduced by the background thread."""
        grads = [np.array(g) for g in grads]
        order = [i for i in reversed(range(len(grads))) if i not in skip]
        for i in order[:-1]:
            self.bucketer.ready(i, grads[i])
        deadline, first = time.monotonic() + 10, self.bucketer.futures[0]
        while first is not None and not first.done() and time.monotonic() < deadline:
            time.sleep(0.005)  # "backward" still running: the first bucket must finish meanwhile
        done_early = sum(f is not None and f.done() for f in self.bucketer.futures)
        self.bucketer.ready(order[-1], grads[order[-1]])
        return done_early, [np.array(g) for g in self.bucketer.wait(timeout_s=20)]

    def ping(self):
        return self.rank

    def close(self):
        self.bucketer.close()
        self.comm.close()


@pytest.fixture
def bucket_ranks(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actor class defined here
    cls = ray_session.remote(num_cpus=0.5)(BucketRank)
    made = []

    def start(shapes, bucket_mb):
        group = f"dgb{uuid.uuid4().hex[:8]}"
        made.extend(cls.remote(r, group, shapes, bucket_mb) for r in range(2))
        # both processes up before a step: a rank waits only 10 s for the first bucket, which needs its peer
        # (one actor's process may start seconds after the other's on a loaded host)
        assert ray_session.get([a.ping.remote() for a in made[-2:]], timeout=120) == [0, 1]
        return made[-2:]

    yield ray_session, start
    ray_session.get([a.close.remote() for a in made])


@pytest.mark.ray
def test_buckets_reduce_while_backward_runs_and_sum_like_one_all_reduce(bucket_ranks):
    ray, start = bucket_ranks
    shapes = [(1000, 300), (301,), (700, 300), (5, 3)]  # 1.2 MB, 1.2 kB, 0.84 MB, 60 B
    actors = start(shapes, bucket_mb=0.5)  # buckets [3, 2] and [1, 0]
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)]
    results = ray.get([a.step.remote(grads[r]) for r, a in enumerate(actors)], timeout=60)
    for done_early, out in results:
        assert done_early >= 1  # the first bucket was reduced before backward produced the last gradient
        for i in range(len(shapes)):
            assert np.array_equal(out[i], grads[0][i] + grads[1][i])
    again = ray.get([a.step.remote(grads[r]) for r, a in enumerate(actors)], timeout=60)
    assert all(np.array_equal(x, y) for x, y in zip(results[0][1], again[1][1]))  # bit-identical next step


@pytest.mark.ray
def test_a_parameter_without_gradient_counts_as_zeros(bucket_ranks):
    ray, start = bucket_ranks
    shapes = [(4,), (300_000,), (3,)]
    actors = start(shapes, bucket_mb=1)
    grads = [[np.full(s, r + 1.0, np.float32) for s in shapes] for r in range(2)]
    skips = [(), (0,)]  # rank 1 never produces a gradient for parameter 0
    results = ray.get([a.step.remote(grads[r], skips[r]) for r, a in enumerate(actors)], timeout=60)
    for _, out in results:
        assert np.array_equal(out[0], np.full(4, 1.0, np.float32))
        assert np.array_equal(out[1], np.full(300_000, 3.0, np.float32))


def test_giving_a_gradient_twice_is_an_error():
    comm = ShmAllReduce(0, 1, f"dgb{uuid.uuid4().hex[:8]}")
    bucketer = GradBucketer(comm, [np.zeros(3), np.zeros(2)])
    bucketer.ready(0, np.ones(3))
    with pytest.raises(DistributedError, match="given twice"):
        bucketer.ready(0, np.ones(3))
    bucketer.close()
    comm.close()
