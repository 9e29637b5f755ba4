"""Ray Data through Ray Train's API (distributed/train.py): TorchTrainer(datasets=...) splits each dataset over 2
real Ray ranks, each rank's `get_dataset_shard(name).iter_batches()` gives an equal, disjoint half every epoch,
and a linear model trained on them under DDP fits the data."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed import train
from distgraph.errors import ConfigError

pytest.importorskip("pyarrow")  # Ray Data's own needs (the test extra installs them)
pytest.importorskip("pandas")
pytestmark = pytest.mark.ray
W_TRUE = np.array([[1.5], [-2.0], [0.5]], np.float32)


def _rows(n, start=0):
    x = np.random.default_rng(start).standard_normal((n, 3)).astype(np.float32)
    return [{"i": start + k, "x": x[k], "y": x[k] @ W_TRUE} for k in range(n)]


def _loop(config):
    dg.manual_seed(0)
    model = train.prepare_model(nn.Linear(3, 1))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    shard, seen, losses = train.get_dataset_shard("train"), [], []
    for epoch in range(config["epochs"]):
        ids = []
        for batch in shard.iter_batches(batch_size=8, batch_format="numpy"):
            ids += batch["i"].tolist()
            opt.zero_grad()
            loss = F.mse_loss(model(dg.tensor(batch["x"])), dg.tensor(batch["y"]))
            loss.backward()
            opt.step()
        seen.append(dist.allgather_object(sorted(ids)))  # both ranks' rows of this epoch
        valid = [b["i"].tolist() for b in train.get_dataset_shard("valid").iter_batches(batch_size=100)]
        losses.append(float(loss))
        train.report({"epoch": epoch, "loss": float(loss), "valid_rows": sum(map(len, valid))})
    with pytest.raises(
        ConfigError, match=r"no dataset 'test' was passed to the TorchTrainer \(datasets: \['train', 'valid'\]\)"
    ):
        train.get_dataset_shard("test")
    return {"seen": seen, "losses": losses, "weight": model.module.weight.detach().numpy()}


def test_each_rank_reads_an_equal_disjoint_half_of_each_dataset_every_epoch(ray_session, tmp_path):
    import ray.data

    datasets = {"train": ray.data.from_items(_rows(64)), "valid": ray.data.from_items(_rows(16, start=1000))}
    result = train.TorchTrainer(
        _loop, train_loop_config={"epochs": 6}, datasets=datasets,
        scaling_config=train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=train.RunConfig(storage_path=str(tmp_path), name="data"),
    ).fit()  # fmt: skip
    metrics = result.metrics_history[-1]  # (result.metrics is None: Ray V2 keeps checkpointed reports' metrics only)
    assert metrics["epoch"] == 5 and metrics["valid_rows"] == 8  # half of the 16 validation rows
    rank0 = result.return_value
    for mine, theirs in rank0["seen"]:  # every epoch: 32 rows each, together all 64 once
        assert len(mine) == len(theirs) == 32 and sorted(mine + theirs) == list(range(64))
    assert rank0["losses"][-1] < rank0["losses"][0] / 10
    np.testing.assert_allclose(rank0["weight"], W_TRUE.T, atol=0.05)
