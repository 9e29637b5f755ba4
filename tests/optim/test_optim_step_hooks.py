"""Optimizer step hooks and a Tensor lr, as torch's: `register_step_pre_hook` / `register_step_post_hook` on an
optimizer, `register_optimizer_step_pre_hook` / `_post_hook` for every optimizer, their order, a pre-hook's
(new_args, new_kwargs), removal, and a subclass whose step calls the base's running them once."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ConfigError
from distgraph.optim import optimizer as dg_optimizer

torch = pytest.importorskip("torch")
torch_optimizer = pytest.importorskip("torch.optim.optimizer")


def _calls_of(lib, optimizer_module, make):
    """The order in which the hooks ran over two steps, the second after removing the global ones."""
    w = lib.nn.Parameter(lib.ones(2, dtype=lib.float64))
    opt = make(lib, w)
    calls = []
    handles = [
        optimizer_module.register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
        optimizer_module.register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
    ]
    opt.register_step_pre_hook(lambda o, a, k: calls.append(f"pre {type(o).__name__} {len(a)} {sorted(k)}"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    for _ in range(2):
        (w * w).sum().backward()
        opt.step()
        calls.append("|")
        for h in handles:
            h.remove()
    return calls, w.detach().numpy().copy()


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_hooks_run_in_torchs_order_around_every_step_and_are_removed(name):
    def make(lib, w):
        return getattr(lib.optim, name)([w], lr=0.1)

    got, w_got = _calls_of(dg, dg_optimizer, make)
    want, w_want = _calls_of(torch, torch_optimizer, make)
    assert got == want
    assert np.allclose(w_got, w_want, rtol=1e-12)


def test_a_pre_hook_may_replace_the_steps_arguments_and_must_return_a_pair():
    w = dg.nn.Parameter(dg.ones(2, dtype=dg.float64))
    opt = dg.optim.LBFGS([w], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = ((w - 3) ** 2).sum()
        loss.backward()
        return loss

    seen = []
    opt.register_step_pre_hook(lambda o, a, k: ((o,), {"closure": closure}))  # the step is called without one
    opt.register_step_post_hook(lambda o, a, k: seen.append((a, sorted(k))))
    opt.step()
    assert seen == [((opt,), ["closure"])] and np.allclose(w.detach().numpy(), 3.0)
    opt.register_step_pre_hook(lambda o, a, k: "not a pair")
    with pytest.raises(ConfigError, match=r"LBFGS.step: the pre-hook .* must return None or a tuple of \(new_args"):
        opt.step(closure)


def test_a_subclass_whose_step_calls_the_base_runs_the_hooks_once():
    class Clipped(dg.optim.SGD):
        def step(self, closure=None):
            for g in self.param_groups:
                for p in g["params"]:
                    p.grad = dg.clamp(p.grad, -1, 1)
            return super().step(closure)

    w = dg.nn.Parameter(dg.tensor([10.0, -10.0]))
    opt, calls = Clipped([w], lr=0.1), []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    (w * w).sum().backward()
    opt.step()
    assert calls == ["pre", "post"] and w.detach().numpy().tolist() == pytest.approx([9.9, -9.9])


def test_a_tensor_lr_steps_as_its_value_does():
    results = []
    for lr in (0.05, dg.tensor(0.05, dtype=dg.float64)):  # (a float32 tensor holds 0.05 rounded to float32)
        w = dg.nn.Parameter(dg.tensor([1.0, -2.0], dtype=dg.float64))
        opt = dg.optim.Adam([w], lr=lr)
        for _ in range(3):
            opt.zero_grad()
            (w**3).sum().backward()
            opt.step()
        results.append(w.detach().numpy().copy())
    assert results[0].tobytes() == results[1].tobytes()
    with pytest.raises(ConfigError, match="invalid learning rate"):
        dg.optim.SGD([dg.nn.Parameter(dg.ones(1))], lr=dg.tensor([0.1, 0.2]))


def test_amp_is_reached_from_the_package_as_torch_amp_is():
    import subprocess
    import sys

    code = "import distgraph as dg; s = dg.amp.GradScaler(); print(type(s).__module__, s.get_scale())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["distgraph.amp", "65536.0"]
