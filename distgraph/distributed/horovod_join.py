"""Horovod's `hvd.join()`: a rank that has run out of data serves its peers' collectives until every rank
has joined, then every rank gets the rank that joined last.

    for batch in my_batches:          # rank 0: 5 batches, rank 1: 3
        loss = step(batch)            # opt.step(): hvd.DistributedOptimizer's all-reduce
        hvd.allreduce(loss.detach())
    last = hvd.join()                 # rank 1 serves rank 0's last two steps with zeros; → 0 on both

Policy. Every collective of horovod.py over the global set, and hvd.DistributedOptimizer's gradient
all-reduce, first takes part in a *round*: one sum all-reduce of one int64 per rank saying where the rank
is: WORKING (about to run this collective), JOINING (its first round in join()), JOINED (in join() since an
earlier round). All WORKING, the common case: the collective runs as it always did, one small all-reduce
dearer. Otherwise the ranks also gather what each working rank is about to run (its request: the op, its
tensors' shapes, dtypes and devices, its options; a joined rank sends None), and `decide` (pure) gives every
rank the same answer:

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

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
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


def _round(code, what):
    """Every rank's code (WORKING / JOINING / JOINED), by rank: one sum all-reduce of one int64 per rank."""
    ctx = loop._context
    codes = np.zeros(ctx["world"], np.int64)
    codes[ctx["rank"]] = code
    return [int(c) for c in to_device(loop._reduce_sum(to_device(codes, ctx["device"]), what), "cpu")]


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


def negotiate(what, request):
    """On a working rank, before the collective `what`: its round; `request()` (built only when a rank has
    joined) is what the joined ranks serve, or a refusal, raised here as on every working rank."""
    codes = _round(WORKING, f"{what} (its join round)")
    if not any(codes):
        return
    action, detail = decide(loop.allgather_object(request()))
    if action == "refuse":
        raise DistributedError(detail)


def _process_set(signature, args, kwargs):
    return signature.bind(*args, **kwargs).arguments.get("process_set")


def served(fn):
    """Horovod's op `fn`, whose joined ranks run it on zeros (see the module's docstring)."""
    signature = inspect.signature(fn)
    _SERVED[fn.__name__] = fn

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _in_rounds(_process_set(signature, args, kwargs)):
            negotiate(fn.__name__, lambda: {
                "what": fn.__name__, "args": _described(args), "kwargs": {k: _described(v) for k, v in kwargs.items()},
                "differentiable": _needs_grad(args) or _needs_grad(list(kwargs.values())),
            })  # fmt: skip
        return fn(*args, **kwargs)

    return call


def refused(kind):
    """Horovod's op, refused on every working rank while a rank has joined (REFUSED[kind]'s words)."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if _in_rounds(_process_set(signature, args, kwargs)):
                negotiate(fn.__name__, lambda: {"what": fn.__name__, "refused": kind})
            return fn(*args, **kwargs)

        return call

    return wrap


def join(device=-1):
    """This rank is out of data: serve the other ranks' collectives (zeros into their all-reduces) until every
    rank has joined → the rank that joined last, on every rank (Horovod's). `device` is taken for Horovod's
    signature: the zeros go where the working ranks' tensors are."""
    if not _in_rounds():
        return loop.rank()
    me, code = loop.rank(), JOINING
    while True:
        codes = _round(code, f"join (rank {me} joined; waiting for the other ranks' next collective or join())")
        code = JOINED
        if all(codes):
            return max(r for r, c in enumerate(codes) if c == JOINING)
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


@functools.cache
def _joinable_for(optimizer_class):
    """hvd.DistributedOptimizer for `optimizer_class`: a subclass of both, named after the wrapped one."""
    if issubclass(optimizer_class, DistributedOptimizer):
        return optimizer_class
    return type(optimizer_class.__name__, (DistributedOptimizer, optimizer_class), {"__module__": __name__})
