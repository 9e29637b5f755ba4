"""dg.compile after the module's objects are replaced, and with keyword arguments: the compiled call must never
return what the old objects would give. A replaced submodule, parameter, buffer or tensor attribute was read
from the capture's object with no warning (a wrong output, or a training step on the old weights); a keyword
argument was a TypeError. Both now run the original eagerly, with a warning naming what happened."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.graph.compile import CompileWarning


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.scale = dg.full((3,), 2.0)
        self.register_buffer("mean", dg.zeros(3))

    def forward(self, x, mask=None):
        out = self.fc(x) * self.scale - self.mean
        return out if mask is None else out * mask


REPLACEMENTS = {
    "module _Scaled.fc": lambda m: setattr(m, "fc", nn.Linear(8, 3)),
    "parameter fc.weight": lambda m: setattr(m.fc, "weight", nn.Parameter(dg.randn(3, 8))),
    "buffer _Scaled.mean": lambda m: setattr(m, "mean", dg.full((3,), -2.0)),
    "tensor attribute _Scaled.scale": lambda m: setattr(m, "scale", dg.full((3,), 5.0)),
}


@pytest.mark.parametrize("what", list(REPLACEMENTS))
def test_a_replaced_object_runs_eagerly_with_a_warning_naming_it(what):
    dg.manual_seed(0)
    m, x = _Scaled(), dg.randn(4, 8)
    with dg.no_grad():
        f = dg.compile(m, (x,))
        np.testing.assert_array_equal(f(x).numpy(), m(x).numpy())
        REPLACEMENTS[what](m)
        with pytest.warns(CompileWarning, match=rf"{what} was replaced since the capture, .* running eagerly"):
            out = f(x)
        np.testing.assert_array_equal(out.numpy(), m(x).numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once; later calls run eagerly without a word
            np.testing.assert_array_equal(f(x).numpy(), m(x).numpy())


def test_in_place_changes_stay_in_the_graph():
    m, x = _Scaled(), dg.randn(4, 8)
    with dg.no_grad():
        f = dg.compile(m, (x,))
        m.fc.weight.fill_(0.5)
        m.load_state_dict({k: v * 2 for k, v in m.state_dict().items()})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(f(x).numpy(), m(x).numpy())


def test_a_training_step_after_a_parameter_is_replaced_trains_the_new_one():
    dg.manual_seed(0)
    m, x, y = nn.Linear(8, 3), dg.randn(4, 8), dg.randint(0, 3, (4,))
    step = dg.compile(m, (x, y), loss_fn=F.cross_entropy, optimizer=dg.optim.SGD(m.parameters(), lr=0.1))
    step(x, y)
    m.weight = nn.Parameter(dg.zeros(3, 8))
    want = F.cross_entropy(m(x), y).item()
    with pytest.warns(CompileWarning, match="parameter Linear.weight was replaced"):
        assert step(x, y).item() == pytest.approx(want, rel=1e-6)


def test_keyword_arguments_run_the_original_eagerly_with_a_warning():
    m, x = _Scaled(), dg.randn(4, 8)
    with dg.no_grad():
        f = dg.compile(m, (x,))
        with pytest.warns(CompileWarning, match=r"keyword argument\(s\) mask are not captured"):
            out = f(x, mask=dg.full((3,), 3.0))
        np.testing.assert_array_equal(out.numpy(), m(x, mask=dg.full((3,), 3.0)).numpy())
        np.testing.assert_array_equal(f(x).numpy(), m(x).numpy())  # the graph still serves positional calls


@pytest.mark.parametrize("norm", ["weight_norm", "spectral_norm"])
def test_a_forward_that_rebuilds_a_tensor_attribute_stays_in_the_graph(norm):
    """weight_norm's and spectral_norm's pre-hooks set `module.weight` anew on every forward: the graph computes
    it, so it is no input to guard (the identity guard first sent such models to eager for good)."""
    from distgraph.nn import utils

    dg.manual_seed(0)
    m, x = getattr(utils, norm)(nn.Linear(4, 4)), dg.randn(2, 4)
    m.eval()
    with dg.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        f = dg.compile(m, (x,))
        for _ in range(2):
            np.testing.assert_array_equal(f(x).numpy(), m(x).numpy())
    assert not f._eager_only and all(v != "eager" for v in f.variants.values())
