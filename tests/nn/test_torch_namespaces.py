"""torch.nn.modules's paths and class hierarchy, torch's global module hooks, and torch.nn.parallel."""

import importlib

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.nn.modules import _SOURCES

torch = pytest.importorskip("torch")

_PATHS = [(sub, name) for sub, (_, names) in _SOURCES.items() for name in names.split()] + [("module", "Module")]

# where distgraph's hierarchy still differs from torch's (structural: see the report of the change)
_KNOWN = {
    ("ReLU6", "Hardtanh"), ("CELU", "ELU"), ("Softshrink", "Hardshrink"), ("Softmin", "Softmax"),
    ("LogSoftmax", "Softmax"), ("Fold", "Unfold"), ("FractionalMaxPool3d", "FractionalMaxPool2d"),
    *((f"Lazy{k}{d}d", f"{k}{d}d") for k in ("BatchNorm", "InstanceNorm") for d in (1, 2, 3)),
    *((f"ZeroPad{d}d", base) for d in (1, 2, 3) for base in ("_ConstantPadNd", f"ConstantPad{d}d")),
}  # fmt: skip


def _classes(root):
    return {(sub, n): getattr(importlib.import_module(f"{root}.{sub}"), n) for sub, n in _PATHS}


def test_every_path_is_torchs_and_imports():
    from distgraph.nn.modules.batchnorm import _BatchNorm  # noqa: F401
    from distgraph.nn.modules.conv import _ConvNd  # noqa: F401
    from distgraph.nn.modules.loss import _Loss  # noqa: F401

    assert nn.modules.module.Module is nn.Module and nn.modules.Linear is nn.Linear
    for sub, name in _PATHS:
        assert hasattr(importlib.import_module(f"torch.nn.modules.{sub}"), name), (sub, name)


def test_subclass_relations_match_torch():
    t, d = _classes("torch.nn.modules"), _classes("distgraph.nn.modules")
    diff = {(a[1], b[1]) for a in _PATHS for b in _PATHS if issubclass(t[a], t[b]) != issubclass(d[a], d[b])}
    assert diff == _KNOWN


@pytest.mark.parametrize(
    ("make", "base"),
    [
        (lambda m: m.BatchNorm1d(3), "batchnorm._BatchNorm"),
        (lambda m: m.BatchNorm3d(3), "batchnorm._NormBase"),
        (lambda m: m.SyncBatchNorm(3), "batchnorm._BatchNorm"),
        (lambda m: m.InstanceNorm2d(3), "batchnorm._BatchNorm"),
        (lambda m: m.InstanceNorm2d(3), "batchnorm._NormBase"),
        (lambda m: m.HingeEmbeddingLoss(), "loss._Loss"),
        (lambda m: m.CTCLoss(), "loss._Loss"),
        (lambda m: m.MSELoss(), "loss._WeightedLoss"),
        (lambda m: m.BCEWithLogitsLoss(), "loss._WeightedLoss"),
        (lambda m: m.MultiMarginLoss(), "loss._WeightedLoss"),
        (lambda m: m.MaxPool1d(2), "pooling.MaxPool2d"),
        (lambda m: m.MaxPool3d(2), "pooling._MaxPoolNd"),
        (lambda m: m.AvgPool1d(2), "pooling._AvgPoolNd"),
        (lambda m: m.AdaptiveAvgPool3d(2), "pooling._AdaptiveAvgPoolNd"),
        (lambda m: m.ConvTranspose3d(1, 1, 1), "conv._ConvTransposeNd"),
        (lambda m: m.Dropout2d(), "dropout._DropoutNd"),
        (lambda m: m.LSTM(2, 2), "rnn.RNNBase"),
    ],
)
def test_isinstance_answers_as_torch(make, base):
    sub, name = base.split(".")
    t_base = getattr(importlib.import_module(f"torch.nn.modules.{sub}"), name)
    d_base = getattr(importlib.import_module(f"distgraph.nn.modules.{sub}"), name)
    assert isinstance(make(nn), d_base) == isinstance(make(torch.nn), t_base)


def test_unified_loss_keeps_legacy_reduction():
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert nn.HingeEmbeddingLoss(size_average=False).reduction == "sum"
    assert nn.HuberLoss("sum").reduction == nn.CTCLoss(reduction="none").reduction.replace("none", "sum")
    loss = nn.BCEWithLogitsLoss(weight=dg.ones(2), pos_weight=dg.ones(2))
    assert list(loss.state_dict()) == list(
        torch.nn.BCEWithLogitsLoss(torch.ones(2), pos_weight=torch.ones(2)).state_dict()
    )


def _hook_trace(lib, mm):
    """The order in which global and module hooks run for one call and backward of a Linear."""
    calls = []
    lin = lib.nn.Linear(2, 2)
    lin.register_forward_pre_hook(lambda m, a: calls.append("pre"))
    lin.register_forward_hook(lambda m, a, o: calls.append("fwd"))
    lin.register_full_backward_pre_hook(lambda m, g: calls.append("bpre"))
    lin.register_full_backward_hook(lambda m, gi, go: calls.append("bwd"))
    handles = [
        mm.register_module_forward_pre_hook(lambda m, a: calls.append("gpre")),
        mm.register_module_forward_hook(lambda m, a, kw, o: calls.append(("gfwd", sorted(kw))), with_kwargs=True),
        mm.register_module_full_backward_pre_hook(lambda m, g: calls.append("gbpre")),
        mm.register_module_full_backward_hook(lambda m, gi, go: calls.append("gbwd")),
    ]
    try:
        x = lib.ones(1, 2, requires_grad=True)
        lin(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    lin(lib.ones(1, 2)).sum().backward()
    return calls


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_global_hooks_run_before_the_modules_own_as_torch():
    assert _hook_trace(dg, nn.modules.module) == _hook_trace(torch, torch.nn.modules.module)


def test_global_hook_replaces_output_and_always_call():
    mm = nn.modules.module
    with mm.register_module_forward_hook(lambda m, a, o: o * 0):
        assert float(nn.Linear(2, 2)(dg.ones(1, 2)).abs().sum()) == 0
    seen = []

    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    with mm.register_module_forward_hook(lambda m, a, o: seen.append(o), always_call=True):
        with pytest.raises(ValueError, match="boom"):
            Boom()(dg.ones(1))
    assert seen == [None] and not nn.modules.module.global_hook_ids


def test_nn_parallel_paths():
    from distgraph.nn.parallel import DataParallel, data_parallel

    lin = nn.Linear(2, 3)
    assert DataParallel is nn.DataParallel
    np.testing.assert_allclose(data_parallel(lin, dg.ones(4, 2)).detach().numpy(), lin(dg.ones(4, 2)).detach().numpy())
    import distgraph.distributed  # noqa: F401  (attaches DistributedDataParallel to nn.parallel)

    assert dg.nn.parallel.DistributedDataParallel is dg.distributed.DistributedDataParallel
    with pytest.raises(AttributeError):
        dg.nn.parallel.NoSuchName  # noqa: B018
