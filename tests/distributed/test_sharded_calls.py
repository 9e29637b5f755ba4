"""How the driver packs the steps of a sharded call: indices in one inline array, calls sized by time."""

import numpy as np
import pytest

from distgraph.distributed import scheduler as sched
from distgraph.distributed.scheduler import DataParallelScheduler
from distgraph.distributed.worker import pack_indices, unpack_indices


def test_packed_indices_unpack_to_the_same_batches_in_int32():
    rng = np.random.default_rng(0)
    batches = [rng.permutation(1000)[:n] for n in (32, 32, 7)]
    flat, bounds = pack_indices(batches)
    assert flat.dtype == np.int32 and flat.nbytes == 71 * 4
    assert all(np.array_equal(a, b) for a, b in zip(batches, unpack_indices((flat, bounds))))


def test_indices_past_int32_stay_int64():
    batches = [np.array([0, 2**31 + 5], np.int64)]
    flat, bounds = pack_indices(batches)
    assert flat.dtype == np.int64
    assert np.array_equal(unpack_indices((flat, bounds))[0], batches[0])


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, sched.FIRST_CALL_STEPS), (0.1, 10), (0.03, 33), (1e-6, sched.MAX_STEPS_PER_CALL), (5.0, 1)],
)
def test_a_call_carries_about_call_seconds_of_steps(seconds, expected, monkeypatch):
    monkeypatch.setattr(sched, "CALL_SECONDS", 1.0)
    s = DataParallelScheduler([], [])
    s.step_seconds = seconds
    assert s._call_steps() == expected


def test_a_fixed_steps_per_call_wins():
    s = DataParallelScheduler([], [], steps_per_call=7)
    s.step_seconds = 0.001
    assert s._call_steps() == 7
