"""nn.DataParallel (torch's behaviour without a GPU or with one device; several GPUs in one process refused) and
nn.NLLLoss2d: against torch 2.13 in float64, forward and gradients."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import DeviceError
from distgraph.nn import data_parallel

torch = pytest.importorskip("torch")
rng = np.random.default_rng(4)


def _pair():
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dg.float64)
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.copy_(torch.tensor(p.detach().numpy()))
    return ours, theirs


def test_data_parallel_without_a_gpu_calls_the_module_as_torch():
    ours, theirs = _pair()
    dp, tdp = nn.DataParallel(ours), torch.nn.DataParallel(theirs)
    assert dp.module is ours and dp.device_ids == tdp.device_ids == []
    assert list(dp.state_dict()) == list(tdp.state_dict()) and list(dp.state_dict())[0].startswith("module.")
    x = rng.standard_normal((5, 3))
    out, t_out = dp(dg.tensor(x)), tdp(torch.tensor(x))
    np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    t_out.sum().backward()
    for p, q in zip(dp.parameters(), tdp.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)


def test_data_parallel_passes_keyword_arguments_through():
    class Scale(nn.Module):
        def forward(self, x, factor=1.0):
            return x * factor

    assert nn.DataParallel(Scale())(dg.ones(2), factor=3.0).tolist() == [3.0, 3.0]


def test_data_parallel_refuses_several_gpus_in_one_process(monkeypatch):
    monkeypatch.setattr(data_parallel, "_gpu_count", lambda: 2)
    with pytest.raises(DeviceError, match="DataParallel over 2 GPUs in one process is not offered"):
        nn.DataParallel(nn.Linear(2, 2))
    with pytest.raises(DeviceError, match="no available devices were found"):
        nn.DataParallel(nn.Linear(2, 2), device_ids=[])


def test_nll_loss_2d_is_nll_loss_over_images_as_torch():
    scores, target = rng.standard_normal((2, 3, 4, 5)), rng.integers(0, 3, (2, 4, 5))
    weight = np.abs(rng.standard_normal(3))
    x, tx = dg.tensor(scores, requires_grad=True), torch.tensor(scores, requires_grad=True)
    with pytest.warns(FutureWarning, match="`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead"):
        loss = nn.NLLLoss2d(dg.tensor(weight), ignore_index=1)(x.log_softmax(1), dg.tensor(target))
    with pytest.warns(FutureWarning, match="`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead"):
        t_loss = torch.nn.NLLLoss2d(torch.tensor(weight), ignore_index=1)(tx.log_softmax(1), torch.tensor(target))
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)
    loss.backward()
    t_loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    with pytest.warns(FutureWarning):
        assert isinstance(nn.NLLLoss2d(), nn.NLLLoss)
