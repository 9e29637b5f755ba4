"""Horovod's torch API in one namespace, for a training loop written for Horovod:

    import distgraph.distributed.horovod as hvd

    def train():                      # run on every rank: dg.distributed.launch(train, workers=N)
        hvd.init()
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
        ...
        avg = hvd.allreduce(loss.detach(), name="loss")

Here rather than at `dg.distributed`'s top level because two of Horovod's names mean something else there:
`allreduce` is the all-reduce layer's module, and `broadcast` is torch.distributed's (in place, `src=`),
where Horovod's returns a new tensor (`root_rank=`). The rest is the same code as `dg.distributed`'s.
`allreduce`, `allgather` and `broadcast` are differentiable, as Horovod's (nn/functional.py): every rank
must run the backward, as every rank ran the forward.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.distributed.collectives import (  # noqa: F401  (re-exported: Horovod's names)
    OPS,
    Adasum,
    Average,
    Max,
    Min,
    Product,
    Sum,
    _reduce,
    alltoall,
    cross_rank,
    cross_size,
    grouped_allreduce,
    local_rank,
    local_size,
    reducescatter,
)
from distgraph.distributed.compression import Compression
from distgraph.distributed.dist_optimizer import DistributedOptimizer  # noqa: F401
from distgraph.distributed.loop import (  # noqa: F401
    allgather,
    allgather_object,
    barrier,
    broadcast_object,
    broadcast_optimizer_state,
    rank,
    size,
)
from distgraph.distributed.loop import broadcast as _broadcast_in_place
from distgraph.distributed.loop import broadcast_parameters as _broadcast_parameters
from distgraph.distributed.nn import functional as differentiable
from distgraph.distributed.process_group import is_initialized  # noqa: F401
from distgraph.errors import ConfigError


def init(comm=None, process_sets=None):
    """Nothing to do: `dg.distributed.launch` started the ranks and their group (one rank without it)."""
    _one_set(comm, "init")


def shutdown():
    """Nothing to do: the launch ends the group when the function returns."""


def broadcast_parameters(params, root_rank=0, prefix=None):
    """Rank root_rank's parameters on every rank, in place: a model's `state_dict()` (its tensors share the
    model's memory), `named_parameters()`, a list of tensors, or a module (its buffers too)."""
    if hasattr(params, "parameters"):
        return _broadcast_parameters(params, root_rank)
    items = params.values() if hasattr(params, "items") else params
    return _broadcast_in_place([p[1] if isinstance(p, tuple) else p for p in items], root_rank)


def allreduce(tensor, average=None, name=None, compression=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
              process_set=None):  # fmt: skip
    """Every rank's tensor reduced → a new tensor (default op: Average), scaled by prescale_factor before and
    postscale_factor after (Sum and Average only), through `compression` (Compression.none / fp16).
    Differentiable for Sum and Average: the gradient is the same allreduce of the output's gradient."""
    _one_set(process_set, "allreduce")
    if op is not None and average is not None:
        raise ConfigError("allreduce: The op parameter supersedes average. Please provide only one of them.")
    op = op if op is not None else Sum if average is False else Average
    if op not in OPS:
        if prescale_factor != 1.0 or postscale_factor != 1.0:
            raise ConfigError(f"allreduce: prescale and postscale factors are supported for Sum and Average, not {op}")  # fmt: skip
        return Tensor(_reduce([tensor.array], op, "allreduce")[0], device=tensor.device)
    compression = compression or Compression.none
    scaled = tensor * prescale_factor if prescale_factor != 1.0 else tensor
    compressed, ctx = compression.compress(scaled)
    reduced = compression.decompress(differentiable.all_reduce(compressed, op), ctx)
    return reduced * postscale_factor if postscale_factor != 1.0 else reduced


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0, process_set=None):
    """In place: the tensor's values become the reduction (not differentiable)."""
    options = dict(average=average, op=op, prescale_factor=prescale_factor, postscale_factor=postscale_factor)
    tensor.array[...] = allreduce(tensor.detach(), process_set=process_set, **options).array
    return tensor


def broadcast(tensor, root_rank, name=None, process_set=None):
    """Rank root_rank's tensor → a new tensor on every rank (differentiable: root's input gets every rank's
    gradient, the others' none)."""
    _one_set(process_set, "broadcast")
    return differentiable.broadcast(tensor, root_rank)


def broadcast_(tensor, root_rank, name=None, process_set=None):
    """In place: every rank's tensor becomes rank root_rank's."""
    _one_set(process_set, "broadcast_")
    return _broadcast_in_place(tensor, root_rank)


def _one_set(process_set, what):
    if process_set is not None:
        raise ConfigError(f"{what}: the process set is the launch's (None); other process sets are not supported")
