"""torch's implementation options (foreach, fused, capturable, differentiable), against torch.optim (float64).

Each distgraph optimizer takes the ones torch 2.13's class takes, with torch's signature and defaults, keeps
them in its param groups and state dicts under torch's keys, runs its one update whatever they say, and
refuses what torch refuses (fused with foreach, with differentiable, on an integer parameter) plus
differentiable=True, which distgraph's in-place step cannot honour."""

import inspect

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError
from distgraph.optim.functional import UPDATES, make_optimizer_spec

torch = pytest.importorskip("torch")

NAMES = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop", "ASGD"]
FUSED = ["SGD", "Adam", "AdamW", "Adagrad"]
IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def _torch_keys(name):
    return [k for k in IMPLEMENTATION if k in getattr(torch.optim, name)([torch.zeros(1)]).defaults]


def _pair(arrays, dtype="float64"):
    return (
        [dg.tensor(a.astype(dtype), requires_grad=True) for a in arrays],
        [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays],
    )


def _run(dopt, topt, dps, tps, grads):
    for g in grads:
        for p, q, gi in zip(dps, tps, g):
            p.grad, q.grad = (None, None) if gi is None else (dg.tensor(gi.copy()), torch.tensor(gi.copy()))
        dopt.step()
        topt.step()


def _run_torch(topt, tps, grads):
    for g in grads:
        for q, gi in zip(tps, g):
            q.grad = None if gi is None else torch.tensor(gi.copy())
        topt.step()


def _data(seed, n_steps, shapes=((3, 2), (4,), ())):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes], [[rng.standard_normal(s) for s in shapes] for _ in range(n_steps)]


def _same_params(dps, tps, tol=1e-12):
    for p, q in zip(dps, tps):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_signature_groups_and_defaults_are_torchs(name):
    """Same parameters (positional foreach of Adagrad, RMSprop, ASGD, ... included), same group keys in
    torch's order with torch's defaults, same `defaults`."""
    D, T = getattr(optim, name), getattr(torch.optim, name)
    sig = lambda cls: [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]  # noqa: E731
    assert sig(D) == sig(T)
    d, t = D([dg.zeros(2, requires_grad=True)]), T([torch.zeros(2, requires_grad=True)])
    strip = lambda g: {k: v for k, v in g.items() if k != "params"}  # noqa: E731
    assert list(strip(d.param_groups[0])) == list(strip(t.param_groups[0]))
    assert strip(d.param_groups[0]) == strip(t.param_groups[0])
    assert d.defaults == t.defaults


def _accepted(name):
    """Every value of every implementation option torch's class takes and both libraries can step with
    (capturable=True is distgraph's only: torch's CPU step refuses it, so torch runs capturable=False)."""
    cases = []
    for key in _torch_keys(name):
        values = {"foreach": [None, False, True], "fused": [None, False, True]}.get(key, [False, True])
        cases += [(key, v) for v in values if not (key == "differentiable" and v)]
    return cases


@pytest.mark.parametrize("name,key,value", [(n, k, v) for n in NAMES for k, v in _accepted(n)], ids=lambda x: str(x))
def test_every_accepted_value_steps_as_torch_and_is_kept_in_groups_and_state_dict(name, key, value):
    init, grads = _data(3, 5)
    dps, tps = _pair(init)
    hyper = {"lr": 0.05, "weight_decay": 0.1} if name not in ("Rprop",) else {"lr": 0.05}
    # torch's CPU step refuses capturable=True; its foreach ASGD is not its single-tensor one (test below)
    torch_value = False if key == "capturable" or (name, key, value) == ("ASGD", "foreach", True) else value
    dopt = getattr(optim, name)(dps, **hyper, **{key: value})
    topt = getattr(torch.optim, name)(tps, **hyper, **{key: torch_value})
    _run(dopt, topt, dps, tps, grads)
    _same_params(dps, tps)
    assert dopt.param_groups[0][key] is value and dopt.state_dict()["param_groups"][0][key] is value
    # the update and the distributed store see hyperparameters only
    update, groups = make_optimizer_spec(dopt)
    assert update == dopt.update_name and not set(groups[0]) & set(IMPLEMENTATION)
    UPDATES[update](dps[0].array.copy(), dps[0].array, {}, **groups[0])


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_true_is_refused_naming_the_optimizer(name):
    """torch's differentiable=True step is one autograd can go through; distgraph's writes the parameters in
    place outside autograd, so it refuses the option (in the constructor and in an added group)."""
    p = dg.zeros(2, requires_grad=True)
    with pytest.raises(ConfigError, match=f"{name}: differentiable=True is not supported"):
        getattr(optim, name)([p], differentiable=True)
    opt = getattr(optim, name)([p])
    with pytest.raises(ConfigError, match=f"{name}: differentiable=True"):
        opt.add_param_group({"params": [dg.zeros(1, requires_grad=True)], "differentiable": True})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize(
    "options,dtype,words",
    [
        (dict(fused=True, foreach=True), "float64", ["fused=True and foreach=True"]),
        (dict(fused=True, differentiable=True), "float64", ["fused=True", "differentiable=True"]),
        (dict(fused=True), "int64", ["fused=True requires floating point", "int64"]),
    ],
    ids=["foreach", "differentiable", "integer-param"],
)
def test_fused_pairings_torch_refuses_are_refused(name, options, dtype, words):
    """torch refuses fused with foreach or differentiable in its constructor and fused on a non-floating
    parameter at its first step; distgraph refuses all three when the group is made."""
    q = torch.zeros(3, dtype=getattr(torch, dtype), requires_grad=dtype == "float64")
    with pytest.raises(RuntimeError):
        topt = getattr(torch.optim, name)([q], **options)
        q.grad = torch.ones(3, dtype=q.dtype)
        topt.step()
    p = dg.zeros(3, dtype=getattr(dg, dtype), requires_grad=dtype == "float64")
    with pytest.raises(ConfigError) as err:
        getattr(optim, name)([p], **options)
    assert all(w in str(err.value) for w in [name, *words])


@pytest.mark.parametrize("name", NAMES)
def test_implementation_options_of_other_classes_and_bad_types_are_refused(name):
    p = dg.zeros(2, requires_grad=True)
    for key in set(IMPLEMENTATION) - set(_torch_keys(name)):
        with pytest.raises(TypeError):
            getattr(torch.optim, name)([torch.zeros(2)], **{key: False})
        with pytest.raises(TypeError):
            getattr(optim, name)([p], **{key: False})
    with pytest.raises(ConfigError, match=f"{name}: invalid foreach='yes' \\(must be None, True or False\\)"):
        getattr(optim, name)([p], foreach="yes")


def test_fused_sgd_with_momentum_steps_a_parameter_whose_first_gradient_comes_late():
    """torch's fused SGD kernel fails (TypeError) once some parameters have a momentum buffer and another
    has none yet; distgraph's one update gives what torch's single-tensor path gives."""
    init, grads = _data(4, 4, shapes=((3,), (2, 2)))
    grads[0][1] = None  # the second parameter's first gradient comes at step 2
    dps, tps = _pair(init)
    dopt = optim.SGD(dps, lr=0.1, momentum=0.9, fused=True)
    topt = torch.optim.SGD(tps, lr=0.1, momentum=0.9, foreach=False)
    _run(dopt, topt, dps, tps, grads)
    _same_params(dps, tps)
    _, tps_fused = _pair(init)
    fused = torch.optim.SGD(tps_fused, lr=0.1, momentum=0.9, fused=True)
    with pytest.raises(TypeError):
        _run_torch(fused, tps_fused, grads)


def test_asgd_with_foreach_runs_torchs_single_tensor_update():
    """torch's foreach ASGD computes eta from a float32 step in float32 arithmetic, its single-tensor ASGD
    (torch's CPU default) in double, then rounds it to float32: an eta one float32 ulp apart now and then
    (fuzz seeds 369, 450, 564, 628). distgraph's one update is the single-tensor one, whatever foreach says."""
    init, grads = _data(6, 4)
    dps, tps = _pair(init)
    _, tps_foreach = _pair(init)
    dopt = optim.ASGD(dps, lr=0.01, lambd=0.1, foreach=True)
    topt = torch.optim.ASGD(tps, lr=0.01, lambd=0.1, foreach=False)
    t_foreach = torch.optim.ASGD(tps_foreach, lr=0.01, lambd=0.1, foreach=True)
    apart = []
    for g in grads:
        _run(dopt, topt, dps, tps, [g])
        _run_torch(t_foreach, tps_foreach, [g])
        _same_params(dps, tps)
        assert [dopt.state[p]["eta"] for p in dps] == [topt.state[q]["eta"].item() for q in tps]
        apart.append(topt.state[tps[0]]["eta"].item() != t_foreach.state[tps_foreach[0]]["eta"].item())
    assert any(apart)


@pytest.mark.parametrize(
    "name,options", [("Adam", dict(fused=True)), ("RMSprop", dict(foreach=False, capturable=True))]
)
def test_torch_state_dict_with_implementation_options_loads_and_ours_loads_into_torch(name, options, tmp_path):
    """A torch checkpoint's groups (fused, foreach, ...) load as they are; distgraph's state dict, written in
    torch's format, loads into torch (its group keys are torch's) and both continue alike."""
    init, grads = _data(5, 6)
    dps, tps = _pair(init)
    torch_options = {k: v for k, v in options.items() if k != "capturable"}  # torch's CPU step refuses it
    topt = getattr(torch.optim, name)(tps, lr=0.01, **torch_options)
    _run_torch(topt, tps, grads[:3])
    torch.save(topt.state_dict(), tmp_path / "torch.pt")
    dps = [dg.tensor(q.detach().numpy().copy(), requires_grad=True) for q in tps]
    dopt = getattr(optim, name)(dps, lr=0.01)
    dopt.load_state_dict(dg.load(tmp_path / "torch.pt"))
    assert {k: dopt.param_groups[0][k] for k in torch_options} == torch_options
    _run(dopt, topt, dps, tps, grads[3:])
    _same_params(dps, tps)
    # and back: distgraph's state dict into a fresh torch optimizer
    saved = dopt.state_dict()  # state arrays as Tensors: the torch writer takes Tensors, not raw arrays
    saved["state"] = {
        i: {k: dg.tensor(v) if k != "step" else v for k, v in s.items()} for i, s in saved["state"].items()
    }
    dg.save(saved, tmp_path / "ours.pt", format="torch")
    ours = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert list(ours["param_groups"][0]) == list(topt.state_dict()["param_groups"][0])
    fresh = [torch.tensor(p.detach().numpy().copy(), requires_grad=True) for p in dps]
    topt2 = getattr(torch.optim, name)(fresh, lr=0.01, **torch_options)
    topt2.load_state_dict(ours)
    _run(dopt, topt2, dps, fresh, grads[:2])
    _same_params(dps, fresh)


def test_a_state_dict_asking_for_differentiable_is_refused_and_leaves_the_optimizer_as_it_was():
    p = dg.zeros(2, requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    saved = opt.state_dict()
    saved["param_groups"][0].update(differentiable=True, lr=0.5)
    with pytest.raises(ConfigError, match="Adam: differentiable=True is not supported"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["differentiable"] is False
