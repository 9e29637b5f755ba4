"""`model = dg.compile(model)` as torch.compile is written: no example inputs (captured at the first call),
and a module back (OptimizedModule) that a script goes on using as its model."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn, optim
from distgraph.graph.compile import CompileWarning


def _model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def test_without_example_inputs_the_first_call_is_captured_quietly_and_runs_the_graph():
    model = _model().eval()
    compiled = dg.compile(model)
    assert compiled.graph is None  # nothing captured before a call
    x = dg.randn(5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        with dg.no_grad():
            out = compiled(x)
            again = compiled(x * 2)
    assert compiled.graph is not None and len(compiled.variants) == 1
    with dg.no_grad():
        np.testing.assert_array_equal(out.numpy(), model(x).numpy())
        np.testing.assert_array_equal(again.numpy(), model(x * 2).numpy())


def test_the_compiled_module_is_the_model_a_torch_script_goes_on_with():
    model = _model()
    compiled = dg.compile(model)
    assert isinstance(compiled, nn.Module) and compiled._orig_mod is model
    assert [id(p) for p in compiled.parameters()] == [id(p) for p in model.parameters()]
    assert list(compiled.state_dict()) == [f"_orig_mod.{k}" for k in model.state_dict()]  # torch's prefix
    compiled.eval()
    assert not model.training and not model[2].training
    compiled.train()
    assert model.training
    model.tag = "mine"
    assert compiled.tag == "mine"  # other attributes: the original module's, as torch's OptimizedModule


def test_a_state_dict_saved_from_a_compiled_torch_model_loads_into_a_compiled_one():
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    state = torch.compile(tmodel).state_dict()
    assert all(k.startswith("_orig_mod.") for k in state)
    compiled = dg.compile(_model())
    compiled.load_state_dict({k: dg.tensor(v.numpy()) for k, v in state.items()})
    np.testing.assert_array_equal(compiled._orig_mod[3].weight.detach().numpy(), tmodel[3].weight.detach().numpy())


def test_training_through_the_compiled_module_matches_the_eager_model():
    eager, model = _model().eval(), _model().eval()  # (dropout off: the same numbers both ways)
    compiled = dg.compile(model)
    opts = [optim.SGD(m.parameters(), lr=0.1) for m in (eager, compiled)]
    x, y = dg.randn(6, 4), dg.tensor([0, 1, 2, 0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileWarning)  # (grad mode on: it runs eagerly, and says so once)
        for _ in range(3):
            for m, opt in zip((eager, compiled), opts):
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                opt.step()
    for a, b in zip(eager.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_a_function_and_a_training_step_still_come_back_as_compiled_functions():
    model = _model()
    step = dg.compile(model, (dg.randn(2, 4), dg.tensor([0, 1])), loss_fn=F.cross_entropy)
    assert not isinstance(step, nn.Module)
    assert not isinstance(dg.compile(lambda a: a * 2), nn.Module)


def test_a_compiled_module_deep_copies_and_pickles_as_torchs_compiled_again_where_it_lands():
    import copy
    import pickle

    model = _model().eval()
    compiled = dg.compile(model)
    x = dg.randn(3, 4)
    with dg.no_grad():
        want = compiled(x).numpy()
        for other in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
            assert isinstance(other, type(compiled)) and other._orig_mod is not model and not other.training
            np.testing.assert_array_equal(other(x).numpy(), want)
            assert other.graph is not None  # (compiled, captured at its first call)
    averaged = optim.swa_utils.AveragedModel(compiled)  # (deep-copies the model it averages)
    assert isinstance(averaged.module, type(compiled))


def test_the_compiled_modules_mode_is_the_originals_as_torchs():
    model = _model().eval()
    compiled = dg.compile(model)
    assert not compiled.training
    compiled.train()
    assert model.training and compiled.training
    model.eval()
    assert not compiled.training
