"""Large checkpoints stream: saving needs no second copy of the data, loading holds only the result."""

import tracemalloc

import numpy as np

import distgraph as dg

SIZE = 200 * 2**20  # 200 MB


def peak_bytes(fn):
    """Peak Python + numpy heap growth while `fn` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_200_mb_checkpoint_saves_and_loads_within_one_copy(tmp_path):
    path = tmp_path / "big.dg"
    weight = np.arange(SIZE // 4, dtype=np.float32)
    state = {"weight": dg.from_numpy(weight), "step": 1}

    _, saved_peak = peak_bytes(lambda: dg.save(state, path))
    assert saved_peak < 0.05 * SIZE, f"save allocated {saved_peak / 2**20:.0f} MB for a {SIZE // 2**20} MB tensor"

    back, loaded_peak = peak_bytes(lambda: dg.load(path))
    assert loaded_peak < 1.3 * SIZE, f"load peaked at {loaded_peak / 2**20:.0f} MB for a {SIZE // 2**20} MB tensor"
    assert np.array_equal(back["weight"].numpy(), weight) and back["step"] == 1
