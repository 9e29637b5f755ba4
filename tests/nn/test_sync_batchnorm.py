"""nn.SyncBatchNorm against torch's BatchNorm on the global batch (float64, forward, every gradient and
the running statistics), with the ranks as threads of one process meeting in a real group.

torch's own SyncBatchNorm runs only on GPUs with an initialized process group, and reduces to batch norm
over the ranks' concatenated batch: that is the reference. The group here (`ThreadGroup`) is a working
all-reduce between threads (a barrier and a shared table), so the collectives of forward and backward
really meet; the Ray paths are tested in tests/distributed/test_sync_batchnorm_ray.py.
"""

import threading

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import CaptureError, ShapeError
from distgraph.ops.collective import all_reduce_sum, current_group, using_group

torch = pytest.importorskip("torch")


class ThreadGroup:
    """One rank's view of an all-reduce between `world_size` threads: each call deposits this rank's array,
    waits for the others, and returns the sum in rank order (the same bits on every rank)."""

    def __init__(self, table, rank, world_size):
        self.table, self.rank, self.world_size = table, rank, world_size

    def all_reduce_sum(self, array):
        parts, barrier = self.table["parts"], self.table["barrier"]
        parts[self.rank] = array.copy()
        barrier.wait(timeout=30)
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        barrier.wait(timeout=30)  # nobody overwrites its part before every rank has read them
        self.table["calls"][self.rank] += 1
        return total


def run_ranks(world_size, fn):
    """fn(rank, group) on `world_size` threads at once → their results, by rank (a rank's error re-raised)."""
    table = {"parts": [None] * world_size, "barrier": threading.Barrier(world_size), "calls": [0] * world_size}
    results, errors = [None] * world_size, []

    def one(rank):
        try:
            with using_group(ThreadGroup(table, rank, world_size)):
                results[rank] = fn(rank, current_group())
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            errors.append(exc)
            table["barrier"].abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results, table["calls"]


def _shards(x, sizes):
    bounds = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize(
    "shape, sizes",
    [((8, 3), (3, 5)), ((6, 4, 5), (3, 3)), ((7, 2, 3, 4), (2, 2, 3)), ((5, 3, 2, 2, 2), (4, 1)), ((5, 3), (5, 0))],
)
def test_sync_batch_norm_over_ranks_is_batch_norm_over_the_global_batch(shape, sizes):
    rng = np.random.default_rng(len(shape) * 10 + len(sizes))
    x = rng.normal(size=shape) * 3 + 1
    c = shape[1]
    w0, b0 = rng.normal(size=c), rng.normal(size=c)
    up = rng.normal(size=shape)  # the upstream gradient, weighted per element so every term of backward counts

    def rank_step(rank, group):
        bn = dg.nn.SyncBatchNorm(c, momentum=0.3, dtype=dg.float64)
        bn.weight.data = dg.tensor(w0)
        bn.bias.data = dg.tensor(b0)
        xs = dg.tensor(_shards(x, sizes)[rank], requires_grad=True)
        out = bn(xs)
        (out * dg.tensor(_shards(up, sizes)[rank])).sum().backward()
        return out.detach().numpy(), xs.grad.numpy(), bn.weight.grad.numpy(), bn.bias.grad.numpy(), bn.state_dict()

    results, calls = run_ranks(len(sizes), rank_step)

    ref = torch.nn.BatchNorm1d(c, momentum=0.3, dtype=torch.float64) if len(shape) < 4 else None
    ref = ref or (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm3d)(c, momentum=0.3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w0))
        ref.bias.copy_(torch.from_numpy(b0))
    xt = torch.from_numpy(x).requires_grad_(True)
    out_t = ref(xt)
    (out_t * torch.from_numpy(up)).sum().backward()

    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    # parameters' gradients are each rank's share; data parallelism sums them (DDP's all-reduce)
    np.testing.assert_allclose(sum(r[2] for r in results), ref.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sum(r[3] for r in results), ref.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    for _, _, _, _, state in results:  # every rank's statistics are the global batch's
        np.testing.assert_allclose(state["running_mean"].numpy(), ref.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(state["running_var"].numpy(), ref.running_var.numpy(), rtol=1e-12)
        assert int(state["num_batches_tracked"].item()) == 1
    assert calls == [2] * len(sizes)  # one collective in forward, one in backward, on every rank


def test_an_all_reduce_sums_over_the_ranks_and_its_gradient_is_the_sum_of_the_ranks_gradients():
    def rank_step(rank, group):
        x = dg.tensor([1.0 + rank, 2.0 * rank], dtype=dg.float64, requires_grad=True)
        y = all_reduce_sum(x, group)
        (y * dg.tensor([rank + 1.0, 10.0])).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), x.detach().numpy()

    (r0, r1), _ = run_ranks(2, rank_step)
    np.testing.assert_array_equal(r0[0], [3.0, 2.0])
    np.testing.assert_array_equal(r1[0], [3.0, 2.0])
    np.testing.assert_array_equal(r0[1], [3.0, 20.0])  # (1 + 2, 10 + 10): every rank's output gradient
    np.testing.assert_array_equal(r1[1], [3.0, 20.0])
    np.testing.assert_array_equal(r0[2], [1.0, 0.0])  # the input is left as it was


def test_without_a_group_in_eval_mode_or_alone_it_is_batch_norm():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4, 3))
    ref = torch.nn.BatchNorm1d(4, momentum=None).double()
    sync = dg.nn.SyncBatchNorm(4, momentum=None, dtype=dg.float64)
    for _ in range(2):
        xt, xd = torch.from_numpy(x).requires_grad_(True), dg.tensor(x, requires_grad=True)
        ref(xt).square().sum().backward()
        sync(xd).square().sum().backward()
        np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        x = x + 1
    for key, value in ref.state_dict().items():
        np.testing.assert_allclose(sync.state_dict()[key].numpy(), value.numpy(), rtol=1e-12)

    def rank_step(rank, group):  # eval mode: the running statistics, no collective
        sync.eval()
        return sync(dg.tensor(x[rank::2])).detach().numpy()

    results, calls = run_ranks(2, rank_step)
    ref.eval()
    np.testing.assert_allclose(results[1], ref(torch.from_numpy(x[1::2])).detach().numpy(), rtol=1e-12)
    assert calls == [0, 0]
    results, calls = run_ranks(
        1, lambda rank, group: dg.nn.SyncBatchNorm(4, dtype=dg.float64)(dg.tensor(x)).detach().numpy()
    )
    assert calls == [0]


def test_convert_sync_batchnorm_replaces_every_batch_norm_and_keeps_its_parameters_and_buffers():
    model = dg.nn.Sequential(
        dg.nn.Linear(4, 3), dg.nn.BatchNorm1d(3, momentum=0.2), dg.nn.Sequential(dg.nn.BatchNorm1d(3, affine=False))
    )
    model[1].running_mean.array[...] = [1.0, 2.0, 3.0]
    weight = model[1].weight
    model.eval()
    converted = dg.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], dg.nn.SyncBatchNorm) and isinstance(converted[2][0], dg.nn.SyncBatchNorm)
    assert converted[1].weight is weight and converted[1].momentum == 0.2 and converted[2][0].weight is None
    assert not converted[1].training
    np.testing.assert_array_equal(converted[1].running_mean.numpy(), [1.0, 2.0, 3.0])
    t_model = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Sequential(torch.nn.BatchNorm1d(3, affine=False))
    )
    t_converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(t_model)
    assert list(converted.state_dict()) == list(t_converted.state_dict())
    assert repr(converted[2][0]) == repr(t_converted[2][0])


def test_bad_input_and_too_few_values_are_named():
    with pytest.raises(ShapeError, match=r"SyncBatchNorm\(3\): expected at least 2-D .* got shape \(3,\)"):
        dg.nn.SyncBatchNorm(3)(dg.ones(3))
    with pytest.raises(ShapeError, match=r"3 channels in dim 1, got shape \(2, 4\)"):
        dg.nn.SyncBatchNorm(3)(dg.ones(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel over the 2 ranks"):
        run_ranks(2, lambda rank, group: dg.nn.SyncBatchNorm(3)(dg.ones(1 - rank, 3)))


def test_capture_of_a_synchronized_forward_stops_with_a_capture_error():
    from distgraph.graph.capture import capture

    def rank_step(rank, group):
        bn = dg.nn.SyncBatchNorm(2)
        with pytest.raises(CaptureError, match="all_reduce_sum over 2 ranks"):
            capture(lambda x: bn(x), (dg.ones(3, 2),))
        return True

    assert run_ranks(2, rank_step)[0] == [True, True]


def test_a_trainer_refuses_sync_batch_norm_with_async_workers_or_the_store_exchange():
    model = dg.nn.Sequential(dg.nn.Linear(4, 3), dg.nn.SyncBatchNorm(3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(dg.errors.ConfigError, match="sync='async' cannot run SyncBatchNorm"):
        dg.Trainer(model, dg.nn.functional.cross_entropy, opt, workers=2, backend="ray", sync="async")
    with pytest.raises(dg.errors.ConfigError, match="allreduce='store' cannot run SyncBatchNorm"):
        dg.Trainer(model, dg.nn.functional.cross_entropy, opt, workers=2, backend="ray", allreduce="store")
    dg.Trainer(model, dg.nn.functional.cross_entropy, opt, workers=1, backend="ray", sync="async").close()
