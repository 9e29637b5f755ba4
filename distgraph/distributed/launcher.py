"""The driver's side of `dg.distributed.launch`: start the ranks, give each torchrun's environment, run the
function on them, and (torchrun's `--max-restarts`) start every rank again after a failure.

Policy, as torchrun's fault tolerance ("worker failures are handled gracefully by restarting all workers",
https://pytorch.org/docs/stable/elastic/run.html): a rank's failure (an exception in fn, or its process dying)
fails the attempt. Every rank is stopped (a live one may be blocked in a collective with the dead one), the
placement group released, and while `max_restarts` allows, a fresh group of the same size runs fn again from
its start under a fresh all-reduce. Nothing is replayed for fn: it resumes from its own checkpoint, reading the
attempt in TORCHELASTIC_RESTART_COUNT (0 first), as a torchrun script does. With no restarts left the last
attempt's error is raised, naming the rank and the attempt. A ConfigError (the launch's own settings, say gloo
missing for ranks on several nodes, or fn's distgraph ConfigError) is raised at once: no restart changes it. Every wait but fn's own run has the launch's
`timeout_s` (a worker's start: `start_allowance`) and names what it waited for; fn's collectives time out
within it themselves.

Each rank's environment while fn runs (set and restored by loop.LoopWorker.run) holds the variables torchrun
documents for its workers: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (= NODE_RANK: one worker
group per node), ROLE_RANK and ROLE_WORLD_SIZE (one role: the launch's ranks), MASTER_ADDR (the IP of rank 0's
node) and MASTER_PORT (a port that was free there when the attempt started, the same on every rank: the ranks
meet without it, but a library that reads it may listen there), TORCHELASTIC_RESTART_COUNT,
TORCHELASTIC_MAX_RESTARTS and TORCHELASTIC_RUN_ID (one id per launch, kept across its restarts; so
`is_torchelastic_launched()` is True in a rank, as under torchrun).
"""

import os
import socket
import sys
import sysconfig
import uuid

import ray

from distgraph.distributed import runtime
from distgraph.distributed.allreduce import gloo_available
from distgraph.distributed.horovod_elastic import drop_keeper
from distgraph.distributed.loop import LoopWorker, _get
from distgraph.distributed.scheduler import start_allowance
from distgraph.distributed.shm_mappings import remove_group
from distgraph.errors import ConfigError, DistributedError


def launch(fn, workers=2, *, args=(), kwargs=None, address=None, device="cpu", cpus_per_worker=1, bind_to=None,
           allreduce="auto", timeout_s=120.0, max_restarts=0):  # fmt: skip
    """Run `fn(*args, **kwargs)` on `workers` ranks; → the list of what each rank returned, by rank.

    `allreduce="auto"` is the shared-memory segment when all ranks share a node, gloo across nodes (needs
    torch), NCCL with device="cuda". A rank's error is raised here (a distgraph error as itself, anything
    else as a DistributedError naming the rank) as soon as it happens — or, `max_restarts=K` (torchrun's),
    every rank is stopped and fn started again on a fresh group, up to K times (module docstring)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"launch: workers must be a positive int, got {workers!r}")
    if not callable(fn):
        raise ConfigError(f"launch: fn must be callable, got {type(fn).__name__}")
    if not isinstance(args, tuple | list) or not isinstance(kwargs, dict | None):
        raise ConfigError(f"launch: args must be a tuple and kwargs a dict, got {type(args).__name__} and "
                          f"{type(kwargs).__name__}")  # fmt: skip
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ConfigError(f"launch: max_restarts must be an int >= 0, got {max_restarts!r}")
    _send_by_value(fn)
    runtime.init(address, log_to_driver=True)  # (when it starts Ray) the ranks' prints show here
    settings = {"device": device, "cpus_per_worker": cpus_per_worker, "bind_to": bind_to, "allreduce": allreduce,
                "timeout_s": timeout_s}  # fmt: skip
    run_id = uuid.uuid4().hex[:12]
    try:
        for restart in range(max_restarts + 1):
            elastic = {"TORCHELASTIC_RESTART_COUNT": restart, "TORCHELASTIC_MAX_RESTARTS": max_restarts,
                       "TORCHELASTIC_RUN_ID": run_id}  # fmt: skip
            attempt = f" (attempt {restart + 1} of {max_restarts + 1})" if max_restarts else ""
            try:
                return _attempt(fn, workers, tuple(args), dict(kwargs or {}), elastic, attempt, **settings)
            except Exception as exc:  # noqa: BLE001 - torchrun restarts after any failure (fn's own ValueError too)
                if restart == max_restarts or isinstance(exc, ConfigError):  # (a setting no restart changes: at once)
                    if max_restarts and not isinstance(exc, DistributedError):  # (a DistributedError's message says)
                        last = f"this the last{attempt} (max_restarts={max_restarts})"
                        exc.add_note(f"launch: every attempt failed, {last}")
                    raise
                print(f"{_one_line(exc)}; restarting all {workers} ranks ({restart + 1}/{max_restarts})",
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        if max_restarts:  # (hvd.elastic's commits: kept outside the ranks only when a restart could read them)
            drop_keeper(run_id)


def _attempt(fn, workers, args, kwargs, elastic, attempt, *, device, cpus_per_worker, bind_to, allreduce, timeout_s):
    """One run of fn on a fresh group of `workers` ranks → what each rank returned. The group is torn down
    after, however it ended: after a failure the other ranks may still wait in the all-reduce, so they are
    stopped, not asked to close. (After a clean close, with keep_workers_s, it is parked instead, and the
    next launch of its shape runs in its processes: process_settings.py says what starts as new there.)"""
    group = runtime.WorkerGroup(
        LoopWorker, workers, device=device, cpus_per_worker=cpus_per_worker, timeout_s=timeout_s, bind_to=bind_to
    )
    name, closed = f"dgl{uuid.uuid4().hex[:12]}", False
    try:
        for r in range(workers):
            group.start(r, r, workers)
        group.bound(start_allowance(timeout_s))  # the workers' first calls include their processes' start
        starting = start_allowance(timeout_s)
        nodes = _get([a.node.remote() for a in group.actors], starting, "starting the workers", attempt)
        master = [group.actors[0].__ray_call__.remote(_master)]
        [(host, port)] = _get(master, timeout_s, "choosing MASTER_PORT on rank 0", attempt)
        backend = _backend(allreduce, device, len(set(nodes)))
        refs = [a.connect.remote(name, backend, device, timeout_s, nodes) for a in group.actors]
        _get(refs, timeout_s, f"joining the {backend} all-reduce", attempt)
        env = {**elastic, "MASTER_ADDR": host, "MASTER_PORT": port}
        refs = [a.run.remote(fn, args, kwargs, env) for a in group.actors]
        results = _get(refs, None, getattr(fn, "__name__", "fn"), attempt)
        _get([a.close.remote() for a in group.actors], timeout_s, "closing the all-reduce", attempt)
        closed = True
        return results
    finally:
        group.shutdown(park=closed)  # (kept for the next launch with keep_workers_s: worker_pool.py)
        remove_group(name)  # the segment, if a stopped rank left it behind


def _master(_actor):
    """(the IP of this node, a TCP port free on it now): run on rank 0, torchrun's MASTER_ADDR and MASTER_PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return ray.util.get_node_ip_address(), s.getsockname()[1]


def _one_line(exc):
    """A failed attempt in one line: a DistributedError's message names the rank and the attempt; the user's own
    error, raised as itself, has them in the note `_get` put on it."""
    text = str(exc).strip().split("\n", 1)[0]
    if isinstance(exc, DistributedError):
        return text  # ("launch: the worker of rank 1 died during train (attempt 1 of 3): ...")
    where = [n.split(", where")[0] for n in getattr(exc, "__notes__", ()) if n.startswith("raised on rank")]
    return f"launch: {type(exc).__name__}: {text}" + (f" ({where[0]})" if where else "")


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
    if not gloo_available():
        raise ConfigError(f"launch: the ranks span {nodes} nodes and need gloo there: pip install torch")
    return "gloo"
