"""Your own training loop across Ray workers, as with Horovod or torch.distributed.

`dg.distributed.launch(train, workers=N)` runs `train(*args)` on N workers (Ray actors in a placement
group, like the Trainer's) and returns what each rank returned. Inside it:

- `rank()`, `world_size()`: this worker's place (0 of 1 outside `launch`, so the script also runs alone);
- `all_reduce(tensors, op="sum"|"mean")`, `broadcast(tensors, src=0)`, `barrier()`: in place, as
  torch.distributed's;
- `DistributedOptimizer(optimizer)`: `step()` first averages every gradient across the ranks (one
  fused all-reduce of them all, Horovod's tensor fusion), then steps;
- `broadcast_parameters(model)`: every rank starts from rank 0's parameters and buffers.

Why: the Trainer covers fit and evaluate, but a GAN, an RL loop or a custom schedule needs its own loop;
Horovod's answer — wrap the optimizer, start from one rank's parameters — changes nothing else in it.
The ranks meet in the same all-reduce as the Trainer's workers: the shared-memory segment on one node,
a gloo group across nodes, NCCL on GPUs (`allreduce.make_allreduce`). Every wait has the launch's
`timeout_s`; a rank that fails ends the launch at once with its error, the others stopped.
"""

import os
import sys
import sysconfig
import uuid

import numpy as np
import ray
from ray.util import collective

from distgraph.autograd.tensor import Tensor
from distgraph.distributed import runtime
from distgraph.distributed.allreduce import OPS, make_allreduce
from distgraph.distributed.scheduler import get_failing_fast, user_error
from distgraph.distributed.shm import remove_group
from distgraph.distributed.worker import _limit_threads
from distgraph.errors import ConfigError, DistributedError

_context = {"rank": 0, "world": 1, "comm": None}  # this process's place; rank 0 of 1 outside a launch


class LoopWorker:
    """One rank of a launch: joins the group's all-reduce, then runs the user's function."""

    def __init__(self, rank, world, cpus):
        _limit_threads(cpus)
        self.rank, self.world = rank, world

    def node(self):
        return ray.get_runtime_context().get_node_id()

    def connect(self, group, backend, device, timeout_s):
        _context.update(rank=self.rank, world=self.world)
        _context["comm"] = make_allreduce(self.rank, self.world, backend, group, timeout_s, device)
        return True

    def run(self, fn, args, kwargs):
        return fn(*args, **kwargs)

    def close(self):
        if _context["comm"] is not None:
            _context["comm"].close()


def launch(fn, workers=2, *, args=(), kwargs=None, address=None, device="cpu", cpus_per_worker=1, bind_to=None,
           allreduce="auto", timeout_s=120.0):  # fmt: skip
    """Run `fn(*args, **kwargs)` on `workers` ranks; → the list of what each rank returned, by rank.

    `allreduce="auto"` is the shared-memory segment when all ranks share a node, gloo across nodes (needs
    torch), NCCL with device="cuda". A rank's error is raised here (a distgraph error as itself, anything
    else as a DistributedError naming the rank) as soon as it happens."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"launch: workers must be a positive int, got {workers!r}")
    if not callable(fn):
        raise ConfigError(f"launch: fn must be callable, got {type(fn).__name__}")
    _send_by_value(fn)
    runtime.init(address, log_to_driver=True)  # (when it starts Ray) the ranks' prints show here
    group = runtime.WorkerGroup(
        LoopWorker, workers, device=device, cpus_per_worker=cpus_per_worker, timeout_s=timeout_s, bind_to=bind_to
    )
    name = f"dgl{uuid.uuid4().hex[:12]}"
    try:
        for r in range(workers):
            group.start(r, r, workers, cpus_per_worker)
        group.bound(timeout_s)
        nodes = _get([a.node.remote() for a in group.actors], timeout_s, "starting the workers")
        backend = _backend(allreduce, device, len(set(nodes)))
        refs = [a.connect.remote(name, backend, device, timeout_s) for a in group.actors]
        _get(refs, timeout_s, f"joining the {backend} all-reduce")
        refs = [a.run.remote(fn, tuple(args), dict(kwargs or {})) for a in group.actors]
        results = _get(refs, None, getattr(fn, "__name__", "fn"))
        _get([a.close.remote() for a in group.actors], timeout_s, "closing the all-reduce")
        return results
    finally:  # after a failure the other ranks may still wait in the all-reduce: stopped, not asked to close
        group.shutdown()
        remove_group(name)  # the segment, if a stopped rank left it behind


def _send_by_value(fn):
    """Ship `fn` by value when it comes from the driver's own files (a module beside the script, a test):
    Ray pickles a module's function by reference, and a worker cannot import a module that is neither
    installed nor under its working directory ("No module named 'train_gan'"). A script's own functions
    (`__main__`) and installed packages' go as Ray sends them."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or not path:
        return
    installed = {os.path.abspath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    if module.__name__.split(".")[0] != "distgraph" and not any(os.path.abspath(path).startswith(p) for p in installed):
        ray.cloudpickle.register_pickle_by_value(module)


def _backend(allreduce, device, nodes):
    if allreduce != "auto":
        return allreduce
    if str(device).startswith("cuda"):
        return "nccl"
    if nodes == 1:
        return "shm"
    if not collective.gloo_available():
        raise DistributedError(f"launch: the ranks span {nodes} nodes and need gloo there: pip install torch")
    return "gloo"


def _get(refs, timeout_s, what):
    """Every result, by rank (the scheduler's fail-fast wait: the first failure raises at once, the other
    calls collected); a rank's error is raised as itself when it is the user's distgraph error, else as a
    DistributedError naming the rank."""
    try:
        return get_failing_fast(refs, timeout_s, f"launch: {what}")
    except ray.exceptions.RayTaskError as exc:
        if user_error(exc) is not None:
            raise user_error(exc) from None
        raise DistributedError(f"launch: {what} failed on rank {_failed_rank(refs)}: {exc.cause!r}") from None
    except ray.exceptions.RayActorError as exc:
        raise DistributedError(f"launch: the worker of rank {_failed_rank(refs)} died during {what}: {exc}") from None


def _failed_rank(refs):
    """The lowest rank whose call has come back with an error."""
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    for r, ref in enumerate(refs):
        if ref in done:
            try:
                ray.get(ref)
            except Exception:  # noqa: BLE001  (its error is what is being reported)
                return r
    return "?"


# ---- inside a launched function ---------------------------------------------------------------------
def rank():
    return _context["rank"]


def world_size():
    return _context["world"]


def _listed(tensors):
    return list(tensors) if isinstance(tensors, list | tuple) else [tensors]


def all_reduce(tensors, op="sum"):
    """Reduce a tensor or a list of tensors across the ranks, in place (every rank gets the result); op is
    "sum" or "mean". One call reduces the whole list in one fused buffer per dtype."""
    if op not in OPS:
        raise ConfigError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
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
    gives src's values exactly."""
    if not 0 <= src < _context["world"]:
        raise ConfigError(f"broadcast: src {src} is not a rank of {_context['world']}")
    if _context["world"] > 1 and _context["rank"] != src:
        for t in _listed(tensors):
            t.array[...] = 0
    return all_reduce(tensors, "sum")


def barrier():
    """Wait until every rank gets here (an all-reduce of one number)."""
    all_reduce(Tensor(np.zeros(1, np.float32)), "sum")


def broadcast_parameters(model, src=0):
    """Rank `src`'s parameters and buffers (batch-norm statistics) on every rank: call it once before
    training, so every replica starts alike (Horovod's broadcast_parameters)."""
    tensors = list(model.parameters()) + list(getattr(model, "buffers", lambda: [])())
    return broadcast(tensors, src)


class DistributedOptimizer:
    """Wraps an optimizer: `step()` averages the gradients across the ranks, then steps it. Every rank must
    have gradients for the same parameters (as in Horovod); anything else is the wrapped optimizer's."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, closure=None):
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            all_reduce(grads, "mean")
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def __getattr__(self, name):
        return getattr(self.optimizer, name)
