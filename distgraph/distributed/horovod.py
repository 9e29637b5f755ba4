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

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.distributed import collectives, loop
from distgraph.distributed.collectives import (  # noqa: F401  (re-exported: Horovod's names)
    OPS,
    Adasum,
    Average,
    Max,
    Min,
    Product,
    Sum,
    cross_rank,
    cross_size,
    local_rank,
    local_size,
)
from distgraph.distributed.compression import Compression
from distgraph.distributed.dist_optimizer import DistributedOptimizer  # noqa: F401
from distgraph.distributed.loop import barrier, broadcast_optimizer_state, rank, size  # noqa: F401
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
    op = _op(average, op, "allreduce")
    if op not in OPS:
        if prescale_factor != 1.0 or postscale_factor != 1.0:
            raise ConfigError(f"allreduce: prescale and postscale factors are supported for Sum and Average, not {op}")  # fmt: skip
        if tensor.requires_grad and grad_mode.state.grad_enabled:
            raise ConfigError(
                f"allreduce: op={op} is not differentiable here (its gradient is not an all-reduce); detach the "
                "tensor, or use Sum or Average"
            )
        return Tensor(collectives._reduce([tensor.array], op, "allreduce")[0], device=tensor.device)
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


def allgather(tensor, name=None, process_set=None):
    """Every rank's tensor concatenated along dim 0 (first dims may differ) → a new tensor; differentiable,
    as Horovod's: the gradient of this rank's rows is the ranks' gradients of them averaged (Horovod
    averages; torch's nn.functional.all_gather sums)."""
    _one_set(process_set, "allgather")
    return differentiable.allgather_rows(tensor, average=True)


def allgather_object(obj, name=None, process_set=None):
    _one_set(process_set, "allgather_object")
    return loop.allgather_object(obj)


def broadcast_object(obj, root_rank=0, name=None, process_set=None):
    _one_set(process_set, "broadcast_object")
    return loop.broadcast_object(obj, root_rank)


def grouped_allreduce(tensors, average=None, name=None, compression=None, op=None, prescale_factor=1.0,
                      postscale_factor=1.0, process_set=None):  # fmt: skip
    """Each tensor of the list through `allreduce` → the new tensors (Horovod fuses them; here each is one call)."""
    options = dict(average=average, compression=compression, op=op, prescale_factor=prescale_factor,
                   postscale_factor=postscale_factor, process_set=process_set)  # fmt: skip
    return [allreduce(t, **options) for t in tensors]


def reducescatter(tensor, name=None, compression=None, op=Average, process_set=None):
    _one_set(process_set, "reducescatter")
    compression = compression or Compression.none
    compressed, ctx = compression.compress(tensor)
    return compression.decompress(collectives.reducescatter(compressed, op), ctx)


def alltoall(tensor, splits=None, name=None, process_set=None):
    _one_set(process_set, "alltoall")
    return collectives.alltoall(tensor, splits)


def _op(average, op, what):
    """Horovod's op from its deprecated `average` and `op` (default: Average)."""
    if op is not None and average is not None:
        raise ConfigError(f"{what}: The op parameter supersedes average. Please provide only one of them.")
    return op if op is not None else Sum if average is False else Average


def _one_set(process_set, what):
    if process_set is not None:
        raise ConfigError(f"{what}: the process set is the launch's (None); other process sets are not supported")
