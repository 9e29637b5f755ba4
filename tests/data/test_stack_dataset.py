"""StackDataset against torch's: samples as tuples or dicts of the stacked datasets' samples, batches read
through each dataset's own __getitems__ where it has one, and torch's refusals."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.utils import data as dg_data

torch = pytest.importorskip("torch")
from torch.utils import data as torch_data  # noqa: E402

LIBS = pytest.mark.parametrize("m, data", [(dg, dg_data), (torch, torch_data)], ids=["distgraph", "torch"])


def _plain(x):
    """Samples of either library as nested Python values."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_plain(v) for v in x)
    return x.tolist() if hasattr(x, "tolist") else x


class Batched:
    """A dataset that reads a whole batch at once, logging the calls."""

    def __init__(self, n):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i * 10

    def __getitems__(self, indices):
        self.calls.append(list(indices))
        return [i * 10 for i in indices]


def _samples(m, data, named, indices=(0, 2)):
    tensors = data.TensorDataset(m.arange(3), m.arange(3) * 2)
    stack = data.StackDataset(t=tensors, s=[5, 6, 7]) if named else data.StackDataset(tensors, [5, 6, 7])
    return len(stack), _plain(stack[1]), _plain(stack.__getitems__(list(indices)))


@pytest.mark.parametrize("named", [False, True], ids=["tuple", "dict"])
def test_samples_and_batches_match_torch(named):
    assert _samples(dg, dg_data, named) == _samples(torch, torch_data, named)


@LIBS
def test_a_dataset_with_getitems_is_read_once_per_batch(m, data):
    batched = Batched(4)
    stack = data.StackDataset(a=batched, b=list("wxyz"))
    assert stack.__getitems__([3, 1]) == [{"a": 30, "b": "z"}, {"a": 10, "b": "x"}]
    assert batched.calls == [[3, 1]]


@LIBS
def test_a_dataloader_collates_stacked_samples(m, data):
    stack = data.StackDataset(data.TensorDataset(m.arange(4.0)), m.arange(4) * 2)
    batches = [_plain(b) for b in data.DataLoader(stack, batch_size=2)]
    assert batches == [[[[0.0, 1.0]], [0, 2]], [[[2.0, 3.0]], [4, 6]]]


@LIBS
def test_torchs_refusals(m, data):
    with pytest.raises(ValueError, match="At least one dataset should be passed"):
        data.StackDataset()
    with pytest.raises(ValueError, match="but both types are given"):
        data.StackDataset([1], a=[1])
    with pytest.raises(ValueError, match="Size mismatch between datasets"):
        data.StackDataset([1, 2], [1])
    with pytest.raises(ValueError, match="Size mismatch between datasets"):
        data.StackDataset(a=[1, 2], b=[1])

    class Short(Batched):
        def __getitems__(self, indices):
            return [0]

    with pytest.raises(ValueError, match="Nested dataset's output size mismatch. Expected 2, got 1"):
        data.StackDataset(Short(3), [1, 2, 3]).__getitems__([0, 1])


def test_stack_dataset_is_one_class_under_both_names():
    assert dg_data.StackDataset is dg.data.StackDataset and len(dg.data.StackDataset(np.zeros(3))) == 3
