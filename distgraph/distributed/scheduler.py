"""Scheduling data-parallel steps on Ray workers without the driver waiting inside a step.

Policy (sync): step t is submitted as W worker calls whose arguments are the parameter-store
outputs of step t−1 (ObjectRefs), then S store calls whose arguments are the workers' reduced
gradient shards. Ray resolves every dependency; the driver only blocks to read statistics once more
than `max_in_flight` steps are outstanding, which bounds object-store use.

Policy (async, stale-synchronous parallel): each worker runs its own chain — compute on the
parameters it last received, push its gradient to every store shard, continue with what the push
returns. The driver starts a worker's next step only while that worker is at most `staleness` steps
ahead of the slowest live worker. A worker that fails or stalls past `timeout_s` is dropped: the
stores fence it (a late gradient from it is ignored), and the bound is recomputed over the rest.
"""

import time
from collections import deque

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from distgraph.distributed.step import merge_statistics
from distgraph.errors import DistributedError

WORKER_FAILURES = (RayActorError, RayTaskError)


class DataParallelScheduler:
    def __init__(self, workers, stores, max_in_flight=2, on_event=None):
        self.workers = workers  # list of actor handles (rank order)
        self.stores = stores  # list of store-shard actor handles
        self.max_in_flight = max_in_flight
        self.reduce_in_store = False  # True when workers span nodes: shards sum the workers' gradients
        self.on_event = on_event or (lambda msg: None)
        self.param_refs = [s.get_params.remote() for s in stores]
        self.version = 0
        self.on_worker_stats = None  # optional (step, [statistics of each rank]) hook, e.g. a timeline.Timeline's add

    def set_version(self, version):
        self.version = version

    # ---- sync ---------------------------------------------------------------------------------------
    def submit_sync(self, indices, lrs):
        """Submit one synchronous step; returns the ObjectRefs of the workers' statistics."""
        world = len(self.workers)
        outs = [w.step.options(num_returns=2).remote(indices, *self.param_refs) for w in self.workers]
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

    def run_sync(self, batches, lrs_for_step, on_step, start=0):
        """Run batches[start:] (arrays of sample indices); `on_step(t, stats)` gets merged statistics in order.

        A failed worker surfaces as WORKER_FAILURES from the statistics of the step it broke."""
        pending = deque()
        for t in range(start, len(batches)):
            indices = batches[t]
            pending.append((t, self.submit_sync(indices, lrs_for_step(t))))
            while len(pending) > self.max_in_flight:
                self._finish(*pending.popleft(), on_step)
        while pending:
            self._finish(*pending.popleft(), on_step)
        ray.get(self.param_refs)  # the last update has landed

    def _finish(self, t, refs, on_step):
        parts = ray.get(refs)
        if self.on_worker_stats is not None:
            self.on_worker_stats(t, parts)
        on_step(t, merge_statistics(parts))

    def restart_from(self, workers, version):
        """After a fault: new worker handles; every shard's parameters read at `version`."""
        self.workers = workers
        self.version = version
        self.param_refs = [s.get_params_at.remote(version) for s in self.stores]

    # ---- async ----------------------------------------------------------------------------------------
    def run_async(self, batches, lrs_for_step, on_step, staleness=2, timeout_s=60.0):
        """Stale-synchronous run: batches go to whichever worker may start next; returns live worker ids."""
        live = set(range(len(self.workers)))
        clock = dict.fromkeys(live, 0)
        params = {w: [(self.version, ref) for ref in self.param_refs] for w in live}
        in_flight = {}  # ref -> (worker, step index, started)
        queue = deque(enumerate(batches))

        def may_start(w):
            return clock[w] - min(clock[v] for v in live) < staleness + 1

        while queue or in_flight:
            for w in sorted(live):
                if queue and w not in {v[0] for v in in_flight.values()} and may_start(w):
                    t, indices = queue.popleft()
                    shard_inputs = [ref for _, ref in params[w]]
                    stats, grads = self.workers[w].step_async.options(num_returns=2).remote(indices, *shard_inputs)
                    pushes = [
                        store.push.options(num_returns=2).remote(w, grads, lrs_for_step(t)[s])
                        for s, store in enumerate(self.stores)
                    ]
                    params[w] = [(None, p[1]) for p in pushes]
                    in_flight[stats] = (w, t, time.monotonic(), [p[0] for p in pushes])
            if not in_flight:
                if queue:
                    raise DistributedError("async scheduler: no live worker may start (all workers were dropped)")
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            now = time.monotonic()
            for ref in ready:
                w, t, _, version_refs = in_flight.pop(ref)
                try:
                    stats = ray.get(ref)
                    ray.get(version_refs, timeout=timeout_s)
                except WORKER_FAILURES as exc:
                    self._drop(w, live, clock, f"worker {w} failed at step {t}: {type(exc).__name__}")
                    queue.appendleft((t, batches[t]))
                    continue
                clock[w] += 1
                on_step(t, merge_statistics([stats]))
            for ref, (w, t, started, _) in list(in_flight.items()):
                if now - started > timeout_s:
                    in_flight.pop(ref)
                    self._drop(w, live, clock, f"worker {w} stalled more than {timeout_s:.0f}s at step {t}")
                    queue.appendleft((t, batches[t]))
        self.param_refs = [s.get_params.remote() for s in self.stores]
        return live

    def _drop(self, w, live, clock, why):
        live.discard(w)
        clock.pop(w, None)
        ray.get([s.fence.remote(w) for s in self.stores])
        self.on_event(f"{why}; dropped, staleness bound now over {len(live)} live workers")
        if not live:
            raise DistributedError(f"async scheduler: {why}, and no live worker is left")


def _get_failing_fast(refs):
    """ray.get of several refs that raises as soon as any of them failed — not after the others
    finish (a live worker may be blocked in the all-reduce, waiting for the dead one)."""
    remaining = list(refs)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        ray.get(ready)
    return ray.get(refs)


def wait_ready(refs, timeout_s, what):
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError as exc:
        raise DistributedError(f"{what} did not answer within {timeout_s}s") from exc
