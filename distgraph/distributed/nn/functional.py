"""torch.distributed.nn.functional: collectives that autograd differentiates, inside a `dg.distributed.launch`
function — for a loss that needs other ranks' activations (a contrastive loss over the global batch, a
tensor- or sequence-parallel layer), where the gradient must travel back to the rank that made them.

Each returns new tensors (the inputs are left alone) and records one node; its backward is the adjoint
collective, as torch's: all_reduce ↔ all_reduce of the gradient; broadcast ↔ reduce to the source (zero on the
others: their input did not reach the output; Horovod's hvd.broadcast averages there: `average=True`); reduce
↔ broadcast from the destination; gather ↔ scatter; all_gather ↔ reduce_scatter (sum); all_to_all ↔ all_to_all
back; all_to_all_single with the split sizes swapped. So every rank must run the backward, as every rank ran
the forward: each gradient is a collective the others wait in — a rank whose input does not require grad, or
whose loss leaves the output out (gather's zeros off the destination), records no node, skips it, and its
peers meet the launch's timeout there (torch's ranks hang the same way). all_reduce differentiates
ReduceOp.SUM and AVG only (torch applies MAX's or PRODUCT's reduction to the gradient too, which is not their
gradient: refused here, by name).

`group=` is the launch's (None, dist.group.WORLD) or a `new_group`'s, which this rank must be in: the collective
and, later, its backward run over the group's members alone (src / dst are global ranks, as torch's).

Horovod's differentiable `allreduce` / `allgather` / `broadcast` are built on these (horovod.py: a process set
is such a group).
"""

from distgraph.autograd.custom import Function
from distgraph.autograd.tensor import Tensor
from distgraph.distributed import collectives, loop
from distgraph.distributed.loop import ReduceOp
from distgraph.errors import ConfigError, ShapeError

__all__ = [
    "all_reduce", "broadcast", "reduce", "gather", "scatter", "all_gather", "reduce_scatter", "all_to_all",
    "all_to_all_single",
]  # fmt: skip

_DIFFERENTIABLE = (ReduceOp.SUM, ReduceOp.AVG)


def _copy(t):
    return Tensor(t.array.copy(), device=t.device)


def _zeros_like(t, shape=None):
    a = t.array
    return Tensor(t.device.xp.zeros(a.shape if shape is None else shape, a.dtype), device=t.device)


def _over_its_group(cls):
    """A collective's Function whose backward runs over the group its forward ran over: the forward records the
    subgroup running it (None: the launch's), and the backward — run by autograd later, outside it — enters it
    again, so the adjoint collective meets the same members (and a second-order backward the same again)."""
    forward, backward = cls.forward, cls.backward

    def forward_in_group(ctx, *args):
        ctx.group = loop._context.get("subgroup")
        return forward(ctx, *args)

    def backward_in_group(ctx, *grads):
        if ctx.group is None or loop._context.get("subgroup") is ctx.group:
            return backward(ctx, *grads)
        return ctx.group.run(backward, ctx, *grads)

    cls.forward, cls.backward = staticmethod(forward_in_group), staticmethod(backward_in_group)
    return cls


def _differentiable_op(op, what):
    if op not in _DIFFERENTIABLE:
        raise ConfigError(
            f"{what}: op={collectives._NAMES.get(op, op)} has no gradient an all-reduce gives; a differentiable "
            "all_reduce takes ReduceOp.SUM or ReduceOp.AVG"
        )
    return op


@_over_its_group
class _AllReduce(Function):
    @staticmethod
    def forward(ctx, op, tensor):
        ctx.op = op
        (out,) = collectives._reduce([tensor.array], op, "all_reduce")
        return Tensor(out, device=tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, _AllReduce.apply(ctx.op, grad)


@_over_its_group
class _Broadcast(Function):
    """Rank src's tensor on every rank; the gradient of src's input is the ranks' gradients reduced by `op`
    (SUM: torch's; AVG: Horovod's), zero on the others."""

    @staticmethod
    def forward(ctx, src, op, tensor):
        ctx.src, ctx.op = src, op
        return loop.broadcast(_copy(tensor), src)

    @staticmethod
    def backward(ctx, grad):
        gx = _Reduce.apply(ctx.src, ctx.op, grad)
        return None, None, gx if loop.rank() == ctx.src else gx * 0


@_over_its_group
class _Reduce(Function):
    @staticmethod
    def forward(ctx, dst, op, tensor):
        ctx.dst, ctx.op = dst, op
        return collectives.reduce(_copy(tensor), dst, op)

    @staticmethod
    def backward(ctx, grad):
        gx = _Broadcast.apply(ctx.dst, ReduceOp.SUM, grad)
        return None, None, gx / loop.world_size() if ctx.op == ReduceOp.AVG else gx


@_over_its_group
class _Gather(Function):
    @staticmethod
    def forward(ctx, dst, tensor):
        ctx.dst = dst
        outs = [_zeros_like(tensor) for _ in range(loop.world_size())]
        collectives.gather(tensor, outs if loop.rank() == dst else None, dst)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        return None, _Scatter.apply(ctx.dst, *grads)


@_over_its_group
class _Scatter(Function):
    @staticmethod
    def forward(ctx, src, *tensors):
        ctx.src = src
        out = _zeros_like(tensors[0])
        collectives.scatter(out, list(tensors) if loop.rank() == src else None, src)
        return out

    @staticmethod
    def backward(ctx, grad):
        return (None, *_Gather.apply(ctx.src, grad))


@_over_its_group
class _AllGather(Function):
    @staticmethod
    def forward(ctx, tensor):
        return tuple(loop.all_gather([_zeros_like(tensor) for _ in range(loop.world_size())], tensor))

    @staticmethod
    def backward(ctx, *grads):
        return _ReduceScatter.apply(ReduceOp.SUM, _zeros_like(grads[0]), *grads)


@_over_its_group
class _AllGatherRows(Function):
    """The ranks' tensors concatenated along dim 0 (first dims may differ); the gradient of this rank's
    rows is every rank's gradient of them summed, or averaged (Horovod's allgather)."""

    @staticmethod
    def forward(ctx, op, tensor):
        out, metas = loop._allgather(tensor, "allgather")
        rows = [shape[0] for shape, _ in metas]
        ctx.op, ctx.start = op, sum(rows[: loop.rank()])
        ctx.stop = ctx.start + rows[loop.rank()]
        return Tensor(out.array, device=tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, _AllReduce.apply(ctx.op, grad)[ctx.start : ctx.stop]


def allgather_rows(tensor, average=False, group=None):
    """Rows of every rank, concatenated; see _AllGatherRows (dist.allgather sums, Horovod's averages)."""
    return _in(group, "allgather", _AllGatherRows.apply, ReduceOp.AVG if average else ReduceOp.SUM, tensor)


@_over_its_group
class _ReduceScatter(Function):
    @staticmethod
    def forward(ctx, op, output, *inputs):
        ctx.op = _differentiable_op(op, "reduce_scatter")
        return collectives.reduce_scatter(_copy(output), list(inputs), op)

    @staticmethod
    def backward(ctx, grad):
        gathered = _AllGather.apply(grad)
        if ctx.op == ReduceOp.AVG:
            gathered = tuple(g / loop.world_size() for g in gathered)
        return (None, None, *gathered)


@_over_its_group
class _AllToAll(Function):
    @staticmethod
    def forward(ctx, outputs, *inputs):
        ctx.shapes = [tuple(t.shape) for t in inputs]
        return tuple(collectives.all_to_all([_copy(t) for t in outputs], list(inputs)))

    @staticmethod
    def backward(ctx, *grads):
        return (None, *_AllToAll.apply([_zeros_like(grads[0], s) for s in ctx.shapes], *grads))


@_over_its_group
class _AllToAllSingle(Function):
    @staticmethod
    def forward(ctx, output, output_split_sizes, input_split_sizes, input):
        ctx.input_shape, ctx.splits = tuple(input.shape), (output_split_sizes, input_split_sizes)
        return collectives.all_to_all_single(_copy(output), input, output_split_sizes, input_split_sizes)

    @staticmethod
    def backward(ctx, grad):
        back = _zeros_like(grad, ctx.input_shape)
        received, sent = ctx.splits
        return None, None, None, _AllToAllSingle.apply(back, sent, received, grad)


# ---- tensor parallelism's region boundaries (Megatron's f / g; tensor/parallel.py) ---------------------------
# Every rank of a tensor-parallel group computes the same loss from replicated outputs, so a replicated tensor's
# gradient is already whole on each rank: these pair a collective one way with none the other.
@_over_its_group
class _CopyToRegion(Function):
    """Forward: the replicated input as it is; backward: the ranks' partial input gradients summed."""

    @staticmethod
    def forward(ctx, tensor):
        return _copy(tensor)

    @staticmethod
    def backward(ctx, grad):
        return _AllReduce.apply(ReduceOp.SUM, grad)


@_over_its_group
class _ReduceFromRegion(Function):
    """Forward: the ranks' partial outputs summed; backward: the replicated gradient as it is."""

    @staticmethod
    def forward(ctx, tensor):
        (out,) = collectives._reduce([tensor.array], ReduceOp.SUM, "all_reduce")
        return Tensor(out, device=tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return _CopyToRegion.apply(grad)


@_over_its_group
class _GatherDim(Function):
    """Forward: the ranks' shards joined along `dim`; backward: this rank's slice of the whole gradient, the same on
    every rank — or, with `partial`, of the ranks' gradients summed (each from its own features only: a
    reduce-scatter, sequence parallelism's before a ColwiseParallel layer)."""

    @staticmethod
    def forward(ctx, dim, partial, tensor):
        ctx.dim, ctx.partial = dim, partial
        parts = loop.all_gather([_zeros_like(tensor) for _ in range(loop.world_size())], tensor)
        return Tensor(tensor.device.xp.concatenate([p.array for p in parts], axis=dim), device=tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, None, (_ReduceScatterSequence if ctx.partial else _SplitDim).apply(ctx.dim, grad)


@_over_its_group
class _SplitDim(Function):
    """Forward: this rank's slice along `dim` of a replicated tensor; backward: the slices' gradients joined."""

    @staticmethod
    def forward(ctx, dim, tensor):
        ctx.dim = dim
        return _mine(tensor.array, dim, tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, _GatherDim.apply(ctx.dim, False, grad)


# Sequence parallelism (Megatron's, arXiv 2205.05198): between a RowwiseParallel layer and the next ColwiseParallel
# one, activations are cut along the sequence, and each rank's loss is its shard's part of the whole (their sum).
# So a sequence shard's gradient is this rank's part of the whole loss's; the sequence is gathered before a
# Colwise layer (_GatherDim, partial) and reduce-scattered after a Rowwise one, in place of the f / g pair above.
@_over_its_group
class _ReduceScatterSequence(Function):
    """Forward: the ranks' partial tensors summed → this rank's shard along `dim`; backward: the shards' gradients
    joined (each rank's partial tensor reached the whole sum)."""

    @staticmethod
    def forward(ctx, dim, tensor):
        ctx.dim = dim
        (out,) = collectives._reduce([tensor.array], ReduceOp.SUM, "reduce_scatter")
        return _mine(out, dim, tensor.device)

    @staticmethod
    def backward(ctx, grad):
        return None, _GatherDim.apply(ctx.dim, True, grad)


def _mine(array, dim, device):
    """This rank's even slice of `array` along `dim` → a new tensor."""
    shape, size, rank = array.shape, loop.world_size(), loop.rank()
    if not -len(shape) <= dim < len(shape) or shape[dim] % size:
        raise ShapeError(f"split along dim {dim}: a tensor of shape {shape} does not split evenly over {size} ranks")
    width = shape[dim] // size
    index = (slice(None),) * (dim % len(shape)) + (slice(rank * width, (rank + 1) * width),)
    return Tensor(array[index].copy(), device=device)


def copy_to_region(tensor, group=None):
    return _in(group, "tensor parallel", _CopyToRegion.apply, tensor)


def reduce_from_region(tensor, group=None):
    return _in(group, "tensor parallel", _ReduceFromRegion.apply, tensor)


def gather_last_dim(tensor, group=None):
    return _in(group, "tensor parallel", _GatherDim.apply, -1, False, tensor)


def split_last_dim(tensor, group=None):
    return _in(group, "tensor parallel", _SplitDim.apply, -1, tensor)


def split_sequence(tensor, dim=1, group=None):
    """A replicated tensor → this rank's shard along `dim` (backward: the shards' gradients joined)."""
    return _in(group, "sequence parallel", _SplitDim.apply, dim, tensor)


def gather_sequence(tensor, dim=1, group=None):
    """Sequence shards → the whole, before a ColwiseParallel layer (backward: a reduce-scatter)."""
    return _in(group, "sequence parallel", _GatherDim.apply, dim, True, tensor)


def reduce_scatter_sequence(tensor, dim=1, group=None):
    """A RowwiseParallel layer's partial outputs summed → this rank's shard along `dim` (backward: an all-gather)."""
    return _in(group, "sequence parallel", _ReduceScatterSequence.apply, dim, tensor)


def all_reduce(tensor, op=ReduceOp.SUM, group=None):
    """Every rank's tensor reduced by `op` (SUM or AVG) → a new tensor, the same on every rank."""
    return _in(group, "all_reduce", _AllReduce.apply, _differentiable_op(op, "all_reduce"), tensor)


def broadcast(tensor, src, group=None, average=False):
    """Rank `src`'s tensor → a new tensor on every rank; the gradient of src's input sums every rank's (torch's),
    or averages them with average=True (Horovod's hvd.broadcast)."""
    op = ReduceOp.AVG if average else ReduceOp.SUM
    return _in(group, "broadcast", lambda: _Broadcast.apply(_place(group, src, "broadcast"), op, tensor))


def reduce(tensor, dst, op=ReduceOp.SUM, group=None):
    """The reduction on rank `dst` (the others get their own tensor back, as torch's gloo leaves it)."""
    op = _differentiable_op(op, "reduce")
    return _in(group, "reduce", lambda: _Reduce.apply(_place(group, dst, "reduce"), op, tensor))


def gather(tensor, dst=0, group=None):
    """Every rank's tensor → a tuple of them by rank on rank `dst` (zeros on the others)."""
    return _in(group, "gather", lambda: _Gather.apply(_place(group, dst, "gather"), tensor))


def scatter(tensors, src=0, group=None):
    """Rank `src`'s tensors[r] → rank r (every rank passes tensors of the same shape: the others' are
    only read for it)."""
    return _in(group, "scatter", lambda: _Scatter.apply(_place(group, src, "scatter"), *tensors))


def all_gather(tensor, group=None):
    """Every rank's tensor (all of one shape) → a tuple of them by rank, on every rank."""
    return _in(group, "all_gather", _AllGather.apply, tensor)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None):
    """input_list[r] of every rank reduced → rank r's result (a new tensor shaped as `output`)."""
    return _in(group, "reduce_scatter", _ReduceScatter.apply, op, output, *input_list)


def all_to_all(output_tensor_list, input_tensor_list, group=None):
    """input_tensor_list[d] goes to rank d → a tuple of what each rank sent this one, shaped as
    output_tensor_list (whose values are not read)."""
    return _in(group, "all_to_all", _AllToAll.apply, output_tensor_list, *input_tensor_list)


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None):
    """Rows input_split_sizes[d] of `input` go to rank d → a new tensor shaped as `output` holding, in rank
    order, output_split_sizes[s] rows from rank s. None: dim 0 split evenly."""
    return _in(group, "all_to_all_single", _AllToAllSingle.apply, output, output_split_sizes, input_split_sizes, input)


def _in(group, what, fn, *args):
    """fn(*args) over `group`: the launch's (None or dist.group.WORLD), or a new_group's subgroup, which this rank
    must be in (a differentiable collective's output and gradient need every member, and a rank outside has
    neither)."""
    from distgraph.distributed.process_group import _check_group

    sub = _check_group(group, what, subgroups=True)
    if sub is None:
        return fn(*args)
    if sub.rank() < 0:
        raise ConfigError(f"{what}: this rank ({loop.rank()}) is not in group {list(sub.ranks)}")
    return sub.run(fn, *args)


def _place(group, rank, what):
    """A global rank (torch's src / dst) → its place in `group` (the launch's: itself)."""
    from distgraph.distributed.process_group import _check_group

    sub = _check_group(group, what, subgroups=True)
    return rank if sub is None else sub.group_rank(rank, what)
