"""A user's Optimizer subclass in torch's documented pattern (`super().__init__(params, defaults)` and its own
step), against torch: any defaults are taken, the base class's step raises NotImplementedError, and state the
subclass stored as Tensors comes back from a state dict as Tensors (cast to the parameter's dtype, "step"
kept), so its step runs on after a load."""

import copy

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


def _momentum_sgd(lib):
    """torch's docs' way to write an optimizer: a momentum buffer and a step count kept as Tensors."""

    class MyMomentum(lib.optim.Optimizer):
        def __init__(self, params, lr=0.1, momentum=0.9):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        def step(self, closure=None):
            with lib.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        st = self.state[p]
                        if "buf" not in st:
                            st["buf"] = lib.zeros_like(p, dtype=lib.float32)
                            st["step"] = lib.tensor(0.0, dtype=lib.float32)
                        st["buf"].mul_(g["momentum"]).add_(p.grad)
                        st["step"] += 1
                        p.add_(st["buf"], alpha=-g["lr"])

    return MyMomentum


def _run(lib, dtype):
    """Two steps, a save, a fresh optimizer loading the (deep-copied) dict, two more steps."""
    make = _momentum_sgd(lib)
    p = lib.nn.Parameter(lib.tensor([1.0, -2.0, 3.0], dtype=dtype))
    opt = make([p], lr=0.05)
    for _ in range(2):
        p.grad = p.detach() * 2
        opt.step()
    opt2 = make([p], lr=0.05)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    st = opt2.state[p]
    loaded = (type(st["buf"]).__name__, str(st["buf"].dtype).split(".")[-1], str(st["step"].dtype).split(".")[-1])
    for _ in range(2):
        p.grad = p.detach() * 2
        opt2.step()
    return loaded, p.detach().numpy().copy(), float(opt2.state[p]["step"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_user_subclass_builds_steps_and_resumes_from_its_state_dict_as_torch(dtype):
    (kind, buf_dtype, step_dtype), got, got_steps = _run(dg, getattr(dg, dtype))
    (_, want_buf_dtype, want_step_dtype), want, want_steps = _run(torch, getattr(torch, dtype))
    assert kind == "Tensor"  # (it was a numpy array, and the subclass's step failed on `mul_`)
    assert (buf_dtype, step_dtype) == (want_buf_dtype, want_step_dtype) == (dtype, "float32")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got_steps == want_steps == 4


def test_loaded_user_state_is_a_copy_and_keeps_other_values_as_stored():
    p = dg.nn.Parameter(dg.ones(2, dtype=dg.float64))
    opt = _momentum_sgd(dg)([p])
    saved = {
        "state": {0: {"buf": dg.ones(2), "history": [dg.zeros(2), 3], "meta": {"k": "v"}, "n": 7}},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}],
    }
    opt.load_state_dict(saved)
    st = opt.state[p]
    assert st["buf"].dtype == dg.float64 and st["history"][0].dtype == dg.float64
    assert st["history"][1] == 3 and st["meta"] == {"k": "v"} and st["n"] == 7
    st["buf"].add_(1.0)
    assert saved["state"][0]["buf"].tolist() == [1.0, 1.0]  # the caller's dict is never written


@pytest.mark.parametrize("lib", [dg, torch], ids=["distgraph", "torch"])
def test_the_base_class_takes_any_defaults_and_its_step_is_not_implemented(lib):
    p = lib.nn.Parameter(lib.ones(2))
    opt = lib.optim.Optimizer([p], {"lr": 0.1, "anything": "goes", "differentiable": True})
    assert opt.param_groups[0]["anything"] == "goes"
    assert opt.defaults["lr"] == 0.1
    with pytest.raises(NotImplementedError):
        opt.step()


def test_the_base_step_names_the_class_that_lacks_one():
    class NoStep(dg.optim.Optimizer):
        pass

    with pytest.raises(NotImplementedError, match="NoStep does not define step"):
        NoStep([dg.nn.Parameter(dg.ones(1))], {}).step()


def test_built_in_optimizers_still_refuse_an_unknown_constructor_option():
    class Stray(dg.optim.SGD):  # passes a default SGD does not take (as a wrapper's **kwargs would)
        def __init__(self, params):
            dg.optim.Optimizer.__init__(self, params, {"lr": 0.1, "betas": (0.9, 0.9)})

    with pytest.raises(dg.errors.ConfigError, match="Stray: unknown option 'betas'; known: lr, momentum"):
        Stray([dg.nn.Parameter(dg.ones(1))])
