"""The GPU paths a static review found wrong, one test per finding: the GPU ones run where cupy and a GPU exist
(two GPUs for the device-index ones), the rest here too, where the behaviour shows on the cpu."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.backend import capsule_device_type, on
from distgraph.distributed.sync_group import SyncGroup
from distgraph.errors import ConfigError, DeviceError
from distgraph.ops import rng


def needs_gpu(fn):
    return pytest.mark.gpu(pytest.mark.skipif(not dg.cuda_is_available(), reason="needs cupy and a CUDA GPU")(fn))


def two_gpus(fn):
    two = dg.cuda_is_available() and dg.cuda.device_count() >= 2
    return pytest.mark.gpu(pytest.mark.skipif(not two, reason="needs two CUDA GPUs")(fn))


def on_gpu(t):
    """The index of the GPU a cuda tensor's memory is on (cupy's, not the tensor's word for it)."""
    return t.array.device.id


# ---- SyncBatchNorm's communicator in a launch (distributed/sync_group.py) ---------------------------------
class _Comm:
    def __init__(self, group=None):
        self.group, self.closed = group, False

    def close(self):
        self.closed = True


def test_a_launchs_sync_batch_norm_sums_on_shm_share_the_launchs_communicator():
    shared = _Comm()
    sync = SyncGroup({"backend": "shm", "group": "g", "timeout_s": 5, "device": "cpu"}, 0, 2, lambda: shared)
    assert sync._communicator() is shared
    sync.close()
    assert not shared.closed  # (the launch closes its own)


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_a_launchs_sync_batch_norm_sums_on_gloo_or_nccl_get_a_group_of_their_own(monkeypatch, backend):
    """One Ray collective group pairs its calls in issue order whatever their tags: DDP's bucket thread and
    SyncBatchNorm's sums on one group would pair wrong buffers, or deadlock."""
    from distgraph.distributed import allreduce

    made = []
    monkeypatch.setattr(
        allreduce, "make_allreduce", lambda rank, world, **kw: made.append(_Comm(kw["group"])) or made[-1]
    )
    config = {"backend": backend, "group": "g", "timeout_s": 5, "device": "cpu"}
    sync, shared = SyncGroup(config, 1, 2, lambda: _Comm("g")), None
    assert not made  # (made at the first sum, which every rank reaches at the same point)
    shared = sync._communicator()
    assert made == [shared] and shared.group == "g-sync" and sync._communicator() is shared
    sync.close()
    assert shared.closed


# ---- the Trainer's all-reduce on GPUs (trainer_options.py, distributed/cluster.py) -----------------------
@pytest.mark.parametrize("allreduce", ["shm", "gloo"])
def test_a_host_all_reduce_with_a_cuda_trainer_is_refused_naming_both(allreduce):
    m = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=rf"allreduce='{allreduce}' .*device='cuda'"):
        dg.Trainer(
            m, F.mse_loss, dg.optim.SGD(m.parameters(), lr=0.1), backend="ray", device="cuda", allreduce=allreduce
        )


# ---- DLPack (ops/creation.py, ops/torch_names_more.py, backend.py) ----------------------------------------
def test_a_host_dlpack_capsule_legacy_or_versioned_comes_back_as_a_cpu_tensor_sharing_memory():
    a = np.arange(6.0).reshape(2, 3)
    for capsule in (a.__dlpack__(), a.__dlpack__(max_version=(1, 0))):
        assert capsule_device_type(capsule) == 1  # kDLCPU
        t = dg.from_dlpack(capsule)
        assert t.device == dg.device("cpu") and t.numpy()[1, 2] == 5.0
    t.array[0, 0] = 7.0
    assert a[0, 0] == 7.0


def test_to_dlpack_retries_without_max_version_for_a_producer_that_takes_none():
    class OldProducer:  # an array library before DLPack 1.0 (older cupy) has __dlpack__(stream=None) only
        def __dlpack__(self, stream=None):
            return np.ones(3).__dlpack__()

    assert dg.from_dlpack(dg.to_dlpack(OldProducer())).numpy().tolist() == [1.0, 1.0, 1.0]


@needs_gpu
def test_a_cuda_dlpack_capsule_comes_back_as_a_cuda_tensor_sharing_memory():
    x = dg.arange(4.0, device="cuda")
    capsule = dg.to_dlpack(x)
    assert capsule_device_type(capsule) == 2  # kDLCUDA
    back = dg.from_dlpack(capsule)
    assert back.device == x.device
    back.array[0] = 9.0
    assert x.tolist() == [9.0, 1.0, 2.0, 3.0]


# ---- device of the backward seed (autograd/engine.py, autograd/gradcheck.py) ------------------------------
@pytest.mark.parametrize("case", ["gradcheck", "gradgradcheck"])
@needs_gpu
def test_gradcheck_runs_on_a_cuda_function(case):
    x = dg.randn(3, device="cuda", dtype=dg.float64, requires_grad=True)
    assert getattr(dg.autograd, case)(lambda a: (a**3).exp(), [x])


@needs_gpu
def test_a_gradient_on_another_device_is_refused_in_torchs_words_but_a_0d_one_is_moved():
    x = dg.randn(3, device="cuda", requires_grad=True)
    with pytest.raises(DeviceError, match=r"^invalid gradient at index 0 - expected device cuda:0 but got cpu$"):
        (x * 2).backward(dg.ones(3))
    (x * 2).sum().backward(dg.tensor(1.0))
    assert x.grad.device == x.device and x.grad.tolist() == [2.0, 2.0, 2.0]


# ---- op fixes on cuda (math_extra, counting, strided, parametrizations, ctc, function.apply) --------------
@needs_gpu
def test_polygamma_histc_and_a_0d_as_strided_backward_run_on_cuda():
    x = dg.rand(5) + 1
    for n in (0, 1, 2):
        np.testing.assert_allclose(dg.polygamma(n, x.cuda()).cpu().numpy(), dg.polygamma(n, x).numpy(), rtol=1e-5)
    h = dg.histc(dg.tensor([0.0, 1.0, 1.0, 3.0], device="cuda"), bins=3)  # the range: the data's
    assert h.tolist() == [1.0, 2.0, 1.0]
    a = dg.randn(4, device="cuda", requires_grad=True)
    dg.as_strided(a, (), (), 1).backward()
    assert a.grad.tolist() == [0.0, 1.0, 0.0, 0.0]


@needs_gpu
def test_the_householder_orthogonal_map_keeps_a_float32_cuda_weight_float32():
    m = nn.Linear(3, 5).cuda()
    nn.utils.parametrizations.orthogonal(m, orthogonal_map="householder", use_trivialization=False)
    w = m.weight
    assert w.dtype == dg.float32 and w.device == dg.device("cuda")
    np.testing.assert_allclose((w.mT @ w).detach().cpu().numpy(), np.eye(3), atol=1e-5)


@needs_gpu
def test_a_0d_cpu_tensor_beside_cuda_ones_is_a_scalar_whose_gradient_comes_back_to_the_cpu():
    s = dg.tensor(2.0, requires_grad=True)
    x = dg.ones(3, device="cuda", requires_grad=True)
    y = x * s
    assert y.device == x.device and y.tolist() == [2.0, 2.0, 2.0]
    y.sum().backward()
    assert s.grad.device == dg.device("cpu") and s.grad.item() == 3.0
    assert dg.where(x > 0, x, dg.tensor(0.0)).device == x.device  # three inputs
    with pytest.raises(DeviceError, match="expected all tensors on one device"):
        x + dg.ones(3)  # (a cpu tensor of more than 0 dimensions is no scalar, as torch)


@needs_gpu
def test_ctc_loss_takes_cpu_targets_and_lengths_with_cuda_log_probs():
    lp = dg.randn(6, 2, 5).log_softmax(2)
    targets, lengths = dg.tensor([[1, 2, 3], [2, 2, 0]]), (dg.tensor([6, 5]), dg.tensor([3, 2]))
    on_cpu = F.ctc_loss(lp, targets, *lengths)
    on_cuda = F.ctc_loss(lp.cuda().requires_grad_(), targets, *lengths)
    assert on_cuda.device == dg.device("cuda")
    np.testing.assert_allclose(on_cuda.item(), on_cpu.item(), rtol=1e-5)
    on_cuda.backward()


@needs_gpu
def test_fsdp_clip_grad_norm_returns_the_norm_on_the_parameters_device():
    from distgraph.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = FSDP(nn.Linear(3, 2).cuda())
    (model(dg.randn(4, 3, device="cuda")) ** 2).sum().backward()
    assert model.clip_grad_norm_(0.1).device == dg.device("cuda")


# ---- the device index (backend.on, ops/creation.py, autograd/function.py, autograd/engine.py) -------------
def test_on_the_cpu_is_a_context_that_does_nothing():
    with on(dg.device("cpu")) as entered:
        assert entered is None


@two_gpus
def test_factories_ops_and_gradients_of_cuda_1_are_made_on_gpu_1():
    made = [dg.zeros(3, device="cuda:1"), dg.full((2,), 1.0, device="cuda:1"), dg.arange(4, device="cuda:1"),
            dg.eye(2, device="cuda:1"), dg.linspace(0, 1, 3, device="cuda:1"), dg.rand(3, device="cuda:1"),
            dg.randn(3, device="cuda:1"), dg.randint(0, 4, (3,), device="cuda:1"), dg.randperm(4, device="cuda:1"),
            dg.tensor([1, 2], dtype=dg.float32, device="cuda:1"), dg.ones(3).to("cuda:1")]  # fmt: skip
    assert [on_gpu(t) for t in made] == [1] * len(made)
    x = dg.randn(4, 3, device="cuda:1", requires_grad=True)
    m = nn.Linear(3, 2).to("cuda:1")
    y = (m(x).relu() * 2).sum()
    assert on_gpu(y) == 1
    y.backward()
    assert on_gpu(x.grad) == 1 and on_gpu(m.weight.grad) == 1


@two_gpus
def test_each_gpu_has_a_random_generator_of_its_own_seeded_alike():
    dg.manual_seed(3)
    a0, a1 = dg.rand(4, device="cuda:0"), dg.rand(4, device="cuda:1")
    assert rng.generator(dg.device("cuda:0")) is not rng.generator(dg.device("cuda:1"))
    assert a0.tolist() == a1.tolist()  # (as torch's: every device's generator takes the one seed)
    assert on_gpu(a1) == 1


# ---- constants, optimizer state, seeds and in-place writes on the tensor's GPU (ops/promotion.py,
# optim/functional.py, cuda.py, ops/creation.py, ops/methods.py) --------------------------------------------
@two_gpus
def test_a_number_or_numpy_operand_of_a_cuda_1_tensor_becomes_a_constant_on_gpu_1():
    from distgraph.ops.promotion import const

    x = dg.randn(3, device="cuda:1")
    assert on_gpu(const(2.0, x)) == 1 and on_gpu(const(np.ones(3, np.float32), x, np.float32)) == 1
    made = [x * 2, 2 - x, x + 2.5, dg.arange(3, device="cuda:1") + 2, x + np.ones(3, np.float32)]
    assert [on_gpu(t) for t in made] == [1] * len(made)


@two_gpus
@pytest.mark.parametrize("name, kw", [("SGD", dict(momentum=0.9, nesterov=True, weight_decay=0.1)), ("Adam", {}),
                                      ("RMSprop", dict(centered=True, momentum=0.9)), ("Rprop", {}), ("ASGD", {})])  # fmt: skip
def test_an_optimizer_step_on_cuda_1_keeps_its_state_and_scratch_on_gpu_1(name, kw):
    m = nn.Linear(3, 2).to("cuda:1")
    opt = getattr(dg.optim, name)(m.parameters(), lr=0.1, **kw)
    for _ in range(2):
        opt.zero_grad()
        m(dg.randn(4, 3, device="cuda:1")).sum().backward()
        opt.step()
    arrays = [v for s in opt.state.values() for v in s.values() if hasattr(v, "device")]
    assert arrays and {a.device.id for a in arrays} == {1} and on_gpu(m.weight) == 1


@two_gpus
@pytest.mark.parametrize(
    "name, shape", [("Adagrad", (2, 3)), ("Adafactor", (2, 3)), ("Adafactor", (3,)), ("Muon", (2, 3))]
)
def test_a_matrix_or_adagrad_step_on_cuda_1_keeps_its_state_on_gpu_1(name, shape):
    p = nn.Parameter(dg.randn(*shape, device="cuda:1"))
    opt = getattr(dg.optim, name)([p], lr=0.1)
    for _ in range(2):
        p.grad = dg.randn(*shape, device="cuda:1")
        opt.step()
    arrays = [v for v in opt.state[p].values() if hasattr(v, "device")]
    assert arrays and {a.device.id for a in arrays} == {1} and on_gpu(p) == 1


@two_gpus
def test_index_put_and_setitem_into_a_cuda_1_tensor_run_on_gpu_1():
    t, i, v = dg.zeros(4, device="cuda:1"), dg.tensor([0, 2], device="cuda:1"), dg.tensor([1.0, 2.0], device="cuda:1")
    t.index_put_((i,), v)
    t.index_put_((i,), v, accumulate=True)
    t[dg.tensor([3], device="cuda:1")] = 5.0
    t[1:2] = 4.0
    assert t.tolist() == [2.0, 4.0, 4.0, 5.0] and on_gpu(t) == 1


@two_gpus
@pytest.mark.parametrize("fill, args", [("exponential_", ()), ("cauchy_", ()), ("log_normal_", ()),
                                        ("geometric_", (0.5,)), ("random_", (0, 5))])  # fmt: skip
def test_a_random_fill_of_a_cuda_1_tensor_draws_and_writes_on_gpu_1(fill, args):
    t = dg.zeros(8, device="cuda:1")
    getattr(t, fill)(*args)
    assert on_gpu(t) == 1 and bool((t != 0).any())


@two_gpus
@pytest.mark.parametrize("init, args", [("normal_", ()), ("uniform_", ()), ("trunc_normal_", ()),
                                        ("xavier_uniform_", ()), ("orthogonal_", ()), ("constant_", (2.0,))])  # fmt: skip
def test_nn_init_of_a_cuda_1_tensor_draws_and_writes_on_gpu_1(init, args):
    t = dg.zeros(3, 4, device="cuda:1")
    getattr(nn.init, init)(t, *args)
    assert on_gpu(t) == 1 and bool((t != 0).all())


@two_gpus
@pytest.mark.parametrize("source", ["cpu", "cuda:0", "cuda:1"])
def test_load_state_dict_into_a_cuda_1_module_copies_on_gpu_1(source):
    m, saved = nn.Linear(3, 2).to("cuda:1"), nn.Linear(3, 2)
    m.load_state_dict({k: v.to(source) for k, v in saved.state_dict().items()})
    assert on_gpu(m.weight) == 1 and m.weight.tolist() == saved.weight.tolist()
    with pytest.raises(Exception, match="size mismatch"):  # a failed load puts the values back, on GPU 1
        m.load_state_dict({"weight": dg.zeros(2, 3, device=source), "bias": dg.zeros(5, device=source)})
    assert on_gpu(m.weight) == 1 and m.weight.tolist() == saved.weight.tolist()


@two_gpus
def test_cuda_manual_seed_seeds_the_current_gpus_generator_and_manual_seed_all_every_gpus():
    dg.manual_seed(0)
    dg.cuda.manual_seed_all(7)
    expected = [dg.rand(3, device=d).tolist() for d in ("cuda:0", "cuda:1")]
    drawn_on_0 = dg.rand(3, device="cuda:0").tolist()
    dg.cuda.manual_seed_all(7)
    assert [dg.rand(3, device=d).tolist() for d in ("cuda:0", "cuda:1")] == expected
    dg.cuda.set_device(1)
    try:
        dg.cuda.manual_seed(7)  # the current GPU's only: GPU 0 draws on from where it was
    finally:
        dg.cuda.set_device(0)
    assert dg.rand(3, device="cuda:1").tolist() == expected[1]
    assert dg.rand(3, device="cuda:0").tolist() == drawn_on_0
    assert rng.generator(dg.device("cuda:1"))._dev is dg.device("cuda:1")


@two_gpus
def test_a_stashed_cuda_1_generator_replays_on_gpu_1_leaving_gpu_0s():
    from distgraph.ops.random_extra import replay_rng_state, stash_rng_state

    dg.manual_seed(4)
    gen0 = rng.generator(dg.device("cuda:0"))
    stash = stash_rng_state([dg.device("cuda:1")])
    first = dg.rand(3, device="cuda:1")
    replay_rng_state(stash)
    assert dg.rand(3, device="cuda:1").tolist() == first.tolist() and on_gpu(first) == 1
    assert rng.generator(dg.device("cuda:0")) is gen0


@needs_gpu
def test_an_inplace_op_writing_a_cuda_value_into_a_cpu_tensor_is_refused_in_torchs_words():
    c = dg.tensor(1.0)
    with pytest.raises(DeviceError, match=r"add_: Expected all tensors to be on the same device, .* cuda:0 and cpu!"):
        c.add_(dg.tensor(2.0, device="cuda"))
    assert c.item() == 1.0
    c.fill_(dg.tensor(3.0, device="cuda"))  # as torch: fill_ and copy_ take a value from any device
    assert c.item() == 3.0
    src = dg.ones(2, device="cuda", requires_grad=True)
    dst = dg.zeros(2, requires_grad=True).clone()
    dst.copy_(src)
    dst.sum().backward()
    assert dst.tolist() == [1.0, 1.0] and src.grad.device == dg.device("cuda") and src.grad.tolist() == [1.0, 1.0]


@two_gpus
def test_inplace_writes_into_a_cuda_1_tensor_run_on_gpu_1():
    a, s = dg.zeros(3, device="cuda:1"), dg.zeros((), device="cuda:1")
    a.add_(dg.ones(3, device="cuda:1"))
    s.mul_(2.0)
    a.copy_(dg.full((3,), 2.0, device="cuda:0"))
    a.fill_(dg.tensor(5.0))
    assert a.tolist() == [5.0] * 3 and on_gpu(a) == 1 and on_gpu(s) == 1


def test_a_mixed_device_error_names_both_devices_in_torchs_words():
    from distgraph.backend import mixed_devices

    err = mixed_devices("add_", "cuda:0", "cpu")
    assert isinstance(err, DeviceError)
    assert (
        str(err)
        == "add_: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
    )
