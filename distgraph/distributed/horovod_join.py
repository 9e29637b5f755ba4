"""Horovod's `hvd.join()`: a rank that has run out of data serves its peers' collectives until every rank
has joined, then every rank gets the rank that joined last.

    for batch in my_batches:          # rank 0: 5 batches, rank 1: 3
        loss = step(batch)            # opt.step(): hvd.DistributedOptimizer's all-reduce
        hvd.allreduce(loss.detach())
    last = hvd.join()                 # rank 1 serves rank 0's last two steps with zeros; → 0 on both

Policy. Every collective of horovod.py over the global set, and hvd.DistributedOptimizer's gradient
all-reduce, first takes part in a *round*: one sum all-reduce of a fixed 8 KiB (`_round`), a row per rank
saying where the rank is: WORKING (about to run this collective), JOINING (its first round in join()),
JOINED (in join() since an earlier round), and which op with which call (a digest of shapes, dtype, op).
All WORKING, the common case: ranks about to run different ops raise at once, naming them; allreduce and
allgather (`_in_its_collective`) also put a tensor that fits in their row, and where every rank's did on the
same call the round *is* the collective (`reduce_in_round`, `gather_in_round`: one all-reduce a call, where
the round, the shapes' check and the data made four or five); otherwise the collective runs as it always
did, its own checks raising where the calls differ, one small all-reduce dearer. Otherwise the ranks also
gather what each working rank is about to run (its request: the op, its tensors' shapes, dtypes and devices,
its options; a joined rank sends None), and `decide` (pure) gives every rank the same answer:

- an all-reduce (hvd.allreduce and the in-place, grouped and async forms built on it, DistributedOptimizer's
  all-reduce, barrier): each joined rank runs the same code on zeros of those shapes, so the ranks make the same
  calls into the communicator, in the same order. Sum: the working ranks' sum. Average: that sum over the
  size of the whole set, joined ranks counted as zeros, as Horovod's: its allreduce ops divide by
  `process_set.controller->GetSize()` ("Averaging happens via postscale_factor",
  horovod/common/ops/{gloo,mpi,nccl}_operations.cc), and its test_horovod_join_allreduce expects
  tensor * (size - 1) / size with one rank joined (test/parallel/test_torch.py). Min / Max / Product meet the
  zeros too: Horovod's joined ranks feed zero tensors to every allreduce.
- allgather, broadcast, alltoall, reducescatter and what horovod.py builds on them (grouped forms, the object
  collectives, broadcast_parameters, broadcast_optimizer_state): every working rank raises Horovod's words
  (controller.cc, ConstructResponse: "Allgather is not supported with Join at this time." ...) as a
  DistributedError (hvd.HorovodInternalError, what Horovod's synchronize raises); joined ranks go on waiting.
- a differentiable all-reduce (a tensor that requires grad, under grad mode): refused the same way — its
  backward is one more collective, run later by autograd outside any round.
- working ranks about to run different ops: refused on each, naming every rank's.

When every rank is in join(), the round says so and join() returns, on every rank, the rank that joined last:
the one in its first round (JOINING); of several, the highest, as Horovod's coordinator reads one cycle's JOIN
requests in rank order and keeps the last (controller.cc, `process_set.last_joined_rank`).

Every wait is a collective of the launch's communicator, under the launch's timeout_s: a rank that never
comes fails its peers there, the error naming the round it waited in. Not served: collectives over another
process set, and collectives outside horovod.py (dg.distributed's, DDP's buckets, SyncBatchNorm's): a joined
rank meets them in its round, not theirs. Call join() after them, as Horovod's join(), which takes no
process_set either.
"""

import functools
import inspect
import math
import threading
import zlib

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace, to_device
from distgraph.distributed import dist_optimizer, loop
from distgraph.distributed.process_sets import global_process_set
from distgraph.errors import DistributedError

WORKING, JOINING, JOINED = 0, 1, 2
REFUSED = {  # Horovod's words (controller.cc, ConstructResponse) for the ops a joined rank does not serve
    "allgather": "Allgather is not supported with Join at this time.",
    "broadcast": "Broadcast is not supported with Join at this time.",
    "alltoall": "Alltoall is not supported with Join at this time.",
    "reducescatter": "Reducescatter is not supported with Join at this time.",
}
HEAD, ROUND_WORDS = 4, 1024  # a round's row: its head's words; every rank's rows together (8 KiB)
_NAMES, _OPS_BY_CODE = {}, {}  # collective kind ↔ the number a round carries for it
_thread = threading.local()  # .pending: the round each running op of _in_its_collective's is to take (None:
# taken), innermost last — per thread, so that two threads' collectives never take each other's rounds
_SERVED = {}  # op name → what a joined rank runs for it (the undecorated op: no round of its own, no trace)


class _Zeros:
    """A tensor of a request, as the joined ranks rebuild it: zeros of its shape and dtype on its device."""

    def __init__(self, tensor):
        self.shape, self.dtype, self.device = tuple(tensor.shape), str(tensor.array.dtype), str(tensor.device)

    def tensor(self):
        return Tensor(to_device(np.zeros(self.shape, self.dtype), self.device))


def _described(value):
    """`value` (an argument) with every tensor, also inside lists and tuples, replaced by its _Zeros (and the
    global process set by None, its other name: a copy of it would not be the registered one)."""
    if value is global_process_set:
        return None
    if isinstance(value, Tensor):
        return _Zeros(value)
    if isinstance(value, list | tuple):
        return type(value)(_described(v) for v in value)
    return value


def _rebuilt(value):
    if isinstance(value, _Zeros):
        return value.tensor()
    if isinstance(value, list | tuple):
        return type(value)(_rebuilt(v) for v in value)
    return value


def _needs_grad(value):
    if isinstance(value, list | tuple):
        return any(_needs_grad(v) for v in value)
    return isinstance(value, Tensor) and value.requires_grad and grad_mode.state.grad_enabled


def _in_rounds(process_set=None):
    """Whether a collective here takes part in join's rounds: the global set of a launch of several ranks."""
    ctx, global_set = loop._context, process_set is None or process_set is global_process_set
    return global_set and ctx["world"] > 1 and ctx["comm"] is not None and ctx.get("subgroup") is None


def _kind(op):
    """The collective an op runs over the wire: its in-place (`broadcast_`) and `_async` forms are the op's."""
    op = op.rstrip("_")
    return op.removesuffix("_async")


def _name_code(op):
    """The op's collective kind as a number a round carries (crc32: Python's hash() differs between
    processes); ranks running different kinds raise (`negotiate`)."""
    kind = _kind(op)
    code = _NAMES.setdefault(kind, zlib.crc32(kind.encode()))
    _OPS_BY_CODE[code] = kind
    return code


def _pending():
    """This thread's stack of rounds to take (see `_thread`)."""
    stack = getattr(_thread, "pending", None)
    if stack is None:
        stack = _thread.pending = []
    return stack


@functools.lru_cache(maxsize=256)
def _digest(call):
    """A call's description (a tuple of str and ints) as a number a round carries; kept, as a step calls the
    same few again and again."""
    return zlib.crc32(repr(call).encode())


def _round(code, op, waits_in, call=None, data=None):
    """One round: every rank's row of an int64 buffer of ROUND_WORDS — its code (WORKING / JOINING / JOINED),
    the op it is about to run, a digest of the call (`call`: shapes, dtype, options) and how many of `data`'s
    bytes ride along (1 + nbytes; 0: none, where they do not fit), then those bytes — by one sum all-reduce,
    each rank writing only its row (x + 0 = x for any bytes), so every rank reads every rank's row. A fixed
    size: a joined rank cannot know the call's. `waits_in` names the wait in a timeout's error.
    → (the rows' heads by rank, [code, op, call digest, carried]; the rows, on the launch's device)."""
    ctx = loop._context
    world, device = ctx["world"], ctx["device"]
    words = max(HEAD, ROUND_WORDS // world // 2 * 2)  # even: every row's bytes start 16-byte aligned (complex128)
    rows = np.zeros((world, words), np.int64)
    rows = rows if device == "cpu" else to_device(rows, device)
    row = rows[ctx["rank"]]
    fits = data is not None and type(data) is type(rows) and data.flags.c_contiguous
    fits = fits and data.nbytes <= (words - HEAD) * 8
    if fits:
        row.view(np.uint8)[HEAD * 8 : HEAD * 8 + data.nbytes] = data.reshape(-1).view(np.uint8)
    head = (code, _name_code(op), 0 if call is None else _digest(call), 1 + data.nbytes if fits else 0)
    row[:HEAD] = namespace(rows).asarray(head, np.int64)
    rows = loop._reduce_sum(rows, waits_in).reshape(world, words)
    heads = rows[:, :HEAD]
    return (heads if device == "cpu" else to_device(heads, "cpu")).tolist(), rows


def decide(requests):
    """The ranks' requests by rank (None: joined) → ("run", the request the joined ranks serve) or ("refuse",
    the message every working rank raises). The same on every rank: each reads the same requests."""
    working = {r: q for r, q in enumerate(requests) if q is not None}
    joined = [r for r, q in enumerate(requests) if q is None]
    ops = {q["what"] for q in working.values()}
    if len(ops) > 1:
        each = ", ".join(f"rank {r}: {q['what']}" for r, q in working.items())
        return (
            "refuse",
            f"join: the working ranks run different collectives ({each}) while rank(s) {joined} have joined",
        )
    first = working[min(working)]
    if first.get("refused"):
        return "refuse", f"{first['what']}: {REFUSED[first['refused']]} (rank(s) {joined} have joined)"
    if first.get("differentiable"):
        return "refuse", (
            f"{first['what']}: a differentiable allreduce is not supported with Join: its backward is a collective "
            f"the joined rank(s) {joined} cannot serve; detach the tensor"
        )
    return "run", first


def negotiate(what, request, call=None, data=None):
    """On a working rank, before the collective `what`: its round (carrying `data`, see `_round`); `request()`
    (built only when a rank has joined) is what the joined ranks serve, or a refusal, raised here as on every
    working rank. → every rank's `data` by rank (flat bytes) when every rank is working on the same call and
    each one's data rode along (the collective is then done: reduce or gather them here), else None (run the
    collective, which checks the calls and raises where they differ)."""
    heads, rows = _round(WORKING, what, f"{what} (its join round)", call, data)
    codes, ops, digests, carried = zip(*heads)
    if any(codes):
        action, detail = decide(loop.allgather_object(request()))
        if action == "refuse":
            raise DistributedError(detail)
        return None
    if ops.count(ops[0]) < len(ops):
        each = ", ".join(f"rank {r}: {_OPS_BY_CODE.get(op, op)}" for r, op in enumerate(ops))
        raise DistributedError(
            f"{what}: the ranks run different collectives ({each}): every rank must call the same Horovod "
            "collectives in the same order"
        )
    if digests.count(digests[0]) < len(digests) and all(digests):  # (every rank reads the same digests)
        _refuse_other_options(what, loop.allgather_object(call))
        return None  # only the tensors differ: the collective names them
    if data is None or not all(carried):
        return None
    sent = rows.view(np.uint8)
    return [sent[r, HEAD * 8 : HEAD * 8 + n - 1] for r, n in enumerate(carried)]


def _refuse_other_options(what, calls):
    """Raise, naming every rank's, where the ranks' `calls` ((options, tensors) each: see `reduce_in_round`)
    differ in their options (the op, the scale factors): no collective checks those, and ranks that differ in
    them would each read the result its own way (Horovod's controller: "Mismatched reduction operation", ...)."""
    options = [c[0] for c in calls]
    if options.count(options[0]) < len(options):
        each = ", ".join(f"rank {r}: {o!r}" for r, o in enumerate(options))
        raise DistributedError(
            f"{what}: the ranks' calls differ in op or scale factors ({each}): every rank must call it with the "
            "same op and pre- and postscale factors (Horovod's 'Mismatched ...' errors)"
        )


def _process_set_of(fn):
    """A reader of fn's `process_set` argument from a call's (args, kwargs), None where not given (or not
    taken): by its place, as inspect's bind would find it, at a tenth of bind's cost (every call asks)."""
    names = list(inspect.signature(fn).parameters)
    if "process_set" not in names:
        return lambda args, kwargs: None
    at = names.index("process_set")
    return lambda args, kwargs: kwargs.get("process_set", args[at] if len(args) > at else None)


def _request_of(what, args, kwargs):
    return {"what": what, "args": _described(args), "kwargs": {k: _described(v) for k, v in kwargs.items()},
            "differentiable": _needs_grad(args) or _needs_grad(list(kwargs.values()))}  # fmt: skip


def _round_first(fn, request):
    """`fn`, its round taken before it runs (`negotiate`); `request(args, kwargs)`: what the joined ranks are told."""
    process_set_of = _process_set_of(fn)
    _name_code(fn.__name__)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _in_rounds(process_set_of(args, kwargs)):
            negotiate(fn.__name__, lambda: request(args, kwargs))
        return fn(*args, **kwargs)

    return call


def served(fn):
    """Horovod's op `fn`, whose joined ranks run it on zeros (see the module's docstring)."""
    _SERVED[fn.__name__] = fn
    return _round_first(fn, lambda args, kwargs: _request_of(fn.__name__, args, kwargs))


def refused(kind):
    """Horovod's op, refused on every working rank while a rank has joined (REFUSED[kind]'s words)."""
    return lambda fn: _round_first(fn, lambda args, kwargs: {"what": fn.__name__, "refused": kind})


def _in_its_collective(fn, request):
    """`fn`, its round taken by its body where it runs its collective (`reduce_in_round`, `gather_in_round`;
    `take_round` on its paths without them): the round carries a small tensor, so the round is the whole
    collective (one all-reduce a call, as dist.all_reduce's). `request(args, kwargs)`: what the joined ranks
    are told. A body that raises before its round (its arguments) skips it: peers with the same arguments
    raise alike."""
    process_set_of = _process_set_of(fn)
    _name_code(fn.__name__)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not _in_rounds(process_set_of(args, kwargs)):
            return fn(*args, **kwargs)
        pending = _pending()
        pending.append((fn.__name__, lambda: request(args, kwargs)))
        depth = len(pending)
        try:
            return fn(*args, **kwargs)
        finally:
            del pending[depth - 1 :]

    return call


def served_in_its_reduce(fn):
    """`served`, its round taken where it reduces (`_in_its_collective`)."""
    _SERVED[fn.__name__] = fn
    return _in_its_collective(fn, lambda args, kwargs: _request_of(fn.__name__, args, kwargs))


def refused_in_its_gather(kind):
    """`refused(kind)`, its round taken where it gathers (`_in_its_collective`)."""
    return lambda fn: _in_its_collective(fn, lambda args, kwargs: {"what": fn.__name__, "refused": kind})


def _round_pending():
    """Whether the `_in_its_collective` op running here has its round still to take."""
    pending = _pending()
    return bool(pending) and pending[-1] is not None


def take_round(call=None, data=None):
    """The round of the `_in_its_collective` op running here, if it has not taken it (see `negotiate`)."""
    if not _round_pending():
        return None
    pending = _pending()
    what, request = pending[-1]
    pending[-1] = None
    return negotiate(what, request, call, data)


def reduce_in_round(array, op, problem, scales=(1.0, 1.0)):
    """`array` summed (op "sum") or averaged ("mean") over every rank in the running op's round, when every
    rank's rode in it (same shape, dtype and op; no joined rank; `problem()`, an error with this rank's
    arguments, None on every rank; `scales`: the call's pre- and postscale factors, which the ranks must share
    too: a call is described as (options the ranks must share, its tensors') for `negotiate`) → the result, reduced here in rank order as the shm all-reduce does (the
    same bits); else None, after the round (none outside one): reduce it as usual, which checks and raises."""
    if not _round_pending():
        return None
    parts = take_round(((op, *scales), (array.shape, array.dtype.str)), None if problem() is not None else array)
    if parts is None:
        return None
    out = parts[0].view(array.dtype).copy()
    for part in parts[1:]:
        out += part.view(array.dtype)
    if op == "mean":
        out /= len(parts)
    return out.reshape(array.shape)


def broadcast_in_round(array, root):
    """Rank `root`'s `array` in the running op's round, when every rank's rode in it (same root, shape and dtype;
    no joined rank) → its bytes exactly, a new array; else None, after the round (none outside one): broadcast it
    as usual, which checks and raises (a root out of range never rides)."""
    if not _round_pending():
        return None
    rides = 0 <= root < loop.world_size()
    parts = take_round(((), ("broadcast", root, array.shape, array.dtype.str)), array if rides else None)
    if parts is None:
        return None
    return parts[root].view(array.dtype).reshape(array.shape).copy()


def gather_in_round(array):
    """Every rank's `array` concatenated along dim 0 (first dims may differ) in the running op's round, when
    every rank's rode in it (same dtype and dims after the first; no joined rank) → (the result, every rank's
    rows by rank); else None, after the round (none outside one): gather it as usual, which checks and raises."""
    if not _round_pending():
        return None
    rides = array.ndim and math.prod(array.shape[1:])  # (a 0-d tensor: allgather's own error; rows of no size)
    parts = take_round(((), (array.dtype.str, array.shape[1:])), array if rides else None)
    if parts is None:
        return None
    parts = [p.view(array.dtype).reshape(-1, *array.shape[1:]) for p in parts]
    return namespace(array).concatenate(parts), [len(p) for p in parts]


def join(device=-1):
    """This rank is out of data: serve the other ranks' collectives (zeros into their all-reduces) until every
    rank has joined → the rank that joined last, on every rank (Horovod's). `device` is taken for Horovod's
    signature: the zeros go where the working ranks' tensors are."""
    if not _in_rounds():
        return loop.rank()
    me, code = loop.rank(), JOINING
    while True:
        waits_in = f"join (rank {me} joined; waiting for the other ranks' next collective or join())"
        heads, _ = _round(code, "join", waits_in)
        code = JOINED
        if all(c for c, _, _, _ in heads):
            return max(r for r, (c, _, _, _) in enumerate(heads) if c == JOINING)
        action, request = decide(loop.allgather_object(None))
        if action == "run":
            _SERVED[request["what"]](*_rebuilt(request["args"]), **_rebuilt(request["kwargs"]))


# ---- hvd.DistributedOptimizer: its gradient all-reduce in the rounds ------------------------------------------
class DistributedOptimizer(dist_optimizer.DistributedOptimizer):
    __doc__ = (
        dist_optimizer.DistributedOptimizer.__doc__
        + """
    Over the global set, its all-reduce takes part in hvd.join()'s rounds (horovod_join.py): a joined rank adds
    zeros, and the average stays over every rank, as Horovod's."""
    )

    def __new__(cls, optimizer, *args, **kwargs):
        return object.__new__(_joinable_for(type(optimizer)) if cls is DistributedOptimizer else cls)

    def synchronize(self):
        params = [p for p in self._params() if p.requires_grad]
        if params and _in_rounds(self.process_set):
            negotiate("DistributedOptimizer", lambda: self._join_request(params))
        return super().synchronize()

    def _join_request(self, params):
        """What synchronize will all-reduce: each gradient (or the zeros it gets), compressed."""
        grads = [p.detach() if p.grad is None else p.grad for p in params]
        sent = [_Zeros(self._compression.compress(g)[0]) for g in grads]
        return {"what": "DistributedOptimizer", "args": (sent, self.op), "kwargs": {}}


_SERVED["DistributedOptimizer"] = loop.all_reduce  # (what its synchronize runs: the gradients, fused, in place)
for _op in ("DistributedOptimizer", "join"):  # named in a peer's error even on a rank that never ran them
    _name_code(_op)


@functools.cache
def _joinable_for(optimizer_class):
    """hvd.DistributedOptimizer for `optimizer_class`: a subclass of both, named after the wrapped one."""
    if issubclass(optimizer_class, DistributedOptimizer):
        return optimizer_class
    return type(optimizer_class.__name__, (DistributedOptimizer, optimizer_class), {"__module__": __name__})
