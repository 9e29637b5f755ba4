"""Ranks that call different collectives, or one collective with another reduce op or scale factors, raise at
once on every rank, naming each rank's call (call_board.py's collective records; Horovod's round): a barrier
against an all_reduce of one element, a broadcast against an all_reduce, SUM against AVG completed with each
rank reading the result its own way; SUM against MAX waited out the launch's timeout. Real Ray ranks."""

import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import DistributedError

pytestmark = pytest.mark.ray


def _values(*v):
    return dg.tensor(np.array(v, dtype=np.float32))


def sum_against_avg():
    dist.all_reduce(_values(2.0, 4.0), op=dist.ReduceOp.SUM if dist.get_rank() == 0 else dist.ReduceOp.AVG)


def sum_against_max():
    dist.all_reduce(_values(1.0, 5.0), op=dist.ReduceOp.SUM if dist.get_rank() == 0 else dist.ReduceOp.MAX)


def barrier_against_all_reduce():
    if dist.get_rank() == 0:
        dist.barrier()
    else:
        dist.all_reduce(_values(5.0))


def broadcast_against_all_reduce():
    if dist.get_rank() == 0:
        dist.broadcast(_values(7.0), src=0)
    else:
        dist.all_reduce(_values(1.0, 1.0, 1.0))


def same_calls():
    """A correct program: many collectives, the same on both ranks."""
    t = _values(1.0, 2.0)
    for _ in range(5):
        dist.all_reduce(t)
        dist.barrier()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        dist.broadcast(t, src=1)
    return t.numpy().tolist()


@pytest.mark.parametrize(
    "fn, said",
    [
        (sum_against_avg, r"rank 0: all_reduce\(op=sum\), rank 1: all_reduce\(op=mean\)"),
        (sum_against_max, r"rank 0: all_reduce\(op=sum\), rank 1: all_reduce\(op=max\)"),
        (barrier_against_all_reduce, r"rank 0: barrier, rank 1: all_reduce\(op=sum\)"),
        (broadcast_against_all_reduce, r"rank 0: broadcast, rank 1: all_reduce\(op=sum\)"),
    ],
)
def test_ranks_calling_different_collectives_raise_at_once_naming_each(ray_session, fn, said):
    started = time.monotonic()
    with pytest.raises(DistributedError, match=said):
        dist.launch(fn, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert time.monotonic() - started < 30  # not the timeout


def test_ranks_making_the_same_collectives_see_no_error(ray_session):
    first, second = dist.launch(same_calls, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert first == second


def _hvd_op_against():
    import distgraph.distributed.horovod as hvd

    hvd.allreduce(_values(2.0, 4.0), op=hvd.Sum if hvd.rank() == 0 else hvd.Average)


def _hvd_prescale_against():
    import distgraph.distributed.horovod as hvd

    hvd.allreduce(_values(1.0, 2.0), op=hvd.Sum, prescale_factor=1.0 if hvd.rank() == 0 else 3.0)


def _hvd_min_against_max():
    import distgraph.distributed.horovod as hvd

    hvd.allreduce(_values(1.0, 2.0), op=hvd.Min if hvd.rank() == 0 else hvd.Max)


@pytest.mark.parametrize(
    "fn, said",
    [(_hvd_op_against, r"rank 0: \('sum', 1.0, 1.0\), rank 1: \('mean', 1.0, 1.0\)"),
     (_hvd_prescale_against, r"rank 0: \('sum', 1.0, 1.0\), rank 1: \('sum', 3.0, 1.0\)"),
     (_hvd_min_against_max, r"rank 0: \('min',\), rank 1: \('max',\)")],
)  # fmt: skip
def test_horovod_ranks_with_another_op_or_scale_raise_as_horovods_controller(ray_session, fn, said):
    with pytest.raises(DistributedError, match=f"allreduce: the ranks' calls differ in op or scale factors .{said}"):
        dist.launch(fn, workers=2, cpus_per_worker=0.5, timeout_s=60)
