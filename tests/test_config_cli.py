"""`distgraph train`: config validation errors are one line naming the file and key; training runs."""

import json

import pytest
import yaml
from click.testing import CliRunner

from distgraph.cli import main
from distgraph.config import load_config
from distgraph.errors import ConfigError

GOOD = {
    "data": {"name": "digits", "seed": 0},
    "model": [{"Linear": [64, 32]}, {"ReLU": []}, {"Linear": [32, 10]}],
    "loss": "cross_entropy",
    "optimizer": {"name": "Adam", "lr": 0.003},
    "train": {"epochs": 3, "batch_size": 64},
}


def write(tmp_path, cfg, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c.update(optimiser={}), "unknown key 'optimiser'"),
        (lambda c: c["optimizer"].update(lr="fast"), "optimizer.lr must be a number, got 'fast'"),
        (lambda c: c["train"].update(epochs=2.5), "train.epochs must be an integer"),
        (lambda c: c.pop("loss"), "missing required key 'loss'"),
        (lambda c: c["model"].append({"os.system": ["ls"]}), "'os.system' is not a distgraph.nn layer"),
        (lambda c: c.update(loss="eval"), "unknown loss 'eval'"),
        (lambda c: c["data"].update(name="imagenet"), "unknown dataset 'imagenet'"),
        (lambda c: c.update(trainer={"backend": "spark"}), "trainer.backend must be 'local' or 'ray'"),
        (lambda c: c.update(trainer={"strategy": "tensor"}), "trainer.strategy must be one of data, branches"),
        (lambda c: c.update(trainer={"allreduce": "mpi"}), "trainer.allreduce must be one of auto, shm"),
        (lambda c: c.update(trainer={"staleness": -2}), "trainer.staleness must be an int ≥ 0"),
        (lambda c: c.update(trainer={"bind_to": "socket"}), "trainer.bind_to must be None, 'none' or 'core'"),
        (lambda c: c.update(trainer={"allreduce": "nccl"}), "trainer.allreduce='nccl' reduces GPU arrays"),
        (lambda c: c.update(trainer={"workers": 0}), "trainer.workers must be a positive int or (min, max)"),
        (lambda c: c.update(trainer={"bucket_mb": -1}), "trainer.bucket_mb must be a positive number"),
        (lambda c: c.update(trainer={"cpus_per_worker": 0}), "trainer.cpus_per_worker must be a positive number"),
        (lambda c: c.update(trainer={"timeout_s": -5}), "c.yaml: trainer.timeout_s must be a positive number"),
        (lambda c: c.update(loss_scaling={"growth_factor": 1}), "c.yaml: loss_scaling.growth_factor must be a num"),
        (lambda c: c.update(loss_scaling={"backoff_factor": 2.0}), "c.yaml: loss_scaling.backoff_factor must be"),
        (lambda c: c.update(loss_scaling={"growth_interval": 0}), "c.yaml: loss_scaling.growth_interval must be"),
        # constructor errors, unknown dataset keys and sizes that give no data: the file and key, no traceback
        (lambda c: c["optimizer"].update(momentum=0.9), "c.yaml: optimizer: Adam.__init__() got an unexpected"),
        (lambda c: c["model"].insert(1, {"Dropout": [2.0]}), "c.yaml: model[1].Dropout: Dropout: dropout prob"),
        (lambda c: c["model"].__setitem__(0, {"Linear": [64]}), "c.yaml: model[0].Linear: Linear.__init__() miss"),
        (lambda c: c["model"].insert(1, {"ModuleList": []}), "'ModuleList' is not a distgraph.nn layer"),
        (lambda c: c["model"].__setitem__(0, {"Linear": [64, 128, 5, 6]}), "c.yaml: model[0].Linear: unknown device"),
        # sizes that do not fit, found by one forward of the first samples before training
        (lambda c: c["model"].__setitem__(2, {"Linear": [31, 10]}), "c.yaml: model[2].Linear: linear: input feat"),
        (lambda c: c["model"].__setitem__(2, {"Linear": [32, 7]}), "c.yaml: loss (cross_entropy) of the model's"),
        (lambda c: c.update(scheduler={"name": "StepLR"}), "c.yaml: scheduler: StepLR.__init__() missing"),
        (lambda c: c["data"].update(samples=100), "data.samples: dataset 'digits' takes no such key"),
        (lambda c: c["data"].pop("name"), "missing required key data.name"),
        (lambda c: c["data"].update(test_fraction=1.5), "data.test_fraction must lie between 0 and 1"),
        (lambda c: c.update(data={"name": "teacher", "samples": 0}), "data.samples must be ≥ 1, got 0"),
        (lambda c: c["train"].update(seed=-1), "train.seed must be an integer ≥ 0"),
        (lambda c: c["train"].update(batch_size=0), "c.yaml: train.batch_size must be an integer ≥ 1"),
        (lambda c: c.update(trainer={"checkpoint_every": 0}), "trainer.checkpoint_every must be a positive int"),
        (lambda c: c.update(trainer={"max_restarts": -2}), "c.yaml: trainer.max_restarts must be an int ≥ 0 (worker"),
        (lambda c: c.update(trainer={"max_restarts": 1.5}), "c.yaml: trainer.max_restarts must be an integer, got 1.5"),
        # list items are checked one by one, naming the item (YAML 1.1 reads 1e1 as a string)
        (
            lambda c: c.update(scheduler={"name": "MultiStepLR", "milestones": ["1e1"]}),
            "c.yaml: scheduler.milestones[0] must be an integer, got '1e1'",
        ),
        (
            lambda c: c.update(scheduler={"name": "MultiStepLR", "milestones": [10.0]}),
            "c.yaml: scheduler.milestones[0] must be an integer, got 10.0",
        ),
        (lambda c: c["optimizer"].update(betas=[0.9, "x"]), "c.yaml: optimizer.betas[1] must be a number, got 'x'"),
        (lambda c: c["optimizer"].update(betas=0.9), "c.yaml: optimizer.betas must be a list of numbers, got 0.9"),
        (lambda c: c.update(trainer={"device": "gpu"}), "c.yaml: trainer.device: unknown device 'gpu' (expected"),
    ],  # fmt: skip
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, mutate, message):
    cfg = json.loads(json.dumps(GOOD))
    mutate(cfg)
    result = CliRunner().invoke(main, ["train", write(tmp_path, cfg), "--quiet"])
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_missing_file_and_yaml_tags_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["train", str(tmp_path / "none.yaml")])
    assert "no such config file" in result.output
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="not valid YAML"):
        load_config(str(evil))


def test_a_config_that_is_not_utf8_text_is_one_line(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {path}: not a YAML text file (not UTF-8)"


def test_epochs_0_on_the_command_line_overrides_the_config_and_trains_nothing(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--epochs", "0", "--json-out", out])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test loss") and json.loads(out.read_text())["history"]["epochs"] == []


def test_train_command_trains_and_resumes(tmp_path):
    path = write(tmp_path, GOOD)
    out = tmp_path / "r.json"
    ck = str(tmp_path / "ck")
    result = CliRunner().invoke(main, ["train", path, "--quiet", "--checkpoint-dir", ck, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text())
    assert first["test"]["accuracy"] > 0.85
    rates = sorted(e["samples_per_s"] for e in first["history"]["epochs"])
    assert f"train samples/s: {rates[len(rates) // 2]:,.0f} (median of {len(rates)} epochs)" in result.output
    result = CliRunner().invoke(main, ["train", path, "--quiet", "--checkpoint-dir", ck, "--epochs", "4", "--resume"])
    assert result.exit_code == 0 and "resumed from" in result.output


def test_train_refuses_a_json_out_it_cannot_write_before_it_trains(tmp_path):
    (tmp_path / "afile").write_text("")
    ck = tmp_path / "ck"
    args = [
        "train",
        write(tmp_path, GOOD),
        "--checkpoint-dir",
        str(ck),
        "--json-out",
        str(tmp_path / "afile" / "r.json"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "a file of that name is in the way" in result.output, result.output
    assert not ck.exists()  # it stopped before training (no checkpoint written)


def test_strategy_from_yaml_and_from_the_command_line(tmp_path):
    cfg = {**GOOD, "trainer": {"strategy": "pipeline", "micro_batches": 2, "timeout_s": 30.0}}
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["train", write(tmp_path, cfg), "--quiet", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "strategy pipeline" in result.output and "2 micro-batches" in result.output
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--strategy", "branches"])
    assert result.exit_code == 0 and "strategy branches" in result.output, result.output


def test_max_restarts_is_a_trainer_key_that_reaches_the_trainer(tmp_path, monkeypatch):
    import distgraph as dg

    seen = []
    monkeypatch.setattr(dg.Trainer, "fit", lambda self, *a, **k: seen.append(self.max_restarts) or self.history)
    cfg = {**GOOD, "trainer": {"max_restarts": -1}}
    result = CliRunner().invoke(main, ["train", write(tmp_path, cfg), "--quiet"])
    assert result.exit_code == 0 and seen == [-1], result.output


def test_loss_scaling_section_skips_and_reports_overflowing_steps(tmp_path):
    cfg = {**GOOD, "loss_scaling": {"init_scale": 2.0**140, "growth_interval": 1000}}
    result = CliRunner().invoke(main, ["train", write(tmp_path, cfg), "--quiet"])
    assert result.exit_code == 0, result.output
    skipped = int(result.output.split("loss scaling: ")[1].split()[0])
    assert skipped >= 12  # one halving per overflowing step, from 2**140 to below float32's 2**128
    bad = {**GOOD, "loss_scaling": {"init_scale": "huge"}}
    result = CliRunner().invoke(main, ["train", write(tmp_path, bad, "bad.yaml"), "--quiet"])
    assert "loss_scaling.init_scale must be a number" in result.output


def test_the_newer_torch_optimizers_and_schedulers_are_built_by_name(tmp_path):
    """NAdam with a list for betas (YAML has no tuples) and CyclicLR cycling its beta1."""
    import distgraph as dg
    from distgraph.config import build_optimizer, build_scheduler

    cfg = dict(GOOD, optimizer={"name": "NAdam", "lr": 0.003, "betas": [0.8, 0.99], "decoupled_weight_decay": True},
               scheduler={"name": "CyclicLR", "base_lr": 0.001, "max_lr": 0.01, "step_size_up": 4})  # fmt: skip
    cfg = load_config(write(tmp_path, cfg))
    opt = build_optimizer(cfg, [dg.zeros(2, requires_grad=True)])
    sched = build_scheduler(cfg, opt)
    assert type(opt).__name__ == "NAdam" and opt.param_groups[0]["betas"] == (0.9, 0.99)  # max_momentum first
    sched.step()
    assert sched.get_last_lr() == [pytest.approx(0.001 + 0.009 / 4)] and opt.param_groups[0]["decoupled_weight_decay"]


def test_the_compute_bound_example_config_trains(tmp_path):
    """examples/configs/teacher_mlp.yaml: the scaling bench's MLP on generated data (what tools/gpu_check.sh
    times on a GPU), two epochs here."""
    import pathlib

    config = pathlib.Path(__file__).parent.parent / "examples" / "configs" / "teacher_mlp.yaml"
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["train", str(config), "--quiet", "--epochs", "2", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["test"]["accuracy"] > 0.5  # ten classes: chance is 0.1


def test_a_key_given_twice_is_refused_naming_file_key_and_where(tmp_path):
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(GOOD).replace("optimizer:\n", "optimizer:\n  lr: 5.0\n")  # and lr below it, too
    path.write_text(text)
    line = text.splitlines().index("  lr: 0.003") + 1
    result = CliRunner().invoke(main, ["train", str(path), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {path}: line {line}, column 3: duplicate key optimizer.lr (first given at line {line - 1}, "
        "column 3); give each key once"
    )
    path.write_text("data: {name: digits}\n" + yaml.safe_dump(GOOD))  # a whole section twice
    with pytest.raises(ConfigError, match=r"dup.yaml: line \d+, column 1: duplicate key data \(first given at line 1"):
        load_config(str(path))


def test_list_items_are_numbers_as_float_fields_are(tmp_path):
    """YAML 1.1 reads 1e-6 as a string: in a list of numbers it is converted as `lr: 1e-3` is."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD).replace("name: Adam", "name: Rprop\n  step_sizes: [1e-6, 50]"))
    cfg = load_config(str(path))
    assert cfg["optimizer"]["step_sizes"] == [1e-6, 50] and isinstance(cfg["optimizer"]["step_sizes"][0], float)


def test_the_teacher_datasets_hidden_width_is_a_config_key(tmp_path):
    cfg = dict(GOOD, data={"name": "teacher", "samples": 200, "features": 64, "classes": 10, "hidden": 16})
    assert load_config(write(tmp_path, cfg))["data"]["hidden"] == 16
    cfg["data"]["hidden"] = 0
    with pytest.raises(ConfigError, match="data.hidden must be ≥ 1, got 0"):
        load_config(write(tmp_path, cfg))


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    ck = tmp_path / "ck"
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--resume", "--checkpoint-dir", ck])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: --resume: no checkpoint in {ck} ") and "test loss" not in result.output
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--resume"])
    assert result.exit_code == 1 and "--resume needs a checkpoint folder" in result.output, result.output
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "--epochs INTEGER RANGE total epochs to reach (resumed epochs count)" in help_text


def test_a_bad_device_names_the_option_or_the_file_and_key(tmp_path):
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--device", "gpu"])
    assert result.exit_code == 2 and "Invalid value for '--device': unknown device 'gpu'" in result.output
    cfg = dict(GOOD, trainer={"device": "cuda:9"})  # well formed, but not on this machine
    path = write(tmp_path, cfg)
    result = CliRunner().invoke(main, ["train", path, "--quiet"])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path}: trainer.device: "), result.output
    result = CliRunner().invoke(main, ["train", write(tmp_path, GOOD), "--quiet", "--device", "cuda:9"])
    assert result.exit_code == 1 and result.output.startswith("Error: --device: "), result.output
