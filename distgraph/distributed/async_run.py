"""The driver's side of async training on the shared store (`async_store.py`): calls, drops, rejoins.

Policy: the epoch's steps go out in calls of about CALL_SECONDS of steps (every live worker gets the
same call and claims steps from it in the segment until none is left), so the driver hears of
progress about once a second and Ray's per-call cost is spread over many steps. Between two calls
the driver settles membership:

- a worker whose call failed because its process died is dropped (fenced in the segment, so its
  claimed step stays undone) and a replacement actor is started in its bundle;
- a worker whose call has not returned `timeout_s` after its peers' is dropped as stalled; the same
  actor may rejoin once that call returns;
- a worker whose code raised is dropped for good (it would raise again);
- a worker a peer dropped (its process gone, or no push within `timeout_s`) is handled as above.

Steps left undone by a dropped worker are redone first in the next call. A dropped worker gets one
rejoin per run, as a new incarnation: the live workers' store is snapshotted and a new segment is
set up for the new membership from it — a fenced worker that still holds the old segment writes
where nobody reads, so no gradient of a dropped incarnation is ever applied.
"""

import time
from collections import deque

import ray
from ray.exceptions import RayActorError, RayTaskError

from distgraph.distributed.async_store import COLUMNS, MAX_STEPS
from distgraph.distributed.scheduler import (
    CALL_SECONDS,
    FIRST_CALL_STEPS,
    discard,
    start_allowance,
    user_error,
    wait_ready,
)
from distgraph.distributed.shm_mappings import PREFIX
from distgraph.distributed.worker import pack_indices
from distgraph.errors import DistributedError

IDLE_CALLS = 3  # calls in a row that apply nothing with every worker answering: the run cannot go on


class SharedAsyncScheduler:
    """Async runs of `actors` (a list the cluster keeps current, rank order) on shared-store segments."""

    def __init__(self, actors, group, optimizer_name, staleness, timeout_s, on_event, respawn):
        self.actors, self.group, self.optimizer_name = actors, group, optimizer_name
        self.staleness, self.timeout_s, self.on_event, self.respawn = staleness, timeout_s, on_event, respawn
        self.live = set(range(len(actors)))
        self.incarnations = dict.fromkeys(self.live, 0)
        self.returning = {}  # ref ready when a dropped worker may rejoin -> (worker, deadline, its seconds)
        self.rejoined = set()  # workers dropped in this run already: one rejoin per worker per run
        self.generation = self.chunk = 0
        self.step_seconds = None  # wall seconds per step (all workers together) of the last call
        self.on_worker_stats = None  # optional (step, [its statistics]) hook, as DataParallelScheduler's

    def setup(self, state, hypers, members=None):
        """A new segment for `members` (default: the live workers) loaded with `state`
        ({"params", "states", "version"}); every member joins it."""
        self.live = set(range(len(self.actors)) if members is None else members)
        self.generation += 1
        name = f"{PREFIX}{self.group}.async{self.generation}"
        ref = ray.put(state)
        members = sorted(self.live)
        refs = [
            self.actors[w].setup_async.remote(name, members, self.optimizer_name, hypers, self.staleness, ref)
            for w in members
        ]
        wait_ready(refs, self.timeout_s, "workers joining the shared async store")

    def snapshot(self, drop=()):
        """The store's state from a live worker not in `drop` (after fencing `drop` in the segment)."""
        for w in sorted(self.live - set(drop)):
            try:
                return ray.get(self.actors[w].async_snapshot.remote(list(drop)), timeout=self.timeout_s)
            except (RayActorError, RayTaskError, ray.exceptions.GetTimeoutError):
                continue
        raise DistributedError("async: no live worker holds the parameter store any more (every worker was lost)")

    def run(self, batches, on_step, hypers, first=0, hypers_for_step=None):
        """Steps batches[first:] (arrays of sample indices); on_step(step, statistics) once per applied step.
        `hypers_for_step(t)` (a per-step lr schedule): step t's hyperparameters, sent with the call that
        holds step t (a step redone after a drop is sent again with the same)."""
        queue = deque(range(first, len(batches)))
        self.rejoined = set()
        redone = idle = 0
        while queue:
            self._rejoin_returned(hypers)
            n = min(len(queue), self._call_steps())
            steps = [queue.popleft() for _ in range(n)]
            per_step = None if hypers_for_step is None else [hypers_for_step(t) for t in steps]
            live = set(self.live)
            undone = self._call(batches, steps, on_step, hypers, per_step)
            redone += len(undone)
            queue.extendleft(reversed(undone))
            idle = idle + 1 if len(undone) == n and self.live == live else 0
            if idle == IDLE_CALLS:  # every live worker answered, none dropped, and no step was applied
                raise DistributedError(
                    f"async: {IDLE_CALLS} calls in a row applied none of their steps though every live worker "
                    f"({sorted(live)}) answered: the shared store no longer counts them as members"
                )
        if redone:
            self.on_event(f"async: {redone} step(s) redone: their worker was dropped before it pushed them")

    def _call_steps(self):
        if not self.step_seconds:
            return FIRST_CALL_STEPS * max(1, len(self.live))
        return max(len(self.live), min(MAX_STEPS, round(CALL_SECONDS / self.step_seconds)))

    def _call(self, batches, steps, on_step, hypers, step_hypers=None):
        """One call of `steps` on every live worker → the steps left undone."""
        if not self.live:
            raise DistributedError("async: no live worker is left")
        self.chunk += 1
        packed = pack_indices([batches[t] for t in steps])
        calls = {
            self.actors[w].step_async_shared.remote(self.chunk, packed, hypers, step_hypers): w
            for w in sorted(self.live)
        }
        started = time.monotonic()
        results, failed = self._collect(calls, started + self.timeout_s * -(-len(steps) // len(calls)))
        errors = [cause for kind, cause in failed.values() if kind == "RayTaskError"]
        if errors and not results:
            raise DistributedError(f"async: every worker's step raised: {errors[0]}") from errors[0]
        table = self._settle(steps, results, failed)
        done = [k for k in range(len(steps)) if table[k, 0]]
        if done:
            self.step_seconds = (time.monotonic() - started) / len(done)
        for k in done:
            row = dict(zip(COLUMNS, table[k].tolist()))
            stats = {"loss_sum": row["loss_sum"], "count": int(row["count"])}
            if row["correct"] == row["correct"]:  # not NaN: the loss reports correct predictions
                stats["correct"] = row["correct"]
            if self.on_worker_stats is not None:  # with who computed it on which version, and when
                self.on_worker_stats(steps[k], [{**row, **stats}])
            on_step(steps[k], _means(stats))
        return [steps[k] for k in range(len(steps)) if not table[k, 0]]

    def _settle(self, steps, results, failed):
        """Drop the workers whose call failed or that a peer dropped → the call's step table (read after
        the failed ones are fenced in the segment, so it is final)."""
        seen = {ev["rank"]: (w, ev) for w, r in results.items() for ev in r["events"]}  # drops peers made
        claimed = {}
        if failed:
            record = self.snapshot(drop=[w for w in failed if w in self.live])
            table, claimed = record["table"], record["claimed"]
        else:  # the last call back has the fullest record
            table = max((r["table"] for r in results.values()), key=lambda t: t[:, 0].sum())
        for w in sorted(set(failed) | set(seen)):
            kind, cause = failed.get(w, (None, None))
            if w in seen:  # the peer saw why, and where
                peer, ev = seen[w]
                what, step, why = ev["kind"], ev["step"], f"{ev['why']}; seen by worker {peer}"
            elif kind == "stalled":
                what, step, why = (
                    "stalled",
                    claimed.get(w, -1),
                    f"its call was not back {self.timeout_s:g}s after its peers'",
                )
            else:
                what, step, why = "failed", claimed.get(w, -1), kind
            at = f"at step {steps[step]}" if step >= 0 else "between steps"
            self._drop(w, f"worker {w} {what} {at} ({why})", cause)
        return table

    def _collect(self, calls, deadline):
        """→ ({worker: call result}, {worker: (kind, exception or the pending ref)}). A call not
        back `timeout_s` after the first one came back is stalled; so is every call when none is back
        by `deadline` (each step of its share took longer than `timeout_s`)."""
        pending, results, failed = dict(calls), {}, {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for ref, w in pending.items():
                    failed[w] = ("stalled", ref)
                break
            for ref in ready:
                w = pending.pop(ref)
                try:
                    results[w] = ray.get(ref)
                except RayActorError as exc:
                    failed[w] = ("RayActorError", exc)
                except RayTaskError as exc:
                    if user_error(exc) is not None:  # every worker would raise it: no drop and rejoin
                        discard(list(pending))
                        raise user_error(exc) from exc
                    failed[w] = ("RayTaskError", exc)
                deadline = min(deadline, time.monotonic() + self.timeout_s)
        return results, failed

    def _drop(self, w, why, cause):
        """`cause`: the exception of a failed call, the pending ref of a stalled one, None when a peer
        dropped w and its call came back."""
        if w not in self.live:
            return
        self.live.discard(w)
        self.incarnations[w] += 1
        self.on_event(f"{why}; dropped and fenced, staleness bound now over {len(self.live)} live workers")
        if isinstance(cause, RayTaskError):
            if not self.live:
                raise DistributedError(
                    f"async: worker {w}'s step raised and no live worker is left: {cause}"
                ) from cause
            return  # it would raise again: it stays out
        if w in self.rejoined:
            return
        self.rejoined.add(w)
        allowance = self.timeout_s
        if isinstance(cause, RayActorError):  # dead: a replacement, back once it holds the data (and started)
            (_, ready), allowance = self.respawn(w), start_allowance(self.timeout_s)
        elif cause is None:  # its call came back: it is there now
            ready = self.actors[w].ping.remote()
        else:  # stalled: back once its call returns
            ready = cause
        self.returning[ready] = (w, time.monotonic() + allowance, allowance)

    def _rejoin_returned(self, hypers):
        """Admit the dropped workers that can come back, in a new segment loaded from the live store."""
        if not self.returning:
            return
        timeout = 0 if self.live else self.timeout_s
        ready, _ = ray.wait(list(self.returning), num_returns=len(self.returning), timeout=timeout)
        back = []
        for ref in ready:
            w = self.returning.pop(ref)[0]
            try:
                ray.get(ref)
                back.append(w)
            except (RayActorError, RayTaskError) as exc:
                self.on_event(f"worker {w} could not rejoin ({type(exc).__name__}); it stays dropped")
        now = time.monotonic()
        for ref, (w, deadline, allowance) in list(self.returning.items()):
            if now > deadline:
                del self.returning[ref]
                self.on_event(f"worker {w} did not come back within {allowance:g}s; it stays dropped")
        if back:
            record = self.snapshot()
            self.setup(record, hypers, members=self.live | set(back))
            for w in back:
                self.on_event(
                    f"worker {w} rejoined as incarnation {self.incarnations[w]} at version {record['version']}"
                )
        if not self.live:
            raise DistributedError("async: no live worker is left (every dropped worker failed to come back)")


def _means(stats):
    from distgraph.distributed.step import merge_statistics

    return merge_statistics([stats])
