"""autograd/printing.py against torch: Tensor repr under set_printoptions (precision, threshold, edgeitems,
linewidth, profile, sci_mode) equals torch's string, character for character, for tensors whose dtype is not
printed (the suffix `dtype=distgraph.float64` is longer than torch's and may wrap elsewhere); the values part
is compared for the others."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.autograd.printing import OPTIONS as CURRENT
from distgraph.autograd.printing import tensor_body

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
VALUES = {
    "mixed": [1.0, 2.5],
    "whole": [1.0, 2.0],
    "tiny": [1e-5, 1.0],
    "big": [123456.7, 1.0],
    "huge": [1e10, 1.0],
    "matrix": [[1.123456, 2], [3, 4]],
    "summarized": np.arange(2000.0),
    "cube": RNG.standard_normal((3, 4, 5)),
    "square-summarized": RNG.standard_normal((40, 40)),
    "wrapped": RNG.standard_normal(30),
    "ints": np.arange(1500).reshape(30, 50),
    "bools": [True, False],
    "nonfinite": [float("inf"), 1.0, float("nan")],
    "zeros": [0.0, -0.0],
    "scalar": 3.5,
    "empty": np.zeros(0),
    "empty-2d": np.zeros((0, 3)),
}
OPTIONS = [
    {},
    {"precision": 2},
    {"precision": 6, "sci_mode": False},
    {"sci_mode": True},
    {"threshold": 5, "edgeitems": 1},
    {"linewidth": 40},
    {"profile": "short"},
    {"profile": "full"},
    {"edgeitems": 0, "threshold": 3},
]


@pytest.fixture(autouse=True)
def _default_options():
    yield
    dg.set_printoptions(profile="default")
    torch.set_printoptions(profile="default")


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
@pytest.mark.parametrize("name", list(VALUES))
def test_repr_matches_torch(name, options):
    dg.set_printoptions(**options)
    torch.set_printoptions(**options)
    for dtype in (np.float32, np.float64, np.float16):
        a = np.asarray(VALUES[name])
        with np.errstate(over="ignore"):  # 1e10 is inf in float16
            a = a.astype(dtype) if a.dtype.kind == "f" else a
        got, want = dg.tensor(a), torch.tensor(a)
        if a.dtype in (np.float32, np.int64, np.bool_) and a.size:
            assert repr(got) == repr(want)
        else:
            assert tensor_body(got.numpy()) == torch._tensor_str._tensor_str(want, len("tensor("))


def test_grad_suffixes_as_torch():
    a = np.array([[0.5, -1.25], [2.0, 3.0]], dtype=np.float32)
    x, y = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    assert repr(x) == repr(y)
    assert repr(x * 2) == repr(y * 2).replace("MulBackward0", (x * 2).grad_fn.name())


def test_options_read_back_and_profile_resets():
    dg.set_printoptions(precision=7, linewidth=120, sci_mode=True)
    assert CURRENT == {"precision": 7, "threshold": 1000, "edgeitems": 3, "linewidth": 120, "sci_mode": True}
    dg.set_printoptions(profile="default")
    assert CURRENT["precision"] == 4 and CURRENT["sci_mode"] is None
    with pytest.raises(ValueError, match="profile must be one of"):
        dg.set_printoptions(profile="long")
