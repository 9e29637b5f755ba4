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

The async forms (`allreduce_async`, `allreduce_async_`, `grouped_allreduce_async(_)`, `allgather_async`,
`grouped_allgather_async`, `broadcast_async(_)`, `reducescatter_async`, `grouped_reducescatter_async`,
`alltoall_async`) return an int handle for `synchronize(handle)` (→ the output, as Horovod's) and
`poll(handle)`. distgraph's collectives run when called, so the handle is of a collective that has already
finished: `poll` is True at once and `synchronize` only hands the output over (what Horovod's overlap buys,
backward running while the gradients travel, is not had this way; the numbers are the same). Each async
form is its sync form's code, run without recording a graph (Horovod's async ops are not differentiable).
`start_timeline` / `stop_timeline`: collective_trace.py. The build queries (`mpi_built`, `nccl_built`, ...)
say what distgraph has, not what a Horovod build would. Process sets (`hvd.ProcessSet`, `add_process_set`,
`remove_process_set`, `init(process_sets=...)`, every op's `process_set=`): process_sets.py. `join()` for
uneven inputs (a joined rank adds zeros to the others' all-reduces until all have joined; the other ops raise
Horovod's "... is not supported with Join"): horovod_join.py, whose rounds every collective here over the
global set takes part in (`@served` / `@refused`; allreduce's and allgather's round carries a small tensor
and is then the whole collective: one all-reduce a call, as dist.all_reduce's). `elastic` (`hvd.elastic.run`,
`ObjectState`, `TorchState`): horovod_elastic.py, for a launch with max_restarts (a fixed world size; a failure
restarts every rank, which resume from the last commit). Not here: `sparse_allreduce_async` (no sparse tensors).
"""

import inspect
import itertools

from distgraph.autograd import grad_mode
from distgraph.autograd.custom import Function
from distgraph.autograd.tensor import Tensor
from distgraph.backend import cuda_is_available, cupy_module, namespace
from distgraph.distributed import collective_trace, collectives, loop
from distgraph.distributed import horovod_elastic as elastic  # noqa: F401  (hvd.elastic.run, TorchState, ...)
from distgraph.distributed import process_sets as process_sets_module
from distgraph.distributed.collective_trace import start_timeline, stop_timeline, traced  # noqa: F401
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
from distgraph.distributed.horovod_elastic import HostsUpdatedInterrupt  # noqa: F401  (never raised here)
from distgraph.distributed.horovod_join import (  # noqa: F401
    DistributedOptimizer,
    broadcast_in_round,
    gather_in_round,
    join,
    reduce_in_round,
    refused,
    refused_in_its_gather,
    served,
    served_in_its_reduce,
    take_round,
)
from distgraph.distributed.loop import broadcast as _broadcast_in_place
from distgraph.distributed.loop import broadcast_parameters as _broadcast_parameters
from distgraph.distributed.loop import rank, size  # noqa: F401
from distgraph.distributed.nn import functional as differentiable
from distgraph.distributed.process_group import is_gloo_available, is_nccl_available
from distgraph.distributed.process_sets import (  # noqa: F401  (Horovod's names)
    ProcessSet,
    add_process_set,
    global_process_set,
    group_of,
    remove_process_set,
    run_in,
)
from distgraph.errors import ConfigError
from distgraph.errors import DistributedError as HorovodInternalError  # noqa: F401  (what a failed collective raises)
from distgraph.nn import SyncBatchNorm  # noqa: F401  (Horovod's: statistics over all the ranks)

_state = {"initialized": False}
_handles = {}  # handle → the output of its (finished) collective, until synchronize takes it
_handle_ids = itertools.count(1)


def init(comm=None, process_sets=None):
    """Nothing to start: `dg.distributed.launch` started the ranks and their group (one rank without it).
    Marks Horovod initialized (`is_initialized()`) and forgets the handles of a previous init, as Horovod's."""
    if comm is not None:
        raise ConfigError(f"init: comm is the launch's (None); an MPI communicator is not taken here, got {comm!r}")
    process_sets_module.register(process_sets)
    _handles.clear()
    _state["initialized"] = True


def shutdown():
    """Nothing to end (the launch ends the group when the function returns); a running timeline is written
    first, as Horovod's shutdown flushes it."""
    if collective_trace.recording():
        stop_timeline()
    _forget()


@loop.on_new_launch
def _forget():
    """Not initialized, no handles, no process sets: as a new process (shutdown, or the next launch)."""
    process_sets_module.reset()
    _handles.clear()
    _state["initialized"] = False


def is_initialized():
    """Whether hvd.init() ran (and no shutdown() since), as Horovod's."""
    return _state["initialized"]


@served
def barrier(process_set=None):
    with collective_trace.span("barrier", None, []):
        run_in(process_set, "barrier", loop.barrier)


# ---- the collectives ---------------------------------------------------------------------------------------
@traced
@served_in_its_reduce
def allreduce(tensor, average=None, name=None, compression=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
              process_set=None):  # fmt: skip
    """Every rank's tensor reduced → a new tensor (default op: Average), scaled by prescale_factor before and
    postscale_factor after (Sum and Average only), through `compression` (Compression.none / fp16).
    Differentiable for Sum and Average: the gradient is the same allreduce of the output's gradient. An
    integer tensor keeps its dtype, as Horovod's: its average is the sum scaled by 1 / size, and every
    scaling is truncated toward zero (`_scaled`)."""
    group = group_of(process_set, "allreduce")
    op = _op(average, op, "allreduce")
    if op not in OPS:
        _scales_for(op, prescale_factor, postscale_factor, "allreduce")
        if tensor.requires_grad and grad_mode.state.grad_enabled:
            raise ConfigError(
                f"allreduce: op={op} is not differentiable here (its gradient is not an all-reduce); detach the "
                "tensor, or use Sum or Average"
            )
        take_round(((op,), (tensor.array.shape, tensor.array.dtype.str)))  # (another op on a rank raises: negotiate)
        (out,) = run_in(process_set, "allreduce", collectives._reduce, [tensor.array], op, "allreduce")
        return Tensor(out, device=tensor.device)
    op, postscale_factor = _integer_average(tensor, op, postscale_factor, group)
    compression = compression or Compression.none
    compressed, ctx = compression.compress(_scaled(tensor, prescale_factor))
    scales = (float(prescale_factor), float(postscale_factor))  # (the ranks must agree: their round compares them)
    reduced = compression.decompress(_all_reduce(compressed, op, group, scales), ctx)
    return _scaled(reduced, postscale_factor)


def _all_reduce(tensor, op, group, scales=(1.0, 1.0)):
    """differentiable.all_reduce(tensor, op, group) — or its result from allreduce's join round, where the
    tensor rode in it (horovod_join.reduce_in_round): one small all-reduce a call, where the round, the
    check that the ranks' shapes agree (two) and the data's made four."""
    out = reduce_in_round(
        tensor.array, op, lambda: collectives._op_problem(op, tensor.array.dtype, "all_reduce"), scales
    )
    if out is None:
        return differentiable.all_reduce(tensor, op, group)
    return _done_in_round(out, tensor, lambda grad: differentiable.all_reduce(grad, op))


def _done_in_round(result, tensor, gradient):
    """The output of a collective done in a join round (`result`, its array), as a tensor; where `tensor` needs a
    gradient, a node whose backward is `gradient(output's gradient)`: the same collectives as the
    differentiable op the round stood in for."""
    if tensor.requires_grad and grad_mode.state.grad_enabled:
        return _DoneInRound.apply(gradient, result, tensor)
    return Tensor(result, device=tensor.device)


class _DoneInRound(Function):
    @staticmethod
    def forward(ctx, gradient, result, tensor):
        ctx.gradient = gradient
        return Tensor(result, device=tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.gradient(grad)


@traced
def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0, process_set=None):
    """In place: the tensor's values become the reduction (not differentiable)."""
    options = dict(average=average, op=op, prescale_factor=prescale_factor, postscale_factor=postscale_factor)
    tensor.array[...] = allreduce(tensor.detach(), process_set=process_set, **options).array
    return tensor


@traced
def grouped_allreduce(tensors, average=None, name=None, compression=None, op=None, prescale_factor=1.0,
                      postscale_factor=1.0, process_set=None):  # fmt: skip
    """Each tensor of the list through `allreduce` → the new tensors (Horovod fuses them; here each is one call)."""
    options = dict(average=average, compression=compression, op=op, prescale_factor=prescale_factor,
                   postscale_factor=postscale_factor, process_set=process_set)  # fmt: skip
    return [allreduce(t, **options) for t in tensors]


@traced
def grouped_allreduce_(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                       process_set=None):  # fmt: skip
    """In place: each tensor's values become its reduction → the tensors."""
    options = dict(average=average, op=op, prescale_factor=prescale_factor, postscale_factor=postscale_factor,
                   process_set=process_set)  # fmt: skip
    return [allreduce_(t, **options) for t in tensors]


@traced
@refused_in_its_gather("broadcast")
def broadcast(tensor, root_rank, name=None, process_set=None):
    """Rank root_rank's tensor → a new tensor on every rank (differentiable, as Horovod's: root's input gets the
    ranks' gradients averaged, the others' zeros). A small tensor rides in the join round
    (horovod_join.broadcast_in_round): one all-reduce, where the round and the data's made two."""
    group = group_of(process_set, "broadcast")
    got = broadcast_in_round(tensor.array, root_rank)
    if got is None:
        return differentiable.broadcast(tensor, root_rank, group, average=True)
    return _done_in_round(got, tensor, lambda grad: _broadcast_gradient(grad, root_rank))


def _broadcast_gradient(grad, root):
    """Root's input gets every rank's gradient averaged, the others' zeros, as differentiable.broadcast(average=True)'s."""
    gx = differentiable.reduce(grad, root, op=Average)
    return gx if loop.rank() == root else gx * 0


@traced
@refused("broadcast")
def broadcast_(tensor, root_rank, name=None, process_set=None):
    """In place: every rank's tensor becomes rank root_rank's."""
    group = group_of(process_set, "broadcast_")
    root = root_rank if group is None else group.group_rank(root_rank, "broadcast_")
    return run_in(process_set, "broadcast_", _broadcast_in_place, tensor, root)


@traced
@refused_in_its_gather("allgather")
def allgather(tensor, name=None, process_set=None):
    """Every rank's tensor concatenated along dim 0 (first dims may differ) → a new tensor; differentiable,
    as Horovod's: the gradient of this rank's rows is the ranks' gradients of them averaged (Horovod
    averages; torch's nn.functional.all_gather sums). A small tensor rides in the join round
    (horovod_join.gather_in_round): one all-reduce, where the round, the shapes' exchange (two) and the
    bytes' (two) made five."""
    group = group_of(process_set, "allgather")
    gathered = gather_in_round(tensor.array)
    if gathered is None:
        return differentiable.allgather_rows(tensor, average=True, group=group)
    out, rows = gathered
    start, stop = sum(rows[: loop.rank()]), sum(rows[: loop.rank() + 1])
    # this rank's rows' gradient: every rank's gradient of them averaged, as allgather_rows(average=True)'s
    return _done_in_round(out, tensor, lambda grad: differentiable.all_reduce(grad, Average)[start:stop])


@traced
def grouped_allgather(tensors, name=None, process_set=None):
    """Each tensor of the list through `allgather` → the new tensors."""
    return [allgather(t, process_set=process_set) for t in tensors]


@refused("allgather")
def allgather_object(obj, name=None, process_set=None):
    return run_in(process_set, "allgather_object", loop.allgather_object, obj)


@refused("broadcast")
def broadcast_object(obj, root_rank=0, name=None, process_set=None):
    group = group_of(process_set, "broadcast_object")
    root = root_rank if group is None else group.group_rank(root_rank, "broadcast_object")
    return run_in(process_set, "broadcast_object", loop.broadcast_object, obj, root)


@refused("broadcast")
def broadcast_parameters(params, root_rank=0, prefix=None):
    """Rank root_rank's parameters on every rank, in place: a model's `state_dict()` (its tensors share the
    model's memory), `named_parameters()`, a list of tensors, or a module (its buffers too)."""
    if hasattr(params, "parameters"):
        return _broadcast_parameters(params, root_rank)
    items = params.values() if hasattr(params, "items") else params
    return _broadcast_in_place([p[1] if isinstance(p, tuple) else p for p in items], root_rank)


broadcast_optimizer_state = refused("broadcast")(loop.broadcast_optimizer_state)


@traced
@refused("reducescatter")
def reducescatter(tensor, name=None, compression=None, op=Average, process_set=None, prescale_factor=1.0,
                  postscale_factor=1.0):  # fmt: skip
    """Every rank's tensor reduced, split along dim 0 → this rank's rows (collectives.reducescatter), scaled
    and compressed as allreduce's (not differentiable)."""
    _scales_for(op, prescale_factor, postscale_factor, "reducescatter")
    group = group_of(process_set, "reducescatter")
    op, postscale_factor = _integer_average(tensor, op, postscale_factor, group)
    compression = compression or Compression.none
    compressed, ctx = compression.compress(_scaled(tensor, prescale_factor))
    out = compression.decompress(run_in(process_set, "reducescatter", collectives.reducescatter, compressed, op), ctx)
    return _scaled(out, postscale_factor)


@traced
def grouped_reducescatter(tensors, name=None, compression=None, op=Average, process_set=None, prescale_factor=1.0,
                          postscale_factor=1.0):  # fmt: skip
    """Each tensor of the list through `reducescatter` → the new tensors."""
    options = dict(compression=compression, op=op, process_set=process_set, prescale_factor=prescale_factor,
                   postscale_factor=postscale_factor)  # fmt: skip
    return [reducescatter(t, **options) for t in tensors]


@traced
@refused("alltoall")
def alltoall(tensor, splits=None, name=None, process_set=None):
    """Rows splits[d] of `tensor` to rank d → what every rank sent this one (and, with splits given, the
    rows taken from each rank): collectives.alltoall."""
    return run_in(process_set, "alltoall", collectives.alltoall, tensor, splits)


# ---- async: a handle to a finished collective (see the module's docstring) -----------------------------------
def _started(output):
    """A new handle to `output`, which synchronize(handle) hands over once."""
    handle = next(_handle_ids)
    _handles[handle] = output
    return handle


def _async(fn):
    """Horovod's `NAME_async` form of the collective `fn`: its handle, the collective run without a graph."""

    def run(*args, **kwargs):
        with grad_mode.no_grad():
            return _started(fn(*args, **kwargs))

    run.__signature__ = inspect.signature(fn)
    run.__name__ = run.__qualname__ = f"{fn.__name__.rstrip('_')}_async{'_' if fn.__name__.endswith('_') else ''}"
    run.__doc__ = f"{fn.__name__} → a handle for synchronize() / poll() (the collective has finished)."
    return run


allreduce_async, allreduce_async_ = _async(allreduce), _async(allreduce_)
grouped_allreduce_async, grouped_allreduce_async_ = _async(grouped_allreduce), _async(grouped_allreduce_)
allgather_async, grouped_allgather_async = _async(allgather), _async(grouped_allgather)
broadcast_async, broadcast_async_ = _async(broadcast), _async(broadcast_)
reducescatter_async, grouped_reducescatter_async = _async(reducescatter), _async(grouped_reducescatter)


@refused("alltoall")
def alltoall_async(tensor, splits=None, name=None, process_set=None):
    """alltoall → a handle whose synchronize() gives (output, received_splits) whether or not splits were
    given, as Horovod's."""
    with grad_mode.no_grad(), collective_trace.span("alltoall", name, [tensor]):
        return _started(run_in(process_set, "alltoall", collectives.alltoall_received, tensor, splits))


def _known(handle, what):
    if handle not in _handles:
        raise ConfigError(f"{what}: Handle {handle} was not created or has been cleared.")


def poll(handle):
    """Whether the handle's collective has finished: True (it ran when called)."""
    _known(handle, "poll")
    return True


def synchronize(handle):
    """The output of the handle's collective (a tensor, a list for the grouped forms, (output, received_splits)
    for alltoall); the handle is cleared. Horovod returns None for a handle it does not know; an unknown
    or already synchronized handle raises here, as its `poll` does, instead of passing None on."""
    _known(handle, "synchronize")
    return _handles.pop(handle)


# ---- what this build has (Horovod asks its compiled library; these say what distgraph can use) --------------
def mpi_built():
    return False  # no MPI anywhere in distgraph


def mpi_enabled():
    return False


def mpi_threads_supported():
    """Horovod raises this where MPI is not enabled, which is always here."""
    raise ConfigError("mpi_threads_supported: Horovod MPI is not enabled; Please make sure it's installed and enabled.")


def gloo_built():
    """Whether Ray's collective library has gloo here (what a launch across nodes uses)."""
    return is_gloo_available()


def gloo_enabled():
    """Whether this launch's ranks meet over gloo (across nodes on CPUs; shm on one node, NCCL on GPUs)."""
    return loop._context.get("backend") == "gloo"


def nccl_built():
    """Whether NCCL (cupy's, through Ray's collective library) can run here: a CUDA GPU with cupy."""
    return is_nccl_available()


def cuda_built():
    """distgraph has no build step: its CUDA is cupy's, so True where cupy runs on a CUDA GPU here."""
    return cuda_is_available() and not cupy_module().cuda.runtime.is_hip


def rocm_built():
    """True where cupy is a ROCm build running on an AMD GPU here."""
    return cuda_is_available() and bool(cupy_module().cuda.runtime.is_hip)


def ddl_built():
    return False  # IBM's DDL: not a distgraph transport


def ccl_built():
    return False  # Intel's oneCCL: not a distgraph transport


# ---- Horovod's arguments -----------------------------------------------------------------------------------
def _op(average, op, what):
    """Horovod's op from its deprecated `average` and `op` (default: Average)."""
    if op is not None and average is not None:
        raise ConfigError(f"{what}: The op parameter supersedes average. Please provide only one of them.")
    return op if op is not None else Sum if average is False else Average


def _integer_average(tensor, op, postscale_factor, group):
    """(op, postscale_factor) to run: an integer tensor's Average as Horovod runs it, the sum scaled by
    postscale_factor / size (torch's AVG refuses integers; dist.all_reduce keeps that)."""
    if op != Average or tensor.array.dtype.kind not in "iu":
        return op, postscale_factor
    return Sum, postscale_factor / (loop.world_size() if group is None else group.size())


def _scaled(tensor, factor):
    """tensor * factor. An integer tensor keeps its dtype, each value factor * value (in float64) truncated
    toward zero, as Horovod's ScaleBuffer writes it back (a float tensor * a float is float, in dg as in torch)."""
    if factor == 1.0:
        return tensor
    a = tensor.array
    if a.dtype.kind not in "iu":
        return tensor * factor
    return Tensor(namespace(a).trunc(a * float(factor)).astype(a.dtype), device=tensor.device)


def _scales_for(op, prescale_factor, postscale_factor, what):
    if op not in OPS and (prescale_factor != 1.0 or postscale_factor != 1.0):
        raise ConfigError(f"{what}: prescale and postscale factors are supported for Sum and Average, not {op}")
