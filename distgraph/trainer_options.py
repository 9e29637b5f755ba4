"""The Trainer's options, checked in one place: by `dg.Trainer(...)` and by a YAML config's `trainer:`
section (`config.validate`, before the data is loaded or the model built), so both say the same thing
about the same mistake — `Trainer: staleness must be ...` or `digits.yaml: trainer.staleness must be ...`.

Options that only make sense together are checked together here too (async or elastic workers without
Ray, the nccl all-reduce without a GPU), so such a run fails at once with a sentence, not after Ray has
started workers that then fail one by one.
"""

import inspect
import math
import numbers
import os

from distgraph.distributed.affinity import check_bind_to
from distgraph.distributed.allreduce import BACKENDS
from distgraph.errors import ConfigError

STRATEGIES = ("data", "branches", "pipeline", "auto")


def _is_int(v):
    """An int or a numpy integer (numpy code computes batch sizes as np.int64), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_positive(v):
    """A finite number > 0 (`v <= 0` alone lets NaN through, and inf sizes a bucket or a wait as nothing can)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf


def check_options(opts, where="Trainer", prefix=""):
    """Raise a ConfigError for the first invalid option of `opts` (name -> value; an absent one takes the
    Trainer's default), naming `where` and `prefix + name`; returns (workers, elastic, bind_to): the worker
    count to start, (min, max) when `workers` asks for elastic training (else None), and bind_to as the
    Trainer keeps it (None for "none")."""

    def fail(name, text):
        raise ConfigError(f"{where}: {prefix}{name}{'' if text.startswith('=') else ' '}{text}")

    backend, sync = opts.get("backend", "local"), opts.get("sync", "sync")
    if backend not in ("local", "ray"):
        fail("backend", f"must be 'local' or 'ray', got {backend!r}")
    if sync not in ("sync", "async"):
        fail("sync", f"must be 'sync' or 'async', got {sync!r}")
    strategy = opts.get("strategy", "data")
    if strategy not in STRATEGIES:
        fail("strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    workers, elastic = opts.get("workers", 1), None
    if isinstance(workers, tuple | list) and len(workers) == 2 and all(_is_int(w) for w in workers):
        if not 1 <= workers[0] <= workers[1] or backend != "ray":
            fail("workers", f"=(min, max) (elastic) needs 1 ≤ min ≤ max and backend='ray', got {tuple(workers)}")
        elastic, workers = tuple(int(w) for w in workers), workers[1]
    if not _is_int(workers) or workers < 1:
        fail("workers", f"must be a positive int or (min, max), got {workers!r}")
    allreduce = opts.get("allreduce", "auto")
    if allreduce not in BACKENDS + ("store",):  # "store": the store actors sum (several nodes; set by auto)
        fail("allreduce", f"must be one of {', '.join(BACKENDS)}, got {allreduce!r}")
    device = str(opts.get("device", "cpu"))
    if allreduce == "nccl" and not device.startswith("cuda"):
        fail(
            "allreduce",
            f"='nccl' reduces GPU arrays and needs device='cuda', got device={device!r} (use 'shm' or 'gloo')",
        )
    if allreduce in ("shm", "gloo") and device.startswith("cuda"):  # (Ray's gloo group takes numpy/torch only)
        fail(
            "allreduce",
            f"={allreduce!r} reduces host (numpy) arrays and cannot run with device={device!r} (GPU arrays): use "
            "'nccl' or 'auto'",
        )
    staleness = opts.get("staleness", 2)
    if not _is_int(staleness) or staleness < 0:
        fail("staleness", f"must be an int ≥ 0 (versions a worker may run ahead), got {staleness!r}")
    bucket_mb = opts.get("bucket_mb", 25)
    if not _is_positive(bucket_mb):
        fail("bucket_mb", f"must be a positive number of MiB, got {bucket_mb!r}")
    cpus = opts.get("cpus_per_worker", 1)  # 0 divided the free CPUs by zero (elastic) and reserved none
    if not _is_positive(cpus):
        fail("cpus_per_worker", f"must be a positive number of CPUs (Ray's num_cpus per worker), got {cpus!r}")
    timeout_s = opts.get("timeout_s", 120.0)  # a wait of ≤ 0 s gives up before any worker can answer
    if not _is_positive(timeout_s):
        fail("timeout_s", f"must be a positive number of seconds, got {timeout_s!r}")
    max_restarts = opts.get("max_restarts", 3)  # Ray sync: worker restarts per fit; -1: no limit (Ray's FailureConfig)
    if not _is_int(max_restarts) or max_restarts < -1:
        fail("max_restarts", f"must be an int ≥ 0 (worker restarts per fit) or -1 (no limit), got {max_restarts!r}")
    micro_batches = opts.get("micro_batches", 4)
    if not _is_int(micro_batches) or micro_batches < 1:
        fail("micro_batches", f"must be a positive int, got {micro_batches!r}")
    for name in ("checkpoint_every", "checkpoint_every_steps"):  # epoch % 0 would fail at the first epoch's end
        every = opts.get(name)
        if every is not None and (not _is_int(every) or every < 1):
            fail(name, f"must be a positive int, got {every!r}")
    folder = opts.get("checkpoint_dir")
    if folder is not None and not isinstance(folder, str | os.PathLike):  # os.fspath's bare TypeError
        fail("checkpoint_dir", f"must be a path (a str or os.PathLike), got {type(folder).__name__} {folder!r}")
    for name in ("checkpoint_every", "checkpoint_every_steps"):  # without a folder they saved nothing, silently
        if opts.get(name) is not None and not folder:
            fail(
                name,
                f"={opts[name]!r} saves into {prefix}checkpoint_dir, which is not set: set it or drop {prefix}{name}",
            )
    if folder is not None:
        problem = _unwritable_folder(os.fspath(folder))
        if problem:  # found now, not after the first epoch's training
            fail("checkpoint_dir", f"{os.fspath(folder)!r} cannot hold checkpoints: {problem}")
    address = opts.get("address")
    if address is not None and backend != "ray":  # it ran locally without a word: the user meant a cluster
        fail("address", f"={address!r} is the Ray cluster to join and needs {prefix}backend='ray', got {backend!r}")
    if backend == "local" and sync == "async":
        fail("sync", "='async' needs backend='ray' (there is nothing to wait for locally)")
    seed = opts.get("seed", 0)  # numpy's default_rng([seed, epoch]) draws the batches: "unrecognized seed string"
    if not _is_int(seed) or seed < 0:
        fail("seed", f"must be an int ≥ 0 (it seeds each epoch's shuffle), got {seed!r}")
    bind_to = check_bind_to(opts.get("bind_to"), where, prefix + "bind_to")
    return int(workers), elastic, bind_to


def checked_parts(model, loss_fn, optimizer):
    """The Trainer's model and loss_fn checked, and its optimizer (built first when it is a function
    parameters -> optimizer) → (the optimizer, whether a factory built it)."""
    if not (callable(model) and hasattr(model, "parameters")):
        raise ConfigError(f"Trainer: model must be a distgraph.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ConfigError(f"Trainer: loss_fn must be callable (e.g. F.cross_entropy), got {type(loss_fn).__name__}")
    factory = callable(optimizer) and not hasattr(optimizer, "param_groups")  # params -> optimizer
    if factory:
        optimizer = optimizer(model.parameters())
    check_optimizer(optimizer, factory=factory)
    _check_optimizes_model(model, loss_fn, optimizer)
    return optimizer, factory


def _check_optimizes_model(model, loss_fn, optimizer):
    """Refuse an optimizer that holds none of the trainable parameters of the model or of a loss module (one
    built on another model, or on a copy of this one): the Trainer sets their gradients and calls `step()`,
    which then updated nothing, and every epoch reported a loss that never moved. (A loss module's own
    parameters, a temperature say, are trained as the model's: an optimizer of those alone is valid.)"""
    owners = [model] + ([loss_fn] if hasattr(loss_fn, "parameters") else [])
    ours = {id(p) for owner in owners for p in owner.parameters() if p.requires_grad}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if ours and held and not any(id(p) in ours for p in held):
        raise ConfigError(
            f"Trainer: the optimizer ({type(optimizer).__name__}) holds {len(held)} parameter(s), none of them the "
            f"model's ({len(ours)} trainable): it was built on another model's parameters, so no step would change "
            "this one; build it on model.parameters() (or pass a function parameters -> optimizer)"
        )


def check_optimizer(optimizer, where="Trainer", factory=False):
    """Refuse what is no optimizer (None, a name, a list of parameters: an AttributeError deep in the check
    below), and an optimizer whose step needs a closure (torch's LBFGS re-evaluates the model several times a
    step): the Trainer computes one gradient per step, on the workers, and calls `step()` with none.
    `factory`: `optimizer` is what the Trainer's optimizer factory returned."""
    if not (hasattr(optimizer, "param_groups") and callable(getattr(optimizer, "step", None))):
        got = f"the optimizer factory returned {type(optimizer).__name__}" if factory else type(optimizer).__name__
        raise ConfigError(
            f"{where}: optimizer must be an optimizer built on the model's parameters (e.g. "
            f"dg.optim.SGD(model.parameters(), lr=0.1)) or a function parameters -> optimizer; got {got}"
        )
    closure = inspect.signature(type(optimizer).step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        name = type(optimizer).__name__
        raise ConfigError(
            f"{where}: {name}.step(closure) evaluates the model several times a step, and the Trainer computes one "
            f"gradient per step; run {name} in a loop of your own (`opt.step(closure)`), or give the Trainer a "
            "first-order optimizer (SGD, Adam, ...)"
        )


def check_fit(epochs, batch_size):
    """`fit`'s own arguments, as ints: epochs is the epoch count to reach (as Keras's, so a resumed run
    continues to it), batch_size the global batch."""
    if not _is_int(epochs) or epochs < 0:
        raise ConfigError(f"Trainer.fit: epochs must be an int ≥ 0 (the epoch count to reach), got {epochs!r}")
    return int(epochs), check_batch_size(batch_size, "Trainer.fit")


def check_batch_size(batch_size, where):
    """batch_size as an int, or a ConfigError naming `where` (0 was a bare range() error in evaluate)."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def syncs_batch_norm(model, workers, sync, allreduce="auto"):
    """Whether `model` has SyncBatchNorm layers whose statistics span several workers. Those sum over the
    replicas of one step, so async workers, which do not step together, and the store exchange, which has no
    all-reduce between the workers, are refused."""
    from distgraph.nn.sync_batchnorm import SyncBatchNorm

    if workers <= 1 or not any(isinstance(m, SyncBatchNorm) for m in model.modules()):
        return False
    if sync == "async":
        raise ConfigError(
            "Trainer: sync='async' cannot run SyncBatchNorm: async workers do not step together, so there is "
            "no global batch to sum statistics over; use sync='sync', or nn.BatchNorm*d layers"
        )
    if allreduce == "store":
        raise ConfigError(
            "Trainer: allreduce='store' cannot run SyncBatchNorm: the workers meet in no all-reduce (the stores "
            "sum their gradients); use allreduce='gloo' across nodes or 'auto' / 'shm' on one node"
        )
    return True


def _unwritable_folder(folder):
    """Why checkpoints cannot be written into `folder` (made on the first save if missing), or None: a file
    in its place or on its way, or a nearest existing folder this process cannot write into."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"{path!r} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"this process may not write into {path!r}"
    return None


STATE_KEYS = ("model", "optimizer", "epoch", "global_step", "seed", "history")  # what `Trainer.state_dict` writes


def check_trainer_state(sd, where):
    """`sd`, or a ConfigError refusing, before anything is loaded, what is no Trainer checkpoint (a model's state_dict saved with dg.save,
    a dict of other things): a bare KeyError came from deep inside `Trainer.load_state_dict`, after it had
    already loaded the model's part of a partial one. `where` names the file or the call."""
    if not isinstance(sd, dict):
        raise ConfigError(f"{where}: not a Trainer checkpoint: it holds a {type(sd).__name__}, not a dict")
    missing = [k for k in STATE_KEYS if k not in sd]
    if missing:
        hint = " (it looks like a model's state_dict: load it with model.load_state_dict)" if "model" in missing else ""
        raise ConfigError(
            f"{where}: not a Trainer checkpoint: missing key(s) {', '.join(map(repr, missing))} of those "
            f"Trainer.save_checkpoint writes ({', '.join(STATE_KEYS)}){hint}"
        )
    if not (isinstance(sd["history"], dict) and {"epochs", "events"} <= set(sd["history"])):
        raise ConfigError(f"{where}: not a Trainer checkpoint: its 'history' lacks 'epochs' and 'events'")
    return sd
