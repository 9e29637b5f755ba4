"""Scheduling data-parallel steps on Ray workers without the driver waiting inside a step.

Policy (sync): step t is submitted as W worker calls whose arguments are the parameter-store
outputs of step t−1 (ObjectRefs), then S store calls whose arguments are the workers' reduced
gradient shards. Ray resolves every dependency; the driver only blocks to read statistics once more
than `max_in_flight` steps are outstanding, which bounds object-store use.

Policy (async, stale-synchronous parallel): each worker runs its own chain — compute on the
parameters it last received, push its gradient to every store shard, continue with what the push
returns. The driver starts a worker's next step only while the version it would compute on is at
most `staleness` versions ahead of the one every other computing worker uses (versions count every
worker's pushes: the issue's bound, the shared store's too, `async_store.py`). A worker that fails or stalls past `timeout_s` is dropped: the
stores fence its incarnation (a late gradient from it is refused), and the bound is recomputed over
the rest. A dropped worker gets one rejoin per run — a replacement actor for a dead one, the same
actor for a stalled one once its late step returns — as a new incarnation, with the store's
current parameters. Every push also names the version its
gradient was computed from; the stores refuse one that trails by more than the bound allows, and
the driver redoes that batch on the fresh parameters the refusal returns.
"""

import time
from collections import deque

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from distgraph.distributed.step import merge_statistics
from distgraph.distributed.worker import pack_indices
from distgraph.errors import DistgraphError, DistributedError


def at_step(streams, t):
    """(base, global step of batches[0]) → (base, global step of batches[t]); None stays None."""
    return None if streams is None else (streams[0], streams[1] + t)


def start_allowance(timeout_s):
    """How long a new worker's first call may take: it includes its process starting (imports, a runtime
    env), which a step's `timeout_s` does not allow for on a loaded or distant node."""
    return max(60.0, timeout_s)


class StepTimeout(DistributedError):
    """Step calls did not come back in time: a hung (not dead) worker. Handled like a dead one."""


class StoreLost(DistributedError):
    """A parameter-store shard died or stopped answering: its state lives only in checkpoints now."""


WORKER_FAILURES = (RayActorError, RayTaskError, StepTimeout)

# Sharded sync steps per Ray call: a call carries about CALL_SECONDS of steps (measured on the calls
# finished so far; FIRST_CALL_STEPS before any), so Ray's per-call cost — ~2 ms of driver, raylet
# and worker CPU here, taken from the workers' cores when they fill the machine — is spread thin,
# while the driver still hears of progress about once a second (a failure it hears of at once).
CALL_SECONDS = 1.0
FIRST_CALL_STEPS = 4
MAX_STEPS_PER_CALL = 64


class DataParallelScheduler:
    def __init__(self, workers, stores, on_event=None, timeout_s=120.0, max_in_flight=2, steps_per_call=None):
        self.workers = workers  # list of actor handles (rank order)
        # a call's wait: the workers' own waits (the all-reduce's barriers) give up after timeout_s and
        # report it; the driver gives them twice that per step the call carries before it calls them hung
        self.timeout_s = timeout_s
        self.stores = stores  # list of store-shard actor handles
        self.max_in_flight = max_in_flight
        self.steps_per_call = steps_per_call  # sharded: fixed steps per call; None sizes calls to CALL_SECONDS
        self.step_seconds = None  # sharded: seconds per step of the last finished call (rank 0's clock)
        self.reduce_in_store = False  # True when workers span nodes: shards sum the workers' gradients
        self.on_event = on_event or (lambda msg: None)
        self.param_refs = [s.get_params.remote() for s in stores]
        self.version = 0
        self.incarnations = {}  # async: worker -> its current incarnation (the stores fence lower ones)
        self.rejoining = {}  # async: ref ready when a dropped worker may rejoin -> (worker, actor, deadline, seconds)
        self.on_worker_stats = None  # optional (step, [statistics of each rank]) hook, e.g. a timeline.Timeline's add

    def set_version(self, version):
        self.version = version

    def discard_pending(self):
        """Collect the store outputs nobody will read (a run that ended in a fault leaves a chain of
        failed ones), so that Ray does not print each as an "Unhandled error" when the refs go."""
        discard(self.param_refs, timeout_s=0.5)
        self.param_refs = []

    # ---- sync ---------------------------------------------------------------------------------------
    def submit_sync(self, indices, lrs, streams=None):
        """Submit one synchronous step; returns the ObjectRefs of the workers' statistics. `streams`:
        (base, global step) of the step's random numbers (`runtime.seed_step`)."""
        world = len(self.workers)
        outs = [w.step.options(num_returns=2).remote(indices, *self.param_refs, streams=streams) for w in self.workers]
        if self.reduce_in_store:
            grads = [o[1] for o in outs]
            self.param_refs = [
                store.apply_sum.remote(self.version, lrs[s], *grads) for s, store in enumerate(self.stores)
            ]
        else:
            self.param_refs = [
                store.apply.remote(self.version, outs[s % world][1], lrs[s]) for s, store in enumerate(self.stores)
            ]
        self.version += 1
        return [o[0] for o in outs]

    def run_sync(self, batches, lrs_for_step, on_step, start=0, stop=None, streams=None):
        """Run batches[start:stop] (arrays of sample indices); `on_step(t, stats)` gets merged statistics in order.
        `streams`: (base, the global step of batches[0]) keys each step's random numbers, or None.

        A failed worker surfaces as WORKER_FAILURES from the statistics of the step it broke."""
        steps = range(start, len(batches) if stop is None else stop)
        submitted = ((t, self.submit_sync(batches[t], lrs_for_step(t), at_step(streams, t))) for t in steps)
        self._pipelined(submitted, self._finish, on_step)
        wait_ready(self.param_refs, 2 * self.timeout_s, "the parameter store's last update")

    def run_sharded(
        self, batches, on_step, start=0, stop=None, hypers=None, snapshot=False, hypers_for_step=None, streams=None
    ):
        """Run batches[start:stop] with the parameter store sharded across the workers: one call per worker
        carries several steps (`_call_steps`) and nothing else is sent (the workers reduce and update between
        themselves), so Ray's per-call cost — driver, raylet and worker CPU on every call — is paid once
        per chunk instead of once per step. `hypers` go with the first call; with `snapshot` the last call
        also returns every rank's `state_chunk(params=False)` after the last step, which this returns
        (else None). `hypers_for_step(t)` (a per-step lr schedule) gives step t's hyperparameters: each
        call carries those of its steps, set before each (a replay asks again and gets the same). `streams`:
        as run_sync's."""
        stop = len(batches) if stop is None else stop
        snapshots = [None]
        steps_in = {}  # a call's first step -> the steps it carries

        def finish(first, refs, on_step):
            snapshots[0] = self._finish_chunk(first, refs, on_step, steps_in.pop(first)) or snapshots[0]

        def calls():
            first = start
            while first < stop:
                last = min(first + self._call_steps(), stop)
                options = {
                    "hypers": hypers if first == start else None,
                    "snapshot": snapshot if last == stop else False,
                    "streams": at_step(streams, first),
                }
                if hypers_for_step is not None:
                    options["step_hypers"] = [hypers_for_step(t) for t in range(first, last)]
                packed = pack_indices(batches[first:last])
                refs = [w.step_sharded.remote(packed, **options) for w in self.workers]
                steps_in[first] = last - first
                self.version += last - first
                yield first, refs
                first = last

        self._pipelined(calls(), finish, on_step)
        return snapshots[0]

    def _pipelined(self, submissions, finish, on_step):
        """Submit (step, refs) from `submissions` while at most `max_in_flight` are unfinished, finishing
        them in order; on a failure, the calls still in flight are collected (`discard`) and it re-raises."""
        pending = deque()
        try:
            for submitted in submissions:
                pending.append(submitted)
                while len(pending) > self.max_in_flight:
                    finish(*pending.popleft(), on_step)
            while pending:
                finish(*pending.popleft(), on_step)
        except BaseException:
            discard([r for _, refs in pending for r in refs])
            raise

    def _call_steps(self):
        if self.steps_per_call:
            return self.steps_per_call
        if not self.step_seconds:
            return FIRST_CALL_STEPS
        return max(1, min(MAX_STEPS_PER_CALL, round(CALL_SECONDS / self.step_seconds)))

    def _finish_chunk(self, first, refs, on_step, steps=1):
        """Report a call's `steps` steps in order; → every rank's snapshot if the call brought one, else None.
        The call is given twice timeout_s per step it carries: a healthy call of slow steps is not a hang."""
        wait_s = 2 * self.timeout_s * steps
        per_rank, snapshots = zip(*get_failing_fast(refs, wait_s, f"steps {first}–{first + steps - 1}"))
        steps = per_rank[0]
        self.step_seconds = (steps[-1]["t_end"] - steps[0]["t_start"]) / len(steps)
        for k, parts in enumerate(zip(*per_rank)):
            if self.on_worker_stats is not None:
                self.on_worker_stats(first + k, list(parts))
            on_step(first + k, merge_statistics(parts))
        return list(snapshots) if snapshots[0] is not None else None

    def _finish(self, t, refs, on_step):
        parts = get_failing_fast(refs, 2 * self.timeout_s, f"step {t}")
        if self.on_worker_stats is not None:
            self.on_worker_stats(t, parts)
        on_step(t, merge_statistics(parts))

    def restart_from(self, workers, version):
        """After a fault: new worker handles; every shard's parameters read at `version` (the failed
        chain of store outputs collected first, so that Ray does not print each as unhandled)."""
        self.discard_pending()
        self.workers = workers
        self.version = version
        self.param_refs = [s.get_params_at.remote(version) for s in self.stores]

    # ---- async ----------------------------------------------------------------------------------------
    def run_async(self, batches, lrs_for_step, on_step, staleness=2, timeout_s=60.0, respawn=None):
        """Stale-synchronous run of `batches` (policy in the module docstring); returns the live worker ids.

        `respawn(w)`, when given, starts a replacement actor for dead worker `w` and returns it with a
        ref that is ready once it holds the data; without it a dead worker stays dropped."""
        run = _AsyncRun(self, staleness, timeout_s, respawn)
        run.execute(batches, lrs_for_step, on_step)
        self.param_refs = [s.get_params.remote() for s in self.stores]
        return run.live


class _AsyncRun:
    """The state of one stale-synchronous run, as plain dicts and sets.

    `live`: admitted workers; `version[w]`: the version w's next step computes on (live workers only);
    `base[w]`: the version of the step w computes now (while it computes); `params[w]`:
    per shard, the (version, parameters) refs w computes its next step on; `computing`: a step's
    statistics ref → (worker, step, indices, start time, gradient ref); `pushing`: the first shard's
    `applied` ref of a finished step's push → (worker, step, indices, statistics, every shard's
    `applied` ref); `returning` (the scheduler's `rejoining`, kept across runs: an epoch may end before a
    replacement actor is up): a ref that is ready when a dropped worker can rejoin → (worker, actor, deadline, its seconds).

    The driver submits a push only once its step has finished: store shards run a caller's calls in
    submission order, so a push waiting on a stalled worker's gradient would hold up everyone's pushes.
    The same order makes every shard see the same sequence of pushes, fences and admissions, so shards
    never disagree about whether a push is applied.
    """

    def __init__(self, sched, staleness, timeout_s, respawn):
        self.sched, self.stores, self.on_event = sched, sched.stores, sched.on_event
        self.staleness, self.timeout_s, self.respawn = staleness, timeout_s, respawn
        self.live, self.version, self.base, self.params = set(), {}, {}, {}
        self.computing, self.pushing, self.returning = {}, {}, sched.rejoining
        self.rejoined = set()  # one rejoin per worker per run: a worker that keeps failing stays out
        self.refused = 0
        for ref, (w, actor, *_) in list(self.returning.items()):
            if w >= len(sched.workers) or sched.workers[w] is not actor:  # the group was resized meanwhile
                del self.returning[ref]
        waiting = {w for w, *_ in self.returning.values()}
        for w in range(len(sched.workers)):
            if w not in waiting:
                self._admit(w)

    def execute(self, batches, lrs_for_step, on_step):
        queue = deque(enumerate(batches))
        while queue or self.computing or self.pushing:
            self._start_steps(queue)
            if not (self.computing or self.pushing or self.returning):
                raise DistributedError("async scheduler: no live worker may start (all workers were dropped)")
            ready, _ = ray.wait([*self.computing, *self.pushing, *self.returning], num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.computing:
                    self._computed(ref, queue, lrs_for_step)
                elif ref in self.pushing:
                    self._pushed(ref, queue, on_step)
                else:
                    self._returned(ref)
            self._check_timeouts(queue)
        if self.refused:
            self.on_event(f"async: {self.refused} step(s) redone on fresh parameters: the store refused them as stale")

    def _start_steps(self, queue):
        busy = {v[0] for v in self.computing.values()} | {v[0] for v in self.pushing.values()}
        for w in sorted(self.live - busy):
            behind = [b for u, b in self.base.items() if u != w]
            if queue and behind and max(behind) - self.version[w] > self.staleness:
                self._refresh(w)  # held back meanwhile: its parameters are too old for the peers' steps now
            if queue and (not behind or self.version[w] - min(behind) <= self.staleness):
                t, indices = queue.popleft()
                self.base[w] = self.version[w]
                shards = [p for _, p in self.params[w]]
                stats, grads = self.sched.workers[w].step_async.options(num_returns=2).remote(indices, *shards)
                self.computing[stats] = (w, t, indices, time.monotonic(), grads)

    def _refresh(self, w):
        """w's next step computes on the store's current parameters. Its own last push set its version; a
        worker held back while the others went on would start that far behind them, past the staleness
        bound (SSP bounds the gap both ways). A shard runs this get after the pushes submitted before it."""
        self.params[w] = [s.get.options(num_returns=2).remote() for s in self.stores]
        self.version[w] = self._from_stores(self.params[w][0][0], f"parameter-store read for worker {w}")

    def _computed(self, ref, queue, lrs_for_step):
        w, t, indices, started, grads = self.computing.pop(ref)
        when = {"rank": w, "base": self.base[w], "t_claim": started, "t_computed": time.monotonic()}
        try:
            stats = ray.get(ref)
        except WORKER_FAILURES as exc:
            raise_user_error(exc)
            queue.appendleft((t, indices))
            dead = isinstance(exc, RayActorError)
            self._drop(w, f"worker {w} failed at step {t}: {type(exc).__name__}", rejoin_on=None if dead else ())
            return
        lrs, incarnation = lrs_for_step(t), self.sched.incarnations[w]
        outs = [
            store.push.options(num_returns=3).remote(w, grads, lrs[s], incarnation, base)
            for s, (store, (base, _)) in enumerate(zip(self.stores, self.params[w]))
        ]
        self.params[w] = [(version, params) for version, params, _ in outs]  # current either way
        self.pushing[outs[0][2]] = (w, t, indices, stats, [applied for _, _, applied in outs], when)

    def _pushed(self, ref, queue, on_step):
        w, t, indices, stats, applied_refs, when = self.pushing.pop(ref)
        *applied, version = self._from_stores(
            [*applied_refs, self.params[w][0][0]], f"parameter-store shards (worker {w}'s push of step {t})"
        )
        self.version[w] = version  # what w computes on next, the push applied or refused
        # the store's version, as a sync run keeps it: a resize between epochs reads every shard there
        # (`restart_from`); it stayed at the run's start, a version the shards no longer hold
        self.sched.version = max(self.sched.version, version)
        self.base.pop(w, None)
        if any(applied) != all(applied):
            raise DistributedError(f"async scheduler: store shards disagree on worker {w}'s push of step {t}")
        if not applied[0]:
            self.refused += 1
            queue.appendleft((t, indices))
            return
        if self.sched.on_worker_stats is not None:  # timeline.AsyncTimeline's record (driver's clock)
            self.sched.on_worker_stats(t, [{**when, "version": version, "t_pushed": time.monotonic()}])
        on_step(t, merge_statistics([stats]))

    def _from_stores(self, refs, what):
        """The store shards' answers; StoreLost when one died or did not answer in time (the Trainer then
        resumes from its last checkpoint, as after a sync run's lost shard)."""
        try:
            return wait_ready(refs, self.timeout_s, what)
        except (RayActorError, DistributedError) as exc:
            raise StoreLost(f"async: {what}: a parameter-store shard is lost ({exc})") from exc

    def _check_timeouts(self, queue):
        now = time.monotonic()
        for w, t, *_, when in self.pushing.values():  # the first shard's answer is what execute() waits on
            if now - when["t_computed"] > self.timeout_s:
                raise StoreLost(
                    f"async: the parameter-store shards did not answer worker {w}'s push of step {t} "
                    f"within {self.timeout_s:g}s"
                )
        for ref, (w, t, indices, started, _) in list(self.computing.items()):
            if now - started > self.timeout_s:
                del self.computing[ref]
                queue.appendleft((t, indices))
                self._drop(w, f"worker {w} stalled more than {self.timeout_s:g}s at step {t}", rejoin_on=ref)
        for ref, (w, _, deadline, allowance) in list(self.returning.items()):
            if now > deadline:
                del self.returning[ref]
                self.on_event(f"worker {w} did not come back within {allowance:g}s; it stays dropped")
                self._require_workers(f"worker {w} did not come back")

    def _drop(self, w, why, rejoin_on):
        """Fence w's incarnation in every shard and recompute the bound over the rest. `rejoin_on`: the
        ref whose completion lets w rejoin (a stalled step), None for a dead worker (a replacement
        actor is started), () when w stays out (its step raised: it would again)."""
        self.live.discard(w)
        self.version.pop(w, None)
        self.base.pop(w, None)
        self.sched.incarnations[w] += 1  # the incarnation a rejoin gets; every earlier one is fenced
        self._from_stores([s.fence.remote(w, self.sched.incarnations[w]) for s in self.stores], "store fence")
        self._bound()
        self.on_event(f"{why}; dropped and fenced, staleness bound now over {len(self.live)} live workers")
        if w not in self.rejoined and rejoin_on != ():
            allowance = self.timeout_s
            if rejoin_on is None and self.respawn is not None:
                actor, rejoin_on = self.respawn(w)
                self.sched.workers[w], allowance = actor, start_allowance(self.timeout_s)
            if rejoin_on is not None:
                self.rejoined.add(w)
                self.returning[rejoin_on] = (w, self.sched.workers[w], time.monotonic() + allowance, allowance)
        self._require_workers(why)

    def _returned(self, ref):
        w = self.returning.pop(ref)[0]
        try:
            ray.get(ref)
        except WORKER_FAILURES as exc:
            self.on_event(f"worker {w} could not rejoin ({type(exc).__name__}); it stays dropped")
            self._require_workers(f"worker {w} could not rejoin")
            return
        version = self._admit(w)
        self.on_event(f"worker {w} rejoined as incarnation {self.sched.incarnations[w]} at version {version}")

    def _admit(self, w):
        """Admit w's current incarnation; returns the version it starts from (the store's current parameters)."""
        incarnation = self.sched.incarnations.setdefault(w, 0)
        self.params[w] = [s.admit.options(num_returns=2).remote(w, incarnation) for s in self.stores]
        self.version[w] = self._from_stores(self.params[w][0][0], f"parameter-store admission of worker {w}")
        self.live.add(w)
        self._bound()
        return self.version[w]

    def _bound(self):
        """The shards' version bound. While one worker computes on version b, the others start steps only
        on versions ≤ b + staleness and every push lifts the pusher's next version to the store's: at most
        staleness + 1 pushes land before every other worker is held, plus one in flight per worker —
        within len(live)·(2·staleness + 2), which leaves room for a peer dropped or admitted meanwhile.
        No push this scheduler makes on time exceeds it."""
        max_lag = len(self.live) * (2 * self.staleness + 2)
        for s in self.stores:
            s.set_max_lag.remote(max_lag)

    def _require_workers(self, why):
        if not self.live and not self.returning:
            raise DistributedError(f"async scheduler: {why}, and no live worker is left")


def raise_user_error(exc):
    """Raise the user's error a worker's step failed with (`user_error`), if that is what `exc` is."""
    if user_error(exc) is not None:
        raise user_error(exc) from exc


# Python's errors of a program's logic: a user's model or loss raising one (batch norm's "expected more than
# 1 value per channel", a bug in a forward) raises it again after any restart, as a distgraph error does
_LOGIC_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError, NotImplementedError)


def user_error(exc):
    """The error a worker's step raised from the user's model, loss, data or settings (a shape that does not
    fit, a NaN loss, a bad option, a ValueError of the model's), else None. It would be raised again after
    any restart, so the driver raises it at once, as local training would, instead of restarting the workers
    (three restarts, then "giving up", with the error buried in a worker traceback)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else None
    if isinstance(cause, DistributedError):
        return None
    return cause if isinstance(cause, (DistgraphError, *_LOGIC_ERRORS)) else None


def get_failing_fast(refs, timeout_s=None, what="step"):
    """ray.get of several refs that raises as soon as any of them failed — not after the others
    finish (a live worker may be blocked in the all-reduce, waiting for the dead one) — and
    StepTimeout, naming `what` and the calls not back, when none comes back for `timeout_s`."""
    remaining = list(refs)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=timeout_s)
        if not ready:
            late = [refs.index(r) for r in remaining]
            discard(remaining, timeout_s=0.0)
            raise StepTimeout(f"{what}: the calls of worker(s) {late} were not back within {timeout_s:g}s (hung?)")
        try:
            ray.get(ready)
        except BaseException:
            # a peer told to give up (its rank's step raised) may fail first: the user's error wins
            users = [e for e in discard(remaining) if user_error(e) is not None]
            if users:
                raise users[0] from None
            raise
    return ray.get(refs)


def discard(refs, timeout_s=2.0):
    """Collect the results of calls a failed step leaves behind, errors included, so that Ray does not
    print each one as an "Unhandled error" when its ref is dropped (into whatever runs next: a CLI's
    one-line error became a page of worker tracebacks). Calls still blocked after `timeout_s` (a peer
    of a dead worker) are left: the restart kills them. → the errors collected."""
    if not refs:
        return []
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    errors = []
    for ref in ready:
        try:
            ray.get(ref)
        except Exception as exc:  # noqa: BLE001  (the failure that matters is being raised already)
            errors.append(exc)
    return errors


def wait_ready(refs, timeout_s, what):
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError as exc:
        raise DistributedError(f"{what} did not answer within {timeout_s}s") from exc
