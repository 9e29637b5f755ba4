"""The rest of torch.distributed's and Horovod's collectives, inside a `dg.distributed.launch` function.

- `all_reduce(t, op)` with ReduceOp.MAX / MIN / PRODUCT / BAND / BOR / BXOR (loop.py sends them here),
  Horovod's op names `Sum`, `Average`, `Min`, `Max`, `Product`, and `grouped_allreduce(tensors, op)`;
- `reduce_scatter_tensor(output, input, op)`, `reduce_scatter(output, input_list, op)`, `reduce(tensor, dst,
  op)` (torch) and `reducescatter(tensor, op)` (Horovod: dim 0 split as evenly as can be, the remainder's
  rows to the first ranks, as its `ReducescatterOp::ComputeOutputShapeForRank`);
- `all_to_all_single(output, input, output_split_sizes, input_split_sizes)`, `all_to_all(output_tensor_list,
  input_tensor_list)`, `gather(tensor, gather_list, dst)`, `scatter(tensor, scatter_list, src)` (torch) and
  `alltoall(tensor, splits)` (Horovod: → the result, and the rows received from each rank when splits
  are given);
- Horovod's `local_rank()`, `local_size()`, `cross_rank()`, `cross_size()`.

Policy. Every collective first exchanges what each rank holds (shapes, dtypes, splits) and any problem
with its own arguments (a gather_list on the wrong rank, splits that do not add up): then every rank
raises the same error, naming the rank, and none is left waiting in a collective its peers never join.
The data then goes through the launch's one all-reduce, as loop.py's gathers do (each rank's bytes at
its own offset of a zero buffer, summed): sum and mean reduce there, as they always have. The other ops
have no path through the shared-memory communicator (it only adds), so every rank receives every rank's
tensors and reduces them itself, in rank order: the same bytes in the same order give bit-identical
results on every rank and from run to run, where a tree or ring would round differently per rank.
The routing ones (all-to-all, gather, scatter) send each rank's whole share to every rank and keep the
part addressed to it: world_size times the bytes of a point-to-point exchange, a cost that only matters
for large tensors, against a second channel with its own ordering and timeouts. Not differentiable.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace, to_device
from distgraph.distributed.allreduce import OPS
from distgraph.distributed.loop import _context, _gather_bytes, _listed, _local_ranks, allgather_object
from distgraph.errors import ConfigError, DistributedError, DTypeError, ShapeError

Sum, Average, Min, Max, Product = "sum", "mean", "min", "max", "product"  # Horovod's op names
Adasum = "adasum"  # Horovod's; no collective here takes it (DistributedOptimizer refuses it by name)
_LOCAL = {"max": "maximum", "min": "minimum", "product": "multiply"}  # reduced by every rank, in rank order
_BITWISE = {"band": "bitwise_and", "bor": "bitwise_or", "bxor": "bitwise_xor"}  # integer and bool only
_NAMES = {"sum": "SUM", "mean": "AVG", "max": "MAX", "min": "MIN", "product": "PRODUCT", "band": "BAND",
          "bor": "BOR", "bxor": "BXOR"}  # fmt: skip


def _op_problem(op, dtype, what):
    """The error for an op that is none of ReduceOp's (ConfigError) or one the dtype cannot take (DTypeError,
    torch's words: AVG needs a floating dtype, BAND / BOR / BXOR an integral one), else None."""
    if op not in _NAMES:
        return ConfigError(f"{what}: op must be one of {', '.join(map(repr, _NAMES))} (dist.ReduceOp), got {op!r}")
    kind = np.dtype(dtype).kind
    if op == "mean" and kind not in "fc":
        return DTypeError(f"{what}: Cannot use ReduceOp.AVG with non-floating dtype {np.dtype(dtype)}")
    if op in _BITWISE and kind not in "biu":
        return DTypeError(f"{what}: Cannot use ReduceOp.{_NAMES[op]} with non-integral dtype {np.dtype(dtype)}")
    return None


def _root(root, what):
    """The problem with a src / dst rank, or None."""
    if isinstance(root, bool) or not isinstance(root, int | np.integer) or not 0 <= root < _context["world"]:
        return ConfigError(f"{what}: invalid root rank: {root} (world size {_context['world']})")
    return None


def _desc(array):
    return None if array is None else (tuple(array.shape), str(array.dtype))


def _words(desc):
    """ "float32 (3, 2)"; a shape's None (alltoall's rows to come) reads "any"."""
    if desc is None:
        return "nothing"
    dims = ["any" if d is None else str(d) for d in desc[0]]
    return f"{desc[1]} ({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def _agree(what, meta, problem=None):
    """Every rank's `meta`, by rank, once every rank has seen every rank's `problem` (an error with its own
    arguments, or None): the lowest rank's is raised on every rank alike, naming that rank."""
    if _context["world"] == 1:
        if problem is not None:
            raise problem
        return [meta]
    metas = allgather_object((meta, problem))
    for r, (_, p) in enumerate(metas):
        if p is not None:
            raise type(p)(f"{p} (on rank {r})")
    return [m for m, _ in metas]


def _exchange(arrays, sent, what, like):
    """Every rank's `arrays` (None: nothing), whose descriptions by rank are `sent` → [rank r's arrays]."""
    if _context["world"] == 1:
        return [[None if a is None else a.copy() for a in arrays]]
    xp = namespace(like)
    parts = [xp.ascontiguousarray(a).reshape(-1).view(xp.uint8) for a in arrays if a is not None and a.size]
    mine = xp.concatenate(parts) if parts else to_device(np.zeros(0, np.uint8), _context["device"])
    flat, offsets = _gather_bytes(mine, what)
    out = []
    for r, descs in enumerate(sent):
        pos, got = int(offsets[r]), []
        for desc in descs:
            if desc is None:
                got.append(None)
                continue
            shape, dtype = desc
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            got.append(flat[pos : pos + n].copy().view(dtype).reshape(shape))
            pos += n
        out.append(got)
    return out


# ---- reductions -----------------------------------------------------------------------------------------
def _reduce(arrays, op, what, problem=None, root=None):
    """The ranks' `arrays` reduced by `op` → new arrays, alike on every rank. Every rank must hold the same
    shapes and dtypes (else a ShapeError / DTypeError naming every rank's, on every rank), and name the
    same `root` (reduce's dst)."""
    for a in arrays:
        problem = problem or _op_problem(op, a.dtype, what)
    agreed = _agree(what, ([_desc(a) for a in arrays], root), problem)
    if len({r for _, r in agreed}) > 1:
        roots = ", ".join(f"rank {r}: {named}" for r, (_, named) in enumerate(agreed))
        raise ConfigError(f"{what}: the ranks name different roots ({roots})")
    metas = [m for m, _ in agreed]
    if len(set(map(str, metas))) > 1:
        ranks = ", ".join(f"rank {r}: " + ", ".join(map(_words, m)) for r, m in enumerate(metas))
        dtypes = {tuple(d[1] for d in m) for m in metas}
        raise (DTypeError if len(dtypes) > 1 else ShapeError)(f"{what}: the ranks' tensors differ ({ranks})")
    if _context["world"] == 1 or not arrays:
        return [a.copy() for a in arrays]
    if op in OPS:  # the communicator's own sum, on copies (it reduces in place)
        try:
            return _context["comm"].allreduce([namespace(a).array(a, copy=True) for a in arrays], op, tag="gather")
        except DistributedError as exc:
            raise DistributedError(f"{what}: {exc}") from None
    by_rank = _exchange(arrays, metas, what, arrays[0])
    out = []
    for i, a in enumerate(arrays):
        ufunc = getattr(namespace(a), {**_LOCAL, **_BITWISE}[op])
        acc = by_rank[0][i]
        for r in range(1, _context["world"]):  # rank order, the same on every rank
            ufunc(acc, by_rank[r][i], out=acc)
        out.append(acc)
    return out


def all_reduce_gathered(tensors, op):
    """loop.all_reduce for the ops the communicator does not have: in place, as the sum is."""
    items = _listed(tensors)
    for t, a in zip(items, _reduce([t.array for t in items], op, "all_reduce")):
        t.array[...] = a
    return tensors


def grouped_allreduce(tensors, op=Average):
    """Horovod's: every tensor of the list reduced across the ranks in one call → new tensors (Horovod's
    default op is the average)."""
    return [Tensor(a) for a in _reduce([t.array for t in tensors], op, "grouped_allreduce")]


def reduce(tensor, dst=0, op=Sum):
    """torch's: the reduction lands in rank `dst`'s tensor, in place; the others' are left as they were."""
    (out,) = _reduce([tensor.array], op, "reduce", _root(dst, "reduce"), root=dst)
    if _context["rank"] == dst:
        tensor.array[...] = out
    return tensor


def reduce_scatter_tensor(output, input, op=Sum):
    """torch's: `input` holds world_size blocks of output's size (concatenated or stacked along dim 0);
    rank r's output gets block r reduced across the ranks, in place."""
    out, inp = output.array, input.array
    problem = None
    if inp.size != out.size * _context["world"]:
        problem = ShapeError(
            f"reduce_scatter_tensor: input tensor must be the same size as output size times world size (input "
            f"{tuple(inp.shape)}, output {tuple(out.shape)}, world size {_context['world']})"
        )
    elif inp.dtype != out.dtype:
        problem = DTypeError(f"reduce_scatter_tensor: input is {inp.dtype}, output {out.dtype}")
    (full,) = _reduce([inp], op, "reduce_scatter_tensor", problem)
    k = out.size
    out[...] = full.reshape(-1)[_context["rank"] * k : (_context["rank"] + 1) * k].reshape(out.shape)
    return output


def reduce_scatter(output, input_list, op=Sum):
    """torch's: input_list[r] of every rank reduced into rank r's output, in place."""
    out, world = output.array, _context["world"]
    problem = None
    if len(input_list) != world:
        problem = ConfigError(f"reduce_scatter: input_list has {len(input_list)} tensors for {world} ranks")
    else:
        for r, t in enumerate(input_list):
            if _desc(t.array) != _desc(out):
                problem = ShapeError(
                    f"reduce_scatter: input_list[{r}] is {_words(_desc(t.array))}, output {_words(_desc(out))}"
                )
                break
    stacked = namespace(out).stack([t.array for t in input_list]) if problem is None else out[None]
    (full,) = _reduce([stacked], op, "reduce_scatter", problem)
    out[...] = full[_context["rank"]]
    return output


def reducescatter(tensor, op=Average):
    """Horovod's: the reduction of every rank's tensor, split along dim 0 → this rank's rows (a new tensor).
    n rows over w ranks: n // w each, one more for ranks below n % w."""
    a = tensor.array
    problem = ShapeError("reducescatter: a 0-d tensor has no dim 0 to split") if a.ndim == 0 else None
    (full,) = _reduce([a], op, "reducescatter", problem)
    n, w, r = a.shape[0], _context["world"], _context["rank"]
    start = r * (n // w) + min(r, n % w)
    return Tensor(full[start : start + n // w + (r < n % w)])


# ---- routing: all-to-all, gather, scatter --------------------------------------------------------------
def _route(parts, expect, what, like, problem=None):
    """parts[d]: what this rank sends rank d (None: nothing); expect[s]: the (shape, dtype) it takes from
    rank s (None: nothing; a shape's None: any length there) → [what rank s sent it]. Whatever a sender
    and its receiver disagree on is a ShapeError / DTypeError naming both, on every rank."""
    metas = _agree(what, ([_desc(p) for p in parts], expect), problem)
    for s, (sent, _) in enumerate(metas):
        for d, (_, wanted) in enumerate(metas):
            have, want = sent[d], wanted[s]
            fits = have == want or (
                have is not None and want is not None and have[1] == want[1] and len(have[0]) == len(want[0])
                and all(w is None or w == h for h, w in zip(have[0], want[0]))
            )  # fmt: skip
            if not fits:
                dtypes = have is not None and want is not None and have[1] != want[1]
                raise (DTypeError if dtypes else ShapeError)(
                    f"{what}: rank {s} sends rank {d} {_words(have)}, rank {d} expects {_words(want)}"
                )
    got = _exchange(parts, [sent for sent, _ in metas], what, like)
    return [got[s][_context["rank"]] for s in range(_context["world"])]


def _splits(sizes, rows, what, name):
    """(the split sizes, the problem or None): `sizes` as given, or rows split evenly."""
    world = _context["world"]
    if sizes is None:
        if rows % world:
            return None, ShapeError(
                f"{what}: Tensor's dim 0 does not divide equally across group size ({name} has {rows} rows, {world} ranks)"
            )
        return [rows // world] * world, None
    sizes = [int(s) for s in sizes]
    if len(sizes) != world:
        return None, ConfigError(
            f"{what}: Number of tensor splits not equal to group size ({name}_split_sizes {sizes}, {world} ranks)"
        )
    if sum(sizes) != rows or min(sizes) < 0:
        return None, ShapeError(
            f"{what}: Split sizes doesn't match total dim 0 size ({name}_split_sizes {sizes}, {name} has {rows} rows)"
        )
    return sizes, None  # fmt: skip


def _cut(a, sizes):
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [a[starts[j] : starts[j + 1]] for j in range(len(sizes))]


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None):
    """torch's: rows input_split_sizes[d] of `input` (dim 0, in order) go to rank d; `output` receives, in
    rank order, output_split_sizes[s] rows from rank s, in place. None: dim 0 split evenly."""
    out, inp, what = output.array, input.array, "all_to_all_single"
    if out.ndim == 0 or inp.ndim == 0:
        problem = ShapeError(f"{what}: 0-d tensors have no dim 0 to split (output {out.shape}, input {inp.shape})")
    else:
        send, problem = _splits(input_split_sizes, inp.shape[0], what, "input")
        take, problem_out = _splits(output_split_sizes, out.shape[0], what, "output")
        problem = problem or problem_out
    parts = _cut(inp, send) if problem is None else [None] * _context["world"]
    expect = [((n, *out.shape[1:]), str(out.dtype)) for n in take] if problem is None else [None] * _context["world"]
    got = _route(parts, expect, what, inp, problem)
    out[...] = namespace(out).concatenate(got)
    return output


def all_to_all(output_tensor_list, input_tensor_list):
    """torch's: input_tensor_list[d] goes to rank d, output_tensor_list[s] receives rank s's, in place."""
    what, world = "all_to_all", _context["world"]
    problem = None
    for name, ts in (("input_tensor_list", input_tensor_list), ("output_tensor_list", output_tensor_list)):
        if len(ts) != world and problem is None:
            problem = ConfigError(f"{what}: {name} has {len(ts)} tensors for {world} ranks")
    parts = [t.array for t in input_tensor_list] if problem is None else [None] * world
    expect = [_desc(t.array) for t in output_tensor_list] if problem is None else [None] * world
    like = parts[0] if problem is None else None  # (only read once every rank's lists have passed)
    for t, a in zip(output_tensor_list, _route(parts, expect, what, like, problem)):
        t.array[...] = a
    return output_tensor_list


def alltoall(tensor, splits=None):
    """Horovod's: rows splits[d] of `tensor` (dim 0, in order) go to rank d → what every rank sent this one,
    concatenated in rank order (a new tensor); with `splits` given, also the rows taken from each rank (an
    int32 tensor). splits=None: dim 0 split evenly. The other dims and the dtype must match across ranks."""
    result, received = alltoall_received(tensor, splits)
    return result if splits is None else (result, received)


def alltoall_received(tensor, splits=None):
    """`alltoall` → (the result, the rows taken from each rank) whether or not splits are given (what
    Horovod's alltoall_async hands over)."""
    a, world, what = tensor.array, _context["world"], "alltoall"
    if isinstance(splits, Tensor):
        splits = splits.numpy()
    sizes, problem = [int(s) for s in np.asarray([] if splits is None else splits).reshape(-1)], None
    if a.ndim == 0:
        problem = ShapeError(f"{what}: a 0-d tensor has no dim 0 to split (reshape it to (1,))")
    elif splits is None and a.shape[0] % world:
        problem = ShapeError(f"{what}: splits not provided, but first dimension of tensor is not an even multiple of the number of workers ({a.shape[0]} rows, {world} ranks)")  # fmt: skip
    elif splits is None:
        sizes = [a.shape[0] // world] * world
    elif len(sizes) != world:
        problem = ConfigError(f"{what}: Number of entries in splits does not equal number of workers ({sizes}, {world} ranks)")  # fmt: skip
    elif sum(sizes) > a.shape[0] or min(sizes) < 0:
        problem = ShapeError(f"{what}: Sum of splits entries is greater than the first dimension of tensor ({sizes}, {a.shape[0]} rows)")  # fmt: skip
    parts = _cut(a, sizes) if problem is None else [None] * world
    expect = [((None, *a.shape[1:]), str(a.dtype))] * world if problem is None else [None] * world
    got = _route(parts, expect, what, a, problem)
    return Tensor(namespace(a).concatenate(got)), Tensor(np.array([g.shape[0] for g in got], np.int32))


def _root_list_problem(what, root, tensors, name, role):
    """The problem with a rooted collective's root or list, or None: the list (one tensor per rank) is given
    on the root rank and on no other (torch's words)."""
    me, world = _context["rank"], _context["world"]
    if (problem := _root(root, what)) is not None:
        return problem
    if me == root and not tensors:
        return ConfigError(f"{what}: Argument ``{name}`` must be specified on {role} rank.")
    if me != root and tensors:
        return ConfigError(f"{what}: Argument ``{name}`` must NOT be specified on non-{role} ranks.")
    if me == root and len(tensors) != world:
        return ConfigError(f"{what}: {name} has {len(tensors)} tensors for {world} ranks")
    return None


def gather(tensor, gather_list=None, dst=0):
    """torch's: every rank's tensor copied into gather_list[rank] on rank `dst`, in place; the other ranks
    pass no gather_list."""
    what, world, me = "gather", _context["world"], _context["rank"]
    problem = _root_list_problem(what, dst, gather_list, "gather_list", "destination")
    parts = [tensor.array if d == dst else None for d in range(world)] if problem is None else [None] * world
    expect = [_desc(t.array) for t in gather_list] if problem is None and me == dst else [None] * world
    got = _route(parts, expect, what, tensor.array, problem)
    if me == dst:
        for t, a in zip(gather_list, got):
            t.array[...] = a
    return tensor


def scatter(tensor, scatter_list=None, src=0):
    """torch's: scatter_list[r] of rank `src` copied into rank r's tensor, in place; the other ranks pass
    no scatter_list."""
    what, world, me = "scatter", _context["world"], _context["rank"]
    problem = _root_list_problem(what, src, scatter_list, "scatter_list", "source")
    parts = [t.array for t in scatter_list] if problem is None and me == src else [None] * world
    expect = [_desc(tensor.array) if s == src else None for s in range(world)] if problem is None else [None] * world
    tensor.array[...] = _route(parts, expect, what, tensor.array, problem)[src]
    return tensor


# ---- the launch's layout --------------------------------------------------------------------------------
def local_rank():
    """This rank's place among the ranks on its node (Horovod's): which GPU or cores of the node are its."""
    return _local_ranks()[1][_context["rank"]]


def local_size():
    """How many ranks run on this rank's node (Horovod's)."""
    return len(_local_ranks()[0])


def cross_rank():
    """This rank's place among the ranks with its local rank, one per node (Horovod's): its node's index
    where every node runs as many ranks."""
    local = _local_ranks()[1]
    return sum(lr == local[_context["rank"]] for lr in local[: _context["rank"]])


def cross_size():
    """How many ranks share this rank's local rank: the number of nodes when every node runs as many."""
    local = _local_ranks()[1]
    return local.count(local[_context["rank"]])
