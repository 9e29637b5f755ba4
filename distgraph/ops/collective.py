"""Collectives inside autograd: the differentiable all-reduce SyncBatchNorm is built on, and the process
group a model's layers reach while a distributed worker runs them.

Why in the ops layer: a layer (nn.SyncBatchNorm) needs a collective in its forward and backward, but only
`distributed/` may talk to Ray. So a distributed worker installs a *group* for the time it runs the model
(`using_group`) — any object with `rank`, `world_size` and `all_reduce_sum(array) -> array` (the sum over
the ranks, in place or fresh) — and layers ask `current_group()`. Outside a worker there is none, and
SyncBatchNorm is BatchNorm, as torch's falls back when no process group is initialized.

The all-reduce is differentiable, as torch.distributed.nn.functional.all_reduce: every rank's output is
the sum of every rank's input, so the gradient of each input is the sum of every rank's output gradient,
the same all-reduce again. Backward runs it on every rank in the same order, because every rank runs
the same graph; the group rides in the Node's attributes, so backward needs no installed group.
"""

import contextlib
import contextvars

from distgraph.autograd import tensor as tensor_module
from distgraph.errors import CaptureError
from distgraph.ops.registry import defop

_current = contextvars.ContextVar("distgraph_process_group", default=None)


def current_group():
    """The group installed by the distributed worker running this code, or None (one process)."""
    return _current.get()


@contextlib.contextmanager
def using_group(group):
    """Install `group` as the current one for the block (None: none)."""
    token = _current.set(group)
    try:
        yield group
    finally:
        _current.reset(token)


@defop("all_reduce_sum", save=())
def _all_reduce_sum(xp, x, group):
    return group.all_reduce_sum(xp.array(x, copy=True))  # a fresh array: the input stays the caller's


@_all_reduce_sum.grad
def _(ctx, g):
    return (all_reduce_sum(g, ctx.attrs["group"]),)


@_all_reduce_sum.array_grad
def _(ctx, g):
    return (ctx.attrs["group"].all_reduce_sum(g.copy()),)


def all_reduce_sum(tensor, group):
    """The sum of `tensor` over the ranks of `group`, on every rank; differentiable (see the module doc)."""
    if tensor_module.host_reads is not None:  # being captured: a graph replayed later cannot meet its peers
        raise CaptureError(f"all_reduce_sum over {group.world_size} ranks (SyncBatchNorm) cannot be captured")
    return _all_reduce_sum(tensor, group=group)
