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
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.1, weight_decay=0.05, maximize=True)),
    ("NAdam", dict(lr=0.01, betas=(0.3, 0.9), weight_decay=0.1, decoupled_weight_decay=True)),  # lerp weight ≥ 0.5
    ("RAdam", dict(lr=0.01, weight_decay=0.05)),  # rectified from step 6 on: the steps run past it
    ("RAdam", dict(lr=0.01, betas=(0.3, 0.99), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.4, 0.9), weight_decay=0.05, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05, maximize=True)),
    ("Rprop", dict(lr=0.05)),  # signs flip: steps shrink and skip; lr is read on the first step only
    ("Rprop", dict(lr=0.01, etas=(0.3, 1.7), step_sizes=(1e-3, 0.03), maximize=True)),
    ("ASGD", dict(lr=0.05, lambd=0.1, alpha=0.5, t0=2)),  # averaging from step 4 on (mu < 1)
    ("ASGD", dict(lr=0.5, t0=4, weight_decay=0.05, maximize=True)),  # big steps: ax + (p - ax) is not p
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
    for i in range(7):
        if i == 2:  # a scheduler's change is seen without re-capture
            lr = opt.param_groups[0]["lr"] / 2
            opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = lr
        loss, ref_loss = step(x, y), _eager_step(ref, ref_opt, x, y)
        assert np.array_equal(loss.array, ref_loss.array)
        for p, q in zip(model.parameters(), ref.parameters()):
            assert np.array_equal(p.array, q.array), f"step {i}"
        _same_state(opt, ref_opt)


# the rules whose state is more than arrays: SGD's buffer made on the first step; NAdam's mu_product, ASGD's
# eta and mu (host scalars); Rprop's step sizes made from lr; RAdam's rectification switching on at step 6
STATEFUL = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.1)),
    ("RAdam", dict(lr=0.01)),
    ("ASGD", dict(lr=0.05, lambd=0.1, alpha=0.5, t0=2)),
    ("Rprop", dict(lr=0.05)),
]


@pytest.mark.parametrize("name,hyper", STATEFUL, ids=[n for n, _ in STATEFUL])
def test_eager_steps_interleave_with_compiled_ones_through_the_optimizer_state(name, hyper):
    model, ref = _model(), _model()
    opt = getattr(dg.optim, name)(model.parameters(), **hyper)
    ref_opt = getattr(dg.optim, name)(ref.parameters(), **hyper)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    assert not opt.state  # compiling makes no state: the first step (compiled or not) makes it
    for kind in ("eager", "compiled", "eager", "compiled", "compiled", "eager", "compiled"):
        step(x, y) if kind == "compiled" else _eager_step(model, opt, x, y)
        _eager_step(ref, ref_opt, x, y)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert np.array_equal(p.array, q.array)
    _same_state(opt, ref_opt)


@pytest.mark.parametrize(
    "name,hyper", [("Adam", dict(lr=0.01, amsgrad=True))] + STATEFUL[1:], ids=["Adam"] + [n for n, _ in STATEFUL[1:]]
)
def test_state_dict_after_compiled_steps_restores_training_exactly(name, hyper):
    model = _model()
    opt = getattr(dg.optim, name)(model.parameters(), **hyper)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    for _ in range(5):
        step(x, y)
    saved, params = copy.deepcopy(opt.state_dict()), [p.array.copy() for p in model.parameters()]
    assert [s["step"] for s in saved["state"].values()] == [5] * len(params)
    for _ in range(2):
        step(x, y)
    after = [p.array.copy() for p in model.parameters()]

    restored = _model()
    for p, a in zip(restored.parameters(), params):
        p.array[...] = a
    opt2 = getattr(dg.optim, name)(restored.parameters(), **hyper)
    opt2.load_state_dict(saved)
    step2 = dg.compile(restored, (x, y), loss_fn=F.cross_entropy, optimizer=opt2)
    for _ in range(2):
        step2(x, y)  # a fresh compiled step resumes from the loaded state and step count
    for p, a in zip(restored.parameters(), after):
        assert np.array_equal(p.array, a)
    _same_state(opt, opt2)


def test_rprop_reads_lr_on_its_first_step_only():
    """The step sizes start at the lr of the first step (not of the compile), then ignore lr."""
    model, ref = _model(), _model()
    opt, ref_opt = dg.optim.Rprop(model.parameters(), lr=0.01), dg.optim.Rprop(ref.parameters(), lr=0.01)
    x, y = _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    for lr in (0.03, 0.5, 0.5):
        opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = lr
        step(x, y)
        _eager_step(ref, ref_opt, x, y)
        if lr == 0.03:  # no previous gradient: every factor is 1
            assert all(np.all(s.arrays()["step_size"] == 0.03) for s in opt.state.values())
    assert max(s.arrays()["step_size"].max() for s in opt.state.values()) < 0.5
    for p, q in zip(model.parameters(), ref.parameters()):
        assert np.array_equal(p.array, q.array)
    _same_state(opt, ref_opt)


@pytest.mark.parametrize("name,hyper", STATEFUL[1:4:2], ids=["NAdam", "ASGD"])
def test_scalar_state_follows_the_default_dtype_in_compiled_steps(name, hyper):
    """torch keeps NAdam's mu_product and ASGD's eta and mu in its default dtype: float64 keeps them unrounded."""
    before = dg.get_default_dtype()
    dg.set_default_dtype(dg.float64)
    try:
        model, ref = _model(), _model()
        opt = getattr(dg.optim, name)(model.parameters(), **hyper)
        ref_opt = getattr(dg.optim, name)(ref.parameters(), **hyper)
        x, y = _batch()
        step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
        for _ in range(6):
            step(x, y)
            _eager_step(ref, ref_opt, x, y)
    finally:
        dg.set_default_dtype(before)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert np.array_equal(p.array, q.array)
    _same_state(opt, ref_opt)
    key = "mu_product" if name == "NAdam" else "eta"
    value = next(iter(opt.state.values())).arrays()[key]
    assert value != float(np.float32(value))  # not rounded to float32


def test_unsupported_optimizer_and_changed_structure_are_clear_errors():
    model = _model()
    x, y = _batch()

    class Lion(dg.optim.SGD):  # a user's optimizer: its rule has no traced twin
        update_name = "lion"

    supported = "adadelta, adagrad, adam, adamax, asgd, nadam, radam, rmsprop, rprop, sgd"
    with pytest.raises(ConfigError, match=f"supports {supported}, got Lion; compile without optimizer="):
        dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=Lion(model.parameters(), lr=0.1))
    for opt, change, match in (
        (dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), ("momentum", 0.0), r"\(momentum, nesterov"),
        (dg.optim.Rprop(model.parameters()), ("step_sizes", (1e-6, 1.0)), r"\(maximize, step_sizes: "),
        (dg.optim.ASGD(model.parameters()), ("weight_decay", 0.1), r"\(maximize, weight decay on or off: "),
    ):
        step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
        step(x, y)
        opt.param_groups[0][change[0]] = change[1]  # the graph was built without this setting: it cannot run it
        before = [p.array.copy() for p in model.parameters()]
        with pytest.raises(ConfigError, match="param group 0 changed a setting the captured step is built on " + match):
            step(x, y)
        assert all(np.array_equal(p.array, b) for p, b in zip(model.parameters(), before))  # nothing half-done


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
        ("NAdam", dict(lr=0.01, momentum_decay=0.1, weight_decay=0.05, decoupled_weight_decay=True)),
        ("RAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
        ("RAdam", dict(lr=0.01, weight_decay=0.05)),
        ("Adamax", dict(lr=0.01, weight_decay=0.05)),
        ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.05)),
        ("Rprop", dict(lr=0.05, etas=(0.3, 1.7), step_sizes=(1e-3, 0.1))),
        ("ASGD", dict(lr=0.05, lambd=0.1, alpha=0.5, t0=2, weight_decay=0.05)),
        # torch's implementation options: kept in the groups, never reaching the captured rule
        ("SGD", dict(lr=0.1, momentum=0.9, fused=True)),
        ("Adam", dict(lr=0.01, amsgrad=True, fused=True, capturable=False, differentiable=False)),
        ("AdamW", dict(lr=0.01, foreach=True)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.01, fused=True)),
        ("NAdam", dict(lr=0.01, foreach=False, capturable=False)),
        ("Rprop", dict(lr=0.05, foreach=True, differentiable=False)),
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
    for _ in range(7):  # past RAdam's rectification (step 6) and ASGD's averaging (step 4)
        step(x, y)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
        topt.step()
    for p, q in zip(model.parameters(), tmodel.parameters()):
        assert np.max(np.abs(p.array - q.detach().numpy())) <= 1e-12


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
        ("RAdam", dict(lr=0.05, eps=0.0)),  # the unrectified steps must not divide by sqrt(0) + 0
        ("NAdam", dict(lr=0.05)),
        ("Adamax", dict(lr=0.05)),
        ("ASGD", dict(lr=0.05, t0=0)),
    ],
)
def test_capturing_an_update_warns_of_nothing(name, hyper):
    """The captured update ran on zero placeholders for its scalars (bias corrections): 0 / 0 in the
    trace warned "invalid value encountered in divide" on every compile."""
    import warnings

    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = dg.randn(8, 6), dg.tensor(np.arange(8) % 3)
    x.array[:, 0] = 0  # the weights it meets get no gradient: zero second moments
    opt = getattr(dg.optim, name)(model.parameters(), **hyper)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
        for _ in range(3):
            assert np.isfinite(step(x, y).item())
