"""The shared parameter store: authoritative parameters and optimizer state, sharded by parameter.

Policy:
- Parameters are assigned to shards whole (never split), greedily by bytes, largest first, so
  shards carry similar load and the assignment is a pure function of the parameter sizes.
- Every update produces a new numbered version. In sync mode the driver applies version v's
  all-reduced gradient exactly once: a shard refuses a gradient for any version but the next one
  (a replayed or duplicated push is answered with the current parameters, never applied twice).
- Each shard keeps the parameters of the version before its current one: when a worker dies between
  two shards' updates of the same step, the replay reads every shard at the same version.
- In async mode (stale-synchronous parallel) workers push gradients computed on version `base`;
  a shard applies them as they come. Membership is fenced by incarnation: each (re)admission of a
  worker has a number, `fence` refuses every incarnation below a floor, and a push also names the
  version its gradient was computed from and is refused when that is more than `max_lag` versions
  old. A refused push changes nothing (it is counted in `rejected`): a gradient from a dropped
  worker, or one too stale, is never applied.
- The update math is `distgraph.optim.functional`'s, on plain arrays, so a store gives the same bits
  as the local optimizer with the same hyperparameters.

`ParameterShard` is a plain class; the runtime wraps it as a Ray actor (tests use it directly too).
"""

import numpy as np

from distgraph.errors import DistributedError


def partition_parameters(nbytes, num_shards):
    """Shard index per parameter: largest first onto the least-loaded shard (ties: lowest index)."""
    num_shards = max(1, min(num_shards, len(nbytes)))
    load = [0] * num_shards
    owner = [0] * len(nbytes)
    for i in sorted(range(len(nbytes)), key=lambda i: (-nbytes[i], i)):
        s = min(range(num_shards), key=lambda s: (load[s], s))
        owner[i] = s
        load[s] += nbytes[i]
    return owner


def _sum_given(grads):
    """Sum of the workers' gradients of one parameter in rank order, leaving out a worker's None (its
    forward did not use it; the others' zeros where it did are the same sum) → None when none gave one."""
    given = [g for g in grads if g is not None]
    if not given:
        return None
    total = np.array(given[0], copy=True)
    for g in given[1:]:
        total += g
    return total


def shard_members(owner, shard):
    return [i for i, s in enumerate(owner) if s == shard]


class ParameterShard:
    """Parameters `indices` (global parameter indices) with their optimizer state and version."""

    def __init__(self, shard_id, indices, arrays, optimizer_name, hyper_by_param, version=0):
        from distgraph.optim.functional import UPDATES

        if optimizer_name not in UPDATES:
            raise DistributedError(f"parameter store: unknown optimizer {optimizer_name!r}; known: {sorted(UPDATES)}")
        self.shard_id = shard_id
        self.indices = list(indices)
        self.params = [np.array(a, copy=True) for a in arrays]
        self.update = UPDATES[optimizer_name]
        self.hyper = [dict(h) for h in hyper_by_param]
        self.state = [{} for _ in self.indices]
        self.version = version
        self.floor = {}  # async: worker -> its lowest incarnation still allowed to push
        self.max_lag = None  # async: a push's base version may trail the current one by at most this
        self.rejected = {"fenced": 0, "stale": 0}
        self.applied = 0
        self.previous = None

    # ---- sync ------------------------------------------------------------------------------------------
    def apply(self, version, owned_grads, lrs=None):
        """Apply the all-reduced gradient of step `version` (→ version + 1) once; return the parameters.

        `owned_grads` is a worker's {shard_id: [arrays]} (only this shard's entry is read), so one
        object from a worker can feed several shards without copies.
        """
        grads = owned_grads[self.shard_id] if isinstance(owned_grads, dict) else owned_grads
        if version < self.version:  # replay of an applied step: answer, do not apply again
            return self.params
        if version > self.version:
            raise DistributedError(
                f"parameter shard {self.shard_id}: gradient for version {version} but the store is at "
                f"version {self.version}; a step was skipped"
            )
        self._apply(grads, lrs)
        return self.params

    def apply_sum(self, version, lrs, *worker_grads):
        """Like `apply`, for workers that did not all-reduce: sum their gradients in rank order first
        (the same order and arithmetic as the shm all-reduce, so the result has the same bits)."""
        parts = [g[self.shard_id] for g in worker_grads]
        return self.apply(version, [_sum_given(grads) for grads in zip(*parts)], lrs)

    # ---- async (stale-synchronous) ----------------------------------------------------------------------
    def push(self, worker, grads, lrs=None, incarnation=0, base=None):
        """Apply the gradient `worker`'s `incarnation` computed on version `base` → (version, params, applied).

        Refused, with the parameters untouched, when that incarnation is fenced or `base` is more than
        `max_lag` versions behind; the caller gets the current parameters either way."""
        refusal = self._refusal(worker, incarnation, base)
        if refusal:
            self.rejected[refusal] += 1
            return self.version, self.params, False
        grads = grads[self.shard_id] if isinstance(grads, dict) else grads
        self._apply(grads, lrs)
        return self.version, self.params, True

    def _refusal(self, worker, incarnation, base):
        if incarnation < self.floor.get(worker, 0):
            return "fenced"
        if base is not None and self.max_lag is not None and self.version - base > self.max_lag:
            return "stale"
        return None

    def fence(self, worker, below=None):
        """Refuse pushes from `worker`'s incarnations below `below` (default: every one admitted so far)."""
        floor = self.floor.get(worker, 0)
        self.floor[worker] = max(floor, floor + 1 if below is None else below)
        return self.floor[worker]

    def admit(self, worker, incarnation):
        """Let `worker` push as `incarnation` (older ones stay fenced) → (version, params) to start from."""
        if incarnation < self.floor.get(worker, 0):
            raise DistributedError(
                f"parameter shard {self.shard_id}: worker {worker} incarnation {incarnation} is fenced "
                f"(lowest allowed: {self.floor[worker]})"
            )
        self.floor[worker] = incarnation
        return self.version, self.params

    def set_max_lag(self, max_lag):
        """The async staleness bound in versions (the scheduler recomputes it when membership changes)."""
        self.max_lag = max_lag

    def _apply(self, grads, lrs):
        if len(grads) != len(self.params):
            raise DistributedError(
                f"parameter shard {self.shard_id}: got {len(grads)} gradients for {len(self.params)} parameters"
            )
        self.previous = (self.version, [p.copy() for p in self.params])  # a replay after a fault may need it
        for k, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:  # no gradient (no worker's forward used it): torch's optimizer skips it too
                continue
            # lrs[k]: an lr, or (a per-step schedule) the step's whole hyperparameters, momentum included
            new = {} if lrs is None else lrs[k] if isinstance(lrs[k], dict) else {"lr": lrs[k]}
            hyper = {**self.hyper[k], **new}
            self.update(p, np.asarray(g), self.state[k], **hyper)
        self.version += 1
        self.applied += 1

    # ---- read / checkpoint ---------------------------------------------------------------------------------
    def get(self):
        return self.version, self.params

    def get_params(self):
        return self.params

    def get_params_at(self, version):
        """Parameters of `version` — the current one or the one before (shards can be one step apart
        when a worker dies between their updates)."""
        if version == self.version:
            return self.params
        if self.previous is not None and self.previous[0] == version:
            return self.previous[1]
        raise DistributedError(
            f"parameter shard {self.shard_id}: version {version} is gone (store is at {self.version})"
        )

    def get_version(self):
        return self.version

    def state_dict(self):
        return {
            "shard_id": self.shard_id,
            "version": self.version,
            "indices": self.indices,
            "params": self.params,
            "state": self.state,
        }

    def load_state_dict(self, sd):
        if list(sd["indices"]) != self.indices:
            raise DistributedError(
                f"parameter shard {self.shard_id}: checkpoint holds parameters {sd['indices']}, shard owns {self.indices}"
            )
        self.version = int(sd["version"])
        self.params = [np.array(a, copy=True) for a in sd["params"]]
        self.state = [
            {k: (np.array(v, copy=True) if hasattr(v, "shape") else v) for k, v in s.items()} for s in sd["state"]
        ]
        return self.version

    def ping(self):
        return self.shard_id

    def pid(self):
        import os

        return os.getpid()
