"""Ray Train's API on distgraph's ranks (distributed/train.py): a loop written for ray.train.torch.TorchTrainer
— prepare_model, prepare_data_loader, report with checkpoints, get_context, get_checkpoint — on 2 real Ray
ranks trains the digits MLP, persists rank 0's checkpoints under the run's path, and resumes from one."""

import json
import os
import tempfile

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.data import DataLoader, TensorDataset
from distgraph.distributed import train
from distgraph.errors import ConfigError, DistributedError


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _loop(config):
    from distgraph.datasets import digits

    (x, y), _ = digits(seed=0)
    ctx = train.get_context()
    model = train.prepare_model(_model())
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = 0
    resumed = train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d:
            state = dg.load(os.path.join(d, "state.dg"))
        model.module.load_state_dict(state["model"])
        start = state["epoch"] + 1
    loader = train.prepare_data_loader(
        DataLoader(TensorDataset(dg.tensor(x), dg.tensor(y)), batch_size=32, shuffle=True)
    )
    for epoch in range(start, start + config["epochs"]):
        loader.sampler.set_epoch(epoch)
        total, seen = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(yb), seen + len(yb)
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if ctx.get_world_rank() == 0:  # Ray Train's usual pattern: rank 0 saves, every rank reports
                dg.save({"model": model.module.state_dict(), "epoch": epoch}, os.path.join(d, "state.dg"))
                checkpoint = train.Checkpoint.from_directory(d)
            train.report(
                {"epoch": epoch, "loss": total / seen, "rank": ctx.get_world_rank(), "world": ctx.get_world_size(),
                 "samples": seen, "resumed": resumed is not None},
                checkpoint=checkpoint,
            )  # fmt: skip


@pytest.mark.ray
def test_a_ray_train_loop_trains_reports_checkpoints_and_resumes(ray_session, tmp_path):
    scaling = train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})
    run = train.RunConfig(name="digits", storage_path=str(tmp_path))
    result = train.TorchTrainer(_loop, train_loop_config={"epochs": 3}, scaling_config=scaling, run_config=run).fit()
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [0, 1, 2] and [m["training_iteration"] for m in history] == [1, 2, 3]
    assert all(m["rank"] == 0 and m["world"] == 2 and not m["resumed"] for m in history)  # rank 0's metrics
    from distgraph.datasets import digits

    (x, _), (x_test, y_test) = digits(seed=0)
    assert history[0]["samples"] == -(-len(x) // 2)  # rank 0's share of the training digits (DistributedSampler)
    assert history[-1]["loss"] < history[0]["loss"]
    assert result.path == str(tmp_path / "digits") and result.metrics == history[-1]
    assert result.checkpoint.path == str(tmp_path / "digits" / "checkpoint_000002")
    assert sorted(os.listdir(result.path)) == [
        ".checkpoint_config.json",  # how Result.from_path ranks the checkpoints
        ".validate_storage_marker",  # the driver's, found by every rank (storage_path is shared)
        "checkpoint_000000",
        "checkpoint_000001",
        "checkpoint_000002",
        "result.json",
    ]
    assert result.metrics["checkpoint_dir_name"] == "checkpoint_000002"
    state = dg.load(os.path.join(result.checkpoint.path, "state.dg"))
    model = _model()
    model.load_state_dict(state["model"])
    accuracy = (model(dg.tensor(x_test)).argmax(1).numpy() == y_test).mean()
    assert accuracy > 0.9, accuracy
    again = train.TorchTrainer(
        _loop, train_loop_config={"epochs": 1}, scaling_config=scaling, resume_from_checkpoint=result.checkpoint,
        run_config=run,
    ).fit()  # fmt: skip
    assert again.metrics["epoch"] == 3 and again.metrics["resumed"]
    # the same run again (it resumes from its latest checkpoint, the one given too): numbered after the run's
    # checkpoints, the one resumed from left as it was
    assert again.checkpoint.path == str(tmp_path / "digits" / "checkpoint_000003")
    assert dg.load(os.path.join(result.checkpoint.path, "state.dg"))["epoch"] == 2


def test_what_distgraph_does_not_offer_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"datasets\['train'\] must be a Ray Data Dataset .* got object"):
        train.TorchTrainer(lambda: None, datasets={"train": object()})
    with pytest.raises(ConfigError, match="placement_strategy PACK"):
        train.TorchTrainer(lambda: None, scaling_config=train.ScalingConfig(placement_strategy="SPREAD"))
    # Ray's checks, before any run folder is made (they were silently ignored)
    with pytest.raises(ConfigError, match="`use_gpu` is False but `GPU` was found in `resources_per_worker`"):
        train.TorchTrainer(lambda: None, scaling_config=train.ScalingConfig(resources_per_worker={"GPU": 1}))
    with pytest.raises(ConfigError, match="each rank drives one GPU here; resources_per_worker GPU=2"):
        scaling = train.ScalingConfig(use_gpu=True, resources_per_worker={"GPU": 2})
        train.TorchTrainer(lambda: None, scaling_config=scaling)
    with pytest.warns(DeprecationWarning, match="trainer_resources is deprecated"):
        train.TorchTrainer(lambda: None, scaling_config=train.ScalingConfig(trainer_resources={"CPU": 1}))
    with pytest.warns(DeprecationWarning, match="metadata is deprecated"):
        train.TorchTrainer(lambda: None, metadata={"a": 1})
    # Ray 2.60 raises on both: a fit under the same RunConfig(name, storage_path) carries the run on instead
    with pytest.raises(DeprecationWarning, match=r"TorchTrainer.restore is deprecated .* same RunConfig\(name="):
        train.TorchTrainer.restore("/tmp/runs/digits")
    with pytest.raises(DeprecationWarning, match="TorchTrainer.can_restore is deprecated"):
        train.TorchTrainer.can_restore("/tmp/runs/digits")
    assert train.TorchTrainer(lambda: None, torch_config=train.TorchConfig(timeout_s=30)).timeout_s == 30
    with pytest.raises(ConfigError, match="report: metrics must be a dict"):
        train.report([1.0])
    with pytest.raises(ConfigError, match="report: call it inside a TorchTrainer's train_loop_per_worker"):
        train.report({"loss": 1.0})
    with pytest.raises(ConfigError, match="is not a directory"):
        train.Checkpoint.from_directory("/nonexistent/checkpoint")
    model = _model()
    assert train.prepare_model(model) is model  # alone: nothing to wrap
    loader = DataLoader(TensorDataset(dg.ones(4, 2)), batch_size=2)
    assert train.prepare_data_loader(loader) is loader


LOSSES = [5.0, 1.0, 3.0, 2.0]  # per epoch: the best two checkpoints are epoch 1's and epoch 3's


def _flaky_loop(config):
    """Four epochs, a checkpoint each; rank 1 fails once as it starts epoch 2 — its process dies (os._exit)
    or it raises — and leaves a marker so that the restarted attempt goes through."""
    ctx = train.get_context()
    start, resumed = 0, train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["epoch"] + 1
    for epoch in range(start, len(LOSSES)):
        if epoch == 2 and ctx.get_world_rank() == 1 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            if config["how"] == "dies":
                os._exit(1)
            raise RuntimeError("rank 1 gave up at epoch 2")
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if ctx.get_world_rank() == 0:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"epoch": epoch}, f)
                checkpoint = train.Checkpoint.from_directory(d)
            train.report({"epoch": epoch, "loss": LOSSES[epoch], "started_at": start}, checkpoint=checkpoint)
    return f"rank {ctx.get_world_rank()} done"


@pytest.mark.ray
def test_a_dead_rank_restarts_the_run_from_its_latest_checkpoint_keeping_the_best_two(ray_session, tmp_path, capfd):
    run = train.RunConfig(
        name="flaky", storage_path=str(tmp_path), failure_config=train.FailureConfig(max_failures=1),
        checkpoint_config=train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="loss",
                                                 checkpoint_score_order="min"),
    )  # fmt: skip
    result = train.TorchTrainer(
        _flaky_loop, train_loop_config={"marker": str(tmp_path / "failed-once"), "how": "dies"}, run_config=run,
        scaling_config=train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
    ).fit()  # fmt: skip
    assert os.path.exists(tmp_path / "failed-once")  # the first attempt did fail
    said = capfd.readouterr().err
    assert "TorchTrainer: attempt 1 failed (launch: the worker of rank 1 died during _rank_main" in said, said
    assert "restarting 2 worker(s) from checkpoint_000001" in said
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [0, 1, 2, 3] and [m["training_iteration"] for m in history] == [1, 2, 3, 4]
    assert [m["started_at"] for m in history] == [0, 0, 2, 2]  # the second attempt resumed after epoch 1
    # kept: the best two by loss (epochs 1 and 3), the latest among them; epochs 0 and 2 deleted as they fell out
    assert sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_0")) == [
        "checkpoint_000001", "checkpoint_000003"
    ]  # fmt: skip
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000003")
    assert [(os.path.basename(c.path), m["loss"]) for c, m in result.best_checkpoints] == [
        ("checkpoint_000003", 2.0), ("checkpoint_000001", 1.0)
    ]  # fmt: skip
    assert os.path.basename(result.get_best_checkpoint("loss", "min").path) == "checkpoint_000001"
    assert result.return_value == "rank 0 done"
    with open(os.path.join(result.path, "result.json")) as f:  # rank 0's reports, one line each, on disk
        assert [json.loads(line)["epoch"] for line in f] == [0, 1, 2, 3]


@pytest.mark.ray
def test_without_restarts_allowed_a_failing_rank_fails_the_fit_and_a_rerun_goes_on(ray_session, tmp_path, capfd):
    trainer = train.TorchTrainer(
        _flaky_loop, train_loop_config={"marker": str(tmp_path / "failed-once"), "how": "raises"},
        scaling_config=train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=train.RunConfig(name="fails", storage_path=str(tmp_path)),
    )  # fmt: skip
    with pytest.raises(train.TrainingFailedError, match=r"0 restart\(s\) allowed.*rank 1 gave up at epoch 2"):
        trainer.fit()
    assert issubclass(train.TrainingFailedError, DistributedError)
    # what the attempt reported before it failed is on disk: epochs 0 and 1, with their checkpoints
    with open(tmp_path / "fails" / "result.json") as f:
        assert [json.loads(line)["checkpoint_dir_name"] for line in f] == ["checkpoint_000000", "checkpoint_000001"]
    # Ray V2: a fit under the same RunConfig(name, storage_path) carries the failed run on from its latest checkpoint
    result = trainer.fit()
    assert "TorchTrainer: run fails goes on from its checkpoint_000001" in capfd.readouterr().err
    history = result.metrics_history
    assert [(m["epoch"], m["started_at"], m["training_iteration"]) for m in history] == [
        (0, 0, 1), (1, 0, 2), (2, 2, 3), (3, 2, 4)
    ]  # fmt: skip
    assert result.metrics == history[-1] and len(result.best_checkpoints) == 4
    with open(os.path.join(result.checkpoint.path, "state.json")) as f:
        assert json.load(f) == {"epoch": 3}


def _epochs_loop(config):
    """A report per (loss, checkpoint or not) of config["reports"], its epochs after get_checkpoint()'s."""
    start, resumed = 0, train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d, open(os.path.join(d, "epoch.txt")) as f:
            start = int(f.read()) + 1
    for epoch, (loss, keep) in enumerate(config["reports"], start):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch.txt"), "w") as f:
                f.write(str(epoch))
            train.report(
                {"epoch": epoch, "loss": loss}, checkpoint=train.Checkpoint.from_directory(d) if keep else None
            )


@pytest.mark.ray
def test_the_result_is_the_runs_checkpoints_and_a_second_fit_of_the_run_goes_on_from_its_latest(ray_session, tmp_path):
    """Ray V2 keeps only metrics reported with a checkpoint: Result.metrics is the latest checkpoint's report's (not
    the last report's), best_checkpoints the best num_to_keep worst first (not the latest kept beside them) and
    metrics_dataframe their metrics. A second fit under the same RunConfig resumes the run and counts its checkpoints."""
    by_loss = train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="min")
    run = train.RunConfig(name="scored", storage_path=str(tmp_path), checkpoint_config=by_loss)
    reports = [(3.0, True), (1.0, True), (2.0, True), (4.0, True), (0.5, False)]  # the last one with no checkpoint
    result = train.TorchTrainer(_epochs_loop, train_loop_config={"reports": reports}, run_config=run).fit()
    assert [m["epoch"] for m in result.metrics_history] == [0, 1, 2, 3, 4]  # every report (distgraph's)
    assert result.metrics["epoch"] == 3 and result.metrics["loss"] == 4.0  # the latest checkpoint's report
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000003")
    names = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_0"))
    assert names == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]  # the best two and the latest
    assert [(os.path.basename(c.path), m["loss"]) for c, m in result.best_checkpoints] == [
        ("checkpoint_000002", 2.0), ("checkpoint_000001", 1.0)
    ]  # fmt: skip
    assert result.metrics_dataframe["epoch"].tolist() == [2, 1]
    again = train.TorchTrainer(_epochs_loop, train_loop_config={"reports": [(0.2, True)]}, run_config=run).fit()
    assert again.metrics["epoch"] == 4 and again.metrics["training_iteration"] == 6  # after checkpoint_000003's epoch
    assert [(os.path.basename(c.path), m["loss"]) for c, m in again.best_checkpoints] == [
        ("checkpoint_000001", 1.0), ("checkpoint_000004", 0.2)
    ]  # fmt: skip
    assert sorted(d for d in os.listdir(again.path) if d.startswith("checkpoint_0")) == [
        "checkpoint_000001", "checkpoint_000004"
    ]  # fmt: skip
    restored = train.Result.from_path(again.path)  # Ray's: the run's Result read back from its folder
    assert restored.metrics == again.metrics and restored.checkpoint.path == again.checkpoint.path
    assert [(c.path, m) for c, m in restored.best_checkpoints] == [(c.path, m) for c, m in again.best_checkpoints]
    assert restored.metrics_history == again.metrics_history and restored.return_value is None


def test_a_run_without_checkpoints_has_no_metrics_in_its_result(tmp_path):
    from distgraph.distributed import train_run

    train_run.append_report(str(tmp_path), {"loss": 1.0, "training_iteration": 1, "checkpoint_dir_name": None})
    result = train.Result.from_path(tmp_path)
    assert result.metrics is None and result.checkpoint is None and result.best_checkpoints == []
    assert result.metrics_dataframe is None and result.metrics_history[0]["loss"] == 1.0
    with pytest.raises(DistributedError, match="No checkpoint exists"):
        result.get_best_checkpoint("loss", "min")
    with pytest.raises(DistributedError, match="experiment folder .*nowhere doesn't exist"):
        train.Result.from_path(tmp_path / "nowhere")
    with pytest.raises(DistributedError, match="no TorchTrainer run reported in"):
        train.Result.from_path((tmp_path / "empty").mkdir() or tmp_path / "empty")


@pytest.mark.ray
def test_a_rank_that_does_not_see_the_drivers_run_folder_fails_the_fit(ray_session, tmp_path, monkeypatch):
    """Ray's rule: storage_path must be shared by every node. On one host every path is, so the driver's marker is
    written elsewhere here, as a driver with a local storage_path writes it on a disk the other nodes lack."""
    from distgraph.distributed import train_run

    elsewhere, mark = tmp_path / "drivers-own-disk", train_run.mark_storage
    elsewhere.mkdir()
    monkeypatch.setattr(train_run, "mark_storage", lambda path, token: mark(str(elsewhere), token))  # (the driver's)
    with pytest.raises(train.TrainingFailedError, match=r"does not see the run folder .*marker is missing.*every node"):
        train.TorchTrainer(
            _epochs_loop, train_loop_config={"reports": [(1.0, True)]},
            run_config=train.RunConfig(name="unshared", storage_path=str(tmp_path)),
        ).fit()  # fmt: skip
    assert not os.path.exists(tmp_path / "unshared" / "result.json")  # stopped before any report


def test_checkpoint_retention_keeps_the_best_and_always_the_latest(tmp_path):
    from distgraph.distributed import train_run

    config = train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="acc")
    kept = []
    for i, acc in enumerate([0.9, 0.5, 0.7]):
        os.makedirs(tmp_path / f"c{i}")
        kept = train_run.prune(str(tmp_path), [*kept, (f"c{i}", {"acc": acc})], config)
    assert [n for n, _ in kept] == ["c0", "c2"]  # the best (0.9) and the latest, which is never deleted
    assert sorted(os.listdir(tmp_path)) == ["c0", "c2"]
    oldest_first = train_run.prune(str(tmp_path), kept, train.CheckpointConfig(num_to_keep=1))
    assert [n for n, _ in oldest_first] == ["c2"] and sorted(os.listdir(tmp_path)) == ["c2"]
    nan = float("nan")  # a NaN'd epoch's score is the worst in either order (Ray's), not left where sort put it
    scores = [("a", {"loss": 1.0}), ("n", {"loss": nan}), ("b", {"loss": 0.5}), ("d", {"loss": 2.0})]
    for order, worst_first in (("min", ["n", "d", "a", "b"]), ("max", ["n", "b", "a", "d"])):
        by_loss = train.CheckpointConfig(checkpoint_score_attribute="loss", checkpoint_score_order=order)
        assert [n for n, _ in train_run.ranked(scores, by_loss)] == worst_first, order
    # Ray's: a report without the attribute ranks worst (warned), nested metrics are read as "a/b", a 0-d value
    # counts as its number; only a value that is no number is an error (raised as it is reported)
    mixed = [("m", {"loss": 1.0}), ("x", {"val": {"acc": 0.8}}), ("y", {"val": {"acc": np.float32(0.6)}})]
    nested = train.CheckpointConfig(checkpoint_score_attribute="val/acc")
    assert [n for n, _ in train_run.ranked(mixed, nested)] == ["m", "y", "x"]
    with pytest.warns(UserWarning, match="the report of c3 has no 'acc': it ranks worst"):
        assert train_run.score_of({"loss": 1.0}, config, "c3") is None
    with pytest.raises(ConfigError, match=r"checkpoint_score_attribute 'acc' must be a number .* c4 has 'high'"):
        train_run.score_of({"acc": "high"}, config, "c4")
    with pytest.raises(ConfigError, match="Received invalid num_to_keep: 0"):
        train.CheckpointConfig(num_to_keep=0)
    with pytest.raises(ConfigError, match="Received invalid checkpoint_score_order: best"):
        train.CheckpointConfig(checkpoint_score_order="best")
    with pytest.raises(ConfigError, match="max_failures must be an int >= -1"):
        train.FailureConfig(max_failures=-2)
    assert train.FailureConfig(max_failures=-1).allows(10**6) and not train.FailureConfig().allows(1)


def _fsdp_loop():
    from distgraph.datasets import digits

    (x, y), _ = digits(seed=0)
    model = train.prepare_model(_model(), parallel_strategy="fsdp")
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(dg.tensor(x[:256])), dg.tensor(y[:256]))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train.report({"held": sum(p.numel() for p in model.parameters()), "first": losses[0], "last": losses[-1]})
    return type(model).__name__


@pytest.mark.ray
def test_prepare_model_shards_the_model_with_the_fsdp_strategy(ray_session, tmp_path):
    result = train.TorchTrainer(
        _fsdp_loop, scaling_config=train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=train.RunConfig(name="fsdp", storage_path=str(tmp_path)),
    ).fit()  # fmt: skip
    assert result.return_value == "FullyShardedDataParallel"
    assert result.metrics is None  # Ray V2 keeps only the metrics reported with a checkpoint; distgraph's history:
    metrics = result.metrics_history[-1]
    whole = sum(p.numel() for p in _model().parameters())  # 2,410: rank 0 holds half
    assert metrics["held"] == -(-whole // 2) and metrics["last"] < metrics["first"] / 2
    with pytest.raises(ConfigError, match="parallel_strategy must be 'ddp', 'fsdp' or None"):
        train.prepare_model(_model(), parallel_strategy="zero3")


def _array_reports():
    for epoch in range(3):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "epoch.txt"), "w") as f:
                f.write(str(epoch))
            train.report({"epoch": epoch, "weights": np.arange(3) + epoch}, train.Checkpoint.from_directory(folder))


def test_array_metrics_are_kept_as_lists_and_the_latest_checkpoint_survives(ray_session, tmp_path):
    """An array metric made the report's JSON line fail after the older checkpoints were already pruned: the
    attempt failed with no resume point left. Now the line is written first, with the array as a list."""
    config = train.RunConfig(storage_path=str(tmp_path), name="arrays",
                             checkpoint_config=train.CheckpointConfig(num_to_keep=1))  # fmt: skip
    result = train.TorchTrainer(_array_reports, run_config=config).fit()
    assert result.metrics["weights"] == [2, 3, 4]
    with open(os.path.join(result.checkpoint.path, "epoch.txt")) as f:
        assert f.read() == "2"
    assert sorted(d for d in os.listdir(tmp_path / "arrays") if d.startswith("checkpoint_")) == ["checkpoint_000002"]
