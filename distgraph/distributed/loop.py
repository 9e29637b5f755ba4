"""Your own training loop across Ray workers, as with Horovod or torch.distributed.

`dg.distributed.launch(train, workers=N)` runs `train(*args)` on N workers (Ray actors in a placement
group, like the Trainer's) and returns what each rank returned. Inside it:

- `rank()`, `world_size()`: this worker's place (0 of 1 outside `launch`, so the script also runs alone);
- `all_reduce(tensors, op="sum"|"mean")`, `broadcast(tensors, src=0)`, `barrier()`: in place, as
  torch.distributed's (the other ReduceOps, reduce-scatter, all-to-all, gather, scatter: collectives.py);
- `DistributedOptimizer(optimizer)` (dist_optimizer.py): `step()` first averages every gradient across
  the ranks (one fused all-reduce of them all, Horovod's tensor fusion), then steps;
- `broadcast_parameters(model)`: every rank starts from rank 0's parameters and buffers;
- `allgather(tensor)` (Horovod's name; `all_gather` too, which also takes torch's `(tensor_list, tensor)`):
  every rank's tensor concatenated along dim 0 in rank order, first dims free to differ;
- `broadcast_object(obj, src=0)`, `allgather_object(obj)` (= `all_gather_object`): any picklable object
  (a config, a dict of metrics) from src, or every rank's as a list.

Why: the Trainer covers fit and evaluate, but a GAN, an RL loop or a custom schedule needs its own loop;
Horovod's answer — wrap the optimizer, start from one rank's parameters — changes nothing else in it.
The ranks meet in the same all-reduce as the Trainer's workers: the shared-memory segment on one node,
a gloo group across nodes, NCCL on GPUs (`allreduce.make_allreduce`). Every wait has the launch's
`timeout_s`; a rank that fails ends the launch at once with its error, the others stopped — or, with
`launch(..., max_restarts=K)`, every rank starts again on a fresh group, as under torchrun (launcher.py).
"""

import contextlib
import os
import pickle
import re
import threading

import numpy as np
import ray

from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace, to_device
from distgraph.distributed import process_settings
from distgraph.distributed.allreduce import OPS, make_allreduce
from distgraph.distributed.scheduler import get_failing_fast, user_error
from distgraph.distributed.sync_group import SyncGroup
from distgraph.errors import ConfigError, DistgraphError, DistributedError, DTypeError, PeerExitedError, ShapeError
from distgraph.ops.collective import using_group


class _Context(dict):
    """This process's place in the launch (rank, world size, communicator, nodes, ...). A subgroup's collective
    (`in_group`) overlays its own place on the thread that runs it only: a gradient bucket thread reducing for
    the launch meanwhile (DDP's, through a comm hook) still reads the launch's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._thread = threading.local()

    def __getitem__(self, key):
        overlay = getattr(self._thread, "overlay", None)
        if overlay is not None and key in overlay:
            return overlay[key]
        return super().__getitem__(key)

    def get(self, key, default=None):
        overlay = getattr(self._thread, "overlay", None)
        if overlay is not None and key in overlay:
            return overlay[key]
        return super().get(key, default)

    def launch_rank(self):
        """This process's rank in the launch, whatever group's collective the thread is in."""
        return super().__getitem__("rank")


# this process's place (rank 0 of 1 outside a launch) and the node of every rank (for local_rank & co.)
_context = _Context(rank=0, world=1, comm=None, device="cpu", nodes=None)
_launch_resets = []  # `on_new_launch`'s


def on_new_launch(reset):
    """Have `reset()` run as each launch joins its group in this process (a decorator): a launch module's
    state of the last function run here (hvd.init, a timeline left recording) does not reach the next one a
    warm process runs (worker_pool.py)."""
    _launch_resets.append(reset)
    return reset


on_new_launch(process_settings.as_new)  # distgraph's process-wide settings, as a new process has them


class LoopWorker:
    """One rank of a launch: joins the group's all-reduce, then runs the user's function."""

    def __init__(self, rank, world):
        self.rank, self.world = rank, world

    def node(self):
        return ray.get_runtime_context().get_node_id()

    def connect(self, group, backend, device, timeout_s, nodes):
        _context.clear()  # (nothing of an earlier launch in this process — its subgroups, process sets — carries over)
        for reset in _launch_resets:
            reset()
        config = {"backend": backend, "group": group, "timeout_s": timeout_s, "device": device}  # SyncBatchNorm's:
        sync = SyncGroup(config, self.rank, self.world, lambda: _context["comm"])  # apart on gloo/nccl (DDP's thread)
        _context.update(rank=self.rank, world=self.world, device=device, nodes=nodes, backend=backend, group=group,
                        timeout_s=timeout_s, subgroups=0, sync=sync, on_close=[sync.close])  # fmt: skip
        _context["comm"] = make_allreduce(self.rank, self.world, backend, group, timeout_s, device)
        return True

    def run(self, fn, args, kwargs, launch_env=None):
        """fn's result, run with torchrun's variables set: this rank's, and the launch's `launch_env` (MASTER_ADDR,
        MASTER_PORT, TORCHELASTIC_*: launcher.py); the environment as it was after."""
        same_node, local = _local_ranks()
        env = {"RANK": self.rank, "WORLD_SIZE": self.world, "LOCAL_RANK": local[self.rank],
               "LOCAL_WORLD_SIZE": len(same_node), "NODE_RANK": node_rank(), "GROUP_RANK": node_rank(),
               "ROLE_RANK": self.rank, "ROLE_WORLD_SIZE": self.world, **(launch_env or {})}  # fmt: skip
        before = {k: os.environ.get(k) for k in env}
        os.environ.update({k: str(v) for k, v in env.items()})  # torchrun's, for scripts that read them
        try:
            with using_group(_context["sync"]):  # for SyncBatchNorm
                result = fn(*args, **kwargs)
            _context["comm"].finish()  # a peer still waiting for this rank in a collective stops now
            return result
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def close(self):
        for close in _context.pop("on_close", []):  # the subgroups' communicators (subgroups.py)
            close()
        if _context["comm"] is not None:
            _context["comm"].close()


def launch(fn, workers=2, **kwargs):
    """Run `fn` on `workers` ranks → what each rank returned, by rank; `max_restarts=K` starts every rank again
    after a failure, as torchrun (launcher.py, which starts the ranks and gives each torchrun's environment)."""
    from distgraph.distributed.launcher import launch as _launch  # (it builds on this module)

    return _launch(fn, workers, **kwargs)


def _get(refs, timeout_s, what, attempt=""):
    """Every result, by rank (the scheduler's fail-fast wait: the first failure raises at once, the other
    calls collected); a rank's error is raised as itself when it is the user's distgraph error, else as a
    DistributedError naming the rank (and the `attempt`, "" or " (attempt 2 of 3)", where there are restarts)."""
    what = f"{what}{attempt}"
    try:
        return get_failing_fast(refs, timeout_s, f"launch: {what}")
    except ray.exceptions.RayTaskError as exc:
        rank, failed = _failed_rank(refs, ray.exceptions.RayTaskError, exc)
        where = f"raised on rank {rank} of the launch{attempt}, where its traceback reads:\n{_traceback(failed)}"
        cause = user_error(failed) or user_error(exc)
        if cause is not None:  # the user's error as itself, with where it came from (Ray's worker traceback)
            cause.add_note(where)
            raise cause from None
        dead, died = _failed_rank(refs, ray.exceptions.RayActorError, None, wait_s=_death_news_wait(failed))
        if died is not None:  # the peer's error was the consequence (it found the dead rank's process gone)
            raise DistributedError(f"launch: the worker of rank {dead} died during {what}: {died}") from None
        error = DistributedError(f"launch: {what} failed on rank {rank}: {failed.cause!r}")
        error.add_note(where)
        raise error from None
    except ray.exceptions.RayActorError as exc:
        rank, exc = _failed_rank(refs, ray.exceptions.RayActorError, exc)
        raise DistributedError(f"launch: the worker of rank {rank} died during {what}: {exc}") from None


def _traceback(exc):
    """The failed call's traceback as the worker printed it (Ray's RayTaskError text, its colours and its first
    line, which names the task and the process, left out)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.split("\n", 1)[1] if text.startswith("ray::") and "\n" in text else text


DEATH_NEWS_S = 2.0  # how long a peer's collective error waits for Ray's word that a rank's process died


def _death_news_wait(failed):
    """How long a rank's failure waits for Ray's word of another rank's death: DEATH_NEWS_S where the failure
    may be that death seen first (a barrier that found a peer's process gone; an error from outside distgraph,
    such as gloo's closed connection), none where distgraph's own error says what went wrong instead (a
    timeout, a mismatch between the ranks)."""
    cause = getattr(failed, "cause", None)
    return DEATH_NEWS_S if isinstance(cause, PeerExitedError) or not isinstance(cause, DistgraphError) else 0.0


def _failed_rank(refs, kind, first, wait_s=0.0):
    """(rank, its error) of the lowest rank whose call has come back with an error of this kind, else ("?",
    `first`): a peer of a rank that died may fail too, waiting for it, and is not the rank to name — and the
    error named is that rank's own, not whichever came back first. `wait_s`: how long to wait for the calls
    still out (a peer's barrier can see a dead process before Ray reports the death)."""
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
    for r, ref in enumerate(refs):
        if ref in done:
            try:
                ray.get(ref)
            except kind as exc:
                return r, exc
            except Exception:  # noqa: BLE001  (another rank's error is the one being reported)
                pass
    return "?", first


# ---- inside a launched function ---------------------------------------------------------------------
def rank():
    return _context["rank"]


def is_launched():
    """Whether this process is a rank of a launch (outside one, the collectives run as rank 0 of 1)."""
    return _context["comm"] is not None


def _local_ranks():
    """(ranks on this rank's node, by rank; every rank's local rank), from the node of each rank that
    `launch` found (one node outside a launch)."""
    nodes = _context.get("nodes") or [None] * _context["world"]
    local = [sum(n == nodes[r] for n in nodes[:r]) for r in range(len(nodes))]
    return [r for r, n in enumerate(nodes) if n == nodes[_context["rank"]]], local


def node_rank():
    """The index of this rank's node, nodes numbered in the order of their first rank (Ray Train's and
    torchrun's node rank, whatever the number of ranks on each node)."""
    nodes = _context.get("nodes") or [None] * _context["world"]
    return list(dict.fromkeys(nodes)).index(nodes[_context["rank"]])


def world_size():
    return _context["world"]


@contextlib.contextmanager
def in_group(rank, world, comm, nodes, subgroup=None):
    """This rank's place (rank, world size, communicator, nodes) swapped for its place in `subgroup` while a
    collective runs over the subgroup's members (subgroups.py); the launch's, after. `_context["subgroup"]` says
    which one runs (a differentiable collective's backward runs over the same: nn/functional.py)."""
    thread = _context._thread
    saved = getattr(thread, "overlay", None)
    thread.overlay = {"rank": rank, "world": world, "comm": comm, "nodes": nodes, "subgroup": subgroup}
    try:
        yield
    finally:
        thread.overlay = saved


def communicator():
    """This rank's all-reduce communicator (allreduce.py), for collectives that run beside the loop's own
    (DistributedDataParallel's gradient buckets)."""
    if _context["comm"] is None:
        raise DistributedError("no all-reduce group here: call this inside a function run by dg.distributed.launch")
    return _context["comm"]


get_rank, get_world_size = rank, world_size  # torch.distributed's names
size = world_size  # Horovod's


class ReduceOp:
    """torch.distributed.ReduceOp's names for the ops `all_reduce` takes (Horovod's are in collectives.py)."""

    SUM = "sum"
    AVG = "mean"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


def _listed(tensors):
    return list(tensors) if isinstance(tensors, list | tuple) else [tensors]


def all_reduce(tensors, op="sum"):
    """Reduce a tensor or a list of tensors across the ranks, in place (every rank gets the result); op is
    a ReduceOp. Sum and mean: one call reduces the whole list in one fused buffer per dtype. The others
    the communicator does not have: every rank reduces every rank's tensors (collectives.py)."""
    if op not in OPS:
        from distgraph.distributed.collectives import all_reduce_gathered  # (it builds on this module)

        return all_reduce_gathered(tensors, op)
    if _context["world"] == 1:
        return tensors
    items = _listed(tensors)
    arrays = [np.ascontiguousarray(t.array) if isinstance(t.array, np.ndarray) else t.array for t in items]
    reduced = _context["comm"].allreduce(arrays, op)
    for t, a in zip(items, reduced):
        if a is not t.array:
            t.array[...] = a
    return tensors


def broadcast(tensors, src=0):
    """Every rank's tensors become rank `src`'s, in place: the others contribute zeros to a sum, which
    gives src's values exactly. Each rank also votes for the src it names, in the same sum (an element per
    rank, in the first floating tensor's dtype: no extra collective); ranks that name different sources
    would otherwise get the sum of their tensors without a word — they all raise instead."""
    world = _context["world"]
    if not 0 <= src < world:
        raise ConfigError(f"broadcast: src {src} is not a rank of {world}")
    if world == 1:
        return tensors
    items = _listed(tensors)
    if _context["rank"] != src:
        for t in items:
            t.array[...] = 0
    dtype = next((t.array.dtype for t in items if t.array.dtype.kind == "f"), np.dtype(np.float32))
    vote = Tensor(namespace(items[0].array).zeros(world, dtype), device=items[0].device)
    vote.array[src] = 1
    all_reduce([*items, vote], "sum")
    counts = [int(c) for c in to_device(vote.array, "cpu")]
    if counts[src] != world:
        named = ", ".join(f"src {r}: {c} rank(s)" for r, c in enumerate(counts) if c)
        raise ConfigError(f"broadcast: the ranks name different sources ({named}); every rank must pass the same src")
    return tensors


def barrier():
    """Wait until every rank gets here (an all-reduce of one number, on the launch's device: NCCL reduces GPU
    arrays only)."""
    all_reduce(Tensor(to_device(np.zeros(1, np.float32), _context["device"])), "sum")


def broadcast_parameters(model, src=0):
    """Rank `src`'s parameters and buffers (batch-norm statistics) on every rank: call it once before
    training, so every replica starts alike (Horovod's broadcast_parameters)."""
    tensors = list(model.parameters()) + list(getattr(model, "buffers", lambda: [])())
    return broadcast(tensors, src)


def broadcast_optimizer_state(optimizer, root_rank=0):
    """Every rank's optimizer state (moments, steps, hyperparameters) becomes rank `root_rank`'s
    (Horovod's): after resuming from a checkpoint only one rank read, or where ranks built theirs apart."""
    state = broadcast_object(optimizer.state_dict(), root_rank)
    if _context["rank"] != root_rank:
        optimizer.load_state_dict(state)


# ---- gathering: tensors of different first dims, Python objects ---------------------------------------
# Everything travels through the launch's all-reduce, as broadcast does: each rank writes its bytes at its
# own offset of a zero buffer and the sum is the concatenation, exact for any dtype since it moves bytes
# (uint8: x + 0 = x) and no rank's bytes overlap another's. No second channel (no named actor, no
# ObjectRefs to hand around through the driver), the same ordering as every other collective, and the
# same timeouts. Each rank's part crosses the segment once per rank, which is nothing for a config or
# metrics; Ray's object store would only pay off for large objects, at the price of that second channel.


def _reduce_sum(array, what):
    """One all-reduce (sum) of one array, its failure (a timeout, a dead peer) named after the caller."""
    try:
        return _context["comm"].allreduce([array], "sum", tag="gather")[0]
    except DistributedError as exc:
        raise DistributedError(f"{what}: {exc}") from None


def _gather_bytes(data, what):
    """Every rank's flat uint8 `data` (lengths may differ) → (the concatenation by rank, offsets): one
    all-reduce of the lengths, one of the bytes. The buffer is padded to a power of two so that varying
    sizes reuse a few shm segments (the shm backend keeps one per length) instead of one per size."""
    xp, world, me = namespace(data), _context["world"], _context["rank"]
    sizes = xp.zeros(world, xp.int64)
    sizes[me] = data.size
    offsets = np.concatenate([[0], np.cumsum([int(s) for s in _reduce_sum(sizes, what)])])
    buf = xp.zeros(max(64, 1 << int(offsets[-1] - 1).bit_length()), xp.uint8)
    buf[offsets[me] : offsets[me + 1]] = data
    return _reduce_sum(buf, what)[: offsets[-1]], offsets


def _dumps(obj):
    """The object's pickle as a uint8 array on the launch's device (NCCL reduces only GPU arrays).
    cloudpickle, as Ray and Horovod's broadcast_object use: lambdas and local classes go too."""
    return to_device(np.frombuffer(ray.cloudpickle.dumps(obj), np.uint8), _context["device"])


def _loads(data):
    return pickle.loads(to_device(data, "cpu").tobytes())


def broadcast_object(obj, src=0):
    """Rank `src`'s `obj` (any picklable object) on every rank → the object (a copy on the other ranks),
    as Horovod's broadcast_object. Every rank must call it with the same src."""
    if not 0 <= src < _context["world"]:
        raise ConfigError(f"broadcast_object: src {src} is not a rank of {_context['world']}")
    if _context["world"] == 1:
        return obj
    data = _dumps(obj if _context["rank"] == src else None)
    mine = data if _context["rank"] == src else data[:0]
    flat, offsets = _gather_bytes(mine, "broadcast_object")
    return obj if _context["rank"] == src else _loads(flat[offsets[src] : offsets[src + 1]])


def allgather_object(obj):
    """Every rank's `obj` (any picklable object) → the list of them by rank, on every rank (Horovod's
    allgather_object; torch's all_gather_object fills a list instead)."""
    if _context["world"] == 1:
        return [obj]
    flat, offsets = _gather_bytes(_dumps(obj), "allgather_object")
    return [_loads(flat[offsets[r] : offsets[r + 1]]) for r in range(_context["world"])]


def allgather(tensor):
    """Every rank's tensor concatenated along dim 0 in rank order → a new tensor, on every rank (Horovod's
    allgather): the first dims may differ, the dtype and the other dims must match (else ShapeError /
    DTypeError naming every rank's, raised alike on every rank, so none is left waiting). Differentiable:
    the gradient of this rank's rows sums every rank's (every rank must run the backward; Horovod's
    `hvd.allgather` averages them instead)."""
    from distgraph.distributed.nn.functional import allgather_rows  # (it builds on this module)

    return allgather_rows(tensor)


def _allgather(tensor, what, problem=None):
    """(the concatenation, every rank's (shape, dtype) by rank). `problem`: an error with this rank's other
    arguments (or None), exchanged with the shapes: the lowest rank's is raised on every rank, naming it."""
    a = tensor.array
    if a.ndim == 0:
        raise ShapeError(f"{what}: a 0-d tensor has no dim 0 to concatenate along (reshape it to (1,))")
    if _context["world"] == 1:
        if problem is not None:
            raise problem
        return Tensor(a.copy()), [(tuple(a.shape), str(a.dtype))]
    gathered = allgather_object((tuple(a.shape), str(a.dtype), problem))
    for r, (_, _, p) in enumerate(gathered):
        if p is not None:
            raise type(p)(f"{p} (on rank {r})")
    metas = [(shape, dtype) for shape, dtype, _ in gathered]
    ranks = ", ".join(f"rank {r}: {dtype} {shape}" for r, (shape, dtype) in enumerate(metas))
    if len({dtype for _, dtype in metas}) > 1:
        raise DTypeError(f"{what}: the ranks' dtypes differ ({ranks})")
    if len({shape[1:] for shape, _ in metas}) > 1:
        raise ShapeError(f"{what}: the ranks' shapes differ beyond dim 0 ({ranks})")
    xp = namespace(a)
    flat, _ = _gather_bytes(xp.ascontiguousarray(a).reshape(-1).view(xp.uint8), what)
    rows = sum(shape[0] for shape, _ in metas)
    return Tensor(flat.view(a.dtype).reshape((rows, *a.shape[1:]))), metas


def all_gather(tensor_or_list, tensor=None):
    """`all_gather(tensor)`: Horovod's allgather (concatenation along dim 0). `all_gather(tensor_list,
    tensor)`: torch.distributed's form, rank r's tensor copied into tensor_list[r], in place; each entry
    must have the shape that rank sent (ShapeError otherwise, after the gather, on that rank only) and the
    input's dtype (a list of the wrong length or dtype: an error on every rank, before the gather)."""
    if tensor is None:
        return allgather(tensor_or_list)
    out, problem = tensor_or_list, None
    if len(out) != _context["world"]:
        problem = ConfigError(f"all_gather: tensor_list has {len(out)} tensors for {_context['world']} ranks")
    mismatched = [r for r, t in enumerate(out) if t.array.dtype != tensor.array.dtype]
    if problem is None and mismatched:
        r = mismatched[0]
        problem = DTypeError(
            f"all_gather: output tensor must have the same type as input tensor (tensor_list[{r}] is "
            f"{out[r].array.dtype}, the input {tensor.array.dtype})"
        )
    scalar = tensor.array.ndim == 0  # (torch gathers 0-d tensors too: each travels as one row)
    gathered, metas = _allgather(Tensor(tensor.array.reshape(1)) if scalar else tensor, "all_gather", problem)
    start = 0
    for r, (t, (shape, _)) in enumerate(zip(out, metas)):
        sent = shape[1:] if scalar else shape
        if tuple(t.array.shape) != sent:
            raise ShapeError(f"all_gather: tensor_list[{r}] is {tuple(t.array.shape)}, rank {r} sent {sent}")
        t.array[...] = gathered.array[start : start + shape[0]].reshape(sent)
        start += shape[0]
    return out


_NO_OBJECT = object()


def all_gather_object(object_list, obj=_NO_OBJECT):
    """torch's `all_gather_object(object_list, obj)`: every rank's obj into object_list (one entry per rank),
    in place. With one argument, Horovod's allgather_object: → the list."""
    if obj is _NO_OBJECT:
        return allgather_object(object_list)
    gathered = allgather_object(obj)
    if len(object_list) != len(gathered):
        raise ConfigError(f"all_gather_object: object_list has {len(object_list)} entries for {len(gathered)} ranks")
    object_list[:] = gathered
    return object_list
