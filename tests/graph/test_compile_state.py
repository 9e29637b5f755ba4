"""What a compiled function must notice between calls, found by an audit that ported eager code: a clone
of a frozen parameter (a constant of the graph, holding the capture's values), a tensor that starts to
require grad (the call that re-captured returned outputs without history), numbers in a module's dict
and list attributes and its strings; and the Runner's options off the default path."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.graph.capture import capture
from distgraph.graph.compile import CompileWarning
from distgraph.graph.executor import Runner
from distgraph.graph.passes import optimize


class CloneOfWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(dg.tensor(np.eye(3)))

    def forward(self, x):
        return x @ self.w.clone()


def test_a_clone_of_a_frozen_weight_reads_the_weight_at_each_call():
    m = CloneOfWeight().requires_grad_(False)
    x = dg.tensor(np.ones((2, 3)))
    compiled = dg.compile(m, (x,))
    assert "clone" in str(capture(m, [x])[0])  # an op of the graph, not a constant
    with dg.no_grad():
        m.w.mul_(5.0)
    np.testing.assert_array_equal(compiled(x).numpy(), m(x).numpy())
    np.testing.assert_array_equal(compiled(x).numpy(), np.full((2, 3), 5.0))


def test_clone_copies_bits_and_layout_as_torchs():
    t = dg.tensor([1.0, -0.0], requires_grad=True)
    c = t.clone()
    assert np.signbit(c.detach().numpy()[1])  # (it was t + 0, which makes -0.0 +0.0)
    c.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [1.0, 1.0])
    x = dg.randn(2, 3, 4, 5)
    nhwc = x.clone(memory_format=dg.channels_last)
    assert nhwc.is_contiguous(memory_format=dg.channels_last) and nhwc.clone().stride() == nhwc.stride()
    assert nhwc.clone(memory_format=dg.contiguous_format).is_contiguous()
    plain = dg.ones(3)
    copy = plain.clone(memory_format=dg.contiguous_format)
    copy[0] = 5.0
    assert plain.tolist() == [1.0, 1.0, 1.0]  # a copy even where the layout is already the one asked for
    with pytest.raises(ValueError, match="clone: required rank 4"):
        plain.clone(memory_format=dg.channels_last)


def test_the_call_that_recaptures_for_an_unfrozen_tensor_gives_outputs_with_history():
    x = dg.tensor(np.ones((2, 3)))
    w = dg.tensor(np.eye(3))
    compiled = dg.compile(lambda x: x @ w, (x,))
    w.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileWarning)
        out = compiled(x)
    assert out.requires_grad
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.full((3, 3), 2.0))
    linear = nn.Linear(3, 2).requires_grad_(False)
    compiled = dg.compile(linear, (x.float(),))
    compiled(x.float())
    linear.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileWarning)
        compiled(x.float()).sum().backward()
    assert linear.weight.grad is not None


class Configured(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg, self.scales, self.mode = {"scale": 2.0}, [1.0], "keep"

    def forward(self, x):
        return x * self.cfg["scale"] * self.scales[0] * (1 if self.mode == "keep" else -1)


def test_numbers_in_dict_and_list_attributes_and_strings_are_guarded():
    m, x = Configured(), dg.tensor(np.ones(3))
    compiled = dg.compile(m, (x,))
    for change, named in [
        (lambda: m.cfg.__setitem__("scale", 10.0), r"Configured.cfg changed from \(\('scale', 2.0\),\)"),
        (lambda: m.scales.__setitem__(0, 3.0), r"Configured.scales changed from \(1.0,\) to \(3.0,\)"),
        (lambda: setattr(m, "mode", "flip"), "Configured.mode changed from 'keep' to 'flip'"),  # the latest capture's
    ]:
        change()
        with pytest.warns(CompileWarning, match=named):
            np.testing.assert_array_equal(compiled(x).numpy(), m(x).numpy())
    m.cfg["scale"] = [1.0]  # unhashable inside: no variant key can hold it
    with (
        pytest.warns(CompileWarning, match="running eagerly: a list or dict attribute"),
        pytest.raises(dg.errors.DTypeError),
    ):
        compiled(x)  # the original runs (and fails as it does eagerly)


@pytest.mark.parametrize("x", [np.arange(4), np.array(3)])
def test_a_runner_without_a_memory_plan_keeps_a_fused_casts_dtype(x):
    t = dg.tensor(x)
    graph = optimize(capture(lambda a: (a + 1) / 3, [t])[0])
    expected = ((t + 1) / 3).numpy()
    for plan_memory in (True, False):
        out = Runner(graph, plan_memory=plan_memory)(t.array)[0]
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)


def test_an_interpreting_runner_runs_through_run_too():
    t = dg.tensor(np.arange(4.0))
    graph = capture(lambda a: a * 2 + 1, [t])[0]
    np.testing.assert_array_equal(Runner(graph, codegen=False).run(t.array)[0], [1.0, 3.0, 5.0, 7.0])
