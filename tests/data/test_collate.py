"""default_collate against torch's: the dtype of a batch of Python numbers and the container types."""

from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np
import pytest

from distgraph.data import default_collate, default_convert
from distgraph.errors import DTypeError

torch = pytest.importorskip("torch")
tdata = torch.utils.data

Point = namedtuple("Point", ["x", "y"])


class Frozen(Mapping):
    """A read-only Mapping: rebuilt from a dict (torch: `type(elem)({...})`)."""

    def __init__(self, items):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


def _same(ours, theirs):
    assert ours.numpy().tolist() == theirs.tolist()
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]


@pytest.mark.parametrize(
    "batch", [[1, 2.5, 3], [True, 2], [True, False], [True, 2.5], [False, 1.5], [1, 2], [2.5, 1], [2.5, True]]
)
def test_python_numbers_take_the_dtype_torch_infers_from_the_whole_batch(batch):
    _same(default_collate(batch), tdata.default_collate(batch))


@pytest.mark.parametrize(
    "batch",
    [
        [Point(1, 2.0), Point(3, 4.0)],
        [(1, 2.0), (3, 4.0)],
        [[1, 2.0], [3, 4.0]],
        [OrderedDict(b=1, a=2.0), OrderedDict(b=3, a=4.0)],
        [Frozen({"a": 1}), Frozen({"a": 2})],
        [{"p": Point(1, (2, 3))}, {"p": Point(4, (5, 6))}],
    ],
)
def test_containers_keep_the_type_torch_keeps(batch):
    ours, theirs = default_collate(batch), tdata.default_collate(batch)

    def compare(o, t):
        if isinstance(t, torch.Tensor):
            return _same(o, t)
        assert type(o) is type(t)
        if isinstance(t, Mapping):
            assert list(o) == list(t)
            return [compare(o[k], t[k]) for k in t]
        assert len(o) == len(t)
        return [compare(a, b) for a, b in zip(o, t)]

    compare(ours, theirs)


def test_numpy_strings_stay_strings_and_string_arrays_are_refused():
    for batch in ([np.str_("a"), np.str_("b")], [np.bytes_(b"a"), np.bytes_(b"b")]):
        assert default_collate(batch) == tdata.default_collate(batch) == list(batch)
    assert default_collate([{"name": np.str_("a")}, {"name": np.str_("b")}]) == {"name": ["a", "b"]}
    strings = [np.array(["a", "b"]), np.array(["c", "d"])]
    with pytest.raises(TypeError):
        tdata.default_collate(strings)
    with pytest.raises(DTypeError, match="default_collate: cannot stack numpy arrays of dtype <U1"):
        default_collate(strings)


def test_default_convert_rebuilds_a_read_only_mapping_as_torch():
    sample = Frozen({"a": np.arange(2)})
    ours, theirs = default_convert(sample), tdata.default_convert(sample)
    assert type(ours) is type(theirs) is Frozen
    assert ours["a"].numpy().tolist() == theirs["a"].tolist()


@pytest.mark.parametrize(
    "batch",
    [
        [(1, "cat"), (2, "dog")],
        [Point(1, "cat"), Point(2, "dog")],
        [[1, b"cat"], [2, b"dog"]],
        [{"n": 1, "s": "cat"}, {"n": 2, "s": "dog"}],
        ["cat", "dog"],
    ],
    ids=["tuple", "namedtuple", "list-bytes", "dict", "top-level"],
)
def test_string_fields_keep_torchs_container(batch):
    """torch returns a batch of strings as it is: a tuple sample's column is a tuple, a dict's a list."""
    ours, theirs = default_collate(batch), tdata.default_collate(batch)
    pick = (lambda b: b["s"]) if isinstance(batch[0], dict) else (lambda b: b if isinstance(b[0], str) else b[1])
    assert type(pick(ours)) is type(pick(theirs)) and pick(ours) == pick(theirs)
