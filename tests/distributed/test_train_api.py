"""Ray Train's API on distgraph's ranks (distributed/train.py): a loop written for ray.train.torch.TorchTrainer
— prepare_model, prepare_data_loader, report with checkpoints, get_context, get_checkpoint — on 2 real Ray
ranks trains the digits MLP, persists rank 0's checkpoints under the run's path, and resumes from one."""

import os
import tempfile

import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.data import DataLoader, TensorDataset
from distgraph.distributed import train
from distgraph.errors import ConfigError


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
    assert sorted(os.listdir(result.path)) == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
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
    # the same run name again: numbered after the run's checkpoints, the one resumed from left as it was
    assert again.checkpoint.path == str(tmp_path / "digits" / "checkpoint_000003")
    assert dg.load(os.path.join(result.checkpoint.path, "state.dg"))["epoch"] == 2


def test_what_distgraph_does_not_offer_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"datasets= \(Ray Data\) is not supported"):
        train.TorchTrainer(lambda: None, datasets={"train": object()})
    with pytest.raises(ConfigError, match="placement_strategy PACK"):
        train.TorchTrainer(lambda: None, scaling_config=train.ScalingConfig(placement_strategy="SPREAD")).fit()
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
