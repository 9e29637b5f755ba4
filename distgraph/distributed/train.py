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

As in Ray Train: every rank calls `report` at the same points; the metrics kept are rank 0's; a
checkpoint directory a rank reports is copied (persisted) to `storage_path/name/checkpoint_NNNNNN`, the
reports' running number, and the last one is `result.checkpoint`; `get_checkpoint()` inside the loop is
the one to resume from (`resume_from_checkpoint=`, else the last reported in this run); `get_context()`
tells the rank its place. The ranks are `dg.distributed.launch`'s (one all-reduce group; a rank's error
ends fit() with it). Not offered: Ray Data `datasets=`, failure retries (`FailureConfig`).
"""

import os
import shutil
from dataclasses import dataclass, field

from distgraph.distributed import collectives, loop
from distgraph.errors import ConfigError

__all__ = [
    "TorchTrainer", "DataParallelTrainer", "ScalingConfig", "RunConfig", "Checkpoint", "Result", "report",
    "get_context", "get_checkpoint", "prepare_model", "prepare_data_loader",
]  # fmt: skip


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict = None
    placement_strategy: str = "PACK"
    trainer_resources: dict = None


@dataclass
class RunConfig:
    name: str = None
    storage_path: str = None
    checkpoint_config: object = None
    failure_config: object = None
    verbose: int = 1


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
    metrics: dict
    checkpoint: Checkpoint
    path: str
    metrics_history: list = field(default_factory=list)
    error: BaseException = None

    @property
    def metrics_dataframe(self):
        import pandas as pd  # (as Ray Train's: pandas is the caller's)

        return pd.DataFrame(self.metrics_history)


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
        return collectives.cross_rank()

    def get_experiment_name(self):
        return self._run["name"]

    def get_trial_dir(self):
        return self._run["path"]


_run = {"name": None, "path": None, "reports": [], "checkpoint": None, "first": 0}  # this process's run (a rank's)


def report(metrics, checkpoint=None):
    """Every rank calls it at the same points: rank 0's metrics are kept; a checkpoint directory (from any
    rank) is copied to the run's `checkpoint_NNNNNN`, the report's number."""
    if not isinstance(metrics, dict):
        raise ConfigError(f"report: metrics must be a dict, got {type(metrics).__name__}")
    if _run["path"] is None:
        raise ConfigError("report: call it inside a TorchTrainer's train_loop_per_worker (no run here)")
    index = len(_run["reports"])
    persisted = None
    if checkpoint is not None:  # numbered after the run's earlier checkpoints: a rerun never writes into one
        persisted = os.path.join(_run["path"], f"checkpoint_{_run['first'] + index:06d}")
        shutil.copytree(checkpoint.path, persisted, dirs_exist_ok=True)
    ranks = loop.allgather_object(persisted)  # every rank at this report: where its checkpoint went, if any
    kept = next((p for p in ranks if p is not None), None)
    if kept is not None:
        _run["checkpoint"] = kept
    _run["reports"].append(
        {**metrics, "training_iteration": index + 1, "checkpoint_dir_name": os.path.basename(kept) if kept else None}
    )


def get_context():
    return TrainContext(_run)


def get_checkpoint():
    """The checkpoint to resume from: the last reported in this run, else `resume_from_checkpoint`."""
    return Checkpoint(_run["checkpoint"]) if _run["checkpoint"] else None


def prepare_model(model, move_to_device=True, parallel_strategy="ddp", parallel_strategy_kwargs=None):
    """The model wrapped in DistributedDataParallel when there are several ranks (Ray Train's)."""
    if parallel_strategy not in ("ddp", None):
        raise ConfigError(f"prepare_model: parallel_strategy must be 'ddp' or None, got {parallel_strategy!r}")
    if loop.world_size() == 1 or parallel_strategy is None:
        return model
    from distgraph.distributed.ddp import DistributedDataParallel

    return DistributedDataParallel(model, **(parallel_strategy_kwargs or {}))


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


def _rank_main(fn, config, name, path, resume, first):
    import inspect

    _run.update(name=name, path=path, reports=[], checkpoint=resume, first=first)
    fn(config if config is not None else {}) if inspect.signature(fn).parameters else fn()
    return _run["reports"], _run["checkpoint"]


class TorchTrainer:
    """Ray Train's TorchTrainer on distgraph's ranks: `fit()` runs `train_loop_per_worker(config)` on
    `scaling_config.num_workers` ranks → a Result."""

    def __init__(self, train_loop_per_worker, *, train_loop_config=None, scaling_config=None, run_config=None,
                 datasets=None, resume_from_checkpoint=None, torch_config=None, metadata=None):  # fmt: skip
        if not callable(train_loop_per_worker):
            raise ConfigError("TorchTrainer: train_loop_per_worker must be callable")
        if datasets:
            raise ConfigError("TorchTrainer: datasets= (Ray Data) is not supported: read the data in the loop")
        self.fn, self.config = train_loop_per_worker, train_loop_config
        self.scaling = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        self.resume = resume_from_checkpoint

    def fit(self):
        import time
        import uuid

        stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{uuid.uuid4().hex[:6]}"
        name = self.run_config.name or f"{type(self).__name__}_{stamp}"  # (Ray's: the class and a time)
        root = self.run_config.storage_path or os.path.join(os.path.expanduser("~"), "distgraph_results")
        path = os.path.join(os.path.abspath(root), name)
        os.makedirs(path, exist_ok=True)
        done = [int(d.rsplit("_", 1)[1]) for d in os.listdir(path) if d.startswith("checkpoint_") and d[11:].isdigit()]
        s = self.scaling
        per_worker = dict(s.resources_per_worker or {})
        if set(per_worker) - {"CPU", "GPU"} or s.placement_strategy != "PACK":
            raise ConfigError(
                f"TorchTrainer: resources_per_worker takes CPU (and GPU with use_gpu) and placement_strategy PACK; "
                f"got {per_worker} and {s.placement_strategy!r}"
            )
        cpus = per_worker.get("CPU", 1)
        resume = self.resume.path if self.resume is not None else None
        ranks = loop.launch(
            _rank_main, s.num_workers, args=(self.fn, self.config, name, path, resume, max(done, default=-1) + 1),
            device="cuda" if s.use_gpu else "cpu", cpus_per_worker=cpus,
        )  # fmt: skip
        reports, last = ranks[0]
        return Result(
            metrics=reports[-1] if reports else {}, checkpoint=Checkpoint(last) if last else None, path=path,
            metrics_history=reports,
        )  # fmt: skip


DataParallelTrainer = TorchTrainer
