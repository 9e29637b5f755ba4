"""dg.compile(..., optimizer=): the optimizer's step traced into the training step's graph, state included.

The compiled step must do what `zero_grad(); loss.backward(); opt.step()` does, bit for bit, for every
supported rule and option, keep `optimizer.state` as the one truth (eager steps, state_dict and
schedulers interleave with compiled calls), and match PyTorch's optimizers."""

import copy

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import ConfigError
from tests.graph.helpers import randn

CONFIGS = [
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    ("SGD", dict(lr=0.1, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.9), maximize=True)),  # lerp weight ≥ 0.5: torch's other branch
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, maximize=True)),  # lerp weight ≥ 0.5
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
]


def _model(dtype=np.float64):
    dtype = {np.float64: dg.float64, np.float32: dg.float32}[dtype]
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    for p in model.parameters():
        p.data = p.detach().to(dtype)
    return model


def _batch(dtype=np.float64):
    x = randn(8, 5)
    return dg.tensor(x.array.astype(dtype)), dg.tensor(np.arange(8) % 3)


def _eager_step(model, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def _same_state(a, b):
    for p, q in zip(a.state, b.state):
        sa, sb = a.state[p], b.state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])), k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,hyper", CONFIGS, ids=[f"{n}-{'-'.join(h)}" for n, h in CONFIGS])
def test_compiled_step_gives_the_eager_optimizers_bits(name, hyper, dtype):
    model, ref = _model(dtype), _model(dtype)
    opt, ref_opt = (
        getattr(dg.optim, name)(model.parameters(), **hyper),
        getattr(dg.optim, name)(ref.parameters(), **hyper),
    )
    x, y = _batch(dtype)
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    n_params = len(list(model.parameters()))
    assert len(step.graph.outputs) == 1 + n_params + step.update.n_states  # loss, parameters, state
    for i in range(4):
        if i == 2:  # a scheduler's change is seen without re-capture
            opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = hyper["lr"] / 2
        loss, ref_loss = step(x, y), _eager_step(ref, ref_opt, x, y)
        assert np.array_equal(loss.array, ref_loss.array)
        for p, q in zip(model.parameters(), ref.parameters()):
            assert np.array_equal(p.array, q.array), f"step {i}"
        _same_state(opt, ref_opt)


def test_eager_steps_interleave_with_compiled_ones_through_the_optimizer_state():
    model, ref = _model(), _model()
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.5)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, dampening=0.5)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    assert not opt.state  # compiling makes no state: the first step (compiled or not) copies the gradient
    for kind in ("eager", "compiled", "eager", "compiled", "compiled"):
        step(x, y) if kind == "compiled" else _eager_step(model, opt, x, y)
        _eager_step(ref, ref_opt, x, y)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert np.array_equal(p.array, q.array)
    _same_state(opt, ref_opt)


def test_state_dict_after_compiled_steps_restores_training_exactly():
    model = _model()
    opt = dg.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    for _ in range(3):
        step(x, y)
    saved, params = copy.deepcopy(opt.state_dict()), [p.array.copy() for p in model.parameters()]
    assert [s["step"] for s in saved["state"].values()] == [3] * len(params)
    step(x, y)
    after = [p.array.copy() for p in model.parameters()]

    restored = _model()
    for p, a in zip(restored.parameters(), params):
        p.array[...] = a
    opt2 = dg.optim.Adam(restored.parameters(), lr=0.01, amsgrad=True)
    opt2.load_state_dict(saved)
    step2 = dg.compile(restored, (x, y), loss_fn=F.cross_entropy, optimizer=opt2)
    step2(x, y)  # a fresh compiled step resumes from the loaded moments and step count
    for p, a in zip(restored.parameters(), after):
        assert np.array_equal(p.array, a)


def test_unsupported_optimizer_and_changed_structure_are_clear_errors():
    model = _model()
    x, y = _batch()

    class Lion(dg.optim.SGD):  # a user's optimizer: its rule has no traced twin
        update_name = "lion"

    with pytest.raises(ConfigError, match="supports adagrad, adam, adamw, rmsprop, sgd, got Lion"):
        dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=Lion(model.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="got NAdam; compile without optimizer="):  # eager-only, for now
        dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=dg.optim.NAdam(model.parameters()))
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    step(x, y)
    opt.param_groups[0]["momentum"] = 0.0  # the graph has a momentum buffer: it cannot run this rule
    before = [p.array.copy() for p in model.parameters()]
    with pytest.raises(ConfigError, match="param group 0 changed a setting"):
        step(x, y)
    assert all(np.array_equal(p.array, b) for p, b in zip(model.parameters(), before))  # nothing half-done


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ],
)
def test_compiled_step_matches_torch(name, hyper):
    torch = pytest.importorskip("torch")
    model = _model()
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    with torch.no_grad():
        for p, q in zip(model.parameters(), tmodel.parameters()):
            q.copy_(torch.from_numpy(p.array.copy()))
    opt = getattr(dg.optim, name)(model.parameters(), **hyper)
    topt = getattr(torch.optim, name)(tmodel.parameters(), **hyper)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    tx, ty = torch.from_numpy(x.array), torch.from_numpy(y.array)
    for _ in range(3):
        step(x, y)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
        topt.step()
    for p, q in zip(model.parameters(), tmodel.parameters()):
        assert np.max(np.abs(p.array - q.detach().numpy())) <= 1e-12


def test_capturing_an_adam_step_warns_of_nothing():
    """The captured update ran on zero placeholders for its scalars (bias corrections): 0 / 0 in the
    trace warned "invalid value encountered in divide" on every compile."""
    import warnings

    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = dg.randn(8, 6), dg.tensor(np.arange(8) % 3)
    opt = dg.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.1, amsgrad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
        assert np.isfinite(step(x, y).item())
