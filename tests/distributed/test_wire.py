"""The dtypes a collective backend's wire lacks travel as ones it has (`distributed/wire.py`): the result is the shm
backend's (numpy's sum in rank order), bit for bit — for nccl by the same conversion on numpy arrays (no GPU
here), for gloo through a real gloo group on a local Ray."""

import numpy as np
import pytest

import distgraph.distributed as dist
from distgraph.distributed import loop, wire

EVERY_DTYPE = ("bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
               "float32", "float64", "complex64", "complex128")  # fmt: skip


def _rank_arrays(dtype, world):
    """Each rank's array of `dtype`: the type's extremes and values whose sum wraps, zeros, and (bool) ranks
    that disagree."""
    rng = np.random.default_rng(7)
    out = []
    for r in range(world):
        if np.dtype(dtype) == np.bool_:
            out.append(np.array([r == 0, False, True, r % 2 == 1]))
        elif np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            out.append(np.array([info.max, info.min, info.max // 2 + r, r], dtype=dtype))
        elif np.issubdtype(np.dtype(dtype), np.complexfloating):
            out.append((rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(dtype))
        else:
            out.append(rng.standard_normal(4).astype(dtype))
    return out


def _shm_sum(arrays):
    """What the shm backend gives: numpy's sum of the ranks' arrays in rank order, in their dtype."""
    total = arrays[0].copy()
    for a in arrays[1:]:
        total += a
    return total


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("backend", ["gloo", "nccl"])
@pytest.mark.parametrize("dtype", EVERY_DTYPE)
def test_a_reduction_over_the_carried_arrays_gives_the_sum_of_the_originals(dtype, backend, world):
    flats = _rank_arrays(dtype, world)
    want = _shm_sum(flats)
    carried = [wire.for_reduction(backend, f) for f in flats]
    assert all(c.dtype not in wire.LACKS[backend] for c, _ in carried), "a lacking dtype handed to the backend"
    total = _shm_sum([c for c, _ in carried])  # the backend's all-reduce: every rank receives the sum
    for c, finish in carried:
        c[...] = total
        finish()
    for f in flats:
        assert f.dtype == want.dtype and f.tobytes() == want.tobytes(), (dtype, backend, f, want)


def test_a_dtype_the_wire_has_is_handed_over_as_itself():
    flat = np.arange(4, dtype=np.float32)
    carried, finish = wire.for_reduction("nccl", flat)
    assert carried is flat
    assert wire.as_bytes("gloo", flat) is flat
    assert wire.as_bytes("gloo", np.zeros(3, np.int16)).dtype == np.uint8


def _reduce_every_dtype():
    comm, r = loop.communicator(), dist.get_rank()
    return {d: comm.allreduce(_rank_arrays(d, 2)[r].copy()).tobytes() for d in EVERY_DTYPE}


@pytest.mark.ray
def test_gloo_reduces_every_dtype_as_shm_does(ray_session):
    pytest.importorskip("torch")
    out = dist.launch(_reduce_every_dtype, workers=2, cpus_per_worker=0.5, allreduce="gloo", timeout_s=60)
    for d in EVERY_DTYPE:
        want = _shm_sum(_rank_arrays(d, 2)).tobytes()
        assert out[0][d] == out[1][d] == want, d
