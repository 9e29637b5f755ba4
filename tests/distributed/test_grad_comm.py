"""What Horovod and torch DDP users pass besides the defaults, on real Ray (2 ranks), against the same
computation in one process: DistributedOptimizer's compression / op / gradient_predivide_factor /
backward_passes_per_step, DDP's comm hooks (allreduce, fp16, bf16, one of one's own) and join() for uneven
inputs; and the errors for bad arguments."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.algorithms import Join
from distgraph.distributed.algorithms.ddp_comm_hooks import default_hooks
from distgraph.distributed.grad_bucket import run_comm_hook
from distgraph.errors import ConfigError, DistributedError, ShapeError

torch = pytest.importorskip("torch")  # the reference these tests compare with

F16 = np.float16


def _grads(r):
    """Rank r's gradients: float32 values that float16 and bfloat16 round."""
    rng = np.random.default_rng(10 + r)
    return [(rng.standard_normal((3, 4)) * 3).astype(np.float32), rng.standard_normal(5).astype(np.float32)]


def _reduced(**options):
    params = [dg.zeros(*g.shape, requires_grad=True) for g in _grads(0)]
    opt = dist.DistributedOptimizer(dg.optim.SGD(params, lr=0.1), **options)
    for p, g in zip(params, _grads(dist.rank())):
        p.grad = dg.tensor(g)
    opt.synchronize()
    return [p.grad.numpy() for p in params]


def _model(seed, dtype=dg.float32, norm=False):
    dg.manual_seed(seed)
    middle = [nn.BatchNorm1d(6)] if norm else []
    return nn.Sequential(nn.Linear(5, 6), *middle, nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _data(n=16, dtype=np.float32):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 5)).astype(dtype)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _local_grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(dg.tensor(x)), dg.tensor(y)).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def _optimizer_checks():
    out = {
        "fp16": _reduced(compression=dist.Compression.fp16),
        "none": _reduced(),
        "sum": _reduced(op=dist.Sum),
        "predivide": _reduced(compression=dist.Compression.fp16, gradient_predivide_factor=4.0),
    }
    # backward_passes_per_step=2: two halves of this rank's batch accumulate locally, one all-reduce at step
    x, y = _data()
    model = _model(seed=0, dtype=dg.float64)
    opt = dist.DistributedOptimizer(dg.optim.SGD(model.parameters(), lr=0.1), backward_passes_per_step=2)
    mine = slice(8 * dist.rank(), 8 * dist.rank() + 8)
    for half in (slice(0, 4), slice(4, 8)):
        F.cross_entropy(model(dg.tensor(x[mine][half].astype(np.float64))), dg.tensor(y[mine][half])).backward()
    with pytest.raises(ConfigError, match=r"more than backward_passes_per_step \(2\) times before call to step"):
        model(dg.ones(1, 5, dtype=dg.float64)).sum().backward()
    opt.zero_grad()  # the count restarts
    for half in (slice(0, 4), slice(4, 8)):
        F.cross_entropy(model(dg.tensor(x[mine][half].astype(np.float64))), dg.tensor(y[mine][half])).backward()
    opt.synchronize()
    out["passes"] = [p.grad.numpy().copy() for p in model.parameters()]
    return out


@pytest.mark.ray
def test_distributed_optimizer_compression_ops_and_backward_passes(ray_session):
    ranks = dist.launch(_optimizer_checks, workers=2, cpus_per_worker=0.5, timeout_s=60)
    g0, g1 = _grads(0), _grads(1)
    for name in ranks[0]:
        for a, b in zip(ranks[0][name], ranks[1][name]):
            np.testing.assert_array_equal(a, b)
    got = ranks[0]
    for i in range(2):
        exact = (g0[i] + g1[i]) / np.float32(2)
        np.testing.assert_array_equal(got["none"][i], exact)
        np.testing.assert_array_equal(got["sum"][i], g0[i] + g1[i])
        # fp16: numpy's float16 sum of the float16-cast gradients (rank order), halved in float16
        fp16 = ((g0[i].astype(F16) + g1[i].astype(F16)) / F16(2)).astype(np.float32)
        assert got["fp16"][i].dtype == np.float32
        np.testing.assert_array_equal(got["fp16"][i], fp16)
        # three float16 roundings (two casts, one sum) of numbers this size: within 2**-10 of the mean's terms
        bound = 2.0**-10 * (np.abs(g0[i]) + np.abs(g1[i])) / 2 + 2.0**-24
        assert np.all(np.abs(got["fp16"][i] - exact) <= bound)
        pre = ((g0[i].astype(F16) * F16(0.25) + g1[i].astype(F16) * F16(0.25)) / F16(2) * F16(4)).astype(np.float32)
        np.testing.assert_array_equal(got["predivide"][i], pre)
    x, y = _data()
    alone = []
    for r in range(2):  # each rank's two halves summed, then the mean over the ranks
        model = _model(seed=0, dtype=dg.float64)
        for h in range(2):
            sel = slice(8 * r + 4 * h, 8 * r + 4 * h + 4)
            F.cross_entropy(model(dg.tensor(x[sel].astype(np.float64))), dg.tensor(y[sel])).backward()
        alone.append([p.grad.numpy() for p in model.parameters()])
    for a, b0, b1 in zip(got["passes"], *alone):
        np.testing.assert_allclose(a, (b0 + b1) / 2, rtol=1e-12, atol=1e-14)


class _Done:
    """A future-like result: what a torch hook's Future gives by wait()."""

    def __init__(self, value):
        self.value = value

    def wait(self):
        return self.value


def _sum_hook(seen, bucket):
    seen.append((bucket.index(), bucket.is_last(), [tuple(g.shape) for g in bucket.gradients()]))
    assert [tuple(p.shape) for p in bucket.parameters()] == seen[-1][2]
    t = bucket.buffer()
    dist.all_reduce(t)
    return _Done([t])


def _chained_hook(state, bucket):
    """torch's documented pattern: an async all-reduce's future, divided in a `then` callback."""
    t = bucket.buffer()
    return dist.all_reduce(t, async_op=True).get_future().then(lambda fut: fut.value()[0] / 2)


class _WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.unused = _model(seed=dist.rank()), nn.Linear(2, 2)

    def forward(self, x):
        return self.net(x)


def _hook_checks():
    x, y = _data()
    mine = slice(8 * dist.rank(), 8 * dist.rank() + 8)
    out = {"local": _local_grads(_model(seed=0), x[mine], y[mine])}
    hooks = {"allreduce": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
             "bf16": default_hooks.bf16_compress_hook, "own": _sum_hook,
             "fp16 wrapped": default_hooks.fp16_compress_wrapper(default_hooks.allreduce_hook),
             "bf16 wrapped": default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook),
             "chained": _chained_hook, "world state": default_hooks.allreduce_hook}  # fmt: skip
    for name, hook in hooks.items():
        model = _WithUnused()  # rank 1 starts elsewhere: rank 0's parameters win
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1e-6, find_unused_parameters=True)
        seen = []
        ddp.register_comm_hook({"own": seen, "world state": dist.group.WORLD}.get(name), hook)
        F.cross_entropy(ddp(dg.tensor(x[mine])), dg.tensor(y[mine])).backward()
        out[name] = [p.grad.numpy() for p in model.net.parameters()]
        out[name + " unused"] = model.unused.weight.grad
        out[name + " buckets"] = seen
    return out


@pytest.mark.ray
def test_ddp_comm_hooks_reduce_each_bucket_as_torchs(ray_session):
    (r0, r1) = dist.launch(_hook_checks, workers=2, cpus_per_worker=0.5, timeout_s=60)
    g0, g1 = r0["local"], r1["local"]
    for name in ("allreduce", "fp16", "bf16", "own", "fp16 wrapped", "bf16 wrapped", "chained", "world state"):
        assert r0[name + " unused"] is None and r1[name + " unused"] is None  # no rank used it: no hang, None
        for a, b in zip(r0[name], r1[name]):
            np.testing.assert_array_equal(a, b)
    for i in range(4):
        exact = (g0[i] + g1[i]) / 2
        np.testing.assert_array_equal(r0["allreduce"][i], g0[i] / np.float32(2) + g1[i] / np.float32(2))
        fp16 = (g0[i].astype(F16) / F16(2) + g1[i].astype(F16) / F16(2)).astype(np.float32)
        np.testing.assert_array_equal(r0["fp16"][i], fp16)
        assert np.all(np.abs(r0["fp16"][i] - exact) <= 2.0**-10 * (np.abs(g0[i]) + np.abs(g1[i])) / 2 + 2.0**-24)
        t0, t1 = torch.tensor(g0[i]).bfloat16(), torch.tensor(g1[i]).bfloat16()  # torch's bf16 hook's numbers
        np.testing.assert_array_equal(r0["bf16"][i], (t0 / 2 + t1 / 2).float().numpy())
        assert np.all(np.abs(r0["bf16"][i] - exact) <= 2.0**-7 * (np.abs(g0[i]) + np.abs(g1[i])) / 2 + 2.0**-120)
        np.testing.assert_array_equal(r0["own"][i], g0[i] + g1[i])
        # torch's wrappers around allreduce_hook: the same numbers as its compress hooks
        np.testing.assert_array_equal(r0["fp16 wrapped"][i], r0["fp16"][i])
        np.testing.assert_array_equal(r0["bf16 wrapped"][i], r0["bf16"][i])
        # torch's future chaining (get_future().then) and the process group as the default hook's state
        np.testing.assert_array_equal(r0["chained"][i], (g0[i] + g1[i]) / np.float32(2))
        np.testing.assert_array_equal(r0["world state"][i], r0["allreduce"][i])
    # one bucket per parameter (unused's two last, as buckets run from the last parameter), in order
    buckets = r0["own buckets"]
    assert [b[0] for b in buckets] == list(range(6)) and [b[1] for b in buckets] == [False] * 5 + [True]
    assert [b[2] for b in buckets][2:] == [[(3,)], [(3, 6)], [(6,)], [(6, 5)]]


def _uneven(divide, steps):
    """This rank's `steps` batches inside ddp.join(), SGD after each; → the final parameters and buffers."""
    x, y = _data(32, np.float64)
    ddp = dist.DistributedDataParallel(_model(seed=dist.rank(), dtype=dg.float64, norm=True))
    opt = dg.optim.SGD(ddp.parameters(), lr=0.5)
    with ddp.join(divide_by_initial_world_size=divide):
        for t in range(steps):
            sel = slice(8 * t + 4 * dist.rank(), 8 * t + 4 * dist.rank() + 4)
            opt.zero_grad()
            F.cross_entropy(ddp(dg.tensor(x[sel])), dg.tensor(y[sel])).backward()
            opt.step()
    return {k: v.numpy() for k, v in ddp.module.state_dict().items()}


def _join_checks():
    steps = [2, 4][dist.rank()]  # rank 0 runs out of batches first
    out = {"initial": _uneven(True, steps), "training": _uneven(False, steps)}
    ddp = dist.DistributedDataParallel(_model(seed=0))
    ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)  # the joined rank shadows through the hook
    with ddp.join():
        for _ in range(steps):
            ddp.zero_grad()
            with ddp.no_sync():  # the joined rank learns that this backward reduces nothing
                ddp(dg.ones(2, 5)).sum().backward()
            ddp(dg.ones(2, 5)).sum().backward()
    out["hooked"] = [p.grad.numpy().copy() for p in ddp.module.parameters()]  # (the backwards below add into .grad)
    with pytest.raises(DistributedError, match="exhausted inputs"), ddp.join(throw_on_early_termination=True):
        for _ in range(steps):
            ddp(dg.ones(2, 5)).sum().backward()
    dist.barrier()  # every rank raised after the same all-reduce: still in step
    return out


@pytest.mark.ray
def test_join_lets_ranks_with_uneven_batches_finish_as_one_process(ray_session):
    r0, r1 = dist.launch(_join_checks, workers=2, cpus_per_worker=0.5, timeout_s=60)
    x, y = _data(32, np.float64)
    for name, divide in (("initial", True), ("training", False)):
        model = _model(seed=0, dtype=dg.float64, norm=True)  # rank 0's start
        own = [[b.numpy().copy() for b in model.buffers()]] * 2  # each rank's batch-norm statistics
        for t in range(4):  # steps 0, 1: both ranks; 2, 3: rank 1 alone, rank 0 shadowing with zeros
            model.zero_grad()
            shared = own[1]  # in a join, the buffers come from the highest rank still training: 1
            for r in [0, 1] if t < 2 else [1]:
                for b, a in zip(model.buffers(), shared):
                    b.array[...] = a
                sel = slice(8 * t + 4 * r, 8 * t + 4 * r + 4)
                scale = 2 if t < 2 or divide else 1
                (F.cross_entropy(model(dg.tensor(x[sel])), dg.tensor(y[sel])) / scale).backward()
                own[r] = [b.numpy().copy() for b in model.buffers()]
            with dg.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
        for b, a in zip(model.buffers(), own[1]):
            b.array[...] = a
        alone = {k: v.numpy() for k, v in model.state_dict().items()}
        assert set(r0[name]) == set(alone)
        for k in alone:  # every rank ends with the last joiner's parameters and buffers
            np.testing.assert_array_equal(r0[name][k], r1[name][k])
            np.testing.assert_allclose(r0[name][k], alone[k], rtol=1e-12, atol=1e-14)
    local = _model(seed=0)
    local(dg.ones(2, 5)).sum().backward()
    for a, b, p in zip(r0["hooked"], r1["hooked"], local.parameters()):
        # rank 1's last: its two backwards' sum, halved in float16 beside rank 0's zeros
        np.testing.assert_array_equal(b, ((2 * p.grad.numpy()).astype(F16) / F16(2)).astype(np.float32))
        np.testing.assert_array_equal(a, b)  # the joined rank keeps the reduced gradients too (torch's: its own)


def test_bad_arguments_name_the_option():
    params = [dg.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"compression": "fp16"}, "compression must be a Compressor"),
        ({"backward_passes_per_step": 0}, "backward_passes_per_step must be a positive int, got 0"),
        ({"op": dist.Adasum}, "op=Adasum is not supported"),
        ({"op": dist.Max}, "op must be Average"),
        ({"op": dist.Sum, "gradient_predivide_factor": 2.0}, "gradient_predivide_factor not supported with op != Average"),
        ({"gradient_predivide_factor": 0}, "gradient_predivide_factor must be a positive number"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            dist.DistributedOptimizer(dg.optim.SGD(params, lr=0.1), **kwargs)
    model = _model(seed=0)
    with pytest.raises(ConfigError, match="bucket_cap_mb must be a positive number, got 0"):
        dist.DistributedDataParallel(model, bucket_cap_mb=0)
    with pytest.raises(ConfigError, match=r"device_ids and output_device arguments only work .* device_ids \[0\]"):
        dist.DistributedDataParallel(model, device_ids=[0])
    ddp = dist.DistributedDataParallel(model, gradient_as_bucket_view=True, static_graph=True)
    with pytest.raises(ConfigError, match="hook must be callable"):
        ddp.register_comm_hook(None, "fp16")
    with pytest.raises(ConfigError, match="fp16_compress_hook's state is the process group"):
        ddp.register_comm_hook(object(), default_hooks.fp16_compress_hook)
    ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    with pytest.raises(ConfigError, match="can only be called once"):
        ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    with pytest.raises(ConfigError, match="requires at least one joinable"):
        Join([])
    with pytest.raises(ConfigError, match="Sequential is not a Joinable"):
        Join([model])


def test_a_hook_returning_the_wrong_size_is_named():
    def first_only(state, bucket):
        return bucket.buffer().array[:1]

    bias = _model(seed=0)[0].bias
    with pytest.raises(ShapeError, match=r"'first_only' returned \(1,\) for bucket 0, whose buffer is \(6,\)"):
        run_comm_hook(first_only, None, 0, [np.ones(6, np.float32)], [bias], True)


def test_alone_fp16_compression_rounds_as_horovods_and_passes_integers_through():
    t = dg.tensor(np.array([1.0 + 2.0**-12, 70000.0], np.float32))
    compressed, ctx = dist.Compression.fp16.compress(t)
    assert compressed.dtype == dg.float16 and ctx == np.float32
    back = dist.Compression.fp16.decompress(compressed, ctx).numpy()
    np.testing.assert_array_equal(back, np.array([1.0, np.inf], np.float32))  # float16's rounding and range
    ints = dg.tensor(np.array([3, 4], np.int64))
    assert dist.Compression.fp16.compress(ints)[0] is ints
    assert dist.Compression.none.compress(t) == (t, None)


def test_alone_step_compresses_the_gradients_unless_inside_skip_synchronize():
    p = dg.tensor(np.zeros(1, np.float32), requires_grad=True)
    opt = dist.DistributedOptimizer(dg.optim.SGD([p], lr=1.0), compression=dist.Compression.fp16)
    g = np.float32(1 + 2.0**-12)  # float16 rounds it to 1
    p.grad = dg.tensor(np.array([g]))
    with opt.skip_synchronize():
        opt.step()
    assert p.item() == -g
    p.grad = dg.tensor(np.array([g]))
    opt.step()
    assert p.item() == np.float32(-g - 1)


@pytest.fixture
def torch_group_of_one():
    """torch.distributed with one gloo rank in this process (torch's DDP needs a process group)."""
    import socket

    tdist = torch.distributed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    tdist.destroy_process_group()


def test_alone_a_registered_hook_still_reduces_each_bucket_as_torchs_ddp(torch_group_of_one):
    """World size 1 (no launch): torch's reducer still calls the hook, so compression still rounds. torch
    refuses its bf16 hooks on CPU (gloo), so theirs is torch's bfloat16 rounding of the same gradients."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks as torch_hooks

    def tripled(seen, bucket):
        seen.append(bucket.index())
        return bucket.buffer().array * np.float32(3)

    def torch_tripled(state, bucket):
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer() * 3)
        return fut

    def bf16(g):
        return torch.tensor(g).bfloat16().float().numpy()

    x, y = _data()
    local = _local_grads(_model(seed=0), x, y)
    cases = {
        "fp16": (default_hooks.fp16_compress_hook, torch_hooks.fp16_compress_hook),
        "fp16 wrapped": (default_hooks.fp16_compress_wrapper(tripled), torch_hooks.fp16_compress_wrapper(torch_tripled)),
        "own": (tripled, torch_tripled),
        "bf16": (default_hooks.bf16_compress_hook, bf16),
        "bf16 wrapped": (default_hooks.bf16_compress_wrapper(tripled), lambda g: bf16(bf16(g) * np.float32(3))),
    }  # fmt: skip
    for name, (ours, theirs) in cases.items():
        model, seen = _model(seed=0), []
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1e-6)
        ddp.register_comm_hook(None if name in ("fp16", "bf16") else seen, ours)
        F.cross_entropy(ddp(dg.tensor(x)), dg.tensor(y)).backward()
        grads = [p.grad.numpy() for p in model.parameters()]
        if name.startswith("bf16"):
            expected = [theirs(g) for g in local]
        else:
            reference = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
            with torch.no_grad():
                for p, q in zip(_model(seed=0).parameters(), reference.parameters()):
                    q.copy_(torch.tensor(p.detach().numpy()))
            torch_ddp = torch.nn.parallel.DistributedDataParallel(reference, bucket_cap_mb=1e-6)
            torch_ddp.register_comm_hook(None, theirs)
            torch.nn.functional.cross_entropy(torch_ddp(torch.tensor(x)), torch.tensor(y)).backward()
            expected = [q.grad.numpy() for q in reference.parameters()]
        scale = np.float32(1 if name in ("fp16", "bf16") else 3)
        for g, e, alone in zip(grads, expected, local):
            # torch's forward and backward round differently from numpy's in the last float32 bits; a rounding
            # to fp16 of those may then land one ulp apart
            if name.startswith("bf16"):
                np.testing.assert_array_equal(g, e)  # (both from distgraph's float32 gradients)
            assert np.all(np.abs(g - e) <= 2.0**-10 * np.abs(e) + 1e-6), name
            if name.startswith("fp16"):
                np.testing.assert_array_equal(g, g.astype(F16).astype(np.float32))  # float16's values
            if name != "own":
                assert not np.array_equal(g, alone * scale), name  # compressed: not the float32 gradient
        if name == "own":
            for g, alone in zip(grads, local):
                np.testing.assert_array_equal(g, alone * np.float32(3))
        if name not in ("fp16", "bf16"):
            assert seen == [0, 1, 2, 3], name  # one call per bucket (a parameter each), alone as on many ranks
