"""Per-step lr schedules (`scheduler_interval="step"`) in this process: the same parameters as a torch loop
that steps its scheduler after every optimizer step; a mid-epoch checkpoint resumes to the same bits;
the strategies that split the graph follow the same rows; the option is checked (Trainer and YAML)."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.cli import main
from distgraph.errors import ConfigError
from distgraph.optim import lr_scheduler as dls

torch = pytest.importorskip("torch")
from tests.test_trainer_torch import assert_same, batches, data, models  # noqa: E402

TF = torch.nn.functional
EPOCHS, BATCH = 3, 32  # 100 samples: 4 steps an epoch (the last one of 4 samples), 12 in all


def warmup(step):
    return min(1.0, (step + 1) / 5)


SCHEDULES = {  # (the optimizer, its scheduler) for distgraph.optim or torch.optim
    "onecycle": lambda o, s, p: (
        opt := o.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        s.OneCycleLR(opt, max_lr=0.5, total_steps=EPOCHS * 4, cycle_momentum=True),
    ),
    "warmup": lambda o, s, p: (opt := o.Adam(p, lr=0.02), s.LambdaLR(opt, warmup)),
    "cyclic": lambda o, s, p: (  # NAdam's beta1 cycled too: the rows carry betas
        opt := o.NAdam(p, lr=0.02),
        s.CyclicLR(opt, base_lr=0.005, max_lr=0.05, step_size_up=3, mode="triangular2"),
    ),
}


def torch_loop(name, ref, x, y, epochs=EPOCHS):
    """What a PyTorch user writes: scheduler.step() after every optimizer.step()."""
    topt, tsched = SCHEDULES[name](torch.optim, torch.optim.lr_scheduler, ref.parameters())
    X, Y, lrs = torch.from_numpy(x), torch.from_numpy(y), []
    for epoch in range(epochs):
        for idx in batches(len(x), BATCH, epoch):
            lrs.append(topt.param_groups[0]["lr"])
            topt.zero_grad()
            TF.cross_entropy(ref(X[idx]), Y[idx]).backward()
            topt.step()
            tsched.step()
    return topt, lrs


def trainer(name, model, **kwargs):
    opt, sched = SCHEDULES[name](dg.optim, dls, model.parameters())
    options = {"scheduler": sched, "scheduler_interval": "step", "progress": False, **kwargs}
    return dg.Trainer(model, F.cross_entropy, opt, **options)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_per_step_schedule_matches_a_torch_loop_stepping_after_every_batch(name, workers):
    """OneCycleLR (momentum cycled inversely, run to exactly its total_steps) and a LambdaLR warm-up:
    parameters, the optimizer's lr and momentum after training, and the lr of each epoch's last step."""
    x, y = data()
    model, ref = models()
    t = trainer(name, model, workers=workers)
    history = t.fit((x, y), epochs=EPOCHS, batch_size=BATCH)
    topt, lrs = torch_loop(name, ref, x, y)
    assert_same(model, ref)
    for key in ("lr", "momentum"):
        if key in topt.param_groups[0]:
            assert t.optimizer.param_groups[0][key] == pytest.approx(topt.param_groups[0][key], rel=1e-12)
    assert history["lr"] == pytest.approx(lrs[3::4], rel=1e-12)
    assert t.lr_scheduler.last_epoch == EPOCHS * 4


def test_an_epoch_schedule_is_unchanged_and_the_history_records_its_lr():
    """The default interval still steps once per epoch; `lr` is the lr the epoch's steps used."""
    x, y = data()
    model, _ = models()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    t = dg.Trainer(model, F.cross_entropy, opt, scheduler=dls.StepLR(opt, 1, 0.5), progress=False)
    history = t.fit((x, y), epochs=3, batch_size=BATCH)
    assert history["lr"] == [0.1, 0.05, 0.025] and opt.param_groups[0]["lr"] == 0.0125


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_mid_epoch_checkpoint_resumes_a_per_step_schedule_to_the_same_bits(tmp_path, name):
    """checkpoint_every_steps=3 (none at epoch ends): a run stopped in its 7th step resumes from the
    checkpoint of global step 6 (epoch 2, after its step 2 of 4), whose scheduler was stepped once per
    applied step, and ends with the uninterrupted run's bits, lr and scheduler."""
    x, y = data()
    model, _ = models()
    reference = trainer(name, model)
    reference.fit((x, y), epochs=EPOCHS, batch_size=BATCH)

    calls = [0]

    def stopping_loss(out, target):  # a killed driver: the 7th step never finishes
        calls[0] += 1
        if calls[0] == 7:
            raise _Interrupted
        return F.cross_entropy(out, target)

    first = trainer(name, models()[0], checkpoint_dir=str(tmp_path), checkpoint_every_steps=3, checkpoint_every=5)
    first.loss_fn = first.step_fn.loss_fn = stopping_loss
    with pytest.raises(_Interrupted):
        first.fit((x, y), epochs=EPOCHS, batch_size=BATCH)
    resumed = trainer(name, models()[0], checkpoint_dir=str(tmp_path), checkpoint_every_steps=3, checkpoint_every=5)
    resumed.fit((x, y), epochs=EPOCHS, batch_size=BATCH, resume=True)
    assert any(e.endswith("at epoch 1, step 2") for e in resumed.history.events), resumed.history.events
    for a, b in zip(reference.model.parameters(), resumed.model.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    assert resumed.optimizer.param_groups[0]["lr"] == reference.optimizer.param_groups[0]["lr"]
    assert resumed.lr_scheduler.last_epoch == reference.lr_scheduler.last_epoch == EPOCHS * 4
    assert resumed.history["lr"] == reference.history["lr"]


@pytest.mark.parametrize("strategy", ["branches", "pipeline"])
def test_graph_strategies_follow_the_per_step_rows(strategy):
    """The driver's optimizer applies each step of a split graph: it gets the step's row first, so the
    lr sequence is the local data-parallel one (the last, smaller batch is left out: 3 steps an epoch)."""
    x, y = data(96)
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    original = opt.step

    def step():
        seen.append(opt.param_groups[0]["lr"])
        original()

    opt.step = step
    sched = dls.LambdaLR(opt, warmup)
    micro = {"micro_batches": 2} if strategy == "pipeline" else {}
    t = dg.Trainer(model, F.cross_entropy, opt, workers=2, strategy=strategy, scheduler=sched,
                   scheduler_interval="step", progress=False, **micro)  # fmt: skip
    t.fit((x, y), epochs=2, batch_size=32)
    assert seen == pytest.approx([0.1 * warmup(s) for s in range(6)], rel=1e-15)
    assert sched.last_epoch == 6 and t.history["lr"] == pytest.approx([0.1 * warmup(2), 0.1 * warmup(5)])


def test_bad_interval_and_a_plateau_scheduler_per_step_are_refused():
    model, _ = models()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="Trainer: scheduler_interval must be 'epoch' or 'step', got 'batch'"):
        dg.Trainer(model, F.cross_entropy, opt, scheduler=dls.StepLR(opt, 1), scheduler_interval="batch")
    with pytest.raises(ConfigError, match="scheduler_interval='step' cannot drive ReduceLROnPlateau"):
        dg.Trainer(model, F.cross_entropy, opt, scheduler=dls.ReduceLROnPlateau(opt), scheduler_interval="step")


GOOD = {
    "data": {"name": "digits", "seed": 0},
    "model": [{"Linear": [64, 32]}, {"ReLU": []}, {"Linear": [32, 10]}],
    "loss": "cross_entropy",
    "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 64},
}


def run_cli(tmp_path, cfg, *args):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(main, ["train", str(path), "--quiet", *args])


@pytest.mark.parametrize(
    "scheduler,message",
    [
        ({"name": "StepLR", "step_size": 1, "interval": "batch"}, "c.yaml: scheduler.interval must be 'epoch' or"),
        ({"name": "ReduceLROnPlateau", "interval": "step"}, "c.yaml: scheduler.interval='step' cannot drive Reduce"),
        ({"name": "OneCycleLR", "max_lr": 0.1, "interval": 1}, "c.yaml: scheduler.interval must be a string"),
    ],
)
def test_yaml_scheduler_interval_is_checked_naming_the_key(tmp_path, scheduler, message):
    result = run_cli(tmp_path, {**GOOD, "scheduler": scheduler})
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_yaml_one_cycle_per_step_trains(tmp_path):
    """`scheduler: {name: OneCycleLR, ..., interval: step}`: 2 epochs of 22 steps (1,347 digits, 64 a batch)."""
    sched = {"name": "OneCycleLR", "max_lr": 0.2, "epochs": 2, "steps_per_epoch": 22, "interval": "step"}
    out = tmp_path / "r.json"
    result = run_cli(tmp_path, {**GOOD, "scheduler": sched}, "--json-out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    lrs = [e["lr"] for e in report["history"]["epochs"]]
    assert lrs[0] > lrs[1] and lrs[1] < 0.2 / 25 and report["test"]["accuracy"] > 0.8
