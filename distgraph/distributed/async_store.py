"""The async parameter store in one shared-memory segment of the workers' node: stale-synchronous
parallel with no Ray message inside a step.

Why: with store actors an async step is worker → object store → store actor → object store → driver
→ worker; `distgraph bench async_slow` measured 25–30 ms of that per step around ~10 ms of compute,
so async lost to the sharded sync path that needs no message at all. On one node the workers can
apply their own gradients to the authoritative parameters, in a segment they all map.

Protocol. Every read and write of the shared state holds an flock on the segment's file (the
kernel releases it when its holder dies, so a killed worker never leaves it locked):

- claim: take the next step of the call's batch list, note the version it computes on (`base`), and
  copy that version's parameters into the model. The bound: a worker takes version v only while
  v − base(u) ≤ staleness for every other live worker u that is computing — no worker runs more than
  `staleness` versions ahead of the slowest (versions count every worker's pushes, so a worker
  twice as slow as its peer is 2 versions behind and nobody waits at staleness 2).
- push: copy the current buffer (parameters, optimizer state, the call's step table) into the other
  one, apply the optimizer there (`distgraph.optim.functional`, the local optimizer's math), mark
  the step done with its statistics, then publish by storing version + 1 — one aligned int64 store.
  A worker killed before that store leaves the current buffer as it was: its gradient is not half
  applied, and its step is not marked done without being applied (nor applied without being marked).
- a worker that waits on a peer watches it: a peer whose process is gone, or that has not pushed
  within `timeout_s`, is dropped — its later push is refused, its claimed step stays undone — and
  the wait goes on without it. The driver redoes undone steps and rejoins dropped workers in a new
  segment (a new membership: a fenced worker still holding the old one writes where nobody reads).

Layout (64-byte aligned regions): world (int64, at 0, as `shm_mappings.sweep` reads it), pids, the control
words, per-worker base / live / claimed, and two buffers of [parameters | array state | scalar state |
state present | step table (per step of the current call: done, statistics, rank, versions, times)].
"""

import fcntl
import os
import time

import numpy as np

from distgraph.backend import writeable
from distgraph.distributed.shm import _aligned
from distgraph.distributed.shm_mappings import _ALIGN, Mapping, _alive, _attach, _close_mapping, _own, sweep, view
from distgraph.distributed.zero import common_dtype, flat_layout
from distgraph.errors import DistributedError

MAX_STEPS = 512  # rows of the step table: the most steps one call may carry
# columns of the step table: done flag, statistics, then who computed the step on which version, and
# when (wall clock) it was claimed, finished computing and pushed — the schedule a timeline draws
COLUMNS = ("done", "loss_sum", "correct", "count", "rank", "base", "version", "t_claim", "t_computed", "t_pushed")
VERSION, NEXT, END, CHUNK, READY = range(5)  # control words
_WAIT_S = 200e-6  # a claim that must wait sleeps this long between looks (the peer is mid-step: ms away)
_LIVENESS_EVERY_S = 0.2


def state_schema(update, shapes, dtype, hypers):
    """Per parameter: (array state keys, scalar state keys, the scalar keys holding ints) the update rule
    creates on its first step, found by running it once on zeros (the rules create their state on first
    use, under torch's keys: Adam's "step" is an int, its moments arrays)."""
    schema = []
    for shape, hyper in zip(shapes, hypers):
        state = {}
        update(np.zeros(shape, dtype), np.zeros(shape, dtype), state, **hyper)
        arrays = sorted(k for k, v in state.items() if hasattr(v, "shape"))
        scalars = sorted(k for k in state if k not in arrays)
        schema.append((arrays, scalars, {k for k in scalars if isinstance(state[k], int)}))
    return schema


class _Layout:
    """Byte offsets of every region for `world` workers, `count` parameters elements of `dtype`, `schema`."""

    def __init__(self, world, dtype, shapes, schema):
        self.dtype, self.count = np.dtype(dtype), flat_layout(shapes)[-1]
        sizes = [int(np.prod(s)) for s in shapes]
        self.array_slots, n = [], 0  # per parameter: {key: element offset in the array-state region}
        for (arrays, _, _), size in zip(schema, sizes):
            self.array_slots.append({k: n + j * size for j, k in enumerate(arrays)})
            n += len(arrays) * size
        self.state_count = n
        self.scalar_slots, n = [], 0  # per parameter: {key: index in the scalar region}
        for _, scalars, _ in schema:
            self.scalar_slots.append({k: n + j for j, k in enumerate(scalars)})
            n += len(scalars)
        self.scalar_count = n
        offset = _ALIGN + _aligned(world * 8)  # world at 0, pids at _ALIGN
        self.control, offset = offset, offset + _ALIGN
        self.per_worker, offset = offset, offset + 3 * _aligned(world * 8)
        item = self.dtype.itemsize
        self.buffer_parts = (
            _aligned(self.count * item), _aligned(self.state_count * item), _aligned(n * 8), _aligned(len(shapes) * 8),
            _aligned(MAX_STEPS * len(COLUMNS) * 8),
        )  # fmt: skip
        self.buffers = offset
        self.size = offset + 2 * sum(self.buffer_parts)


class _Buffer:
    """Views of one of the two buffers: flat parameters, array state, scalar state, present flags, step table."""

    def __init__(self, buf, offset, layout, n_params):
        p, s, c, f, _ = layout.buffer_parts
        self.params = view(buf, (layout.count,), layout.dtype, offset)
        self.state = view(buf, (layout.state_count,), layout.dtype, offset + p)
        self.scalars = view(buf, (layout.scalar_count,), np.float64, offset + p + s)
        self.present = view(buf, (n_params,), np.int64, offset + p + s + c)
        self.table = view(buf, (MAX_STEPS, len(COLUMNS)), np.float64, offset + p + s + c + f)

    def copy_to(self, other, steps):
        for name in ("params", "state", "scalars", "present"):
            np.copyto(getattr(other, name), getattr(self, name))
        np.copyto(other.table[:steps], self.table[:steps])


class SharedAsyncStore:
    """Worker `rank`'s handle on the async store of segment `name`, shared by the ranks in `members`.

    The lowest member creates the segment and loads it (`load`); the others attach and wait until it
    is loaded. `params` are the worker's model Parameters: a claim copies a version into them."""

    def __init__(self, name, rank, world, members, params, optimizer_name, hypers, staleness, timeout_s):
        from distgraph.optim.functional import UPDATES

        dtype = common_dtype([p.array for p in params])
        if dtype is None:
            raise DistributedError(
                "shared async store: parameters of one floating dtype are needed, got "
                f"{sorted({str(p.array.dtype) for p in params})}"
            )
        self.name, self.rank, self.world, self.timeout_s = name, rank, world, timeout_s
        for p in params:  # a claim writes into them (a model from Ray's object store arrives read-only)
            if not writeable(p.array):
                p.array = np.array(p.array, copy=True)
        self.params, self.shapes = params, [p.array.shape for p in params]
        self.offsets = flat_layout(self.shapes)
        self.update, self.hypers, self.staleness = UPDATES[optimizer_name], [dict(h) for h in hypers], staleness
        self.step_hypers = None  # per call: one set of hypers per step (a per-step lr schedule), else None
        self.schema = state_schema(self.update, self.shapes, dtype, self.hypers)
        self.layout = layout = _Layout(world, dtype, self.shapes, self.schema)
        self.creator = rank == min(members)
        if self.creator:
            sweep()
            self.shm = Mapping(name=name, create=True, size=layout.size)
            self._finalizer = _own(self, name)
        else:
            self.shm = _attach(name, layout.size, timeout_s)
            self._finalizer = None
        buf = self.shm.buf
        self.world_word = view(buf, (1,), np.int64, 0)
        self.pids = view(buf, (world,), np.int64, _ALIGN)
        self.control = view(buf, (8,), np.int64, layout.control)
        stride = _aligned(world * 8)
        self.base, self.live, self.claimed = (
            view(buf, (world,), np.int64, layout.per_worker + k * stride) for k in range(3)
        )
        part = sum(layout.buffer_parts)
        self.buffers = [_Buffer(buf, layout.buffers + k * part, layout, len(params)) for k in range(2)]
        self.lock_fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        self.events = []  # the peers this handle dropped in the current call
        self.pids[rank] = os.getpid()
        if self.creator:
            self.world_word[0] = world
            self.base[:] = self.claimed[:] = -1
            self.live[list(members)] = 1

    @property
    def version(self):
        return int(self.control[VERSION])

    # ---- setup and snapshot -----------------------------------------------------------------------------
    def load(self, arrays, states, version):
        """The creator: start from full parameter `arrays`, optimizer `states` (one dict per parameter,
        torch's keys) and `version`; then the other members' `wait_loaded` returns."""
        current = self.buffers[int(version) % 2]
        for i, a in enumerate(arrays):
            np.copyto(self._param(current, i), np.asarray(a).reshape(self.shapes[i]))
            if states[i]:
                self._store_state(current, i, dict(states[i]))
        self.control[VERSION] = int(version)
        self.control[READY] = 1

    def wait_loaded(self):
        deadline = time.monotonic() + self.timeout_s
        while not self.control[READY]:
            if time.monotonic() > deadline:
                raise DistributedError(f"shared async store {self.name!r}: not loaded within {self.timeout_s}s")
            time.sleep(0.001)

    def snapshot(self, drop=()):
        """Drop `drop` (their later pushes are refused), then → {version, params, states, table, live,
        claimed}: the state a driver pulls, and the record of the current call's steps and claims."""
        with self._locked():
            for u in drop:
                self._drop(u)
            v = int(self.control[VERSION])
            current = self.buffers[v % 2]
            return {
                "version": v,
                "params": [self._param(current, i).copy() for i in range(len(self.shapes))],
                "states": [self._load_state(current, i, copy=True) for i in range(len(self.shapes))],
                "table": current.table[: int(self.control[END])].copy(),
                "live": [int(u) for u in np.flatnonzero(self.live)],
                "claimed": {u: int(self.claimed[u]) for u in range(self.world)},
            }

    # ---- a call: claim, compute, push until its steps are taken ------------------------------------------
    def run(self, chunk, batches, compute, hypers=None, step_hypers=None):
        """Steps of call `chunk` until none is left to claim (or this worker was dropped).

        `compute(indices)` → (gradients, statistics). `step_hypers[t]` (a per-step lr schedule): the
        hyperparameters step t of the call is applied with, whoever claims it. Returns {"events": drops
        this worker made, "table": the steps' record when it stopped, "pushed": its applied steps}."""
        if hypers is not None:
            self.hypers = [dict(h) for h in hypers]
        self.step_hypers = step_hypers
        self.events, pushed = [], 0
        with self._locked():
            if self.control[CHUNK] < chunk:  # the first arrival opens the call's steps
                if len(batches) > MAX_STEPS:
                    raise DistributedError(
                        f"shared async store: {len(batches)} steps in one call (at most {MAX_STEPS})"
                    )
                self.control[CHUNK], self.control[NEXT], self.control[END] = chunk, 0, len(batches)
                self._current().table[: len(batches)] = 0
        while (t := self._claim()) is not None:
            claimed_at = time.time()
            try:
                grads, stats = compute(batches[t])
            except BaseException:  # its error goes to the driver; the peers must not wait for its push
                with self._locked():
                    self._drop(self.rank)
                raise
            pushed += self._push(t, grads, stats, claimed_at)
        with self._locked():
            table = self._current().table[: int(self.control[END])].copy()
        return {"events": self.events, "table": table, "pushed": pushed}

    def _claim(self):
        watch = {}  # peer waited on -> (its base then, waited on since, liveness last checked)
        while True:
            with self._locked():
                if not self.live[self.rank] or self.control[NEXT] >= self.control[END]:
                    return None
                v = int(self.control[VERSION])
                behind = [
                    u for u in range(self.world)
                    if u != self.rank and self.live[u] and 0 <= self.base[u] < v - self.staleness
                ]  # fmt: skip
                if not behind:
                    t = int(self.control[NEXT])
                    self.control[NEXT] = t + 1
                    self.base[self.rank], self.claimed[self.rank] = v, t
                    current = self.buffers[v % 2]
                    for i, p in enumerate(self.params):
                        np.copyto(p.array, self._param(current, i))
                    return t
                bases = {u: int(self.base[u]) for u in behind}
            self._watch(bases, watch)
            time.sleep(_WAIT_S)

    def _watch(self, bases, watch):
        """Drop a peer we wait on whose process is gone or that has not pushed within timeout_s."""
        now = time.monotonic()
        for u, b in bases.items():
            if watch.get(u, (None,))[0] != b:
                watch[u] = (b, now, now)
            _, since, checked = watch[u]
            if now - checked < _LIVENESS_EVERY_S:
                continue
            watch[u] = (b, since, now)
            gone = not _alive(int(self.pids[u]))
            if gone or now - since > self.timeout_s:
                with self._locked():
                    if self.live[u] and self.base[u] == b:
                        step = int(self.claimed[u])
                        self._drop(u)
                        why = "its process exited" if gone else f"it did not push within {self.timeout_s:g}s"
                        self.events.append(
                            {"rank": u, "step": step, "kind": "failed" if gone else "stalled", "why": why}
                        )

    def _push(self, t, grads, stats, claimed_at=np.nan):
        computed_at = time.time()
        with self._locked():
            if not self.live[self.rank]:
                return 0  # dropped meanwhile: refused; the step stays undone
            v = int(self.control[VERSION])
            current, nxt = self.buffers[v % 2], self.buffers[(v + 1) % 2]
            current.copy_to(nxt, int(self.control[END]))
            hypers = self.hypers if self.step_hypers is None else self.step_hypers[t]
            for i, g in enumerate(grads):
                if g is None:  # unused by the worker's forward: no gradient, no update (as torch's optimizer)
                    continue
                state = self._load_state(nxt, i)
                self.update(self._param(nxt, i), np.asarray(g), state, **hypers[i])
                self._store_state(nxt, i, state)
            nxt.table[t] = (
                1.0, stats["loss_sum"], stats.get("correct", np.nan), stats["count"], self.rank, self.base[self.rank],
                v + 1, claimed_at, computed_at, time.time(),
            )  # fmt: skip
            self.base[self.rank], self.claimed[self.rank] = -1, -1
            self.control[VERSION] = v + 1  # publish
            return 1

    def _param(self, buffer, i):
        """Parameter i of `buffer`, shaped: a view."""
        return buffer.params[self.offsets[i] : self.offsets[i + 1]].reshape(self.shapes[i])

    def _current(self):
        return self.buffers[int(self.control[VERSION]) % 2]

    def _drop(self, u):
        self.live[u] = 0
        self.base[u] = -1

    # ---- optimizer state in a buffer ----------------------------------------------------------------------
    def _load_state(self, buffer, i, copy=False):
        if not buffer.present[i]:
            return {}
        size = self.offsets[i + 1] - self.offsets[i]
        state = {}
        for k, off in self.layout.array_slots[i].items():
            view = buffer.state[off : off + size].reshape(self.shapes[i])
            state[k] = view.copy() if copy else view
        ints = self.schema[i][2]
        for k, j in self.layout.scalar_slots[i].items():
            state[k] = int(buffer.scalars[j]) if k in ints else float(buffer.scalars[j])
        return state

    def _store_state(self, buffer, i, state):
        if not state:
            return
        arrays, scalars = self.layout.array_slots[i], self.layout.scalar_slots[i]
        unknown = sorted(set(state) - set(arrays) - set(scalars))
        if unknown:
            raise DistributedError(
                f"shared async store: parameter {i}'s optimizer state has keys {unknown} its first step did not "
                f"create (known: {sorted(arrays) + sorted(scalars)}); hyperparameters that add state mid-run "
                "need allreduce='store'"
            )
        size = self.offsets[i + 1] - self.offsets[i]
        for k, off in arrays.items():
            target = buffer.state[off : off + size]
            if k in state and not np.shares_memory(state[k], target):
                np.copyto(target, np.asarray(state[k]).reshape(-1))
        for k, j in scalars.items():
            if k in state:
                buffer.scalars[j] = state[k]
        buffer.present[i] = 1

    # ---- plumbing -------------------------------------------------------------------------------------------
    def _locked(self):
        return _FileLock(self.lock_fd)

    def close(self):
        """Unmap; the creator also removes the name. Idempotent."""
        if self.shm is None:
            return
        os.close(self.lock_fd)
        self.world_word = self.pids = self.control = self.base = self.live = self.claimed = None
        self.buffers = []
        if self._finalizer is not None:
            self._finalizer()
        _close_mapping(self.shm)
        self.shm = None


class _FileLock:
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
