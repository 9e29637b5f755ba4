"""torch.distributed.pipelining's manual stages (distributed/pipelining.py) on 3 real Ray ranks: an MLP cut into
three stages, run by ScheduleGPipe and Schedule1F1B over 4 micro-batches (one of them a row short), gives one
process's outputs, per-micro-batch losses and gradients (float64); a forward-only step; so does one stage on a
group of one rank (outside a launch); errors named."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from distgraph.errors import ConfigError

ROWS, MICRO = 15, 4  # 4, 4, 4, 3 rows


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).to(dg.float64)


def _parts(model):
    return [model[0:2], model[2:4], model[4:5]]


def _data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((ROWS, 5))
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


def _on_each_rank(schedule_name):
    rank = dist.get_rank()
    part = _parts(_model())[rank]
    stage = PipelineStage(part, rank, 3)
    schedule = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule_name](stage, MICRO, loss_fn=F.cross_entropy)
    x, y = _data()
    losses = []
    out = (
        schedule.step(x)
        if stage.is_first
        else schedule.step(target=y, losses=losses)
        if stage.is_last
        else schedule.step()
    )
    grads = [p.grad.numpy() for p in part.parameters()]
    forward_only = ScheduleGPipe(stage, 2)
    again = forward_only.step(x) if stage.is_first else forward_only.step()
    # the first stage frozen: its output requires no grad, so no gradient is sent back to it (and none waited for)
    for p in part.parameters():
        p.grad = None
        p.requires_grad_(rank != 0)
    frozen = ScheduleGPipe(stage, 2, loss_fn=F.cross_entropy)
    _ = frozen.step(x) if stage.is_first else frozen.step(target=y) if stage.is_last else frozen.step()
    got_grads = all(p.grad is not None for p in part.parameters())
    with pytest.raises(ConfigError, match=r"stage_index=\d is not this rank.s place \(\d\) in the group \[0, 1, 2\]"):
        PipelineStage(part, 2 if rank != 2 else 0, 3)
    return {
        "out": None if out is None else out.numpy(), "losses": [float(v) for v in losses], "grads": grads,
        "again": None if again is None else again.numpy(), "frozen grads": got_grads,
    }  # fmt: skip


@pytest.mark.ray
@pytest.mark.parametrize("schedule_name", ["gpipe", "1f1b"])
def test_three_stages_give_one_process_outputs_losses_and_gradients(ray_session, schedule_name):
    ranks = dist.launch(_on_each_rank, workers=3, cpus_per_worker=0.5, args=(schedule_name,), timeout_s=60)
    model = _model()
    x, y = _data()
    cuts = [(0, 4), (4, 8), (8, 12), (12, 15)]
    micro = [F.cross_entropy(model(x[a:b]), y[a:b]) for a, b in cuts]
    (sum(micro) / MICRO).backward()  # torch's scale_grads: the mean of the micro-batches' losses
    np.testing.assert_allclose(ranks[2]["out"], model(x).detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ranks[2]["losses"], [float(v) for v in micro], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ranks[2]["again"], model(x).detach().numpy(), rtol=0, atol=1e-12)
    for rank, part in enumerate(_parts(model)):
        for got, p in zip(ranks[rank]["grads"], part.parameters()):
            np.testing.assert_allclose(got, p.grad.numpy(), rtol=0, atol=1e-12)
    assert ranks[0]["out"] is None and ranks[1]["out"] is None and ranks[0]["losses"] == []
    assert [r["frozen grads"] for r in ranks] == [False, True, True]


def _one_process():
    model = _model()
    x, y = _data()
    micro = [F.cross_entropy(model(x[a:b]), y[a:b]) for a, b in [(0, 4), (4, 8), (8, 12), (12, 15)]]
    (sum(micro) / MICRO).backward()
    return model(x).detach().numpy(), [float(v) for v in micro], [p.grad.numpy() for p in model.parameters()]


@pytest.mark.parametrize("cls", [ScheduleGPipe, Schedule1F1B])
def test_one_rank_one_stage_gives_one_process_outputs_losses_and_gradients(cls):
    model = _model()  # outside a launch: the group is one rank, holding the one stage (first and last)
    x, y = _data()
    losses = []
    out = cls(PipelineStage(model, 0, 1), MICRO, loss_fn=F.cross_entropy).step(x, target=y, losses=losses)
    want_out, micro, grads = _one_process()
    np.testing.assert_allclose(out.numpy(), want_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose([float(v) for v in losses], micro, rtol=0, atol=1e-12)
    for p, want in zip(model.parameters(), grads, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=0, atol=1e-12)


def test_alone_bad_stages_and_steps_are_named():
    linear = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="PipelineStage: num_stages must be a positive int, got 0"):
        PipelineStage(linear, 0, 0)
    with pytest.raises(ConfigError, match="PipelineStage: stage_index=2 is not one of the 2 stages"):
        PipelineStage(linear, 2, 2)
    with pytest.raises(ConfigError, match=r"dw_builder \(zero-bubble schedules\) is not supported"):
        PipelineStage(linear, 0, 1, dw_builder=lambda: None)
    stage = PipelineStage(nn.Linear(2, 2).to(dg.float64), 0, 1)
    with pytest.raises(ConfigError, match="n_microbatches must be a positive int"):
        ScheduleGPipe(stage, 0)
    schedule = Schedule1F1B(stage, 2, loss_fn=F.mse_loss)
    with pytest.raises(ConfigError, match="target= goes to the rank holding the last stage, and only with a loss_fn"):
        schedule.step(dg.ones(4, 2, dtype=dg.float64))
    x = dg.ones(4, 2, dtype=dg.float64)
    losses = []
    out = schedule.step(x, target=dg.zeros(4, 2, dtype=dg.float64), losses=losses)  # one stage: first and last
    assert tuple(out.shape) == (4, 2) and len(losses) == 2


def test_multi_stage_schedules_are_exported_beside_the_single_stage_ones():
    from distgraph.distributed import pipelining, pipelining_schedules

    for name in ("ScheduleGPipe", "Schedule1F1B", "ScheduleLoopedBFS", "ScheduleInterleaved1F1B"):
        assert name in pipelining.__all__ and getattr(pipelining, name) is getattr(pipelining_schedules, name)
    stage = PipelineStage(nn.Linear(2, 2), 0, 2)  # one rank holding two stages: a multi-stage schedule's
    for cls in (ScheduleGPipe, Schedule1F1B):
        with pytest.raises(ConfigError, match=f"{cls.__name__}: stage 0 is one of 2 stages on 1 ranks; a rank holding "
                           "several runs ScheduleLoopedBFS or ScheduleInterleaved1F1B"):  # fmt: skip
            cls(stage, 2)
