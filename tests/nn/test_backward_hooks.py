"""Module full backward hooks and backward pre-hooks against torch: which calls, with what gradients."""

import collections
import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn

torch = pytest.importorskip("torch")


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy() if hasattr(t, "detach") else t)


class Recorder:
    """Registers a pre-hook and a full hook; records (kind, gradients as arrays) per call."""

    def __init__(self, module, scale_in=None, scale_out=None):
        self.calls = []

        def pre(mod, grad_output):
            self.calls.append(("pre", [_np(g) for g in grad_output]))
            return None if scale_out is None else tuple(None if g is None else g * scale_out for g in grad_output)

        def full(mod, grad_input, grad_output):
            self.calls.append(("full", [_np(g) for g in grad_input], [_np(g) for g in grad_output]))
            return None if scale_in is None else tuple(None if g is None else g * scale_in for g in grad_input)

        self.handles = [module.register_full_backward_pre_hook(pre), module.register_full_backward_hook(full)]


def assert_same_calls(a, b):
    assert [c[0] for c in a] == [c[0] for c in b]
    for ca, cb in zip(a, b):
        for ga, gb in zip(ca[1:], cb[1:]):
            assert len(ga) == len(gb)
            for x, y in zip(ga, gb):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def _pair(make):
    """The same module in both libraries, distgraph's weights copied from torch (float64)."""
    t = make(torch.nn).double()
    d = make(nn).double()
    d.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return d, t


def _inputs(*shapes, grad=(True,)):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    req = [grad[i] if i < len(grad) else False for i in range(len(shapes))]
    return (
        [dg.tensor(a, requires_grad=r) for a, r in zip(arrays, req)],
        [torch.tensor(a, requires_grad=r) for a, r in zip(arrays, req)],
    )


class TwoInTwoOut:
    """A custom module with two tensor inputs, a keyword argument and two outputs."""

    @staticmethod
    def make(m):
        class Mod(m.Module):
            def __init__(self):
                super().__init__()
                self.lin = m.Linear(3, 3)

            def forward(self, a, b, k=2.0):
                return self.lin(a) * k + b, b * 3

        return Mod()


@pytest.mark.parametrize(
    "make, shapes, grad",
    [
        (lambda m: m.Linear(3, 2), [(4, 3)], (True,)),
        (lambda m: m.Sequential(m.Linear(3, 4), m.Tanh(), m.Linear(4, 2)), [(4, 3)], (True,)),
        (TwoInTwoOut.make, [(2, 3), (2, 3)], (True, False)),
        (TwoInTwoOut.make, [(2, 3), (2, 3)], (True, True)),
    ],
    ids=["linear", "sequential", "custom-one-grad-input", "custom-two-grad-inputs"],
)
@pytest.mark.parametrize("scale", [None, 2.0], ids=["observe", "replace"])
def test_full_backward_hooks_see_and_replace_the_gradients_torch_does(make, shapes, grad, scale):
    d, t = _pair(make)
    rd, rt = Recorder(d, scale, scale), Recorder(t, scale, scale)
    xd, xt = _inputs(*shapes, grad=grad)
    od, ot = d(*xd), t(*xt)
    od, ot = (od if isinstance(od, tuple) else (od,)), (ot if isinstance(ot, tuple) else (ot,))
    # only the first output feeds the loss: the second's grad_output is None in both
    (od[0] * od[0]).sum().backward()
    (ot[0] * ot[0]).sum().backward()
    assert len(rd.calls) == 2
    assert_same_calls(rd.calls, rt.calls)
    for a, b in zip(xd, xt):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10)
    for (n, p), q in zip(d.named_parameters(), t.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, err_msg=n)


def test_removed_backward_hooks_stop_firing_and_hooks_on_a_child_fire_too():
    d, t = _pair(lambda m: m.Sequential(m.Linear(3, 4), m.ReLU(), m.Linear(4, 2)))
    counts = {}
    for lib, model in (("dg", d), ("torch", t)):
        seen = []
        model.register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append("seq"))
        handle = model[2].register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append("last"))
        pre = model[0].register_full_backward_pre_hook(lambda m, go, seen=seen: seen.append("first-pre"))
        x = (dg if lib == "dg" else torch).ones(2, 3, dtype=(dg if lib == "dg" else torch).float64, requires_grad=True)
        model(x).sum().backward()
        handle.remove()
        pre.remove()
        model(x).sum().backward()
        counts[lib] = seen
    assert counts["dg"] == counts["torch"] == ["last", "first-pre", "seq", "seq"]


def test_backward_hook_when_no_input_requires_grad_fires_at_the_outputs_with_none_inputs():
    d, t = _pair(lambda m: m.Linear(3, 2))
    got = {}
    for lib, model, x in (("dg", d, dg.ones(4, 3, dtype=dg.float64)), ("torch", t, torch.ones(4, 3).double())):
        seen = got[lib] = []
        model.register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append((gi, [tuple(g.shape) for g in go])))
        with pytest.warns(UserWarning, match="no inputs require gradients"):
            model(x).sum().backward()
    assert got["dg"] == got["torch"] == [((None,), [(4, 2)])]
    assert d.weight.grad is not None


def test_backward_hook_returning_the_wrong_number_of_gradients_raises():
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(dg.errors.AutogradError, match="Linear: backward hook returned an invalid number of grad_input"):
        lin(dg.ones(1, 3, requires_grad=True)).sum().backward()


def test_module_with_backward_hook_returning_a_dict_warns_and_never_calls_it_as_torch():
    class D(nn.Module):
        def forward(self, a):
            return {"x": a * 2}

    seen = []
    m = D()
    m.register_full_backward_hook(lambda *a: seen.append(a))
    with pytest.warns(UserWarning, match="module output should be a Tensor or a tuple of Tensors"):
        out = m(dg.ones(2, requires_grad=True))
    out["x"].sum().backward()
    assert seen == []


def test_backward_hooks_on_a_namedtuple_output_keep_its_type():
    P = collections.namedtuple("P", "x y")

    class NT(nn.Module):
        def forward(self, a):
            return P(a * 2, a * 3)

    seen = []
    m = NT()
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((len(gi), len(go), go[1] is None)))
    out = m(dg.ones(2, requires_grad=True))
    assert type(out) is P
    out.x.sum().backward()
    assert seen == [(1, 2, True)]


def test_no_backward_hook_wrapping_under_no_grad():
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda *a: None)
    with dg.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lin(dg.ones(1, 3, requires_grad=True))
    assert out.grad_fn is None
