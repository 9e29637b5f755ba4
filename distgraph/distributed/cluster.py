"""The Ray side of a Trainer: a worker group, the parameter store, the dataset in the object store.

Where the store lives, with numpy parameters: sync, sharded across the workers (`zero.py`), who meet in
their segment on one node or in a gloo group across nodes; async on one node, shared in their segment
(`async_store.py`); otherwise (nccl, async across nodes) in store shard actors (`param_store.py`).

The driver's model and optimizer stay the user's objects; `pull()` copies the store's authoritative
parameters and optimizer state (and rank 0's buffers) back into them, for evaluation and checkpoints,
and `push()` sends them out again after a checkpoint is loaded (driver_state.py). Hyperparameters are read
from the driver's optimizer at every run of steps, so an epoch scheduler drives the remote updates; with a
per-step schedule (`trainer_schedule.py`) every step carries its row of the epoch's table instead
(`_step_hypers`): with the sharded call that runs it, to the store actors with its gradient, in the async
call that lets it be claimed.
"""

import time
import uuid

import ray

from distgraph.distributed import runtime, scheduler, worker_pool
from distgraph.distributed.allreduce import gloo_available
from distgraph.distributed.cluster_restarts import WorkerRestarts
from distgraph.distributed.driver_state import DriverState
from distgraph.distributed.nodes import bundles_on_live_nodes
from distgraph.distributed.param_store import ParameterShard, partition_parameters, shard_members
from distgraph.distributed.scheduler import WORKER_FAILURES, DataParallelScheduler, raise_user_error, wait_ready
from distgraph.distributed.shm_mappings import remove_group
from distgraph.distributed.worker import TrainWorker
from distgraph.errors import ConfigError, DistributedError

StoreLost = scheduler.StoreLost  # (the Trainer catches it by this name)
ELASTIC_SEGMENT = 16  # elastic runs: steps between two looks at the cluster's resources
ELASTIC_CHECK_S = 1.0  # and at most one look a second (each asks the GCS)


class RayCluster(DriverState, WorkerRestarts):
    def __init__(self, trainer):
        from distgraph.optim.functional import make_optimizer_spec

        runtime.init(trainer.address)
        self.trainer = trainer
        if trainer.elastic:
            trainer.workers = self._fitting_workers(*trainer.elastic)
        self.params = trainer.step_fn.params
        self.name, _ = make_optimizer_spec(trainer.optimizer)
        self.param_group = self._param_groups()
        self.owner = partition_parameters([p.array.nbytes for p in self.params], trainer.workers)
        self.members = [shard_members(self.owner, s) for s in range(max(self.owner) + 1)]
        self.stores = []
        self._epoch_base = 0  # the global step the running epoch started from (run_epoch)
        self._snapshot_version = trainer.global_step  # sharded: the step of the driver's snapshot (`pull`)
        self._driver_current = False  # the driver holds the store's state: no step ran since its last pull or push
        self._new_group(trainer.workers)
        self.data_refs = None
        reduce_in_store = self._spans_nodes()
        self.sharded = not reduce_in_store and self._can_shard("sync")
        self.async_shared = not reduce_in_store and self._can_shard("async") and trainer.grad_scaler is None
        self.async_scheduler = None
        self._failed_fit = False  # a sync step raised the user's error: the workers' group was told to give up
        if self.sharded:
            self._setup_sharded()
        elif self.async_shared:
            self._setup_async()
        elif trainer.grad_scaler is not None:
            self.group.shutdown()
            raise ConfigError(
                "Trainer(grad_scaler=...) with backend='ray' needs the parameter store sharded across the workers: "
                "sync='sync', numpy parameters of one dtype, and allreduce 'gloo' or ('auto'/'shm' on one node)"
            )
        else:
            self._start_stores()
        self.scheduler = DataParallelScheduler(self.group.actors, self.stores, self._event, trainer.timeout_s)
        self.scheduler.reduce_in_store = reduce_in_store
        self.scheduler.set_version(trainer.global_step)

    def _event(self, message):  # the Trainer's current history: a loaded checkpoint replaces it
        self.trainer.history.events.append(message)

    # ---- the store sharded across the workers (zero.py) ----------------------------------------------------
    def _can_shard(self, sync):
        """Mode `sync`, numpy, one floating dtype, shm/auto on one node or gloo for sync: the workers hold
        the store (module docstring); otherwise store actors do."""
        from distgraph.distributed.zero import common_dtype

        t = self.trainer
        return (
            t.sync == sync
            and (t.allreduce["backend"] in ("auto", "shm") or (sync == "sync" and t.allreduce["backend"] == "gloo"))
            and not str(t.device).startswith("cuda")
            and common_dtype([p.array for p in self.params]) is not None
        )

    def _hypers(self):
        """Each parameter's optimizer hyperparameters as the driver's optimizer holds them now (so an lr
        scheduler's changes of lr, momentum or betas reach the workers)."""
        from distgraph.optim.functional import make_optimizer_spec

        _, groups = make_optimizer_spec(self.trainer.optimizer)
        return [{k: v for k, v in groups[g].items() if k != "params"} for g in self.param_group]

    def _setup_sharded(self):
        """Every worker takes its share of the driver's parameters and optimizer state, labelled with the
        snapshot's step (the Trainer's may have moved on since: an elastic epoch's segments, a fault)."""
        params, states = self._driver_state()
        arrays = ray.put(params)
        scaler = self.trainer.grad_scaler
        scaler_state = {"config": scaler.config(), "state": scaler.state_dict()} if scaler is not None else None
        args = (self.name, self._hypers(), arrays, states, self._snapshot_version, scaler_state)
        refs = [w.setup_sharded.remote(*args) for w in self.group.actors]
        wait_ready(refs, self.trainer.timeout_s, "workers setting up the sharded parameter store")
        self._driver_current = True

    def _setup_async(self):
        """Every worker joins a new shared async store loaded with the driver's model and optimizer state
        (a new scheduler for a new worker group; the same one keeps its call sizing and pending rejoins)."""
        from distgraph.distributed.async_run import SharedAsyncScheduler

        if self.async_scheduler is None or self.async_scheduler.actors is not self.group.actors:
            t = self.trainer
            self.async_scheduler = SharedAsyncScheduler(
                self.group.actors, self.group_name, self.name, t.staleness, t.timeout_s, self._event,
                self._replace_worker,
            )  # fmt: skip
        params, states = self._driver_state()
        self.async_scheduler.setup(
            {"params": params, "states": states, "version": self.trainer.global_step}, self._hypers()
        )
        self._driver_current = True

    # ---- elastic -----------------------------------------------------------------------------------------
    def _fitting_workers(self, lo, hi):
        """How many workers the cluster can hold now, within [lo, hi]: its free CPUs plus the CPUs our
        placement group holds on nodes that are still alive. (Bundles on a lost node are not ours to
        count: Ray is trying to place them again, so counting them would never let the group shrink.)"""
        per = self.trainer.cpus_per_worker
        worker_pool.release(settle_s=2.0)  # CPUs a closed Trainer's parked group holds are free to take
        free = ray.available_resources().get("CPU", 0.0)
        group = getattr(self, "group", None)
        ours = bundles_on_live_nodes(group.pg) * per if group is not None else 0
        return max(lo, min(hi, int((free + ours) // per)))

    def fit_to_cluster(self, lo, hi, epoch_step=None, lost_workers=False):
        """Grow or shrink the worker group to what the cluster holds now (between epochs, or between the
        steps of an epoch at `epoch_step`); True if it did. With the store in the workers the driver takes
        it first (`pull`), unless `lost_workers` (a fault: the group starts from the driver's snapshot).

        Parameter-store shards stay as they are (each shard is owned by worker `shard % world`, for
        any world size), so resizing restarts only the workers; the math of a step does not depend
        on the worker count beyond float rounding (shard gradients are weighted by batch share).
        A group grown onto another node cannot meet in one node's segment (`_meet_across_nodes`)."""
        want = self._fitting_workers(lo, hi)
        if want == self.trainer.workers:
            return False
        old = self.trainer.workers
        if (self.sharded or self.async_shared) and not lost_workers:
            self.pull()  # the store lives in the workers: the driver takes it before they go
        self.group.shutdown()
        remove_group(self.group_name)
        self.trainer.workers = want
        self._new_group(want)
        self._meet_across_nodes()
        if self.data_refs is not None:
            self.resend_data()
        if self.sharded:  # from the driver's snapshot (`pull`, or the one a fault restarts from)
            self._setup_sharded()
            self.scheduler.workers = self.group.actors
        elif self.async_shared:
            self._setup_async()
        else:
            self.scheduler.restart_from(self.group.actors, self.scheduler.version)
        where = "" if epoch_step is None else f", before epoch step {epoch_step}"
        self.trainer.history.events.append(f"elastic: {old} -> {want} workers (cluster resources changed{where})")
        return True

    def _meet_across_nodes(self):
        """A resized group on several nodes (`_spans_nodes`): the sharded store's workers restart in a gloo
        group, an async run's store moves from the segment into store actors, and otherwise the stores sum.
        (A group grown onto a new node kept the one-node segment, which the new node's workers cannot share.)"""
        t, nodes = self.trainer, len(set(self.worker_nodes))
        if self.sharded and nodes > 1 and t.allreduce["backend"] == "auto" and not gloo_available():
            raise DistributedError(
                f"elastic: the group grew to {t.workers} workers on {nodes} nodes, and the parameter store sharded "
                "across them meets across nodes only in a gloo group, which needs torch (not installed here): "
                "install torch on every node, or bound workers=(min, max) to what one node holds"
            )
        reduce_in_store = self._spans_nodes()
        if self.async_shared and reduce_in_store:
            self.async_shared, self.async_scheduler = False, None
            self._start_stores()  # from the driver's state, which `fit_to_cluster` pulled
            self.scheduler.stores = self.stores
            self.scheduler.set_version(t.global_step)
        self.scheduler.reduce_in_store = reduce_in_store

    def pending_rejoins(self):
        """Refs ready when the dropped async workers may rejoin (at the next call boundary after that)."""
        if self.async_scheduler is not None:
            return list(self.async_scheduler.returning)
        return list(self.scheduler.rejoining)

    def _replace_worker(self, rank):
        """Async rejoin: a fresh actor for dead worker `rank` in its bundle → (actor, ref ready once it holds the data)."""
        self.group.kill(rank)
        self._start_worker(rank)
        actor = self.group.actors[rank]
        return actor, actor.set_data.remote(*self.data_refs)

    def _param_groups(self):
        ids = {id(p): g for g, group in enumerate(self.trainer.optimizer.param_groups) for p in group["params"]}
        return [ids[id(p)] for p in self.params]

    def _start_stores(self):
        params, hypers = self._driver_state()[0], self._hypers()
        for s, members in enumerate(self.members):
            arrays, hyper = [params[i] for i in members], [hypers[i] for i in members]
            shard = (s, members, arrays, self.name, hyper, self.trainer.global_step)
            self.stores.append(runtime.start_store(ParameterShard, *shard, timeout_s=self._startup_s()))
        wait_ready([s.ping.remote() for s in self.stores], self._startup_s(), "parameter-store shards starting up")
        self._push_optimizer_state()

    def _spans_nodes(self):
        """shm needs one node. Across nodes a sync run's workers meet in a gloo group (torch installed),
        else (or when asked) the store shards sum the gradients; on GPUs they stay in NCCL ("auto"'s there:
        gloo reduces no cupy arrays). → True when the store shards do."""
        t = self.trainer
        if t.allreduce["backend"] == "store":
            return True
        nodes = set(self.worker_nodes)
        if len(nodes) > 1 and t.allreduce["backend"] == "auto" and not str(t.device).startswith("cuda"):
            gloo = t.sync == "sync" and gloo_available()
            t.allreduce["backend"] = "gloo" if gloo else "store"
            for rank in range(t.workers):  # restart without a shared-memory group
                self.group.kill(rank)
            self._start_workers()
            how = "they meet in a gloo group" if gloo else "gradients are summed by the parameter-store shards"
            t.history.events.append(f"workers span {len(nodes)} nodes: {how}")
            return not gloo
        return False

    def _new_group(self, workers, group=None):
        """Start `workers` workers under a new segment name (unique per run), in `group` or a new WorkerGroup."""
        self.group_name = f"dg{uuid.uuid4().hex[:12]}"
        t = self.trainer
        opts = dict(device=t.device, cpus_per_worker=t.cpus_per_worker, timeout_s=t.timeout_s, bind_to=t.bind_to)
        if t.worker_seed is None:  # drawn once per Trainer, kept by its checkpoints: its steps' streams (runtime.py)
            t.worker_seed = runtime.draw_base_seed()
        opts["seeded"] = t.worker_seed  # each worker's dropout stream its own, from the driver's seed
        self.group = group or runtime.WorkerGroup(TrainWorker, workers, **opts)
        self._start_workers()

    def _start_workers(self):
        for rank in range(len(self.group.actors)):
            self._start_worker(rank)
        self.worker_nodes = self._await_start()

    def _start_worker(self, rank):
        t = self.trainer
        allreduce = {**t.allreduce, "group": self.group_name, "device": t.device, "timeout_s": t.timeout_s}
        self.group.start(rank, rank, t.workers, t.model, t.loss_fn, self.owner, t.device, allreduce)

    def set_data(self, x, y):
        self.data_refs = (ray.put(x), ray.put(y))
        if self.trainer.elastic and self.fit_to_cluster(*self.trainer.elastic):
            return  # resized first (a node lost since the last fit took its workers along): the new group has the data
        self.resend_data()

    def _startup_s(self):
        return scheduler.start_allowance(self.trainer.timeout_s)

    def _await_start(self):
        """Wait for the workers just started → each one's node. Their first call includes their processes'
        start, so it is allowed a start's time; every later call is held to timeout_s (a restart's data call
        under timeout_s=5 once failed while the new process imported). With bind_to, each is bound first."""
        self.group.bound(self._startup_s())
        refs = [w.node.remote() for w in self.group.actors]
        return wait_ready(refs, self._startup_s(), "workers starting up (their first call)")

    def resend_data(self):
        wait_ready([w.set_data.remote(*self.data_refs) for w in self.group.actors], self.trainer.timeout_s, "workers")

    def _step_hypers(self, t):
        """Epoch step t's hyperparameters per parameter under a per-step schedule (else None)."""
        rows = self.trainer.step_hypers(t)
        return None if rows is None else [rows[g] for g in self.param_group]

    def _lrs_for_step(self, offset=0):
        """Store actors: step t's (+ offset) hyperparameters per shard, each member's whole dict: with an
        epoch schedule the driver's optimizer's now, for every step; per step, the step's row. Whole, not
        the lr alone: a scheduler may cycle momentum or betas too (OneCycleLR, CyclicLR), and an epoch
        schedule's momentum never reached the store actors, which kept the one they started with."""
        if self._per_step() is None:
            hypers = self._hypers()
            rows = [[hypers[i] for i in members] for members in self.members]
            return lambda _: rows

        def rows(t):
            hypers = self._step_hypers(t + offset)
            return [[hypers[i] for i in members] for members in self.members]

        return rows

    def _per_step(self):
        """The `_step_hypers` function when the schedule is per step, else None."""
        return self._step_hypers if self.trainer.scheduler_interval == "step" and self.trainer.lr_scheduler else None

    def run_epoch(self, batches, on_step, start=0, segment=None, on_segment=None):
        """Run the epoch's batches from step `start`; a dead worker is replaced and the interrupted steps replayed.

        With `segment`, the steps run `segment` at a time and `on_segment(step)` is called between two
        segments, with every step before `step` applied (the Trainer's step checkpoints; their `pull`
        is a snapshot that sharded recovery then replays from).

        Recovery (sync, `cluster_restarts.py`): the workers are restarted and the steps since the driver's
        snapshot (sharded) or the stores' version replayed; no step is applied twice or skipped, and the
        result is bit-identical to an uninterrupted run. A lost store shard is not recoverable here: it
        raises StoreLost and the Trainer resumes from its last checkpoint.

        Elastic (`workers=(min, max)`, sync): the epoch runs in segments of ELASTIC_SEGMENT steps, and
        between two segments, at most every ELASTIC_CHECK_S seconds, the group is resized to what the
        cluster holds (`fit_to_cluster`) — so a node that joins or leaves mid-epoch is used or let go
        between steps, not only between epochs. A worker that died with its node (`lost_nodes`) is
        not restarted in its lost bundle: once the cluster declares the node dead, the group shrinks.
        """
        t = self.trainer
        if self._failed_fit:
            self._restart_after_failed_fit()
        self._driver_current = False
        if t.sync == "async":
            try:
                self._run_async_epoch(batches, on_step, start, segment, on_segment)
            except Exception as exc:  # the user's own error comes as itself: a ValueError of the model's too
                if scheduler.user_error(exc.__cause__) is not None:
                    self._keep_the_async_steps_before_the_error()
                raise
            return
        seen = set()

        def once(step, stats):
            if step not in seen:
                seen.add(step)
                on_step(step, stats)

        first = start  # the epoch step this run of the epoch began at
        self._epoch_base = t.global_step - start  # the global step of the epoch's step 0
        segment = min(segment or len(batches), ELASTIC_SEGMENT if t.elastic else len(batches))
        checked = time.monotonic()
        while start < len(batches):
            stop = min(start + segment, len(batches))
            self._run_steps(batches, once, start, stop, first, seen)
            start = stop
            if start == len(batches):
                break
            if on_segment is not None:
                on_segment(start)
            if t.elastic and time.monotonic() - checked >= ELASTIC_CHECK_S:
                checked = time.monotonic()
                self.fit_to_cluster(*t.elastic, epoch_step=start)

    def _run_async_epoch(self, batches, on_step, start, segment, on_segment):
        """Async steps from `start`, `segment` at a time when asked, `on_segment(step)` between two
        segments with every earlier step applied (step checkpoints; what they pull goes stale as the
        next segment starts)."""
        segment = segment or len(batches)
        while start < len(batches):
            stop = min(start + segment, len(batches))
            if self.async_shared:
                self.async_scheduler.run(batches[:stop], on_step, self._hypers(), start, self._per_step())
            else:
                self.scheduler.run_async(
                    batches[start:stop], self._lrs_for_step(start), lambda t, stats, s=start: on_step(s + t, stats),
                    self.trainer.staleness, self.trainer.timeout_s, self._replace_worker,
                )  # fmt: skip
            if stop < len(batches) and on_segment is not None:
                on_segment(stop)
                self._driver_current = False
            start = stop

    def _run_steps(self, batches, on_step, start, stop, first, seen):
        """Steps [start, stop) of the epoch begun at step `first`, restarting the workers after a failure
        (`_recover`); `seen`: the epoch steps reported so far."""
        lrs_for_step = None if self.sharded else self._lrs_for_step()
        streams = (self.trainer.worker_seed, self._epoch_base)  # step t draws from step_seed(base, rank, base + t)
        resume = start
        self._driver_current = False
        while True:
            try:
                if self.sharded:  # the epoch's last call brings back the snapshot the epoch ends with
                    snapshot = self.scheduler.run_sharded(
                        batches, on_step, resume, stop, hypers=self._hypers(), snapshot=stop == len(batches),
                        hypers_for_step=self._per_step(), streams=streams,
                    )  # fmt: skip
                    if snapshot is not None:
                        self._install_snapshot(snapshot)
                else:
                    self.scheduler.run_sync(batches, lrs_for_step, on_step, resume, stop, streams)
                return
            except WORKER_FAILURES as exc:
                if scheduler.user_error(exc) is not None:
                    self._keep_the_steps_before_the_error()
                raise_user_error(exc)
                resume = self._recover(exc, first + len(seen))

    def _store_version(self):
        return min(self._ask_stores("get_version"))

    def _ask_stores(self, method):
        """Every store shard's answer to `method`; StoreLost when a shard is gone."""
        try:
            return ray.get([getattr(s, method).remote() for s in self.stores], timeout=self.trainer.timeout_s)
        except WORKER_FAILURES as exc:
            raise StoreLost(f"a parameter-store shard died: {exc}") from exc

    def close(self):
        if not ray.is_initialized():
            return  # the Ray session ended, and freed the workers, stores and group with it
        closed = 0
        for w in self.group.actors:
            if w is not None:
                try:
                    ray.get(w.close.remote(), timeout=10)
                    closed += 1
                except Exception:  # noqa: BLE001  (a dead worker has nothing to close)
                    pass
        # every worker closed cleanly: the group may be kept warm for the next Trainer (worker_pool.py)
        self.group.shutdown(park=closed == len(self.group.actors))
        self.scheduler.discard_pending()
        for store in self.stores:
            runtime.stop_store(ParameterShard, store)
        remove_group(self.group_name)
