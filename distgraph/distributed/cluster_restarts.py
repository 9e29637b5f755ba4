"""How a Ray Trainer's sync run gets over a worker fault: restart the workers, replay the lost steps.

Policy. A step that fails because a worker died or hung (not the user's own error, which is raised at
once) restarts every worker — a live one may be blocked in the all-reduce with its dead peer — in the
same placement-group bundles, under a fresh all-reduce group; an elastic run whose worker died with its
node goes on with the workers that fit instead (`fit_to_cluster`). Where the run goes on from:

- the store sharded across the workers (zero.py): the driver's snapshot, whose global step is
  `_snapshot_version` (`DriverState._install_snapshot`; the epoch's last call, a step checkpoint's
  `pull`, an elastic resize's). The workers restart from its parameters labelled with its step, and the
  Trainer's `global_step` goes back to it, so the replay, the next checkpoint and a next fault all count
  from there. (They took the Trainer's step instead, which an elastic epoch's 16-step segments move on
  without a snapshot: the workers ran the snapshot's parameters under a later step, and a second fault
  skipped steps never applied.)
- store actors: the stores' version says how many steps were applied; the workers read every shard at it.

Either way no step is applied twice or skipped. At most `Trainer(max_restarts=3)` restarts per `fit`
(`-1`: no limit, as Ray Train's `FailureConfig(max_failures=-1)`); the budget was per run of steps, which
an elastic epoch starts every 16 steps, so a worker failing again and again was restarted for ever.

Mixed into RayCluster, whose group, scheduler, stores, snapshot and set-up methods it uses.
"""

import ray

from distgraph.distributed import scheduler
from distgraph.distributed.nodes import lost_nodes, wait_until_dead
from distgraph.distributed.scheduler import WORKER_FAILURES
from distgraph.distributed.shm_mappings import remove_group
from distgraph.errors import DistgraphError, DistributedError

NODE_LOSS_WAIT_S = 90.0  # elastic: how long to wait for the cluster to declare a lost node dead


class WorkerRestarts:
    def _recover(self, exc, failed_at):
        """A worker fault (`exc`) in epoch step `failed_at`: restart or shrink the group → the epoch step to
        replay from. DistributedError once this fit has used its `max_restarts`."""
        t = self.trainer
        if 0 <= t.max_restarts <= t.restarts:
            raise DistributedError(
                f"giving up after {t.restarts} worker restarts in this fit (max_restarts={t.max_restarts}): {exc}"
            ) from exc
        t.restarts += 1
        version = self._snapshot_version if self.sharded else self._store_version()
        resume = version - self._epoch_base
        if self.sharded:
            t.global_step = version  # the driver holds that step: the ones after it are replayed
        dead = self._dead_workers()
        lost = lost_nodes(self.group.pg, dead) if t.elastic else set()
        if (
            lost
            and wait_until_dead(lost, NODE_LOSS_WAIT_S)
            and self.fit_to_cluster(*t.elastic, resume, lost_workers=True)
        ):
            action = f"their node was lost; went on with {t.workers} workers"  # elastic: shrunk
        else:
            self._restart_workers()
            if self.sharded:
                self._setup_sharded()
                self.scheduler.workers = self.group.actors
            action = f"restarted {t.workers} workers"
        if self.sharded:
            how = f"from the snapshot of global step {version}, replayed from epoch step {resume}"
        else:
            self.scheduler.restart_from(self.group.actors, version)
            how = f"replayed from global step {version}"
        t.history.events.append(
            f"worker(s) {dead} {'hung' if isinstance(exc, scheduler.StepTimeout) else 'died'} at epoch step "
            f"{failed_at} ({exc if isinstance(exc, DistributedError) else type(exc).__name__}); {action} {how} "
            "(steps applied: never twice)"
        )
        return resume

    def _keep_the_steps_before_the_error(self):
        """A step raised the user's error (in compute, before its rank's exchange): the steps before it
        are applied everywhere and the failed one nowhere — sharded, a rank updates its chunk only after
        every rank's gradient is in (in a gloo group the failed rank marks the step void, zero.py's
        `abort`); store actors apply a step once all of its gradients came. Every rank has put back the
        batch-norm statistics of the failed step's forward (worker `_one_step`; rank 0's, when a peer
        failed a step it finished for store actors, come from before its last step). The driver takes
        that state, as a local run keeps the steps before its error, and the next fit restarts the
        workers (`_restart_after_failed_fit`). Were a worker gone as well, the driver keeps its snapshot,
        and the Trainer's step goes back to the snapshot's (the next fit restarts from it)."""
        self._failed_fit = True
        self._driver_current = False
        try:
            self.pull(after_failed_step=not self.sharded)
        except (DistgraphError, *WORKER_FAILURES):  # (the user's error is what the caller raises)
            if self.sharded:
                self.trainer.global_step = self._snapshot_version

    def _keep_the_async_steps_before_the_error(self):
        """An async step raised the user's error (a distgraph one or the model's own ValueError...): the store
        holds the steps pushed before it. The driver takes them, as a local run keeps the steps before its
        error (it used to keep its state from before the fit, its global_step behind the store's). The
        failed worker dropped itself from the shared segment, so the next fit's calls found no live worker
        and waited for ever: a new segment is set up from the driver's state."""
        try:
            self.pull()
            if self.async_shared:
                self._setup_async()
        except (DistgraphError, *WORKER_FAILURES):  # noqa: S110  (the user's error is what the caller raises)
            pass

    def _restart_after_failed_fit(self):
        """The last fit ended in the user's error (a NaN in a shard): its rank told the others to give
        up, so their group cannot meet again. Start this fit in a fresh group from what the driver holds
        (the steps before the error, `_keep_the_steps_before_the_error`; store actors: the stores'
        version), and say so."""
        self._failed_fit = False
        self._restart_workers()
        if self.sharded:
            self._setup_sharded()
            self.scheduler.workers = self.group.actors
        else:
            self.scheduler.restart_from(self.group.actors, self._store_version())
        self.trainer.history.events.append(
            f"restarted {self.trainer.workers} workers after the error that ended the last fit, from global "
            f"step {self.trainer.global_step} (the steps before the error were kept)"
        )

    def _dead_workers(self):
        dead = []
        for rank, w in enumerate(self.group.actors):
            try:
                ray.get(w.ping.remote(), timeout=2)
            except Exception:  # noqa: BLE001  (dead, dying or blocked: all get restarted)
                dead.append(rank)
        return dead

    def _restart_workers(self):
        for rank in range(self.trainer.workers):
            self.group.kill(rank)
        remove_group(self.group_name)
        self._new_group(self.trainer.workers, self.group)  # the same group: the bundles stay reserved
        self.resend_data()
