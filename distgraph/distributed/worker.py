"""A training worker: one model replica pinned to one device, run as a Ray actor.

The driver never ships batches: each worker receives the dataset once (an ObjectRef, zero-copy on
the node) and per step only the batch's indices, from which it cuts its own shard. Parameters arrive
as the parameter store's shard outputs (ObjectRefs resolved by Ray before the call runs), so a whole
step is submitted without the driver waiting.

With store actors (several nodes): a sync step computes the shard gradient, all-reduces it (sum,
fixed rank order) with the other workers and returns this rank's store shards of the reduced
gradient; an async step returns the whole local gradient for every store shard. With the store in
the workers' segment (one node) a call carries many steps: sync ones reduce and update in the
segment (`step_sharded`, zero.py), async ones claim, compute and push there (`step_async_shared`,
async_store.py), and no parameter travels through Ray.

`set_slowdown(factor)` makes a worker a deliberate straggler (benchmarks and tests of the async
mode): after each step's compute it sleeps (factor − 1) × that compute time, so the step's compute
phase takes `factor` times as long; `stall_next(seconds)` stalls one step. They are actor methods,
not Trainer options: training code never wants them.
"""

import contextlib
import os
import time

import numpy as np

from distgraph.backend import CPU, to_device
from distgraph.distributed.param_store import shard_members
from distgraph.distributed.runtime import seed_step
from distgraph.distributed.step import ShardStep, shard_bounds
from distgraph.distributed.sync_group import CommGroup, own_communicator
from distgraph.distributed.timeline import StepClock
from distgraph.ops.collective import using_group


class TrainWorker:
    def __init__(self, rank, world, model, loss_fn, owner, device="cpu", allreduce=None):
        self.rank, self.world = rank, world
        # Ray shows a GPU actor its own GPU alone (CUDA_VISIBLE_DEVICES): in here it is "cuda", whatever
        # "cuda:N" the driver named
        device = "cuda" if str(device).startswith("cuda") else device
        self.step_fn = ShardStep(model, loss_fn, device)
        self.owner = owner
        self.num_shards = max(owner) + 1 if owner else 1
        self.members = [shard_members(owner, s) for s in range(self.num_shards)]
        self.allreduce_config = allreduce or {}
        self.comm = None
        self.sync_comm = None  # SyncBatchNorm's sums (sync_group.py): self.comm on shm, a group of their own else
        self.group = CommGroup(rank, world, self._sync_communicator) if world > 1 else None  # (ops/collective.py)
        self.bucketer = None  # GradBucketer over self.comm: buckets all-reduced while backward runs
        self.sharded = None  # ShardedParameters when the parameter store is sharded across the workers
        self.async_store = None  # SharedAsyncStore when async workers share one node's segment
        self.scaler = None  # this rank's replica of the Trainer's GradScaler (dynamic loss scaling)
        self.buffers_before_step = None  # copies of the buffers before the last sync step (`_one_step`)
        self.x = self.y = None
        self.pid = os.getpid()
        self.slowdown, self.stall_s = 1.0, 0.0

    def set_slowdown(self, factor):
        """Stretch every later step's compute by `factor` (≥ 1) with a sleep: a straggler on demand."""
        self.slowdown = max(1.0, float(factor))
        return self.slowdown

    def stall_next(self, seconds):
        """Sleep `seconds` in the next step: a stalled worker on demand (tests of the async drop and rejoin)."""
        self.stall_s = float(seconds)

    def _compute(self, x, y, weight, loss_scale=None, on_grad=None):
        started = time.perf_counter()
        with using_group(self.group):  # the group SyncBatchNorm layers sum their statistics over
            out = self.step_fn.compute(x, y, weight, loss_scale, on_grad)
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * (time.perf_counter() - started))
        if self.stall_s:
            time.sleep(self.stall_s)
            self.stall_s = 0.0
        return out

    def ping(self):
        return self.rank, self.pid

    def set_data(self, x, y):
        self.x, self.y = x, y
        return len(x)

    def _install(self, param_shards):
        arrays = [None] * len(self.owner)
        for s, shard in enumerate(param_shards):
            for i, a in zip(self.members[s], shard):
                arrays[i] = a
        self.step_fn.set_parameters(arrays)

    def _shard(self, indices):
        lo, hi = shard_bounds(len(indices), self.world, self.rank)
        idx = indices[lo:hi]
        return self.x[idx], self.y[idx], (hi - lo) / len(indices)

    def _bucketer(self):
        if self.bucketer is None:
            from distgraph.distributed.buckets import GradBucketer

            params = [p.array for p in self.step_fn.params]
            self.bucketer = GradBucketer(self._communicator(), params, self.allreduce_config.get("bucket_mb"))
        return self.bucketer

    def _communicator(self):
        if self.comm is None:
            from distgraph.distributed.allreduce import make_allreduce

            self.comm = make_allreduce(rank=self.rank, world_size=self.world, **self.allreduce_config)
        return self.comm

    def _sync_communicator(self):
        if self.sync_comm is None:
            self.sync_comm = own_communicator(self.allreduce_config, self.rank, self.world, self._communicator)
        return self.sync_comm

    def step(self, indices, *param_shards, streams=None):
        """Sync data-parallel step → (statistics, {shard: reduced gradient arrays} for shards this rank owns).

        The statistics carry the step's wall-clock timings (`timeline.StepClock`); `streams` (base, global
        step) keys the step's random numbers (`runtime.seed_step`)."""
        clock = StepClock()
        seed_step(streams, self.rank)
        self._install(param_shards)
        x, y, weight = self._shard(indices)
        clock.lap("install")
        if self.world > 1 and self.allreduce_config.get("backend") == "store":
            # no peer exchange (workers on different nodes): every shard gets this rank's gradient and
            # the store sums them in rank order
            with self._one_step(None):  # a peer's failure in this step reaches the driver, not this rank
                grads, stats = self._compute(x, y, weight)
            clock.lap("compute")
            return {**stats, **clock.stats()}, self._for_stores(grads, range(self.num_shards), self.step_fn.unused)
        bucketer = self._bucketer() if self.world > 1 else None
        with self._one_step(self.comm):
            grads, stats = self._compute(x, y, weight, on_grad=bucketer and bucketer.ready)
            clock.lap("compute")  # includes the buckets reduced while backward ran
            unused = self.step_fn.unused
            if bucketer is not None:
                grads = bucketer.wait(self.allreduce_config.get("timeout_s"))
                unused = self._unused_by_all(unused)
                clock.lap("comm")  # the all-reduce backward did not hide
        owned = [s for s in range(self.num_shards) if s % self.world == self.rank]
        return {**stats, **clock.stats()}, self._for_stores(grads, owned, unused)

    @contextlib.contextmanager
    def _one_step(self, exchange):
        """One step's compute and exchange. A step that raises here (a NaN in this rank's shard, a loss
        error, a peer that gave up) is applied nowhere, so it leaves no trace: the batch-norm statistics
        its forward moved are put back (before, rank 0's buffers — the ones the driver keeps — held the
        failed step's forward, and a call queued behind it added its own). `exchange` (the sharded store,
        or the all-reduce) tells the peers to give up at once instead of leaving them waiting until their
        timeout (and the driver's close waiting for them); their error names this rank, and the driver
        raises this rank's own."""
        try:
            with self._undone_on_error():
                yield
        except BaseException:
            if self.world > 1:  # and peers waiting in a SyncBatchNorm sum
                for waited_in in {id(e): e for e in (exchange, self.sync_comm) if e is not None}.values():
                    waited_in.abort()
            raise

    @contextlib.contextmanager
    def _undone_on_error(self):
        """A step (sync or async) that raises is applied nowhere: put back the batch-norm statistics its
        forward moved. An async step's used to stay (a target out of range raises after the forward), and
        the driver took them with the steps before the error."""
        self.buffers_before_step = self.step_fn.buffer_copies()
        try:
            yield
        except BaseException:
            self.step_fn.restore_buffers(self.buffers_before_step)
            raise

    def _unused_by_all(self, unused):
        """The parameters no rank's forward used this step (one tiny all-reduce of the ranks' used flags)."""
        xp = self.step_fn.params[0].device.xp
        used = xp.asarray([float(i not in unused) for i in range(len(self.step_fn.params))], xp.float32)
        used = self._communicator().allreduce(used, tag="used")
        return {i for i, n in enumerate(to_device(used, CPU).tolist()) if n == 0}

    def _for_stores(self, grads, shards, unused=()):
        """{shard: its parameters' gradients} as host arrays: store actors hold numpy (a GPU worker's
        reduced gradient is copied to the host once, here). An `unused` parameter's is None: no gradient,
        which the store does not apply (torch's optimizer skips a grad of None)."""
        return {s: [None if i in unused else to_device(grads[i], CPU) for i in self.members[s]] for s in shards}

    # ---- the parameter store sharded across the workers (zero.py) ----------------------------------------
    def setup_sharded(self, optimizer_name, hypers, arrays, states, version, scaler_state=None):
        """Hold this rank's share of the parameters and optimizer state; the model reads the segment.
        `scaler_state` (a GradScaler's state_dict) turns on dynamic loss scaling."""
        from distgraph.amp import GradScaler
        from distgraph.distributed.zero import ShardedParameters

        self.scaler = None
        if scaler_state is not None:
            self.scaler = GradScaler(**scaler_state["config"])
            self.scaler.load_state_dict(scaler_state["state"])

        if self.sharded is None:
            cfg = self.allreduce_config
            comm = self._communicator() if cfg.get("backend") == "gloo" and self.world > 1 else None  # any nodes
            self.sharded = ShardedParameters(
                self.step_fn.params, self.rank, self.world, cfg.get("group", "distgraph"), optimizer_name, hypers,
                cfg.get("timeout_s", 60.0), cfg.get("bucket_mb"), comm,
            )  # fmt: skip
        self.sharded.set_hypers(hypers)
        self.sharded.load(arrays, states, version)
        return self.sharded.version

    def step_sharded(self, batches, hypers=None, snapshot=False, step_hypers=None, streams=None):
        """Sync steps with the store sharded across the workers, one per array of sample indices in
        `batches` (`pack_indices`) → (their statistics, this rank's `state_chunk(params=False)` after the
        last step when `snapshot`, else None: the driver reads the parameters from the segment).

        Several steps per call spread Ray's per-call cost over them: between steps the workers meet
        only in their shared segment. `hypers` (new hyperparameters, set before the first step) and
        the snapshot ride on the calls a segment needs anyway instead of calls of their own.
        `step_hypers` (a per-step lr schedule): one set of hyperparameters per step, set before it.
        `streams`: (base, the global step of the first) keys each step's random numbers (`runtime.seed_step`)."""
        if hypers is not None:
            self.sharded.set_hypers(hypers)
        out = []
        for k, indices in enumerate(unpack_indices(batches)):
            if step_hypers is not None:
                self.sharded.set_hypers(step_hypers[k])
            clock = StepClock()
            seed_step(streams, self.rank, k)
            x, y, weight = self._shard(indices)
            clock.lap("install")
            on_grad = self.sharded.grad_ready if self.world > 1 else None  # buckets reduce during backward
            self.sharded.begin_step()
            with self._one_step(self.sharded):
                grads, stats = self._compute(x, y, weight, self.scaler and self.scaler.get_scale(), on_grad)
                clock.lap("compute")  # includes the buckets reduced while backward ran
                applied = self.sharded.step(grads, self.scaler, clock, self.step_fn.unused)
            out.append(
                {**stats, **clock.stats(), "skipped": int(not applied), "buckets_in_backward": self.sharded.overlapped}
            )
        # the driver reads the parameters from a segment on its machine; from a gloo group's ranks it cannot
        return out, (self.state_chunk(params=not self.sharded.exchange.shared) if snapshot else None)

    def compute_only(self, batches):
        """Forward and backward of this rank's shard of each batch in `batches` (`pack_indices`), nothing
        exchanged nor updated → (start, end) wall-clock seconds of each: what a step costs without its
        peers, run by every rank at once for `distgraph bench scaling`'s ceiling (as DDP's no_sync())."""
        times = []
        for indices in unpack_indices(batches):
            start = time.time()
            self._compute(*self._shard(indices))
            times.append((start, time.time()))
        return times

    def state_chunk(self, params=True):
        chunk = self.sharded.state_chunk(params)
        chunk["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        chunk["buffers"] = self.step_fn.get_buffers() if self.rank == 0 else None  # DDP keeps rank 0's
        return chunk

    def get_buffers(self, before_last_step=False):
        """This replica's buffers; `before_last_step`: as they were before its last step, which a peer's
        error failed after this rank finished it (store actors apply a step only once every rank's
        gradient came: the failed step is applied nowhere, so its forward's statistics are not kept)."""
        if before_last_step and self.buffers_before_step is not None:
            return [to_device(a, CPU) for a in self.buffers_before_step]
        return self.step_fn.get_buffers()

    def set_buffers(self, arrays):
        self.step_fn.set_buffers(arrays)

    def node(self):
        """The Ray node this worker runs on (shared memory only works between workers of one node)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def step_async(self, indices, *param_shards):
        """Async step → (statistics, {shard: local gradient arrays} for every shard)."""
        clock = StepClock()
        self._install(param_shards)
        x, y = self.x[indices], self.y[indices]
        clock.lap("install")
        with self._undone_on_error():
            grads, stats = self._compute(x, y, 1.0)
        clock.lap("compute")
        return {**stats, **clock.stats()}, self._for_stores(grads, range(self.num_shards), self.step_fn.unused)

    # ---- the async store in the workers' segment (async_store.py) ----------------------------------------
    def setup_async(self, name, members, optimizer_name, hypers, staleness, state):
        """Join the shared async store `name` with `members` (the lowest creates it and loads `state`:
        {"params", "states", "version"}); a previous one is left. → the version it starts from."""
        from distgraph.distributed.async_store import SharedAsyncStore

        self._close_async()
        cfg = self.allreduce_config
        self.async_store = store = SharedAsyncStore(
            name, self.rank, self.world, members, self.step_fn.params, optimizer_name, hypers, staleness,
            cfg.get("timeout_s", 60.0),
        )  # fmt: skip
        if store.creator:
            store.load(state["params"], state["states"], state["version"])
        store.wait_loaded()
        return store.version

    def step_async_shared(self, chunk, batches, hypers=None, step_hypers=None):
        """Call `chunk` of async steps on the shared store: claim, compute, push until the steps of
        `batches` (`pack_indices`) are taken → `SharedAsyncStore.run`'s record. `step_hypers`: one set
        of hyperparameters per step of the call (a per-step lr schedule), used by whoever claims it."""

        def compute(indices):
            with self._undone_on_error():
                grads, stats = self._compute(self.x[indices], self.y[indices], 1.0)
            return [None if i in self.step_fn.unused else g for i, g in enumerate(grads)], stats

        return self.async_store.run(chunk, unpack_indices(batches), compute, hypers, step_hypers)

    def async_snapshot(self, drop=()):
        """The shared store's state and the current call's step record, after dropping `drop`."""
        return self.async_store.snapshot(drop)

    def _close_async(self):
        if getattr(self, "async_store", None) is not None:
            self.async_store.close()
        self.async_store = None

    def evaluate(self, indices, *param_shards):
        self._install(param_shards)
        idx = np.asarray(indices)
        return self.step_fn.evaluate(self.x[idx], self.y[idx])

    def close(self):
        if self.bucketer is not None:
            self.bucketer.close()
            self.bucketer = None
        if self.sharded is not None:
            self.sharded.close()
            self.sharded = None
        self._close_async()
        for comm in {id(c): c for c in (self.comm, self.sync_comm) if c is not None}.values():
            if hasattr(comm, "close"):
                comm.close()
        self.comm = self.sync_comm = None


def pack_indices(batches):
    """Arrays of sample indices → (one array of them all, in int32 where that holds them, their bounds):
    one argument that Ray sends inline (~80 KB for 20 batches of 1,024), where an array each went
    through the object store once they passed 100 KB together (4.3 ms per call here, against 1.5)."""
    flat = np.concatenate([np.asarray(b).reshape(-1) for b in batches])
    if flat.size and flat.max() < np.iinfo(np.int32).max and flat.min() >= 0:
        flat = flat.astype(np.int32)
    return flat, np.cumsum([0] + [len(b) for b in batches])


def unpack_indices(packed):
    flat, bounds = packed
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
