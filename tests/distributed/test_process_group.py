"""torch.distributed's process-group surface alone (rank 0 of 1, no launch): what a torchrun script calls
before and after its collectives, and the errors for what distgraph's one group cannot be. Across ranks:
tests/distributed/test_cli_run.py."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import ConfigError, DTypeError, ShapeError


@pytest.fixture
def process_group():
    dist.init_process_group("gloo")
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_init_and_destroy_bracket_the_group_as_torchs():
    with pytest.raises(ConfigError, match="Default process group has not been initialized"):
        dist.get_backend()
    assert not dist.is_initialized()
    with pytest.raises(ConfigError, match="unknown backend 'tcp'"):
        dist.init_process_group("tcp")
    with pytest.raises(
        ConfigError, match=r"world_size=2, but this process's world_size is 1 \(outside dg.distributed.launch"
    ):
        dist.init_process_group("gloo", world_size=2)
    with pytest.raises(ConfigError, match="rank=1, but this process's rank is 0"):
        dist.init_process_group(rank=1)
    dist.init_process_group("gloo", world_size=1, rank=0)
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    with pytest.raises(ConfigError, match="trying to initialize the default process group twice!"):
        dist.init_process_group("gloo")
    dist.destroy_process_group()
    assert not dist.is_initialized()


def test_group_and_async_op_as_torch_takes_them(process_group):
    t = dg.tensor(np.arange(3.0))
    work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=dist.group.WORLD, async_op=True)
    assert work.wait() and work.is_completed() and work.result()[0] is t
    assert work.get_future().wait()[0] is t
    assert dist.all_reduce(t, group=None) is None  # torch's: in place, None without async_op
    assert dist.all_reduce(t, dist.ReduceOp.SUM, dist.group.WORLD, True).wait()  # torch's order, by position
    dist.barrier(device_ids=[0])
    dist.barrier(dist.group.WORLD, False, [0])
    with pytest.raises(TypeError, match=r"all_reduce\(\) takes at most 4 positional arguments \(5 given\)"):
        dist.all_reduce(t, "sum", None, False, 1)
    zero_d = [dg.zeros((), dtype=dg.float64)]  # torch gathers 0-d tensors too
    dist.all_gather(zero_d, dg.tensor(np.array(2.5)))
    assert zero_d[0].item() == 2.5 and zero_d[0].shape == ()
    assert dist.new_group() is dist.group.WORLD and dist.new_group([0]) is dist.group.WORLD
    assert dist.group.WORLD.rank() == 0 and dist.group.WORLD.size() == 1
    with pytest.raises(ConfigError, match="all_reduce: group must be the launch's"):
        dist.all_reduce(t, group=object())
    with pytest.raises(ConfigError, match=r"new_group: ranks \[0, 1\] are not the launch's ranks \[0\]"):
        dist.new_group([0, 1])


def test_object_collectives_and_all_gather_into_tensor_alone(process_group):
    out = dg.zeros(1, 3, dtype=dg.float64)
    dist.all_gather_into_tensor(out, dg.tensor(np.arange(3.0)))
    np.testing.assert_array_equal(out.numpy(), [[0.0, 1.0, 2.0]])
    with pytest.raises(ShapeError, match="output tensor size must be equal to world_size times input tensor size"):
        dist.all_gather_into_tensor(dg.zeros(4, dtype=dg.float64), dg.tensor(np.arange(3.0)))
    objects = [1, "a"]
    assert dist.broadcast_object_list(objects, src=0) is None and objects == [1, "a"]
    gathered = [None]
    dist.gather_object({"k": 1}, gathered, dst=0)
    assert gathered == [{"k": 1}]
    with pytest.raises(
        ConfigError,
        match=r"gather_object: Argument ``object_gather_list`` must be specified on destination rank. \(rank 0\)",
    ):
        dist.gather_object(1, None, dst=0)
    with pytest.raises(ConfigError, match=r"gather_object: invalid root rank: 1 \(world size 1\)"):
        dist.gather_object(1, None, dst=1)
    everyone = [None]
    dist.all_gather_object(everyone, 5)
    assert everyone == [5] and dist.all_gather_object(5) == [5]  # torch's form fills, Horovod's returns
    with pytest.raises(ConfigError, match="all_gather_object: object_list has 2 entries for 1 ranks"):
        dist.all_gather_object([None, None], 5)
    mine = [None]
    dist.scatter_object_list(mine, ["x"], src=0)
    assert mine == ["x"]
    with pytest.raises(ConfigError, match="scatter_object_input_list must hold one object per rank"):
        dist.scatter_object_list(mine, ["x", "y"], src=0)
    dist.monitored_barrier()


def test_gathers_into_tensors_of_another_dtype_are_refused_as_torchs(process_group):
    out = dg.zeros(3, dtype=dg.int64)
    with pytest.raises(DTypeError, match=r"all_gather_into_tensor: output tensor must have the same type as input tensor \(output int64, input float64\)"):  # fmt: skip
        dist.all_gather_into_tensor(out, dg.tensor(np.arange(3.0)))
    with pytest.raises(DTypeError, match=r"all_gather: output tensor must have the same type as input tensor \(tensor_list\[0\] is int64, the input float64\)"):  # fmt: skip
        dist.all_gather([out], dg.tensor(np.arange(3.0)))
    assert out.tolist() == [0, 0, 0]  # nothing cast into it
