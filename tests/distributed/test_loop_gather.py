"""allgather / all_gather, broadcast_object and allgather_object inside `dg.distributed.launch`, on a real
local Ray with 2 ranks: different first dims, objects with numpy arrays, and the errors (no hang)."""

import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import ConfigError, DistributedError, DTypeError, ShapeError

pytestmark = pytest.mark.ray
LAUNCH = {"workers": 2, "cpus_per_worker": 0.5, "timeout_s": 60}


def _gathers():
    r = dist.rank()
    rows = np.arange((r + 1) * 2 * 3, dtype=np.int64).reshape(r + 1, 2, 3) + 100 * r  # (r+1, 2, 3)
    cat = dist.allgather(dg.tensor(rows))
    floats = dist.all_gather(dg.tensor(np.full((3 - r,), -0.0 if r else 1.5, np.float32)))
    listed = [dg.tensor(np.zeros((2,), np.float64)) for _ in range(2)]
    dist.all_gather(listed, dg.tensor(np.array([r, r + 0.5])))
    return cat.numpy(), floats.numpy(), [t.numpy() for t in listed]


def test_allgather_concatenates_different_first_dims_in_rank_order_on_every_rank(ray_session):
    expected = np.concatenate([np.arange(6).reshape(1, 2, 3), np.arange(12).reshape(2, 2, 3) + 100])
    for cat, floats, listed in dist.launch(_gathers, **LAUNCH):
        assert cat.dtype == np.int64 and cat.shape == (3, 2, 3)
        np.testing.assert_array_equal(cat, expected)
        assert floats.dtype == np.float32 and floats.tolist() == [1.5, 1.5, 1.5, 0.0, 0.0]
        assert np.signbit(floats[3:]).all()  # bytes, not sums: rank 1's -0.0 stays -0.0
        assert [t.tolist() for t in listed] == [[0.0, 0.5], [1.0, 1.5]]


def _objects():
    r = dist.rank()
    config = {"lr": 0.1, "weights": np.arange(5, dtype=np.float32), "name": "run-7"} if r == 1 else None
    got = dist.broadcast_object(config, src=1)
    metrics = dist.allgather_object({"rank": r, "loss": np.full((r + 1,), r / 2)})
    same = dist.all_gather_object(["x" * (1000 * r)])  # different pickle sizes
    return got, metrics, same


def test_broadcast_object_and_allgather_object_round_trip_dicts_with_arrays(ray_session):
    for got, metrics, same in dist.launch(_objects, **LAUNCH):
        assert got["lr"] == 0.1 and got["name"] == "run-7"
        np.testing.assert_array_equal(got["weights"], np.arange(5, dtype=np.float32))
        assert got["weights"].dtype == np.float32
        assert [m["rank"] for m in metrics] == [0, 1]
        np.testing.assert_array_equal(metrics[1]["loss"], [0.5, 0.5])
        assert same == [[""], ["x" * 1000]]


def _mismatch(kind):
    r = dist.rank()
    if kind == "dtype":
        t = np.zeros((2, 3), np.float32 if r == 0 else np.float64)
    else:
        t = np.zeros((r + 1, 3 + r), np.float32)
    dist.allgather(dg.tensor(t))
    return "unreachable"


def test_allgather_of_mismatched_dtypes_or_trailing_shapes_names_every_rank(ray_session):
    launch = {**LAUNCH, "timeout_s": 300}  # far above two launches' worker starts on a loaded host
    started = time.monotonic()
    with pytest.raises(DTypeError, match=r"dtypes differ \(rank 0: float32 \(2, 3\), rank 1: float64 \(2, 3\)\)"):
        dist.launch(_mismatch, args=("dtype",), **launch)
    with pytest.raises(ShapeError, match=r"beyond dim 0 \(rank 0: float32 \(1, 3\), rank 1: float32 \(2, 4\)\)"):
        dist.launch(_mismatch, args=("shape",), **launch)
    assert time.monotonic() - started < 200  # raised on every rank at once, no 300 s timeout


def _only_rank_0_gathers(peer_returns):
    if dist.rank() == 0:
        dist.allgather(dg.tensor(np.zeros(2, np.float32)))
    elif not peer_returns:
        time.sleep(60)  # alive, busy elsewhere: only the timeout can tell
    return "done"


def test_a_gather_a_live_peer_never_joins_times_out_naming_it(ray_session):
    with pytest.raises(DistributedError, match=r"allgather_object: shm all-reduce .* did not reach .*timeout 8"):
        dist.launch(_only_rank_0_gathers, workers=2, args=(False,), cpus_per_worker=0.5, timeout_s=8)


def test_a_gather_a_peer_returned_without_fails_at_once_naming_the_call(ray_session):
    started = time.monotonic()
    with pytest.raises(DistributedError, match=r"allgather_object: shm all-reduce: rank\(s\) \[1\] returned from the "
                       r"launched function while rank 0 waits in its call 1 with tag gather"):  # fmt: skip
        dist.launch(_only_rank_0_gathers, workers=2, args=(True,), cpus_per_worker=0.5, timeout_s=60)
    assert time.monotonic() - started < 30  # not the 60 s timeout


def test_bad_src_and_outside_a_launch_as_rank_0_of_1():
    with pytest.raises(ConfigError, match="broadcast_object: src 1 is not a rank of 1"):
        dist.broadcast_object({"a": 1}, src=1)
    obj = {"a": np.ones(2)}
    assert dist.broadcast_object(obj) is obj and dist.allgather_object(obj) == [obj]
    t = dg.tensor(np.ones((2, 3), np.float32))
    out = dist.allgather(t)
    assert out is not t and out.numpy().tolist() == t.numpy().tolist()
    listed = [dg.zeros(2, 3)]
    dist.all_gather(listed, t)
    assert listed[0].numpy().tolist() == [[1.0] * 3] * 2
    with pytest.raises(ShapeError, match="0-d tensor has no dim 0"):
        dist.allgather(dg.tensor(np.float32(1.0)))
    with pytest.raises(ConfigError, match="tensor_list has 2 tensors for 1 ranks"):
        dist.all_gather([t, t], t)
