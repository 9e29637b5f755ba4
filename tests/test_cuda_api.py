"""`dg.cuda`, torch.cuda's everyday names, and `backend.synchronize` under it: on cpu-only machines the queries
say there is no GPU and the rest raise DeviceError naming what is missing; on a GPU they read cupy's device
and memory pool."""

import pytest

import distgraph as dg
from distgraph.backend import synchronize
from distgraph.errors import DeviceError


def test_synchronize_leaves_nothing_queued_on_the_device(device):
    x = dg.randn(512, 512, device=device)
    for _ in range(20):
        x = x @ x / 512
    synchronize(device)
    if device != "cpu":
        assert dg.device(device).xp.cuda.get_current_stream().done  # every queued kernel has finished
    assert x.shape == (512, 512)


def test_synchronize_names_a_device_it_does_not_know():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        synchronize("tpu")


@pytest.mark.skipif(dg.cuda.is_available(), reason="checks the cpu-only machine's answers")
def test_without_a_gpu_the_queries_say_so_and_the_rest_name_what_is_missing():
    assert dg.cuda.is_available() is False and dg.cuda.device_count() == 0
    dg.cuda.empty_cache()  # nothing cached: nothing to do, as torch's
    for call in (dg.cuda.synchronize, dg.cuda.memory_allocated, dg.cuda.memory_reserved, dg.cuda.get_device_name):
        with pytest.raises(DeviceError, match="a cuda device was requested but"):
            call()


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs cupy and a CUDA GPU")
def test_on_a_gpu_memory_follows_the_arrays_and_empty_cache_returns_the_free_blocks():
    assert dg.cuda.device_count() >= 1 and isinstance(dg.cuda.get_device_name(0), str)
    dg.cuda.empty_cache()
    before = dg.cuda.memory_allocated()
    x = dg.zeros(1 << 20, device="cuda")  # 4 MiB
    dg.cuda.synchronize()
    assert dg.cuda.memory_allocated() >= before + 4 * (1 << 20)
    assert dg.cuda.memory_reserved() >= dg.cuda.memory_allocated()
    held = dg.cuda.memory_reserved()
    del x
    assert dg.cuda.memory_allocated() < before + 4 * (1 << 20)  # the block is free, still cached
    assert dg.cuda.memory_reserved() == held
    dg.cuda.empty_cache()
    assert dg.cuda.memory_reserved() <= held - 4 * (1 << 20)  # and now given back


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs cupy and a CUDA GPU")
def test_cuda_and_cuda_0_are_one_device_whichever_is_named_first():
    from distgraph import backend

    backend._devices.pop("cuda", None)  # as in a fresh process that named "cuda:0" first
    first = dg.device("cuda:0")
    assert dg.device("cuda") is first and dg.device("cuda:0") is first


def test_no_module_reads_numpys_writeable_flag_where_a_cupy_array_may_come():
    """cupy's flags have no `writeable` (cupy#2616): reading it raised AttributeError in every backward() on a GPU
    before any of it had run there. `backend.writeable` is the one place that reads it."""
    import pathlib

    root = pathlib.Path(dg.__file__).parent
    readers = [str(p.relative_to(root)) for p in root.rglob("*.py") if ".flags.writeable" in p.read_text()]
    assert readers == [], readers


def test_writeable_reads_numpys_flag_and_takes_an_array_without_one_as_writeable():
    import types

    import numpy as np

    from distgraph.backend import writeable

    frozen = np.ones(2)
    frozen.flags.writeable = False
    assert writeable(np.ones(2)) and not writeable(frozen)
    assert writeable(types.SimpleNamespace(flags=types.SimpleNamespace(c_contiguous=True)))  # cupy's flags


def test_the_gpu_generator_gives_what_cupys_lacks_from_what_it_has():
    """cupy's Generator has no normal or permutation (distgraph's normal_, log_normal_, randperm and sparse_ call
    them): the wrapper draws them from standard_normal and random. Checked over numpy's generator, which has
    both, so the wrapper's own draws can be compared with what the methods must give."""
    import numpy as np

    from distgraph.ops.creation import _CupyGenerator

    gen = _CupyGenerator(np.random.default_rng(0), np)
    perm = gen.permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000)) and perm.tolist() != list(range(1000))
    draws = gen.normal(3.0, 2.0, (200_000,))
    assert draws.shape == (200_000,) and abs(draws.mean() - 3.0) < 0.02 and abs(draws.std() - 2.0) < 0.02
    assert gen.integers(0, 5, 10).shape == (10,)  # the rest is the wrapped generator's own
