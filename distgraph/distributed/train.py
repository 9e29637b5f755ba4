"""Ray Train's API for a training loop of one's own, on distgraph's launch — so code written for
`ray.train.torch.TorchTrainer` runs with its imports changed:

    from distgraph.distributed import train

    def train_loop_per_worker(config):
        model = train.prepare_model(make_model())                  # DistributedDataParallel over the ranks
        loader = train.prepare_data_loader(DataLoader(ds, batch_size=32, shuffle=True))
        for epoch in range(config["epochs"]):
            ...
            with tempfile.TemporaryDirectory() as d:
                dg.save(model.state_dict(), f"{d}/model.dg")
                train.report({"loss": loss, "epoch": epoch}, checkpoint=train.Checkpoint.from_directory(d))

    result = train.TorchTrainer(train_loop_per_worker, train_loop_config={"epochs": 5},
                                scaling_config=train.ScalingConfig(num_workers=2),
                                run_config=train.RunConfig(storage_path="/tmp/runs", name="digits")).fit()
    result.metrics, result.checkpoint, result.metrics_dataframe

As in Ray Train (V2, Ray 2.60): every rank calls `report` at the same points; the metrics kept are rank 0's
(also a line each in the run's `result.json`: `result.metrics_history`, distgraph's); a checkpoint directory a
rank reports is copied (persisted) to `storage_path/name/checkpoint_NNNNNN`, the reports' running number.
Ray V2 keeps only the metrics reported with a checkpoint: `result.checkpoint` is the latest checkpoint and
`result.metrics` its report's metrics (None when no checkpoint was reported), `result.best_checkpoints` the
best `num_to_keep` (Checkpoint, metrics), worst first, and `result.metrics_dataframe` their metrics, a row
each. `get_checkpoint()` inside the loop is the one to resume from: the run's latest checkpoint, else
`resume_from_checkpoint=`. A fit under the `RunConfig(name, storage_path)` of an earlier one — finished
or failed — carries that run on (Ray V2's rule; `TorchTrainer.restore` is deprecated there): its loop's
`get_checkpoint()` is the run's latest checkpoint, and its Result counts the run's earlier checkpoints;
`Result.from_path(path)` reads a run's Result back. `get_context()` tells the rank its place.
`RunConfig(checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="loss",
checkpoint_score_order="min"))` keeps the best two and the latest (which is deleted once it is neither);
`RunConfig(failure_config=FailureConfig(max_failures=3))`: when a rank fails or its process dies, every
rank is stopped and the loop started again on fresh ones, `get_checkpoint()` the latest checkpoint
(train_run.py) — up to 3 times (-1: always), then fit() raises TrainingFailedError. The ranks are
`dg.distributed.launch`'s (one all-reduce group). As in Ray, `storage_path` must be a folder every node
shares (an NFS mount or the like): each rank checks the driver's marker in the run folder as it starts and
fails the attempt when its node does not see it.

Ray Data, as Ray Train feeds it: `TorchTrainer(..., datasets={"train": ray.data.from_items(rows)})` splits each
dataset over the ranks (`streaming_split(num_workers, equal=True)`, anew for each attempt), and inside the loop
`train.get_dataset_shard("train").iter_batches(batch_size=32, batch_format="numpy")` gives this rank's batches
(dicts of numpy arrays, for `dg.tensor`), epoch after epoch. Ray Data needs pyarrow and pandas installed.
"""

import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field, replace

from distgraph.distributed import collectives, loop, train_run
from distgraph.distributed.train_run import CheckpointConfig, FailureConfig
from distgraph.errors import ConfigError, DistributedError

__all__ = [
    "TorchTrainer", "DataParallelTrainer", "ScalingConfig", "RunConfig", "CheckpointConfig", "FailureConfig",
    "Checkpoint", "Result", "TrainingFailedError", "report", "get_context", "get_checkpoint", "prepare_model",
    "prepare_data_loader", "get_dataset_shard", "TorchConfig",
]  # fmt: skip


class TrainingFailedError(DistributedError):
    """fit() gave up: an attempt failed and FailureConfig allowed no further restart (Ray Train's)."""


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict = None
    placement_strategy: str = "PACK"
    trainer_resources: dict = None


@dataclass
class TorchConfig:
    """Ray's ray.train.torch.TorchConfig: `timeout_s` is how long the ranks' collectives wait; the backend is
    what the launch picks (shm on one node, gloo across nodes, NCCL on GPUs)."""

    backend: str = None
    init_method: str = "env"
    timeout_s: int = 1800


@dataclass
class RunConfig:
    name: str = None
    storage_path: str = None
    checkpoint_config: CheckpointConfig = None
    failure_config: FailureConfig = None
    verbose: int = 1

    def __post_init__(self):
        self.checkpoint_config = self.checkpoint_config or CheckpointConfig()
        self.failure_config = self.failure_config or FailureConfig()


class Checkpoint:
    """A directory of files (Ray Train's)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    @classmethod
    def from_directory(cls, path):
        if not os.path.isdir(path):
            raise ConfigError(f"Checkpoint.from_directory: {path!r} is not a directory")
        return cls(path)

    def to_directory(self, path=None):
        """A copy of the checkpoint's files in `path` (a new temporary directory by default) → its path."""
        import tempfile

        path = path or tempfile.mkdtemp(prefix="checkpoint_")
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        return path

    def as_directory(self):
        """A context manager giving the directory to read (the persisted one itself: nothing is copied)."""
        from contextlib import nullcontext

        return nullcontext(self.path)

    def __repr__(self):
        return f"Checkpoint(path={self.path!r})"


@dataclass
class Result:
    metrics: dict  # the latest checkpoint's report's (Ray V2's); None without a checkpoint
    checkpoint: Checkpoint
    path: str
    metrics_history: list = field(default_factory=list)  # distgraph's: every report of the run, rank 0's
    error: BaseException = None
    best_checkpoints: list = field(default_factory=list)  # (Checkpoint, metrics), the best num_to_keep, worst first
    return_value: object = None  # rank 0's train_loop_per_worker's

    @classmethod
    def from_path(cls, path, storage_filesystem=None):
        """The Result of the run in folder `path` (Ray's): its latest checkpoint and that report's metrics, its
        kept checkpoints ranked by the last fit's CheckpointConfig; no error, no return value."""
        if storage_filesystem is not None:
            raise ConfigError("Result.from_path: a folder on a local or shared filesystem only, no storage_filesystem")
        path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(path):
            raise DistributedError(f"Result.from_path: experiment folder {path} doesn't exist")
        if not os.path.exists(os.path.join(path, train_run.LOG)):
            raise DistributedError(f"Result.from_path: no TorchTrainer run reported in {path} (no {train_run.LOG})")
        return _result(path, train_run.RunLog(path), replace(train_run.load_config(path), num_to_keep=None))

    def get_best_checkpoint(self, metric, mode):
        """The kept checkpoint whose report has the max/min `metric` (Ray's Result.get_best_checkpoint)."""
        if mode not in ("max", "min"):
            raise ConfigError(
                f'Result.get_best_checkpoint: Unsupported mode: {mode}. Please choose from ["min", "max"]!'
            )
        if not self.best_checkpoints:
            raise DistributedError("Result.get_best_checkpoint: No checkpoint exists in the trial directory!")
        scored = [(c, m[metric]) for c, m in self.best_checkpoints if m.get(metric) is not None]
        if not scored:
            raise ConfigError(
                f"Result.get_best_checkpoint: Invalid metric name {metric}! You may choose from the following metrics: "
                f"{sorted(self.metrics)}."
            )
        return (max if mode == "max" else min)(scored, key=lambda cm: cm[1])[0]

    @property
    def metrics_dataframe(self):
        """The best checkpoints' metrics, a row each (Ray V2's); None without a checkpoint."""
        import pandas as pd  # (as Ray Train's: pandas is the caller's)

        return pd.DataFrame([m for _, m in self.best_checkpoints]) if self.best_checkpoints else None


def _result(path, log, config, return_value=None):
    """The Result of the run folder `path` as it is now (Ray V2's: built from the kept checkpoints)."""
    kept = log.checkpoints()
    name, metrics = kept[-1] if kept else (None, None)
    return Result(
        metrics=metrics, checkpoint=Checkpoint(os.path.join(path, name)) if kept else None, path=path,
        metrics_history=log.reports(), return_value=return_value,
        best_checkpoints=[(Checkpoint(os.path.join(path, n)), m) for n, m in train_run.best(kept, config)],
    )  # fmt: skip


class TrainContext:
    """Where this rank is (Ray Train's `get_context()`)."""

    def __init__(self, run):
        self._run = run

    def get_world_rank(self):
        return loop.rank()

    def get_world_size(self):
        return loop.world_size()

    def get_local_rank(self):
        return collectives.local_rank()

    def get_local_world_size(self):
        return collectives.local_size()

    def get_node_rank(self):
        return loop.node_rank()  # (Horovod's cross_rank differs where nodes run unequal numbers of ranks)

    def get_experiment_name(self):
        return self._run["name"]

    def get_trial_dir(self):
        return self._run["path"]


# this process's run (a rank's): where it writes, how many reports came before (earlier attempts), the
# checkpoints kept so far (name, metrics) and the one to resume from
_run = {"name": None, "path": None, "reported": 0, "before": 0, "first": 0, "kept": [], "checkpoint": None,
        "checkpoint_config": None, "datasets": {}}  # fmt: skip


def report(metrics, checkpoint=None):
    """Every rank calls it at the same points: rank 0's metrics are kept; a checkpoint directory (from any
    rank) is copied to the run's `checkpoint_NNNNNN`, the report's number."""
    if not isinstance(metrics, dict):
        raise ConfigError(f"report: metrics must be a dict, got {type(metrics).__name__}")
    if _run["path"] is None:
        raise ConfigError("report: call it inside a TorchTrainer's train_loop_per_worker (no run here)")
    index = _run["reported"]
    persisted = None
    if checkpoint is not None:  # numbered after the run's earlier checkpoints: a rerun never writes into one
        persisted = os.path.join(_run["path"], f"checkpoint_{_run['first'] + index:06d}")
        shutil.copytree(checkpoint.path, persisted, dirs_exist_ok=True)
    ranks = loop.allgather_object(persisted)  # every rank at this report: where its checkpoint went, if any
    new = next((p for p in ranks if p is not None), None)
    if new is not None:
        _run["checkpoint"] = new
    _run["reported"] += 1
    line = {
        **metrics, "training_iteration": _run["before"] + index + 1,
        "checkpoint_dir_name": os.path.basename(new) if new else None,
    }  # fmt: skip
    if loop.rank() == 0:  # every rank's copy is done (the allgather): the log and the pruning are rank 0's
        if new is not None:  # a score that is not a number fails here, in the loop, not after it (fit's Result)
            train_run.score_of(line, _run["checkpoint_config"], line["checkpoint_dir_name"])
        train_run.append_report(_run["path"], line)  # first: a failure before the pruning keeps a resume point
        if new is not None:
            _run["kept"] = train_run.prune(_run["path"], [*_run["kept"], (line["checkpoint_dir_name"], line)],
                                           _run["checkpoint_config"])  # fmt: skip


def get_context():
    return TrainContext(_run)


def get_dataset_shard(dataset_name=None):
    """This rank's share of the TorchTrainer's dataset `dataset_name` (Ray Data's DataIterator: `iter_batches`)."""
    shards = _run.get("datasets") or {}
    if dataset_name is None and len(shards) == 1:
        dataset_name = next(iter(shards))
    if dataset_name not in shards:
        raise ConfigError(
            f"get_dataset_shard: no dataset {dataset_name!r} was passed to the TorchTrainer (datasets: {sorted(shards)})"
        )
    return shards[dataset_name][loop._context.launch_rank()]


def get_checkpoint():
    """The checkpoint to resume from: the last reported in this run, else `resume_from_checkpoint`."""
    return Checkpoint(_run["checkpoint"]) if _run["checkpoint"] else None


def prepare_model(model, move_to_device=True, parallel_strategy="ddp", parallel_strategy_kwargs=None):
    """The model wrapped in DistributedDataParallel ("ddp") or FullyShardedDataParallel ("fsdp") when there
    are several ranks (Ray Train's)."""
    if parallel_strategy not in ("ddp", "fsdp", None):
        raise ConfigError(f"prepare_model: parallel_strategy must be 'ddp', 'fsdp' or None, got {parallel_strategy!r}")
    if loop.world_size() == 1 or parallel_strategy is None:
        return model
    from distgraph.distributed.ddp import DistributedDataParallel
    from distgraph.distributed.fsdp import FullyShardedDataParallel

    wrapper = FullyShardedDataParallel if parallel_strategy == "fsdp" else DistributedDataParallel
    return wrapper(model, **(parallel_strategy_kwargs or {}))


def prepare_data_loader(data_loader, add_dist_sampler=True, move_to_device=True, auto_transfer=True):
    """With several ranks, the same loader over this rank's share: a DistributedSampler that shuffles
    unless the loader read in order (Ray's rule); call `loader.sampler.set_epoch(epoch)` for a new order
    each epoch, as with Ray. A loader with a batch_sampler of its own, over an iterable dataset, or already
    distributed is returned as it is (as Ray does)."""
    from distgraph.data import DataLoader, DistributedSampler, IterableDataset, SequentialSampler

    loader = data_loader
    if (
        loop.world_size() == 1 or not add_dist_sampler or isinstance(loader.sampler, DistributedSampler)
        or isinstance(loader.dataset, IterableDataset) or loader.batch_size is None
    ):  # fmt: skip
        return loader
    sampler = DistributedSampler(loader.dataset, shuffle=not isinstance(loader.sampler, SequentialSampler))
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )  # fmt: skip


def _rank_main(fn, config, run):
    import inspect

    train_run.check_storage(run["path"], run["marker"])  # this rank's node sees the driver's run folder
    _run.update(run, reported=0)
    return fn(config if config is not None else {}) if inspect.signature(fn).parameters else fn()


class TorchTrainer:
    """Ray Train's TorchTrainer on distgraph's ranks: `fit()` runs `train_loop_per_worker(config)` on
    `scaling_config.num_workers` ranks → a Result."""

    def __init__(self, train_loop_per_worker, *, train_loop_config=None, scaling_config=None, run_config=None,
                 datasets=None, resume_from_checkpoint=None, torch_config=None, metadata=None):  # fmt: skip
        if not callable(train_loop_per_worker):
            raise ConfigError("TorchTrainer: train_loop_per_worker must be callable")
        datasets = dict(datasets or {})
        for key, ds in datasets.items():
            if not hasattr(ds, "streaming_split"):
                raise ConfigError(
                    f"TorchTrainer: datasets[{key!r}] must be a Ray Data Dataset (ray.data.from_items(...), "
                    f"ray.data.from_numpy(...)), got {type(ds).__name__}"
                )
        self.fn, self.config, self.datasets = train_loop_per_worker, train_loop_config, datasets
        self.scaling = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        self.resume = resume_from_checkpoint
        self.per_worker = _checked_resources(self.scaling)
        # TorchConfig(timeout_s=): how long the ranks' collectives and calls wait (the launch's waits); without
        # one the launch's 120 s, not Ray's 1800: a hung rank is found in minutes, not half an hour
        self.timeout_s = getattr(torch_config, "timeout_s", None) or 120.0
        if metadata is not None:
            warnings.warn("TorchTrainer: metadata is deprecated (Ray 2.60) and not kept", DeprecationWarning, 2)

    def fit(self):
        import time
        import uuid

        stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{uuid.uuid4().hex[:6]}"
        name = self.run_config.name or f"{type(self).__name__}_{stamp}"  # (Ray's: the class and a time)
        root = self.run_config.storage_path or os.path.join(os.path.expanduser("~"), "distgraph_results")
        path = os.path.join(os.path.abspath(root), name)
        os.makedirs(path, exist_ok=True)
        train_run.mark_storage(path, stamp)
        train_run.save_config(path, self.run_config.checkpoint_config)
        log = train_run.RunLog(path)
        if log.checkpoints() and self.run_config.verbose:  # (Ray's notice, as its checkpoint manager loads the run)
            print(f"TorchTrainer: run {name} goes on from its {log.checkpoints()[-1][0]} (get_checkpoint()); for a new "
                  f"run give a new RunConfig(name) or delete {path}", file=sys.stderr)  # fmt: skip
        ranks = self._launch_until_done(log, name, path, self.per_worker.get("CPU", 1), stamp)
        return _result(path, log, self.run_config.checkpoint_config, return_value=ranks[0])

    @classmethod
    def restore(cls, *args, **kwargs):
        raise DeprecationWarning(_RESTORE_DEPRECATED.format(f"{cls.__name__}.restore"))

    @classmethod
    def can_restore(cls, *args, **kwargs):
        raise DeprecationWarning(_RESTORE_DEPRECATED.format(f"{cls.__name__}.can_restore"))

    def _launch_until_done(self, log, name, path, cpus, stamp):
        """Attempts of the loop on fresh ranks until one completes, each after a failure resuming from this
        fit's latest checkpoint, as many as FailureConfig allows → what each rank returned."""
        s, failures = self.scaling, 0
        while True:
            resume = self._resume_point(log, path)
            run = {
                "name": name, "path": path, "marker": stamp, "before": len(log.reports()), "kept": log.checkpoints(),
                "checkpoint": resume, "first": train_run.next_checkpoint_number(path),
                "checkpoint_config": self.run_config.checkpoint_config,
                # each dataset split over the ranks, anew for each attempt (a split is read once through)
                "datasets": {k: ds.streaming_split(s.num_workers, equal=True) for k, ds in self.datasets.items()},
            }  # fmt: skip
            try:
                return loop.launch(
                    _rank_main, s.num_workers, args=(self.fn, self.config, run), device="cuda" if s.use_gpu else "cpu",
                    cpus_per_worker=cpus, timeout_s=self.timeout_s,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - Ray Train restarts on any failure of the attempt
                failures += 1
                if not self.run_config.failure_config.allows(failures):
                    raise TrainingFailedError(
                        f"TorchTrainer: training failed ({failures - 1} restart(s) allowed by FailureConfig): "
                        f"{type(exc).__name__}: {exc}"  # (its rank and traceback: the chained error's note)
                    ) from exc
                log.remove_unreported()
                if self.run_config.verbose:
                    resume = self._resume_point(log, path)
                    print(f"TorchTrainer: attempt {failures} failed ({exc}); restarting {s.num_workers} worker(s) "
                          f"from {os.path.basename(resume) if resume else 'the start'}", file=sys.stderr)  # fmt: skip

    def _resume_point(self, log, path):
        """The run's latest checkpoint (an earlier fit's under the same name included), else resume_from_checkpoint."""
        kept = log.checkpoints()
        return os.path.join(path, kept[-1][0]) if kept else self.resume.path if self.resume else None


def _checked_resources(s):
    """ScalingConfig's resources per worker, checked as Ray's are (before any folder is made): CPUs, and one
    GPU with use_gpu (a rank drives one device here); trainer_resources is deprecated in Ray 2.60."""
    per_worker = dict(s.resources_per_worker or {})
    if set(per_worker) - {"CPU", "GPU"} or s.placement_strategy != "PACK":
        raise ConfigError(
            f"TorchTrainer: resources_per_worker takes CPU (and GPU with use_gpu) and placement_strategy PACK; "
            f"got {per_worker} and {s.placement_strategy!r}"
        )
    if per_worker.get("GPU") and not s.use_gpu:
        raise ConfigError(
            "TorchTrainer: `use_gpu` is False but `GPU` was found in `resources_per_worker`. Either set `use_gpu` "
            "to True or remove `GPU` from `resources_per_worker` (Ray's rule)."
        )
    if per_worker.get("GPU", 1) != 1:
        raise ConfigError(f"TorchTrainer: each rank drives one GPU here; resources_per_worker GPU={per_worker['GPU']}")
    if s.trainer_resources is not None:
        warnings.warn("ScalingConfig: trainer_resources is deprecated (Ray 2.60) and not used", DeprecationWarning, 3)
    return per_worker


_RESTORE_DEPRECATED = (
    "{} is deprecated (Ray 2.60 raises too): build the trainer again with the same RunConfig(name=, storage_path=) "
    "and fit() it: the run goes on from its latest checkpoint (train.get_checkpoint() in the loop)"
)
DataParallelTrainer = TorchTrainer
