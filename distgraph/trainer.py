"""Trainer: one API for training in this process or across Ray workers.

`backend="local"` runs in this process with no Ray: the batch is cut into `workers` shards that are
computed one after another and combined in rank order, as one node's Ray all-reduce combines them, so
a synchronous Ray run there (or with 2 gloo workers) and a local run with the same seed give the same
parameters, bit for bit, on cpu; gloo's ring of 3+ workers adds in another order (equal to rounding).
`backend="ray"` runs the data-parallel scheduler of `distgraph.distributed`. Sync: the parameter store
is sharded across the workers in one shared-memory segment (`distributed/zero.py`): they all-reduce
and each updates its slice, with no message through Ray inside a step; across nodes they meet in a gloo
group; in async mode (with a staleness bound) across nodes, parameter-store actors apply the updates. `strategy="branches"|"pipeline"`
splits the captured step by the graph instead (`trainer_plan.py`); `"auto"` asks the cost model.
`grad_scaler=GradScaler()` adds dynamic loss scaling: overflowing steps are skipped and counted.
`scheduler=` is stepped once per epoch, at its end after validation, as a torch loop steps an epoch
scheduler (ReduceLROnPlateau with the epoch's val_loss, or its training loss without val_data); with
`scheduler_interval="step"` it is stepped after every step instead, as a torch loop steps OneCycleLR or a
warm-up per batch (Lightning's `"interval": "step"`), on every backend, strategy and sync mode: each step's
hyperparameters are computed ahead for the epoch (`trainer_schedule.py`: why, and how faults and resumes
keep the same rows). The history's `lr` is the lr (first param group) of the epoch's last step.
`bind_to="core"` binds each Ray worker to cores of its own on its node, as mpirun's `--bind-to core`
(`distributed/affinity.py`: why, and what it measured); off by default, as in Ray.

Batches are a pure function of (seed, epoch): epoch e visits a permutation drawn from
`numpy.random.default_rng([seed, e])`, so a resumed run sees exactly the batches an uninterrupted
run would have seen. Dropout masks too: a local fit draws them from the driver's generator, which a checkpoint
holds; a synchronous Ray fit's step t on rank r from a stream of (`worker_seed`, r, t), `worker_seed` drawn from
the driver's generator at the first Ray fit and held by checkpoints (distributed/runtime.py).
"""

import os
import time
import warnings
import weakref

from distgraph.distributed.step import ShardStep, combine_gradients, merge_statistics, shard_bounds, unscale_
from distgraph.errors import ConfigError
from distgraph.history import History, epoch_line, epoch_statistics, steps_summary
from distgraph.ops.random_extra import get_rng_state, set_rng_state
from distgraph.trainer_data import EpochData, as_arrays, check_data, model_float_dtype, validation_arrays
from distgraph.trainer_options import check_batch_size, check_fit, check_options, checked_parts, syncs_batch_norm
from distgraph.trainer_schedule import Schedules, check_interval, check_scheduler


class Trainer(Schedules):
    def __init__(
        self,
        model,
        loss_fn,
        optimizer,
        *,
        workers=1,
        backend="local",
        device="cpu",
        strategy="data",
        sync="sync",
        staleness=2,
        allreduce="auto",
        bucket_mb=25,
        scheduler=None,
        scheduler_interval="epoch",
        grad_scaler=None,
        checkpoint_dir=None,
        checkpoint_every=None,
        checkpoint_every_steps=None,
        address=None,
        cpus_per_worker=1,
        bind_to=None,
        seed=0,
        progress=True,
        timeout_s=120.0,
        micro_batches=4,
        max_restarts=3,
    ):
        options = {
            "backend": backend, "sync": sync, "strategy": strategy, "workers": workers, "allreduce": allreduce,
            "device": device, "staleness": staleness, "bucket_mb": bucket_mb, "micro_batches": micro_batches,
            "checkpoint_every_steps": checkpoint_every_steps, "checkpoint_dir": checkpoint_dir, "bind_to": bind_to,
            "checkpoint_every": checkpoint_every, "cpus_per_worker": cpus_per_worker, "timeout_s": timeout_s,
            "address": address, "max_restarts": max_restarts, "seed": seed,
        }  # fmt: skip
        workers, self.elastic, self.bind_to = check_options(options)
        optimizer, factory = checked_parts(model, loss_fn, optimizer)  # a factory: called on the parameters
        check_scheduler(scheduler, optimizer, factory)
        self.model, self.loss_fn, self.optimizer, self.lr_scheduler = model, loss_fn, optimizer, scheduler
        self.syncs_batch_norm = syncs_batch_norm(model, workers, sync, allreduce)
        check_interval(scheduler_interval, type(scheduler).__name__)
        self.scheduler_interval = scheduler_interval
        self._schedule = None  # per-step schedules: the epoch's StepSchedule
        self._scheduled = 0  # per-step schedules: epoch steps the real scheduler has been stepped for
        self.grad_scaler = grad_scaler if grad_scaler is not None and grad_scaler.enabled else None
        self.workers, self.backend, self.device, self.sync = workers, backend, device, sync
        self.staleness, self.seed, self.progress, self.timeout_s = staleness, seed, progress, timeout_s
        self.allreduce = {"backend": allreduce, "bucket_mb": bucket_mb}
        self.address, self.cpus_per_worker = address, cpus_per_worker
        self.max_restarts, self.restarts = max_restarts, 0  # Ray sync: worker restarts a fit may use, and used
        self.strategy, self.micro_batches = strategy, micro_batches
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self.checkpoint_every_steps = checkpoint_every_steps
        # with Ray the workers hold the device; the driver's model (a cluster head often has no GPU) stays
        # on the host, receiving the trained parameters there
        self.step_fn = ShardStep(model, loss_fn, device if backend == "local" else "cpu")
        self.history = History()
        self.epoch = 0  # epochs completed
        self.epoch_step = 0  # steps of epoch `self.epoch` completed (a mid-epoch checkpoint resumes there)
        self.global_step = 0
        self._last_checkpoint_step = 0
        self._carried, self._epoch_parts = [], []  # statistics of the epoch's steps (`fit`), for step checkpoints
        self.worker_seed = None  # Ray workers' base seed, drawn at the first Ray fit (distributed/runtime.py)
        self._cluster = None
        self._release = None  # weakref.finalize closing `_cluster` when this Trainer is dropped (`_own`)

    # ---- fit -------------------------------------------------------------------------------------------
    def fit(self, data, epochs=1, batch_size=32, val_data=None, resume=False):
        """Train until `epochs` epochs are done in all → the history. `epochs` counts from this Trainer's first
        epoch, as Lightning's max_epochs (and Keras's epochs beside initial_epoch): a second fit(epochs=3) after
        fit(epochs=2) trains one epoch more, and a resumed fit continues the checkpoint's count to it.

        Inputs given as numpy arrays are cast to the model's floating dtype (float64 data for a float32 model
        run in float32, as `torch.from_numpy(x).float()`); inputs given as Tensors are not, and a model refuses
        a dtype it does not take in torch's words (trainer_data.py)."""
        epochs, batch_size = check_fit(epochs, batch_size)
        if resume:  # first: the checkpoint's epoch is the one a DataLoader's first pass is for, its seed the seed
            self._resume()
        if self.epoch >= epochs:  # nothing to train: a DataLoader takes no pass, as a torch loop over no epochs
            check_data(data)
            warnings.warn(
                f"Trainer.fit: {self.epoch} epoch(s) are done and epochs={epochs} is the total to reach, so nothing "
                f"was trained; fit(..., epochs={self.epoch + epochs}) trains {epochs} more",
                stacklevel=2,
            )
            return self.history
        float_dtype = model_float_dtype(self.model)  # numpy inputs are cast to it (trainer_data.py)
        source = EpochData(data, batch_size, self.seed, self.epoch, float_dtype)
        x, y = source.x, source.y
        val = None if val_data is None else validation_arrays(val_data, x, y, self.step_fn.evaluate, float_dtype)
        self._refresh_trainable()
        if self._cluster is None:
            self._cluster = self._start(x, y, batch_size if source.ranges is None else len(source.ranges[0]))
        if self._cluster is not None:
            self._cluster.set_data(x, y)
        self.restarts = 0
        while self.epoch < epochs:
            epoch, first = self.epoch, self.epoch_step
            x, y, batches, fresh = source.epoch(epoch)
            self._start_schedule(first)
            if fresh and self._cluster is not None:
                self._cluster.set_data(x, y)
            bar = _progress(len(batches), f"epoch {epoch + 1}/{epochs}", self.progress)
            bar.update(first)
            parts, start, workers = [], time.perf_counter(), {}  # workers: rank -> [samples, compute s]
            # a resumed epoch's steps before its checkpoint, as one part: the record covers the whole epoch
            carried = self._carried if first else []
            self._carried, self._epoch_parts = carried, parts
            seen = [0]  # samples so far (a running sum: summing `parts` each step is quadratic in the epoch)

            def on_step(t, stats, bar=bar, parts=parts, start=start, workers=workers, seen=seen):
                parts.append(stats)
                seen[0] += stats["count"]
                for rank, (n, seconds) in enumerate(stats.get("per_worker", ())):
                    workers.setdefault(rank, [0, 0.0])
                    workers[rank][0] += n
                    workers[rank][1] += seconds
                if bar.disable:
                    return
                rate = seen[0] / max(time.perf_counter() - start, 1e-9)
                # refresh=False: drawn by the next update, at most every mininterval; a terminal write per
                # step made the digits fit 1.1–1.3× slower and filled redirected logs
                row = self.step_hypers(t)  # a per-step schedule: the lr this step used
                lr = {} if row is None or "lr" not in row[0] else {"lr": f"{row[0]['lr']:.3g}"}
                bar.set_postfix(
                    loss=f"{stats['loss']:.4f}", **lr, per_worker=_per_worker(workers, rate / self.workers),
                    refresh=False,
                )  # fmt: skip
                bar.update(1)

            if not self._run_epoch(x, y, batches, on_step, first):
                bar.close()
                continue  # a store shard was lost: restored from the checkpoint, redo from there
            bar.close()
            record_lr = self._last_lr(first + len(parts) - 1)
            self._catch_up_scheduler(first + len(parts))
            elapsed = time.perf_counter() - start
            done = sum(p["count"] for p in parts)
            record = {"epoch": epoch + 1, **epoch_statistics(carried + parts), "samples_per_s": done / elapsed}
            record["time_s"] = elapsed
            if record_lr is not None:
                record["lr"] = record_lr
            if workers:  # each worker's samples per second of its own compute: a straggler shows here
                record["worker_samples_per_s"] = [n / max(sec, 1e-9) for n, sec in workers.values()]
            if self.grad_scaler is not None:
                record["skipped_steps"] = sum(p.get("skipped", 0) for p in carried + parts)
                record["loss_scale"] = self.grad_scaler.get_scale()
            try:  # the epoch is done only once validated: an error here leaves it at its last step, not closed
                if val is not None:
                    if self._cluster is not None:
                        self._cluster.pull()
                    record.update({f"val_{k}": v for k, v in self.evaluate(val).items() if k != "count"})
                self._step_scheduler(record)
            except BaseException:
                self._stop_inside_epoch(first + len(parts), steps_complete=True)
                raise
            self.history.epochs.append(record)
            self.epoch, self.epoch_step, self._carried = epoch + 1, 0, []
            if self.progress:
                print(epoch_line(record), flush=True)
            if self.checkpoint_dir and (self.checkpoint_every is None or self.epoch % self.checkpoint_every == 0):
                self.save_checkpoint()
        if self._cluster is not None:
            self._cluster.pull()
        return self.history

    def _run_epoch(self, x, y, batches, on_step, first):
        """The epoch's steps from `first` (`_run_remote_epoch`'s answer on Ray). A step that raises ends the
        fit with the steps before it applied: a per-step scheduler is stepped for those, as a torch loop
        steps it after each; it was left where the epoch began, with the optimizer holding the failed
        step's row (locally) or the one before it (Ray), so the next fit's lrs differed between the two."""
        began = self.global_step
        try:  # first == len(batches): the steps ran in a fit whose validation failed, none is left to run
            if self._cluster is None or first >= len(batches):
                for t in range(first, len(batches)):
                    self.apply_step_hypers(t)
                    on_step(t, self._local_step(x, y, batches[t]))
                    if t + 1 < len(batches):
                        self._step_checkpoint(t + 1)
                return True
            if self.elastic:
                self._cluster.fit_to_cluster(*self.elastic)
            return self._run_remote_epoch(batches, on_step, first)
        except BaseException:
            self._stop_inside_epoch(first + self.global_step - began)
            raise

    def _stop_inside_epoch(self, epoch_step, steps_complete=False):
        """An error ended the epoch after `epoch_step` steps: stay there, as a mid-epoch checkpoint of that step
        does, so a next fit goes on from it and `save_checkpoint` records it. It stayed at the epoch's start:
        a next fit applied those steps twice, a checkpoint recorded step 0 with the steps' parameters. This fit's
        statistics are kept only when all came back (`steps_complete`: an error in the validation); else the
        record covers the steps after the error (on Ray a failed call's never reach the driver)."""
        self._catch_up_scheduler(epoch_step)
        kept = self._epoch_parts if steps_complete else []
        self.epoch_step, self._carried, self._epoch_parts = epoch_step, self._carried + kept, []

    def _refresh_trainable(self):
        """A layer frozen or unfrozen since the last fit: the local step takes the new set of trainable
        parameters (`ShardStep.refresh_params`) and a graph strategy captures its step again; Ray workers
        hold model replicas built with the old set, so there a change is refused."""
        from distgraph.trainer_plan import PlanTrainer

        if self._cluster is not None and not isinstance(self._cluster, PlanTrainer):
            if change := self.step_fn.trainable_changes():
                raise ConfigError(
                    f"Trainer.fit: parameters changed requires_grad since the Ray workers started ({change}); their "
                    "replicas train the old set: close this Trainer and build a new one on the model and optimizer"
                )
        elif self.step_fn.refresh_params() and self._cluster is not None:
            self._cluster.close()  # the next step captures the graph again, with the new set's gradients

    def _start(self, x, y, batch_size):
        """What runs the steps: None for data parallelism in this process (`_local_step`), a RayCluster
        for data parallelism on Ray, a PlanTrainer for a step split by the graph (either backend)."""
        strategy = self.strategy
        if strategy == "auto":
            from distgraph.trainer_plan import choose

            strategy = choose(self, x, y, batch_size) if self.workers > 1 else "data"
        if strategy in ("branches", "pipeline"):
            from distgraph.trainer_plan import PlanTrainer

            if self.elastic or self.grad_scaler is not None:
                raise ConfigError(
                    f"Trainer: strategy {strategy!r} supports neither elastic workers nor grad_scaler; use 'data'"
                )

            return self._own(PlanTrainer, strategy)
        if self.backend == "ray":
            from distgraph.distributed.cluster import RayCluster

            return self._own(RayCluster)
        return None

    def _own(self, runner_cls, *args):
        """Build what runs the steps elsewhere (Ray workers, a Plan's executor) and tie its life to this
        Trainer's, as a DataLoader's worker processes end with it. It is handed the Trainer as a weak proxy,
        so no reference cycle keeps either alive, and dropping the Trainer closes it: the workers and their
        placement group are freed at once. Before, a Trainer dropped without `close()` (a notebook cell run
        again) kept its CPUs for the rest of the session and the next Trainer waited 60 s for them and failed.
        Ray frees everything of its own at exit, so the release does not run then."""
        runner = runner_cls(weakref.proxy(self), *args)
        if self._release is not None:
            self._release.detach()  # the runner it would close was closed by whoever replaced it
        self._release = weakref.finalize(self, runner.close)
        self._release.atexit = False
        return runner

    def _step_checkpoint(self, epoch_step):
        """Between two steps of an epoch: save a checkpoint when `checkpoint_every_steps` have passed
        since the last one (it records `epoch_step`, so a resume continues inside the epoch)."""
        every = self.checkpoint_every_steps
        if every is not None and self.global_step - self._last_checkpoint_step >= every:
            self.epoch_step = epoch_step
            self._catch_up_scheduler(epoch_step)
            self.save_checkpoint()

    def _run_remote_epoch(self, batches, on_step, first=0):
        """True when the epoch ran (from its step `first`); False after restoring from the last
        checkpoint because a parameter-store shard died (its steps since that checkpoint are redone,
        none applied twice)."""
        from distgraph.distributed.cluster import StoreLost

        first_step = self.global_step
        reported = []

        def counted(t, stats):
            reported.append(t)
            on_step(t, stats)

        def between_steps(step):  # the cluster calls this between two segments of the epoch
            self.global_step = first_step + step - first
            self._step_checkpoint(step)

        try:
            ran = self._cluster.run_epoch(
                batches, counted, start=first, segment=self.checkpoint_every_steps, on_segment=between_steps
            )
            self.global_step = first_step + (len(batches) - first if ran is None else ran)
            self._cluster.pull()  # the epoch's end state, inside the store-loss recovery: later pulls are free
        except StoreLost as exc:
            if not (self.checkpoint_dir and os.path.exists(self.checkpoint_path())):
                raise
            lost_at, lost_step = self.epoch, first_step + len(reported)
            data = self._cluster.data_refs
            self._cluster.close()
            self._cluster = None
            self.load_checkpoint()
            from distgraph.distributed.cluster import RayCluster

            self._cluster = self._own(RayCluster)
            self._cluster.data_refs = data
            self._cluster.resend_data()
            self.history.events.append(
                f"parameter store lost in epoch {lost_at + 1} at global step {lost_step} ({exc}); restored the "
                f"checkpoint of global step {self.global_step} (epoch {self.epoch + 1}, step {self.epoch_step}): "
                f"{lost_step - self.global_step} step(s) to redo"
            )
            return False
        return True

    def _local_step(self, x, y, idx):
        scaler = self.grad_scaler
        shard_grads, stats = [], []
        # buffers (batch norm's running statistics) as DDP keeps them: every rank starts the step from the
        # same ones and rank 0's result is kept (Ray: each worker's replica updates its own, rank 0's on its
        # shards); before, the shards updated the one model's buffers in turn, two updates a step. A step
        # that raises is applied nowhere and leaves the buffers as they were, as the Ray workers do.
        before, rank0 = self.step_fn.buffer_copies(), None
        unused = set(range(len(self.step_fn.params)))  # no gradient on any shard: grad None, as DDP leaves it
        # SyncBatchNorm's ranks normalize by the global batch's statistics together: as one shard here
        shards = 1 if self.syncs_batch_norm else self.workers
        try:
            for rank in range(shards):
                if rank:
                    self.step_fn.restore_buffers(before)
                lo, hi = shard_bounds(len(idx), shards, rank)
                sel = idx[lo:hi]
                grads, st = self.step_fn.compute(x[sel], y[sel], (hi - lo) / len(idx), scaler and scaler.get_scale())
                shard_grads.append(grads)
                stats.append(st)
                unused &= self.step_fn.unused
                rank0 = rank0 if rank0 is not None else self.step_fn.buffer_copies()
        except BaseException:
            self.step_fn.restore_buffers(before)
            raise
        self.step_fn.restore_buffers(rank0)
        grads = combine_gradients(shard_grads, quiet=scaler is not None) if shards > 1 else shard_grads[0]
        self.global_step += 1
        if scaler is not None:  # the Ray workers do the same on their slices: same bits, same decisions
            found = unscale_(grads, scaler.get_scale())
            scaler.record(found)
            if found:
                return {**merge_statistics(stats), "skipped": 1}
        from distgraph.autograd.tensor import Tensor

        for i, (p, g) in enumerate(zip(self.step_fn.params, grads)):
            p.grad = None if i in unused else Tensor(g, device=p.device)  # the optimizer skips it, as torch's
        self.optimizer.step()
        return merge_statistics(stats)

    # ---- evaluate --------------------------------------------------------------------------------------
    def evaluate(self, data, batch_size=1024):
        """Loss (and accuracy for classification) of the current parameters, in eval mode, on the driver."""
        batch_size = check_batch_size(batch_size, "Trainer.evaluate")
        if self._cluster is not None:
            self._cluster.pull()
        x, y = as_arrays(data, model_float_dtype(self.model))
        parts = [
            self.step_fn.evaluate(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
        return merge_statistics(parts)

    # ---- checkpoints -----------------------------------------------------------------------------------
    def checkpoint_path(self):
        if not self.checkpoint_dir:  # os.path.join(None, ...) was a bare TypeError
            raise ConfigError("Trainer: no checkpoint path: pass one to save/load_checkpoint or set checkpoint_dir")
        return os.path.join(self.checkpoint_dir, "checkpoint.dg")

    def state_dict(self):
        if self._cluster is not None:
            self._cluster.pull()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "epoch_stats": steps_summary(self._carried + self._epoch_parts) if self.epoch_step else None,
            "global_step": self.global_step,
            "seed": self.seed,
            "history": self.history.state_dict(),
            # the driver's generator, where a local fit draws its dropout masks, and the base of the streams Ray
            # workers draw a sync step's from: a resumed fit draws the masks the uninterrupted fit would have
            "rng_state": get_rng_state(),
            "worker_seed": self.worker_seed,
        }

    def load_state_dict(self, sd, _source="Trainer.load_state_dict"):
        from distgraph.trainer_options import check_trainer_state

        self.model.load_state_dict(check_trainer_state(sd, _source)["model"])  # a checkpoint, before loading any
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.lr_scheduler is not None and sd.get("scheduler") is not None:
            self.lr_scheduler.load_state_dict(sd["scheduler"])
        if self.grad_scaler is not None and sd.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(sd["grad_scaler"])
        self.epoch, self.global_step, self.seed = int(sd["epoch"]), int(sd["global_step"]), int(sd["seed"])
        self.epoch_step = int(sd.get("epoch_step", 0))  # checkpoints from before step checkpoints: epoch ends
        self._last_checkpoint_step = self.global_step
        self._carried = [sd["epoch_stats"]] if sd.get("epoch_stats") else []
        self.history = History(sd["history"]["epochs"], sd["history"]["events"])
        if sd.get("rng_state") is not None:  # (checkpoints from before it have none)
            set_rng_state(sd["rng_state"])
        if sd.get("worker_seed") is not None:
            self.worker_seed = int(sd["worker_seed"])
        if self._cluster is not None:
            self._cluster.push()

    def save_checkpoint(self, path=None):
        from distgraph.io import save

        path = path or self.checkpoint_path()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save(self.state_dict(), path)
        self._last_checkpoint_step = self.global_step
        return path

    def load_checkpoint(self, path=None):
        from distgraph.io import load

        self.load_state_dict(load(path := path or self.checkpoint_path()), f"Trainer.load_checkpoint: {path}")

    def _resume(self):
        if not self.checkpoint_dir:
            raise ConfigError("Trainer.fit(resume=True) needs checkpoint_dir")
        if os.path.exists(self.checkpoint_path()):
            self.load_checkpoint()
            where = f", step {self.epoch_step}" if self.epoch_step else ""
            self.history.events.append(f"resumed from {self.checkpoint_path()} at epoch {self.epoch}{where}")

    def close(self):
        """Stop the workers and free their resources (also done when the Trainer is dropped: `_own`)."""
        if self._release is not None:
            self._release.detach()
            self._release = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _per_worker(workers, mean):
    """The progress bar's per-worker figure: each rank's samples per compute second where the workers
    report them (a straggler stands out), else the epoch's rate shared evenly."""
    if not workers:
        return f"{mean:,.0f}/s"
    return " ".join(f"{n / max(sec, 1e-9) / 1e3:.1f}k" for n, sec in workers.values()) + "/s"


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True, mininterval=0.5)
