"""Horovod's elastic API (`hvd.elastic`) for `dg.distributed.launch(fn, workers=N, max_restarts=K)`:

    def fn():                                         # every rank; the launch restarts every rank on a failure
        hvd.init()
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
        state = hvd.elastic.TorchState(model, opt, epoch=0, batch=0)
        state.register_reset_callbacks([on_reset])   # run on a restarted attempt, before sync
        train(state)

    @hvd.elastic.run
    def train(state):
        for state.epoch in range(state.epoch, epochs):
            for state.batch in range(state.batch, batches):
                step(state.epoch, state.batch)
                if (state.batch + 1) % 10 == 0:
                    state.batch += 1                  # (the next batch to run: where a restart resumes)
                    state.commit()
            state.batch = 0

Policy. A State holds named objects with `state_dict()` / `load_state_dict()` (TorchState's model, optimizer,
LR scheduler: distgraph's) and plain attributes (epoch, batch, ...). Horovod's semantics
(https://horovod.readthedocs.io/en/stable/elastic_include.html; horovod/common/elastic.py): `commit()` saves
the state in host memory, `restore()` goes back to the last save, `sync()` gives every rank rank 0's state,
`run(func)` calls `func(state, ...)` after `state.sync()`, and after a reset first runs the callbacks of
`register_reset_callbacks`.

What differs from Horovod. Horovod's workers survive a peer's failure: its `run` catches HorovodInternalError,
restores the last commit from memory and goes on in the same processes, with hosts discovered, added and
removed (HostsUpdatedInterrupt). Here the world size is fixed (no host discovery, no resizing, so
HostsUpdatedInterrupt is never raised), and a peer's death breaks the whole group: the launch stops every rank
and runs fn again on a fresh group (launcher.py, torchrun's policy), so the memory of the processes is gone.
Hence `commit()` also puts the state outside the ranks: rank 0 sends its snapshot (arrays as numpy, pickled)
to a *keeper*, a 0-CPU Ray actor named after the launch's TORCHELASTIC_RUN_ID, under the State's key: its
creation order in the attempt (0 for fn's first State, 1 for its second, ...), the same on every rank and every
attempt as long as fn makes its States in the same order. At a State's first `sync()` of a restarted attempt
(TORCHELASTIC_RESTART_COUNT > 0) rank 0 says whether the keeper holds a commit of it, and if so every rank
loads it instead of broadcasting (rank 0's snapshot is every rank's under data parallelism). Nothing was
committed, or a later `sync()`: rank 0's state is broadcast, as on the first attempt. `run` does not catch
HorovodInternalError: the group it came from is broken, and the launch restarts it. Outside a launch, or with
max_restarts=0, there is no keeper (no attempt could read it); on the last allowed attempt nothing goes to it
(no later attempt could read it): commits stay in memory, as Horovod's.

The keeper's lifetime. An actor dies with the process that created it, and a restart kills every rank, so
it is detached ("detached actors ... must be manually destroyed",
https://docs.ray.io/en/latest/ray-core/actors/terminating-actors.html); it is removed by rank 0 when every
rank's `func` has returned (a barrier first), and by the launch's end however it ended (`drop_keeper(run_id)`
in launcher.py: an error raised at once, a last attempt that fails, the driver interrupted). Left behind only
if the driver's process is killed mid-launch: then `drop_keeper(run_id)` (or the end of the Ray instance)
removes it. A failure after `func` returned and before fn's end restarts without a keeper: that attempt trains
from fn's start.
"""

import copy
import functools
import os

import numpy as np
import ray

from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.distributed import loop
from distgraph.errors import DistgraphError

NAMESPACE = "distgraph"  # the keepers' Ray namespace, whatever the driver's


class HostsUpdatedInterrupt(DistgraphError, RuntimeError):
    """Horovod's signal that hosts were added or removed; never raised here (the world size is fixed)."""


# ---- the states -------------------------------------------------------------------------------------------------
class State:
    """Horovod's State: commit / restore / sync / save, and the callbacks run after a reset."""

    def __init__(self):
        self._reset_callbacks = []
        self._key = _next_key()  # where its commits go in the keeper
        self._synced = False  # (a restarted attempt's first sync loads the keeper's commit)

    def register_reset_callbacks(self, callbacks):
        """Functions to run (in order) when a restarted attempt resets the state, before its sync."""
        self._reset_callbacks.extend(callbacks)

    def on_reset(self):
        for callback in self._reset_callbacks:
            callback()

    def commit(self):
        """save(), and (rank 0, while a restart could read it) the snapshot to the keeper; → when it is there."""
        self.save()
        if _restartable() and loop.rank() == 0:
            _publish(self._key, self._saved)

    def check_host_updates(self):
        """Horovod raises HostsUpdatedInterrupt here when hosts changed: they never do (fixed world size)."""

    def save(self):
        raise NotImplementedError

    def restore(self):
        raise NotImplementedError

    def sync(self):
        raise NotImplementedError


class ObjectState(State):
    """Plain Python values, each keyword an attribute (deep-copied by save and restore)."""

    def __init__(self, **kwargs):
        super().__init__()
        self._objects = {}  # name → an object saved through its state_dict (TorchState's)
        self._attrs = list(kwargs)
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._saved = self._snapshot()

    def save(self):
        """The current state in this process's memory (what restore() goes back to)."""
        self._saved = self._snapshot()

    def restore(self):
        """The last save (commit) back: the attributes and the objects' state, undoing what came after."""
        self._load(self._saved)

    def sync(self):
        """Every rank's state alike: at its first sync of a restarted attempt, its last commit in the keeper
        when rank 0 finds one there (then read by every rank), else rank 0's state (Horovod's broadcast). Every
        rank takes rank 0's path. Saved after, so restore() comes back here."""
        resume, self._synced = _restarted() and not self._synced, True
        committed = _committed(self._key) if resume and loop.rank() == 0 else None
        if resume and loop.broadcast_object(committed is not None, 0):
            snapshot = committed if loop.rank() == 0 else _committed(self._key)
            loop.barrier()  # every rank has read it before rank 0 commits again
        else:
            snapshot = loop.broadcast_object(self._snapshot(), 0)
        self._load(snapshot)
        self._saved = snapshot

    def _snapshot(self):
        """{"attrs": {name: a deep copy}, "objects": {name: its state_dict, arrays as numpy copies}}."""
        return {"attrs": {a: copy.deepcopy(getattr(self, a)) for a in self._attrs},
                "objects": {n: _host(o.state_dict()) for n, o in self._objects.items()}}  # fmt: skip

    def _load(self, snapshot):
        for name, value in snapshot["attrs"].items():
            setattr(self, name, copy.deepcopy(value))
        for name, state in snapshot["objects"].items():
            self._objects[name].load_state_dict(copy.deepcopy(state))


class TorchState(ObjectState):
    """A model, an optimizer, and any keyword whose value has state_dict / load_state_dict (an LR scheduler),
    saved through their state_dicts; the other keywords plain attributes, as ObjectState's."""

    def __init__(self, model=None, optimizer=None, **kwargs):
        values = {**kwargs, "model": model, "optimizer": optimizer}
        handled = {n: v for n, v in values.items() if hasattr(v, "state_dict") and hasattr(v, "load_state_dict")}
        object.__setattr__(self, "_handled", handled)
        for name, value in handled.items():
            object.__setattr__(self, name, value)
        super().__init__(**{n: v for n, v in values.items() if n not in handled})
        self._objects = handled
        self._saved = self._snapshot()

    def __setattr__(self, name, value):
        """state.model = another_model: the state follows it (Horovod's handlers do)."""
        if name in self.__dict__.get("_handled", {}):
            self._handled[name] = value
        super().__setattr__(name, value)


def run(func):
    """Horovod's `@hvd.elastic.run`: `func(state, *args, **kwargs)` after `state.sync()`; on a restarted attempt
    the state's reset callbacks run first. At func's return the keeper goes (module docstring)."""

    @functools.wraps(func)
    def wrapper(state, *args, **kwargs):
        if _restarted():
            state.on_reset()
        state.sync()
        result = func(state, *args, **kwargs)
        if _attempt()[1] > 0:  # (a launch with restarts: an earlier attempt may have started a keeper)
            loop.barrier()  # every rank is done with it
            if loop.rank() == 0:
                drop_keeper()
        return result

    return wrapper


# ---- the keeper: the last commit, outside the ranks --------------------------------------------------------------
def _attempt():
    """(this attempt's restart count, the launch's max_restarts); (0, 0) outside a launch."""
    if not loop.is_launched():
        return 0, 0
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)), int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0))


def _restarted():
    return _attempt()[0] > 0


def _restartable():
    """Whether a later attempt could read a commit (so it goes to the keeper)."""
    restart, most = _attempt()
    return restart < most


_made = {"attempt": None, "count": 0}  # the States made in this process's attempt (for their keys)


def _next_key():
    """A new State's key in the keeper: how many States this attempt made before it (the same on every rank and
    attempt, fn making them in the same order)."""
    attempt = os.environ.get("TORCHELASTIC_RUN_ID"), os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if _made["attempt"] != attempt:
        _made.update(attempt=attempt, count=0)
    _made["count"] += 1
    return _made["count"] - 1


def keeper_name(run_id=None):
    """The keeper's actor name (in NAMESPACE) for the launch `run_id` (default: this rank's launch)."""
    return f"hvd-elastic-{run_id or os.environ['TORCHELASTIC_RUN_ID']}"


class _Keeper:
    """Each State's last commit by its key, as rank 0's pickle (bytes: a copy of its own, whatever happens to
    rank 0)."""

    def __init__(self):
        self.blobs = {}

    def put(self, key, blob):
        self.blobs[key] = blob
        return len(blob)

    def get(self, key):
        return self.blobs.get(key)


@functools.cache
def _keeper_class():
    return ray.remote(num_cpus=0, max_restarts=0)(_Keeper)


def _timeout():
    return loop._context.get("timeout_s") or 120.0


def _publish(key, snapshot):
    """The snapshot into this launch's keeper (started at the first commit) under `key`, waited for."""
    options = dict(name=keeper_name(), namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
    keeper = _keeper_class().options(**options).remote()
    ray.get(keeper.put.remote(key, ray.cloudpickle.dumps(snapshot)), timeout=_timeout())


def _committed(key):
    """The keeper's last commit under `key`, or None (nothing committed under it in an earlier attempt)."""
    try:
        keeper = ray.get_actor(keeper_name(), namespace=NAMESPACE)
    except ValueError:
        return None
    blob = ray.get(keeper.get.remote(key), timeout=_timeout())
    return None if blob is None else ray.cloudpickle.loads(blob)


def drop_keeper(run_id=None):
    """Kill the keeper of the launch `run_id` (default: this rank's); → whether there was one. Never raises (a
    launch's cleanup: launcher.py)."""
    try:
        ray.kill(ray.get_actor(keeper_name(run_id), namespace=NAMESPACE))
    except Exception:  # noqa: BLE001 - none (ValueError), or Ray gone: nothing to remove
        return False
    return True


def _host(value):
    """A state_dict as plain host data: tensors and device arrays → numpy copies, containers rebuilt."""
    if isinstance(value, Tensor):
        value = value.array
    if hasattr(value, "__array__") and not isinstance(value, np.generic):
        return np.array(to_device(value, "cpu"), copy=True)
    if isinstance(value, dict):
        out = type(value)() if type(value) is not dict else {}
        out.update({k: _host(v) for k, v in value.items()})
        if hasattr(value, "_metadata"):
            out._metadata = copy.deepcopy(value._metadata)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return copy.deepcopy(value)
