"""Bad input to the user-facing surface (Trainer, `distgraph train`, dg.save/dg.load, DataLoader) is a distgraph
error naming what is wrong and where: never a bare numpy/Python error from deep inside, nor silent misuse."""

import numpy as np
import pytest
from click.testing import CliRunner

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn, optim
from distgraph.cli import main
from distgraph.data import DataLoader, TensorDataset
from distgraph.data.collate import default_collate
from distgraph.errors import ConfigError, DTypeError, FileFormatError, IndexOutOfRangeError, ShapeError

X = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
Y = np.arange(12) % 3


def _model():
    return nn.Sequential(nn.Linear(4, 3))


def _trainer(**kw):
    model = _model()
    return dg.Trainer(model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), progress=False, **kw)


# ---- Trainer -----------------------------------------------------------------------------------------------
def test_an_optimizer_built_on_another_models_parameters_is_refused():
    model, other = _model(), _model()
    with pytest.raises(ConfigError, match="optimizer .*none of them the model's.*another model's parameters"):
        dg.Trainer(model, F.cross_entropy, optim.SGD(other.parameters(), lr=0.1), progress=False)


def test_an_optimizer_of_the_loss_modules_own_parameters_is_taken_and_trains_them():
    class Tempered(nn.Module):  # cross-entropy at a learned temperature
        def __init__(self):
            super().__init__()
            self.t = nn.Parameter(dg.ones(1))

        def forward(self, logits, y):
            return F.cross_entropy(logits / self.t, y)

    model, loss = _model(), Tempered()
    x, y = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32), np.arange(32) % 3
    trainer = dg.Trainer(model, loss, optim.SGD(loss.parameters(), lr=0.5), progress=False)
    trainer.fit((x, y), epochs=2, batch_size=8)
    assert loss.t.item() != 1.0


def test_a_torch_style_iterable_dataset_is_told_to_become_an_iterable_dataset():
    class Stream:  # torch's IterableDataset: __iter__ and an inherited __getitem__, no __len__
        def __iter__(self):
            return iter(range(3))

        def __getitem__(self, i):
            raise NotImplementedError

    with pytest.raises(ConfigError, match="no __len__.*it iterates, so make it a distgraph.data.IterableDataset"):
        DataLoader(Stream())


def test_an_optimizer_on_part_of_the_model_is_taken():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    dg.Trainer(model, F.cross_entropy, optim.SGD(model[1].parameters(), lr=0.1), progress=False)


@pytest.mark.parametrize("seed", ["a", -1, 1.5, None])
def test_a_seed_that_numpy_cannot_take_is_refused_at_construction(seed):
    with pytest.raises(ConfigError, match=f"Trainer: seed must be an int ≥ 0 .*got {seed!r}"):
        _trainer(seed=seed)


def test_a_checkpoint_dir_that_is_no_path_is_refused():
    with pytest.raises(ConfigError, match="Trainer: checkpoint_dir must be a path .*got int 5"):
        _trainer(checkpoint_dir=5)


@pytest.mark.parametrize(
    "data, got", [(X, r"one ndarray of shape \(12, 4\)"), ((X, Y, Y), "a tuple of 3 arrays"), ([X], "a list of 1")]
)
def test_data_that_is_not_inputs_and_targets_names_what_it_got(data, got):
    with pytest.raises(ConfigError, match=f"Trainer data: got {got}.*give \\(inputs, targets\\)"):
        _trainer().fit(data)


def test_a_model_state_dict_is_no_trainer_checkpoint(tmp_path):
    trainer = _trainer()
    path = tmp_path / "weights.dg"
    dg.save(trainer.model.state_dict(), path)
    before = [p.array.copy() for p in trainer.model.parameters()]
    with pytest.raises(
        ConfigError, match=r"load_checkpoint: .*weights.dg: not a Trainer checkpoint: missing key.*'model'"
    ):
        trainer.load_checkpoint(path)
    with pytest.raises(ConfigError, match="Trainer.load_state_dict: not a Trainer checkpoint: it holds a list"):
        trainer.load_state_dict([1])
    partial = trainer.state_dict()
    del partial["history"]
    with pytest.raises(ConfigError, match="missing key\\(s\\) 'history'"):
        trainer.load_state_dict(partial)
    assert all((p.array == b).all() for p, b in zip(trainer.model.parameters(), before))  # nothing half-loaded


def test_a_trainer_checkpoint_still_loads(tmp_path):
    trainer = _trainer()
    trainer.fit((X, Y), epochs=1)
    path = trainer.save_checkpoint(str(tmp_path / "c.dg"))
    other = _trainer()
    other.load_checkpoint(path)
    assert other.epoch == 1 and other.global_step == trainer.global_step


# ---- distgraph train CONFIG.yaml ---------------------------------------------------------------------------
CONFIG = """data: {name: digits, seed: 0, test_fraction: 0.25}
model:
  - Linear: [64, 10]
loss: cross_entropy
optimizer: {name: Adam, lr: 0.001}
train: {epochs: 1, batch_size: 64, seed: 0}
"""


def _train(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return CliRunner().invoke(main, ["train", str(path), "--quiet"])


def test_a_yaml_syntax_error_names_the_line_column_and_problem(tmp_path):
    result = _train(tmp_path, CONFIG.replace("train: {epochs: 1,", "train: {epochs: 1"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "c.yaml: not valid YAML: line 6, column" in result.output
    assert "expected ',' or '}'" in result.output and "flow mapping that begins at line 6" in result.output


def test_a_tab_in_yaml_names_its_line(tmp_path):
    result = _train(tmp_path, CONFIG.replace("  - Linear", "\t- Linear"))
    assert "not valid YAML: line 3, column 1: found character '\\t'" in result.output


def test_an_empty_model_list_names_the_model_key(tmp_path):
    result = _train(tmp_path, CONFIG.replace("model:\n  - Linear: [64, 10]", "model: []"))
    assert result.exit_code != 0 and "c.yaml: model is an empty list" in result.output


# ---- dg.save / dg.load -------------------------------------------------------------------------------------
def test_files_opened_in_text_mode_are_refused(tmp_path):
    path = tmp_path / "m.dg"
    dg.save({"w": dg.ones(2)}, path)
    with open(path) as fh, pytest.raises(FileFormatError, match="m.dg: dg.load needs a binary file: open it with 'rb'"):
        dg.load(fh)
    with open(tmp_path / "t.dg", "w") as fh, pytest.raises(FileFormatError, match="dg.save: .*text mode.*'wb'"):
        dg.save({"w": dg.ones(2)}, fh)
    with pytest.raises(FileFormatError, match="dg.save: expected a path or a binary file object, got NoneType"):
        dg.save({"w": dg.ones(2)}, None)


def test_a_truncated_torch_zip_says_truncated(tmp_path):
    path = tmp_path / "m.pt"
    dg.save({"w": dg.ones(3)}, path, format="torch")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.pt: not a distgraph file, nor a valid torch zip .*truncated"):
        dg.load(tmp_path / "cut.pt")


# ---- DataLoader --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset, got", [(5, "got int$"), (None, "got NoneType$"), (iter([1, 2]), "IterableDataset")])
def test_what_is_no_dataset_is_refused_by_the_dataloader(dataset, got):
    with pytest.raises(ConfigError, match=f"DataLoader: dataset must be map-style.*{got}"):
        DataLoader(dataset)


def test_a_dataset_without_len_needs_a_sampler():
    class NoLen:
        def __getitem__(self, i):
            return i

    with pytest.raises(ConfigError, match="DataLoader: dataset NoLen has no __len__"):
        DataLoader(NoLen())
    assert [b.tolist() for b in DataLoader(NoLen(), batch_size=2, sampler=[0, 1, 2])] == [[0, 1], [2]]


@pytest.mark.parametrize("option", ["sampler", "batch_sampler"])
def test_a_sampler_that_is_not_iterable_is_refused(option):
    with pytest.raises(ConfigError, match=f"DataLoader: {option} must be an iterable of indices, got int"):
        DataLoader(list(range(4)), **({option: 5} if option == "sampler" else {option: 5, "batch_size": 1}))


@pytest.mark.parametrize("kw", [{"sampler": list(range(20)), "batch_size": 4}, {"batch_sampler": [[0, 50]]}])
def test_a_sampler_longer_than_the_dataset_names_the_index_and_size(kw):
    ds = TensorDataset(dg.tensor(X), dg.tensor(Y))
    with pytest.raises(IndexOutOfRangeError, match=r"DataLoader: the sampler gave index (12|50), .* has 12 samples"):
        list(DataLoader(ds, **kw))


def test_a_sampler_of_non_integers_names_the_sampler():
    ds = TensorDataset(dg.tensor(X), dg.tensor(Y))
    with pytest.raises(DTypeError, match="DataLoader: the sampler must yield integer indices, got \\['a'\\]"):
        list(DataLoader(ds, sampler=["a"], batch_size=2))


def test_a_subset_is_checked_against_its_own_length():
    sub = dg.data.Subset(TensorDataset(dg.tensor(X), dg.tensor(Y)), [0, 1, 2])
    with pytest.raises(IndexOutOfRangeError, match="has 3 samples"):
        list(DataLoader(sub, sampler=[0, 3], batch_size=2))


def test_dict_samples_with_different_keys_name_the_sample():
    with pytest.raises(ShapeError, match=r"sample 1 of the batch has keys \['b'\], sample 0 a dict with keys \['a'\]"):
        default_collate([{"a": 1}, {"b": 2}])
    with pytest.raises(ShapeError, match="sample 1 of the batch has a tuple"):
        default_collate([{"a": 1}, (1,)])
    assert default_collate([{"a": 1}, {"a": 2, "b": 3}])["a"].tolist() == [1, 2]  # extra keys: ignored, as torch
