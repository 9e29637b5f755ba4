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
    assert dg.cuda.is_available() is False and dg.cuda.device_count() == 0 and dg.cuda.is_initialized() is False
    dg.cuda.empty_cache()  # nothing cached: nothing to do, as torch's
    assert dg.cuda.memory_allocated() == dg.cuda.memory_reserved() == dg.cuda.max_memory_allocated() == 0
    dg.cuda.set_device(-1)  # a negative index: nothing to do, as torch's
    for call in (
        dg.cuda.synchronize,
        dg.cuda.get_device_name,
        dg.cuda.current_device,
        dg.cuda.reset_peak_memory_stats,
        lambda: dg.cuda.set_device(0),
    ):
        with pytest.raises(DeviceError, match="a cuda device was requested but"):
            call()
    with pytest.raises(ValueError, match="Expected a cuda device, but got: cpu"):
        dg.cuda.set_device("cpu")


@pytest.mark.skipif(dg.cuda.is_available(), reason="checks the cpu-only machine's answers")
def test_without_a_gpu_the_answers_are_torchs_cpu_builds():
    """Each call answers as torch's CPU-only build: a value where torch gives one, an error where torch raises."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("needs torch's CPU-only answers")
    for name in ("is_available", "device_count", "is_initialized", "memory_allocated", "memory_reserved",
                 "max_memory_allocated", "manual_seed", "manual_seed_all", "current_device", "synchronize",
                 "get_device_name", "reset_peak_memory_stats"):  # fmt: skip
        args = (3,) if name.startswith("manual_seed") else ()
        try:
            expected = getattr(torch.cuda, name)(*args)
        except (AssertionError, AttributeError, RuntimeError):  # "Torch not compiled with CUDA enabled"
            expected = DeviceError
        if expected is DeviceError:
            with pytest.raises(DeviceError):
                getattr(dg.cuda, name)(*args)
        else:
            assert getattr(dg.cuda, name)(*args) == expected, name


def test_cuda_manual_seed_without_a_gpu_leaves_the_cpu_generator_alone():
    dg.manual_seed(5)
    expected = dg.rand(4).numpy()
    dg.manual_seed(5)
    dg.cuda.manual_seed(123)
    dg.cuda.manual_seed_all(-7)
    if not dg.cuda.is_available():
        assert dg.initial_seed() == 5
    assert (dg.rand(4).numpy() == expected).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (("cuda:-1",), "Invalid device string: 'cuda:-1'"),
        (("cpu:-1",), "Invalid device string: 'cpu:-1'"),
        (("cuda:01",), "Invalid device string: 'cuda:01'"),
        (("cuda: 1",), "Invalid device string: 'cuda: 1'"),
        (("cuda:x",), "Invalid device string: 'cuda:x'"),
        (("cuda", -1), "Device index must not be negative"),
        (("cuda:1", 1), "type \\(string\\) must not include an index because index was passed explicitly: cuda:1"),
    ],
)
def test_malformed_device_strings_are_refused_in_torchs_words(args, message):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match=message):
        torch.device(*args)
    with pytest.raises(DeviceError, match=message):
        dg.device(*args)


def test_cpu_with_an_index_is_the_cpu_device_and_tensors_made_there_read_cpu():
    """torch keeps the index on the device object, but its tensors made there report plain "cpu"; distgraph
    has one cpu device (its ops compare devices by identity), which "cpu:0" and ("cpu", 0) name."""
    torch = pytest.importorskip("torch")
    assert dg.device("cpu:0") is dg.device("cpu", 0) is dg.device("cpu")
    assert str(dg.zeros(1, device="cpu:0").device) == str(torch.zeros(1, device="cpu:0").device) == "cpu"
    assert dg.ones(2).to("cpu:0").numpy().tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="argument 'index' .* must be int, not str"):
        dg.device("cuda", "1")


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs cupy and a CUDA GPU")
def test_on_a_gpu_the_device_index_argument_names_the_same_device():
    assert dg.device("cuda", 0) is dg.device("cuda:0")
    dg.cuda.set_device(0)
    assert dg.cuda.current_device() == 0


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs cupy and a CUDA GPU")
def test_on_a_gpu_cuda_manual_seed_seeds_the_gpu_generator_only():
    dg.manual_seed(11)  # seeds both: the gpu stream of seed 11
    expected_gpu = dg.rand(5, device="cuda").cpu().numpy()
    dg.manual_seed(3)
    cpu_before = dg.rand(2).numpy()
    dg.manual_seed(3)
    dg.cuda.manual_seed(11)
    assert (dg.rand(5, device="cuda").cpu().numpy() == expected_gpu).all()
    assert (dg.rand(2).numpy() == cpu_before).all()
    dg.cuda.manual_seed_all(11)
    assert (dg.rand(5, device="cuda").cpu().numpy() == expected_gpu).all()
    assert dg.cuda.is_initialized()


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs cupy and a CUDA GPU")
def test_on_a_gpu_the_peak_counts_the_largest_live_allocation_since_the_reset():
    dg.cuda.reset_peak_memory_stats()
    base = dg.cuda.memory_allocated()
    x = dg.zeros(1 << 22, device="cuda")  # 16 MiB
    del x
    assert dg.cuda.memory_allocated() < base + (1 << 24)
    assert dg.cuda.max_memory_allocated() >= base + (1 << 24)
    dg.cuda.reset_peak_memory_stats()
    assert dg.cuda.max_memory_allocated() < base + (1 << 24)


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

    from distgraph.ops.rng import _CupyGenerator

    gen = _CupyGenerator(np.random.default_rng(0), np)
    perm = gen.permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000)) and perm.tolist() != list(range(1000))
    draws = gen.normal(3.0, 2.0, (200_000,))
    assert draws.shape == (200_000,) and abs(draws.mean() - 3.0) < 0.02 and abs(draws.std() - 2.0) < 0.02
    assert gen.integers(0, 5, 10).shape == (10,)  # the rest is the wrapped generator's own
