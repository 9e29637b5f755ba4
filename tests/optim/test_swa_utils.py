"""optim.swa_utils against torch (float64), step by step: AveragedModel with each averaging function,
with and without buffers, update_bn's recomputed statistics, SWALR's lr sequence, and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph import optim
from distgraph.optim import swa_utils as S

torch = pytest.importorskip("torch")
TS = torch.optim.swa_utils
rng = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy()


def _models():
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).double()
    dm = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    dm.load_state_dict({k: _np(v) for k, v in tm.state_dict().items()})
    return tm, dm


def _fns(lib, kind):
    return {
        "default": {},
        "swa_avg": dict(avg_fn=lib.get_swa_avg_fn()),
        "ema_avg": dict(avg_fn=lib.get_ema_avg_fn(0.9)),
        "swa_multi": dict(multi_avg_fn=lib.get_swa_multi_avg_fn()),
        "ema_multi": dict(multi_avg_fn=lib.get_ema_multi_avg_fn(0.8)),
    }[kind]


# not swa_multi with buffers: torch's refuses BatchNorm's integer num_batches_tracked (addcdiv)
@pytest.mark.parametrize(
    "kind, use_buffers",
    [(k, False) for k in ("default", "swa_avg", "ema_avg", "swa_multi", "ema_multi")]
    + [(k, True) for k in ("default", "swa_avg", "ema_avg", "ema_multi")],
)
def test_averaged_model_matches_torch_step_by_step(kind, use_buffers):
    tm, dm = _models()
    ta = TS.AveragedModel(tm, use_buffers=use_buffers, **_fns(TS, kind))
    da = S.AveragedModel(dm, use_buffers=use_buffers, **_fns(S, kind))
    for _ in range(4):
        x = rng.standard_normal((5, 3))
        tm(torch.tensor(x)), dm(dg.tensor(x))  # BatchNorm's running statistics move
        with torch.no_grad():
            for p in tm.parameters():
                p.add_(torch.tensor(rng.standard_normal(tuple(p.shape))))
        dm.load_state_dict({k: _np(v) for k, v in tm.state_dict().items()})
        ta.update_parameters(tm), da.update_parameters(dm)
        assert list(da.state_dict()) == list(ta.state_dict())
        for (k, d), t in zip(da.state_dict().items(), ta.state_dict().values()):
            np.testing.assert_allclose(_np(d), _np(t), rtol=1e-13, atol=1e-15, err_msg=k)
    x = rng.standard_normal((2, 3))
    da.eval(), ta.eval()
    # (atol: an output near zero after cancellation, -3.3e-4, was once 4.4e-16 apart, 1.4e-12 relative; the data
    # is the module's one stream, so which values a run draws depends on how xdist shares the module's tests out)
    np.testing.assert_allclose(_np(da(dg.tensor(x))), _np(ta(torch.tensor(x))), rtol=1e-12, atol=1e-15)
    assert int(da.n_averaged.item()) == 4


def test_averaged_model_is_a_copy_and_refuses_two_functions():
    _, dm = _models()
    da = S.AveragedModel(dm)
    assert da.module is not dm and next(da.module.parameters()) is not next(dm.parameters())
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn should be provided"):
        S.AveragedModel(dm, avg_fn=S.get_swa_avg_fn(), multi_avg_fn=S.get_swa_multi_avg_fn())
    for bad in (-0.1, 1.5):
        for get in (S.get_ema_avg_fn, S.get_ema_multi_avg_fn):
            with pytest.raises(ValueError, match=f"Invalid decay value {bad} provided"):
                get(bad)


def test_update_bn_matches_torch():
    tm, dm = _models()
    batches = [rng.standard_normal((4, 3)) for _ in range(3)]
    tm.eval(), dm.eval()
    TS.update_bn([(torch.tensor(b), 0) for b in batches], tm)
    S.update_bn([(dg.tensor(b), 0) for b in batches], dm)
    for (k, d), t in zip(dm.state_dict().items(), tm.state_dict().values()):
        np.testing.assert_allclose(_np(d), _np(t), rtol=1e-12, atol=1e-15, err_msg=k)
    assert not dm.training and dm[1].momentum == 0.1  # mode and momentum restored


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 4])
def test_swalr_lr_sequence_matches_torch(strategy, anneal_epochs):
    tp, dp = torch.nn.Parameter(torch.zeros(1)), nn.Parameter(dg.zeros(1))
    t_opt = torch.optim.SGD([{"params": [tp]}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.3}], lr=0.5)
    d_opt = optim.SGD([{"params": [dp]}, {"params": [nn.Parameter(dg.zeros(1))], "lr": 0.3}], lr=0.5)
    ts = TS.SWALR(t_opt, [0.05, 0.01], anneal_epochs=anneal_epochs, anneal_strategy=strategy)
    ds = S.SWALR(d_opt, [0.05, 0.01], anneal_epochs=anneal_epochs, anneal_strategy=strategy)
    for _ in range(7):
        assert [g["lr"] for g in d_opt.param_groups] == [g["lr"] for g in t_opt.param_groups]
        assert ds.get_last_lr() == ts.get_last_lr()
        t_opt.step(), d_opt.step(), ts.step(), ds.step()
    state = ds.state_dict()
    assert "anneal_func" not in state and state["_anneal_strategy"] == strategy
    fresh = S.SWALR(d_opt, 0.05)
    fresh.load_state_dict(state)
    assert fresh.anneal_func is (S.SWALR._cosine_anneal if strategy == "cos" else S.SWALR._linear_anneal)


def test_swalr_errors_read_as_torch():
    opt = optim.SGD([nn.Parameter(dg.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="anneal_strategy must be one of 'cos' or 'linear', instead got exp"):
        S.SWALR(opt, 0.05, anneal_strategy="exp")
    with pytest.raises(ValueError, match="anneal_epochs must be equal or greater than 0, got -1"):
        S.SWALR(opt, 0.05, anneal_epochs=-1)
    with pytest.raises(ValueError, match="swa_lr"):
        S.SWALR(opt, [0.05, 0.01])
