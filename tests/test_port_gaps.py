"""Small gaps met porting torch scripts: torch.accelerator, gradcheck's GradcheckError, torch.cpu.amp's
spellings, the bfloat16 message, lr schedulers' state_dict keys, the data pipeline's exception types, shape
and dtype errors caught as RuntimeError."""

import math
import warnings

import pytest

import distgraph as dg
from distgraph.data import TensorDataset, WeightedRandomSampler
from distgraph.errors import DTypeError, ShapeError

torch = pytest.importorskip("torch")


def test_accelerator_answers_as_torch_without_one():
    if dg.cuda.is_available():
        assert dg.accelerator.current_accelerator() == dg.device("cuda")
        return
    assert dg.accelerator.is_available() is torch.accelerator.is_available() is False
    assert dg.accelerator.current_accelerator() is torch.accelerator.current_accelerator() is None
    assert dg.accelerator.device_count() == torch.accelerator.device_count() == 0
    for lib in (torch, dg):
        with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available"):
            lib.accelerator.current_device_index()


def test_gradcheck_error_is_torchs():
    from torch.autograd.gradcheck import GradcheckError as TorchError

    from distgraph.autograd.gradcheck import GradcheckError
    from distgraph.errors import AutogradError

    def wrong(x):  # a Function whose backward is off by a factor of 2
        class Twice(dg.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g

        return Twice.apply(x)

    assert issubclass(TorchError, RuntimeError) and issubclass(GradcheckError, RuntimeError | AutogradError)
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        dg.autograd.gradcheck(wrong, (dg.ones(2, dtype=dg.float64, requires_grad=True),))


def test_cpu_amp_spellings_warn_as_torch():
    for lib in (torch, dg):
        with pytest.warns(FutureWarning, match=r"torch.cpu.amp.autocast\(args...\)` is deprecated"):
            ctx = lib.cpu.amp.autocast()
        with ctx:
            assert lib.is_autocast_enabled("cpu")
        with pytest.warns(FutureWarning, match=r"torch.cpu.amp.GradScaler\(args...\)` is deprecated"):
            lib.cpu.amp.GradScaler()
    import distgraph.cpu.amp

    assert distgraph.cpu.amp.autocast is dg.cpu.amp.autocast
    with pytest.warns(DeprecationWarning, match="get_autocast_dtype"):
        assert dg.get_autocast_cpu_dtype() == dg.get_autocast_dtype("cpu") == dg.float16


def test_bfloat16_says_what_to_use():
    assert hasattr(torch, "bfloat16") and not hasattr(dg, "bfloat16")
    with pytest.raises(AttributeError, match="distgraph has no bfloat16; use float16"):
        dg.bfloat16  # noqa: B018


def _sgd(lib):
    return lib.optim.SGD([lib.nn.Parameter(lib.zeros(2))], lr=0.1, momentum=0.9)


_SCHEDULERS = {
    "LambdaLR": {"lr_lambda": lambda e: 0.9},
    "MultiplicativeLR": {"lr_lambda": lambda e: 0.9},
    "StepLR": {"step_size": 2},
    "MultiStepLR": {"milestones": [1, 2]},
    "ConstantLR": {},
    "LinearLR": {},
    "ExponentialLR": {"gamma": 0.9},
    "PolynomialLR": {},
    "CosineAnnealingLR": {"T_max": 3},
    "CosineAnnealingWarmRestarts": {"T_0": 2},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 10},
    "OneCycleLR3": {"max_lr": 0.1, "total_steps": 10, "three_phase": True, "anneal_strategy": "linear"},
    "ReduceLROnPlateau": {"mode": "max"},
}


@pytest.mark.parametrize("name", list(_SCHEDULERS))
def test_scheduler_state_dict_keys_and_values_as_torch(name):
    kw = _SCHEDULERS[name]
    cls = name.rstrip("3")
    t = getattr(torch.optim.lr_scheduler, cls)(_sgd(torch), **kw).state_dict()
    d = getattr(dg.optim.lr_scheduler, cls)(_sgd(dg), **kw).state_dict()
    assert set(t) == set(d)
    for key in ("_schedule_phases", "_anneal_func_type", "mode_worse"):
        if key in t:
            assert d[key] == t[key]


def _stepped(lib, sched_kw, steps):
    opt = _sgd(lib)
    sched = lib.optim.lr_scheduler.OneCycleLR(opt, **sched_kw)
    for _ in range(steps):
        opt.step()
        sched.step()
    return sched


def test_one_cycle_loads_torchs_and_old_distgraph_state_dicts():
    kw = {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "linear"}
    expected = _stepped(torch, kw, 5).get_last_lr()
    assert _stepped(dg, kw, 5).get_last_lr() == pytest.approx(expected)
    old = dict(_stepped(dg, kw, 4).state_dict())  # as distgraph saved it before it took torch's keys
    old["_phases"] = [tuple(p.values()) for p in old.pop("_schedule_phases")]
    old["anneal_strategy"] = old.pop("_anneal_func_type")
    for sd in (old, _stepped(torch, kw, 4).state_dict()):
        sched = _stepped(dg, {"max_lr": 0.1, "total_steps": 10}, 0)  # cos: the loaded state says linear
        sched.load_state_dict(sd)
        sched.optimizer.step()
        sched.step()
        assert sched._anneal_func_type == "linear" and "_phases" not in sched.state_dict()
        assert sched.get_last_lr() == pytest.approx(expected)


def test_plateau_loads_a_state_dict_without_mode_worse():
    sched = dg.optim.lr_scheduler.ReduceLROnPlateau(_sgd(dg))
    old = {k: v for k, v in sched.state_dict().items() if k != "mode_worse"}
    sched.load_state_dict(old)
    assert sched.mode_worse == math.inf


def test_weighted_sampler_too_many_without_replacement_is_a_runtime_error():
    with pytest.raises(RuntimeError):
        list(torch.utils.data.WeightedRandomSampler([1.0, 2.0], 5, replacement=False))
    with pytest.raises(RuntimeError, match="cannot draw num_samples=5 without replacement"):
        WeightedRandomSampler([1.0, 2.0], 5, replacement=False)
    with pytest.raises(ValueError):  # still distgraph's ConfigError
        WeightedRandomSampler([1.0, 2.0], 5, replacement=False)


def test_tensor_dataset_size_mismatch_is_an_assertion_error():
    for lib, ds in ((torch, torch.utils.data.TensorDataset), (dg, TensorDataset)):
        with pytest.raises(AssertionError, match="(?i)size mismatch between tensors"):
            ds(lib.zeros(2), lib.zeros(3))
    with pytest.raises(ValueError):  # still distgraph's ShapeError
        TensorDataset(dg.zeros(2), dg.zeros(3))


def test_no_warning_from_plain_accelerator_queries():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dg.accelerator.is_available()
        dg.accelerator.device_count()


def test_shape_and_dtype_errors_are_caught_as_torch_runtime_errors():
    """torch raises RuntimeError for a view of incompatible strides, a cat of mismatched sizes, float indices to an
    embedding: `except RuntimeError` fallbacks in torch code must catch distgraph's errors too (still ValueError /
    TypeError for code that catches those)."""
    with pytest.raises(RuntimeError, match="view"):
        dg.ones(2, 3).t().view(6)
    with pytest.raises(RuntimeError):
        dg.cat([dg.ones(2, 3), dg.ones(2, 4)])
    with pytest.raises(RuntimeError, match="integer"):
        dg.nn.functional.embedding(dg.ones(2), dg.ones(3, 2))
    assert issubclass(ShapeError, ValueError) and issubclass(DTypeError, TypeError)
