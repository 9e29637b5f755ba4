"""The local Trainer and the main job: digits to ≥ 95 %, checkpoint and resume, bad input."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
pytest.importorskip("sklearn")
import digits_mlp  # noqa: E402


def test_digits_example_reaches_95_percent_and_resumes(tmp_path):
    ck = str(tmp_path / "ck")
    first = digits_mlp.main(["--epochs", "12", "--checkpoint-dir", ck, "--quiet"])
    assert first["accuracy"] >= 0.95, first["accuracy"]
    resumed = digits_mlp.main(["--epochs", "14", "--checkpoint-dir", ck, "--resume", "--quiet"])
    assert len(resumed["history"]) == 14
    assert any("resumed" in e for e in resumed["history"].events)
    straight = digits_mlp.main(["--epochs", "14", "--checkpoint-dir", str(tmp_path / "other"), "--quiet"])
    assert resumed["loss"] == straight["loss"]  # the resumed run saw exactly the same batches


def make(workers=1, backend="local", **kw):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    return dg.Trainer(model, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      workers=workers, backend=backend, progress=False, **kw)  # fmt: skip


def data(n=96):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def test_sharded_local_step_equals_unsharded_up_to_rounding():
    a, b = make(1), make(3)
    a.fit(data(), epochs=2, batch_size=32)
    b.fit(data(), epochs=2, batch_size=32)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_a_last_batch_smaller_than_the_worker_count_leaves_ranks_empty_not_nan():
    """97 samples in batches of 32 end with a batch of 1: two of three ranks get no sample; they add nothing."""
    a, b = make(1), make(3)
    a.fit(data(97), epochs=2, batch_size=32)
    h = b.fit(data(97), epochs=2, batch_size=32)
    assert np.isfinite(h["loss"]).all()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_history_has_loss_accuracy_and_throughput():
    h = make().fit(data(), epochs=3, batch_size=16)
    assert len(h) == 3 and h["loss"][2] < h["loss"][0]
    assert all(0 <= a <= 1 for a in h["accuracy"]) and all(s > 0 for s in h["samples_per_s"])


def test_epochs_is_the_total_to_reach_and_a_fit_with_nothing_left_says_so():
    """fit(epochs=N) trains until N epochs are done in all (Lightning's max_epochs): a second fit(epochs=3)
    after fit(epochs=2) trains one more, and equals fit(epochs=3) at once; one that reaches nothing new warns."""
    once, twice = make(), make()
    once.fit(data(), epochs=3, batch_size=16)
    twice.fit(data(), epochs=2, batch_size=16)
    with pytest.warns(
        UserWarning, match=r"2 epoch\(s\) are done and epochs=1 is the total .* epochs=3\) trains 1 more"
    ):
        assert len(twice.fit(data(), epochs=1, batch_size=16)) == 2
    assert [r["epoch"] for r in twice.fit(data(), epochs=3, batch_size=16).epochs] == [1, 2, 3]
    for p, q in zip(once.model.parameters(), twice.model.parameters()):
        assert p.detach().numpy().tobytes() == q.detach().numpy().tobytes()


def test_a_resumed_fit_of_a_model_with_dropout_draws_the_masks_the_uninterrupted_fit_drew(tmp_path):
    """The checkpoint holds the driver's generator, which a local fit's dropout draws from (it held none: the
    resumed epochs drew other masks, 0.04 away after 4 epochs)."""

    def run(folder, epochs, resume=False):
        dg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        opt = dg.optim.Adam(model.parameters(), lr=0.01)
        dg.manual_seed(42)
        trainer = dg.Trainer(model, nn.functional.cross_entropy, opt, progress=False, checkpoint_dir=str(folder))
        trainer.fit(data(), epochs=epochs, batch_size=16, resume=resume)
        return [p.detach().numpy().tobytes() for p in model.parameters()]

    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "halves", 2)
    assert run(tmp_path / "halves", 4, resume=True) == whole


def test_history_reads_like_a_dict_of_lists():
    """As Keras's history.history: membership, keys and iteration are over metric names (`in` looped
    forever before: Python fell back to indexing 0, 1, 2, ...)."""
    h = make().fit(data(), epochs=2, batch_size=16)
    assert "loss" in h and "accuracy" in h and "nope" not in h
    assert list(h) == h.keys() == ["epoch", "loss", "accuracy", "samples_per_s", "time_s"]
    assert dict(h.items())["loss"] == h["loss"] and len(h["loss"]) == 2
    assert h.history == dict(h.items()) and h.values() == [h[k] for k in h.keys()]
    assert h.get("loss") == h["loss"] and h.get("val_loss") is None and h.get("val_loss", []) == []
    with pytest.raises(KeyError, match="History has no metric 'nope'; it has epoch, loss, accuracy"):
        h["nope"]
    with pytest.raises(TypeError, match="indexed by metric name"):
        h[0]


def test_bad_configuration_and_data_errors():
    with pytest.raises(ConfigError, match="backend must be"):
        make(backend="spark")
    with pytest.raises(ConfigError, match="workers must be a positive int"):
        make(workers=0)
    with pytest.raises(ConfigError, match="needs backend='ray'"):
        make(sync="async")
    with pytest.raises(ConfigError, match="allreduce must be one of auto, shm, gloo, nccl, got 'bogus'"):
        make(allreduce="bogus")  # was only refused inside a worker, at the first step
    with pytest.raises(ConfigError, match="staleness must be an int ≥ 0"):
        make(staleness=-1)
    with pytest.raises(ConfigError, match="bucket_mb must be a positive number"):
        make(bucket_mb=0)
    with pytest.raises(ConfigError, match="micro_batches must be a positive int"):
        make(micro_batches=0)
    model = nn.Linear(8, 3)
    with pytest.raises(ConfigError, match=r"LBFGS.step\(closure\) evaluates the model several times a step"):
        dg.Trainer(
            model, nn.functional.cross_entropy, dg.optim.LBFGS(model.parameters()), progress=False
        )  # not a TypeError at the first step
    x, y = data()
    with pytest.raises(ConfigError, match="96 inputs but 95 targets"):
        make().fit((x, y[:-1]))
    with pytest.raises(dg.errors.ShapeError):
        make().fit((x[:, :5], y))


def test_options_that_would_fail_later_are_refused_when_the_trainer_is_made(tmp_path):
    """Each of these used to surface late: nccl on CPU workers failed inside every worker's first step and
    was retried three times; a zero batch size was a bare range() error; a file as checkpoint_dir a raw
    FileExistsError at the first checkpoint; a string as loss_fn or a function as model at the first step."""
    with pytest.raises(ConfigError, match=r"Trainer: allreduce='nccl' reduces GPU arrays and needs device='cuda'"):
        make(workers=2, backend="ray", allreduce="nccl")  # no Ray is started: the check comes first
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="checkpoint_dir .* is a file, not a folder"):
        make(checkpoint_dir=str(tmp_path / "f"))
    # a file part-way along the path: it trained an epoch, then save_checkpoint's NotADirectoryError
    with pytest.raises(ConfigError, match=r"checkpoint_dir '.*f/runs/a' cannot hold checkpoints: '.*f' is a file"):
        make(checkpoint_dir=str(tmp_path / "f" / "runs" / "a"))
    make(checkpoint_dir=str(tmp_path / "new" / "runs"))  # a folder still to be made is fine
    assert not (tmp_path / "new").exists()  # (made at the first save, not by the check)
    model = nn.Linear(4, 3)
    with pytest.raises(ConfigError, match="loss_fn must be callable"):
        dg.Trainer(model, "cross_entropy", dg.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="model must be a distgraph.nn.Module, got function"):
        dg.Trainer(lambda t: t, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1))
    x, y = data()
    with pytest.raises(ConfigError, match="batch_size must be a positive int, got 0"):
        make().fit((x, y), batch_size=0)
    with pytest.raises(ConfigError, match="epochs must be an int ≥ 0"):
        make().fit((x, y), epochs=-1)


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("cpus_per_worker", 0, "cpus_per_worker must be a positive number of CPUs"),
        ("cpus_per_worker", -2, "cpus_per_worker must be a positive number of CPUs"),
        ("cpus_per_worker", "4", "cpus_per_worker must be a positive number of CPUs"),
        ("cpus_per_worker", float("nan"), "cpus_per_worker must be a positive number of CPUs"),
        ("timeout_s", 0, "timeout_s must be a positive number of seconds, got 0"),
        ("timeout_s", -1.5, "timeout_s must be a positive number of seconds, got -1.5"),
        ("timeout_s", "60", "timeout_s must be a positive number of seconds"),
        ("bucket_mb", float("nan"), "bucket_mb must be a positive number of MiB, got nan"),
        ("bucket_mb", float("inf"), "bucket_mb must be a positive number of MiB, got inf"),
    ],
)
def test_ray_options_are_checked_before_any_ray_work(option, value, message):
    """cpus_per_worker and timeout_s reached Ray unchecked (0 CPUs divided by zero when sizing an elastic
    group), and bucket_mb's `<= 0` let NaN through: refused at construction, and no Ray is started."""
    before = _ray_work()
    with pytest.raises(ConfigError, match=rf"^Trainer: {message}"):
        make(workers=2, backend="ray", **{option: value})
    assert _ray_work() == before


def _ray_work():
    """None while no Ray runs in this process, else how many placement groups it has: unchanged by a
    refused Trainer, whether or not an earlier test of the session started Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    from ray.util import placement_group_table

    return len(placement_group_table())


def test_nan_inputs_and_nan_loss_stop_with_a_clear_report():
    x, y = data()
    x[5, 2] = np.nan
    with pytest.raises(dg.errors.NonFiniteError, match="NaN/Inf in 1 of"):
        make().fit((x, y), epochs=1, batch_size=96)
    t = make()
    for p in t.model.parameters():
        p.array[...] = np.inf
    with pytest.raises(dg.errors.NonFiniteError, match="detect_anomaly"):
        t.fit(data(), epochs=1, batch_size=32)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_step_that_raises_after_its_forward_leaves_batch_norm_statistics_as_they_were(workers):
    """A failed step is applied nowhere — parameters, optimizer state and buffers. A target out of range
    raises in the loss, after the forward moved batch norm's running statistics; those used to stay (with
    two workers, those of the last shard run), so the model went on from statistics of a step that never
    happened, and a Ray run (whose workers undo it) ended with other buffers. The model after the error
    equals one trained on the steps before it only."""
    x, y = data()
    bad_y = y.copy()
    bad_y[40] = 7  # 3 classes: the second batch's loss raises
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]

    def trained(*fits):
        dg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        t = dg.Trainer(model, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1),
                       workers=workers, progress=False)  # fmt: skip
        for fit in fits:
            fit(t)
        return t.global_step, {k: v.numpy() for k, v in model.state_dict().items()}

    def failing(t):
        with pytest.raises(dg.errors.IndexOutOfRangeError, match="out of bounds"):
            t.fit([batches[0], (x[32:64], bad_y[32:64])], epochs=2)  # fit's epochs count from the first

    step, after = trained(lambda t: t.fit(batches, epochs=1), failing)
    ref_step, ref = trained(lambda t: t.fit(batches, epochs=1), lambda t: t.fit(batches[:1], epochs=2))
    assert step == ref_step == 4
    assert int(after["1.num_batches_tracked"]) == 4
    assert all(np.array_equal(after[k], ref[k]) for k in ref)


def test_optimizer_factory_and_iterable_of_batches():
    x, y = data()
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    t = dg.Trainer(model, nn.functional.cross_entropy, lambda params: dg.optim.Adam(params, lr=0.01), progress=False)
    loader = dg.data.DataLoader(dg.data.TensorDataset(dg.tensor(x), dg.tensor(y)), batch_size=32)
    hist = t.fit(loader, epochs=3, batch_size=32)
    assert hist["loss"][-1] < hist["loss"][0]
    with pytest.raises(ConfigError, match="iterable of"):
        t.fit(42)


def test_an_iterable_of_batches_is_used_as_given_and_read_again_each_epoch():
    """As in PyTorch: the loader's batch sizes and order (fit's batch_size does not apply), and a fresh
    iteration every epoch (its shuffling and augmentation); a generator is read once and replayed."""
    x, y = data()

    class Counting:  # a re-iterable loader that counts its epochs
        iterations = 0

        def __iter__(self):
            Counting.iterations += 1
            return ((x[i : i + 20], y[i : i + 20]) for i in range(0, len(x), 20))

    t = make()
    h = t.fit(Counting(), epochs=3, batch_size=32)
    assert Counting.iterations == 3 and t.global_step == 3 * 5  # 96 samples in batches of 20: 5 steps
    assert len(h) == 3
    t2 = make()
    t2.fit(((x[i : i + 24], y[i : i + 24]) for i in range(0, len(x), 24)), epochs=2)
    assert t2.global_step == 2 * 4


def test_a_loader_with_a_custom_sampler_and_collate_trains_and_a_batch_it_cannot_concatenate_is_named():
    """fit concatenates a loader's batches: (x, y) from any sampler/collate_fn trains; a dict, a triple
    or batch_size=None's single samples are a ConfigError saying what the batch was."""
    x, y = data()
    samples = [(x[i], int(y[i])) for i in range(len(x))]

    def pairs(batch):
        return np.stack([s[0] for s in batch]), np.array([s[1] for s in batch])

    sampler = dg.data.WeightedRandomSampler(np.ones(len(x)), len(x), generator=0)
    loader = dg.data.DataLoader(samples, batch_size=32, sampler=sampler, collate_fn=pairs)
    t = make()
    hist = t.fit(loader, epochs=3)
    assert t.global_step == 3 * 3 and hist["loss"][-1] < hist["loss"][0]
    bad = {
        "got a dict with keys \\['x', 'y'\\]": {"collate_fn": lambda b: dict(zip("xy", pairs(b)))},
        "got a tuple of 3 items": {"collate_fn": lambda b: (*pairs(b), None)},
        "inputs must be an array or tensor with a batch dimension, got a dict": {
            "collate_fn": lambda b: ({"a": pairs(b)[0]}, pairs(b)[1])
        },
        "targets must be an array or tensor with a batch dimension, got shape \\(\\)": {"batch_size": None},
    }
    for match, kwargs in bad.items():
        with pytest.raises(ConfigError, match=match):
            make().fit(dg.data.DataLoader(samples, **{"batch_size": 32, **kwargs}), epochs=1)


def test_a_dataloader_with_worker_processes_trains_as_the_same_loader_without_them_and_leaves_no_worker():
    """fit reads a loader with num_workers > 0 as an iterable of batches: the same batches (shuffled from
    the same generator seed) as num_workers=0, hence the same losses; its workers stop every epoch."""
    import multiprocessing

    x, y = data()
    ds = dg.data.TensorDataset(dg.tensor(x), dg.tensor(y))
    losses = []
    for workers in (0, 2):
        before = set(multiprocessing.active_children())
        loader = dg.data.DataLoader(ds, batch_size=32, shuffle=True, generator=4, num_workers=workers)
        losses.append(make().fit(loader, epochs=2)["loss"])
        assert set(multiprocessing.active_children()) <= before
    assert losses[0] == losses[1]


class _Interrupted(Exception):
    pass


def test_step_checkpoints_resume_inside_an_epoch_to_the_same_bits(tmp_path):
    """checkpoint_every_steps=5 (and one at every epoch end): a run stopped in its 24th step (epoch 2,
    step 8 of 16) resumes from the checkpoint of global step 21 (epoch 2, 5 steps after the epoch-end
    checkpoint at 16), redoes 2 steps and ends with the uninterrupted run's bits."""
    x, y = data(256)  # 16 steps of 16 per epoch
    reference = make()
    reference.fit((x, y), epochs=3, batch_size=16)

    dg.manual_seed(0)
    calls = [0]

    def stopping_loss(out, target):  # stands in for a killed driver: the 24th step never finishes
        calls[0] += 1
        if calls[0] == 24:
            raise _Interrupted
        return nn.functional.cross_entropy(out, target)

    first = make(checkpoint_dir=str(tmp_path), checkpoint_every_steps=5)
    first.loss_fn = first.step_fn.loss_fn = stopping_loss
    with pytest.raises(_Interrupted):
        first.fit((x, y), epochs=3, batch_size=16)
    resumed = make(checkpoint_dir=str(tmp_path), checkpoint_every_steps=5)
    resumed.fit((x, y), epochs=3, batch_size=16, resume=True)
    assert any(e.endswith("at epoch 1, step 5") for e in resumed.history.events), resumed.history.events
    assert resumed.global_step == 48 and len(resumed.history) == 3
    for a, b in zip(reference.model.parameters(), resumed.model.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_the_progress_bar_redraws_at_most_every_half_second_not_every_step(capsys):
    """Each step updates the bar's loss and per-worker figures without drawing them (a terminal write per
    step slowed small models and filled redirected logs); the epoch lines still print."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2000, 4)).astype(np.float32), rng.integers(0, 2, 2000)
    model = nn.Sequential(nn.Linear(4, 2))
    trainer = dg.Trainer(model, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1), progress=True)
    started = time.perf_counter()
    trainer.fit((x, y), epochs=2, batch_size=4)  # 500 steps an epoch
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert out.count("epoch   1  loss") == 1 and out.count("epoch   2  loss") == 1
    draws = err.count("\r")
    assert 0 < draws <= 2 * 4 + 2 * elapsed / 0.5, (draws, elapsed)  # open/close per epoch, + one per 0.5 s


def test_empty_data_bad_evaluate_batch_size_and_a_non_tensor_loss_are_named():
    """An empty dataset trained an epoch of nothing and recorded loss 0.0 (evaluate returned loss 0.0);
    evaluate(batch_size=0) was a bare range() error; a loss_fn returning a float an AttributeError on
    `.ndim`. numpy integers, as numpy code computes them, are taken for epochs and batch sizes."""
    x, y = data()
    with pytest.raises(ConfigError, match="Trainer data: no samples"):
        make().fit((x[:0], y[:0]), epochs=1)
    with pytest.raises(ConfigError, match="Trainer data: no samples"):
        make().evaluate((x[:0], y[:0]))
    with pytest.raises(ConfigError, match="Trainer.evaluate: batch_size must be a positive int, got 0"):
        make().evaluate((x, y), batch_size=0)
    t = make()
    t.loss_fn = t.step_fn.loss_fn = lambda out, target: 1.0
    with pytest.raises(ConfigError, match="loss_fn must return a scalar distgraph Tensor, got float"):
        t.fit((x, y), epochs=1)
    h = make().fit((x, y), epochs=np.int64(2), batch_size=np.int32(32))
    assert len(h) == 2 and make().evaluate((x, y), batch_size=np.int64(50))["count"] == 96


def test_a_model_with_several_outputs_and_its_own_loss_trains_and_evaluates():
    """A model returning a tuple, with a loss_fn that takes it apart, failed after the first step with an
    AttributeError: the accuracy statistic read `.ndim` of the tuple. Accuracy is left out for such models."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls, self.reg = nn.Linear(8, 3), nn.Linear(8, 1)

        def forward(self, x):
            return self.cls(x), self.reg(x)

    def loss(out, target):
        return nn.functional.cross_entropy(out[0], target) + (out[1] ** 2).mean()

    dg.manual_seed(0)
    model = TwoHeads()
    trainer = dg.Trainer(model, loss, dg.optim.SGD(model.parameters(), lr=0.1), workers=2, progress=False)
    h = trainer.fit(data(), epochs=2, batch_size=32, val_data=data(40))
    assert h["loss"][1] < h["loss"][0] and "accuracy" not in h and "val_loss" in h
    assert set(trainer.evaluate(data())) == {"loss", "count"}


def test_data_may_be_tensors_on_the_device_and_requiring_grad(device):
    """fit and evaluate take (x, y) as tensors wherever they are, requiring grad or not (torch's users pass
    what their model took): it once called .numpy() on them, which refuses both."""
    x, y = data()
    arrays = make().fit((x, y), epochs=2, batch_size=16)["loss"]
    tensors = (dg.tensor(x, device=device, requires_grad=True), dg.tensor(y, device=device))
    trainer = make()
    assert trainer.fit(tensors, epochs=2, batch_size=16)["loss"] == pytest.approx(arrays, rel=1e-5)
    assert trainer.evaluate(tensors)["accuracy"] == trainer.evaluate((x, y))["accuracy"]
