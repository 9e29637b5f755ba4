"""Torch code ported as written, found by an audit of nn.init, nn.utils, nn.functional and amp: a dg.Generator
for the initializers, random fills refused on integer tensors, torch.amp.GradScaler's signature and accessors,
the deprecated torch.cuda.amp spellings, old weight_norm checkpoints into the new parametrization, 5-D
interpolate(mode="area"), EmbeddingBag.from_pretrained."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.nn import init

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "fill",
    [init.uniform_, init.normal_, init.trunc_normal_, init.xavier_uniform_, init.xavier_normal_,
     init.kaiming_uniform_, init.kaiming_normal_, init.orthogonal_, lambda t, **kw: init.sparse_(t, 0.5, **kw)],
)  # fmt: skip
def test_initializers_draw_from_a_dg_generator(fill):
    first = fill(dg.empty(4, 6), generator=dg.Generator().manual_seed(3))
    again = fill(dg.empty(4, 6), generator=dg.Generator().manual_seed(3))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), fill(dg.empty(4, 6), generator=dg.Generator().manual_seed(4)).numpy())


def test_random_fills_refuse_integer_tensors_as_torch_and_constant_fills_take_them():
    for fill in (init.normal_, init.uniform_, init.kaiming_uniform_):
        with pytest.raises(NotImplementedError, match="not implemented for distgraph.int64"):
            fill(dg.zeros(3, 4, dtype=dg.int64))
        with pytest.raises(NotImplementedError):
            getattr(torch.nn.init, fill.__name__)(torch.zeros(3, 4, dtype=torch.int64))
    assert init.constant_(dg.zeros(3, dtype=dg.int64), 2).tolist() == [2, 2, 2]


def test_grad_scaler_takes_torch_amps_signature_and_accessors():
    assert dg.amp.GradScaler("cpu").get_scale() == torch.amp.GradScaler("cpu").get_scale() == 65536.0
    scaler = dg.amp.GradScaler("cuda", init_scale=8.0, growth_interval=3)
    assert scaler.get_scale() == 8.0 and scaler.device == "cuda" and scaler.is_enabled()  # enabled without a GPU
    scaler.set_growth_factor(4.0), scaler.set_backoff_factor(0.25), scaler.set_growth_interval(7)
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (4.0, 0.25, 7)
    assert dg.amp.GradScaler(device="cpu", enabled=False).state_dict() == {}  # torch's too
    with pytest.raises(dg.errors.ConfigError, match="the first argument is the device"):
        dg.amp.GradScaler(1024.0)


def test_torch_cuda_amps_deprecated_spellings_still_run_with_torchs_warning():
    from distgraph.cuda.amp import GradScaler, autocast

    with pytest.warns(FutureWarning, match=r"torch.amp.GradScaler\('cuda', args...\)"):
        assert GradScaler(1024.0).get_scale() == 1024.0
    with pytest.warns(FutureWarning, match=r"torch.amp.autocast\('cuda', args...\)"), autocast(enabled=False):
        pass
    assert dg.cuda.amp.GradScaler is GradScaler


def test_an_old_weight_norm_checkpoint_loads_into_the_parametrization():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's old weight_norm is deprecated
        old = torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Linear(4, 3).double()))
    new = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 3).double()))
    result = new.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in old.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(new(dg.tensor(x)).detach().numpy(), old(torch.tensor(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", [(2, 2, 2), (3, 4, 5)])
def test_interpolate_area_on_5d_input_is_torchs(size):
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5, 6))
    got = nn.functional.interpolate(dg.tensor(x), size=size, mode="area").numpy()
    want = torch.nn.functional.interpolate(torch.tensor(x), size=size, mode="area").numpy()
    np.testing.assert_allclose(got, want, atol=1e-15)


def test_embedding_bag_from_pretrained():
    w = np.random.default_rng(0).standard_normal((5, 3))
    bags = [[0, 2], [1, 4]]
    got = nn.EmbeddingBag.from_pretrained(dg.tensor(w), mode="sum")
    want = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(w), mode="sum")
    np.testing.assert_allclose(got(dg.tensor(bags)).numpy(), want(torch.tensor(bags)).numpy(), atol=1e-15)
    assert not got.weight.requires_grad
    assert nn.EmbeddingBag.from_pretrained(dg.tensor(w), freeze=False).weight.requires_grad
