"""RNN, LSTM, GRU and their cells against torch with copied weights: outputs, final states and every
parameter gradient, float64, for stacked, batch_first and bidirectional variants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distgraph as dg
import distgraph.nn as nn

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def copy(dm, tm):
    dm.double(), tm.double()
    assert [k for k, _ in dm.named_parameters()] == [k for k, _ in tm.named_parameters()]
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})


def flat(out):
    if out is None:  # an output a module may leave out (MultiheadAttention's weights)
        return []
    if isinstance(out, tuple):
        return [t for o in out for t in flat(o)]
    return [out]


CASES = [
    ("RNN", dict()),
    ("RNN", dict(nonlinearity="relu", num_layers=2)),
    ("LSTM", dict()),
    ("LSTM", dict(num_layers=2, batch_first=True, bidirectional=True)),
    ("GRU", dict()),
    ("GRU", dict(num_layers=2, bidirectional=True, bias=False)),
]


def assert_outputs_and_gradients_match(
    dm, tm, args_d, args_t, leaves_d=(), leaves_t=(), draw=rng, kwargs_d=None, kwargs_t=None
):
    """dm(*args_d, **kwargs_d) equals tm(*args_t, **kwargs_t) (shapes and values), then the gradients of a
    random projection of the outputs (drawn from `draw`) w.r.t. every parameter and every leaf (input,
    h0, c0, a float mask) agree."""
    outs_d, outs_t = flat(dm(*args_d, **(kwargs_d or {}))), flat(tm(*args_t, **(kwargs_t or {})))
    for a, b in zip(outs_d, outs_t, strict=True):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12)
    seeds = [draw.standard_normal(tuple(b.shape)) for b in outs_t]
    sum(((a * dg.tensor(s)).sum() for a, s in zip(outs_d, seeds)), dg.tensor(0.0)).backward()
    sum((b * torch.tensor(s)).sum() for b, s in zip(outs_t, seeds)).backward()
    for (k, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)
    for i, (a, b) in enumerate(zip(leaves_d, leaves_t)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=f"leaf {i}")


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k}" for n, k in CASES])
@pytest.mark.parametrize("with_h0", [False, True])
def test_recurrent_layer_matches_torch(name, kw, with_h0):
    dm, tm = getattr(nn, name)(4, 5, **kw), getattr(torch.nn, name)(4, 5, **kw)
    copy(dm, tm)
    x = rng.standard_normal((3, 6, 4))
    leaves_d, leaves_t = [dg.tensor(x, requires_grad=True)], [torch.tensor(x, requires_grad=True)]
    if with_h0:
        layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
        h0 = rng.standard_normal((layers, 3 if kw.get("batch_first") else 6, 5))
        states = [h0, rng.standard_normal(h0.shape)] if name == "LSTM" else [h0]
        leaves_d += [dg.tensor(s, requires_grad=True) for s in states]
        leaves_t += [torch.tensor(s, requires_grad=True) for s in states]
    args_d, args_t = leaves_d[:1], leaves_t[:1]
    if with_h0:
        args_d.append(tuple(leaves_d[1:]) if name == "LSTM" else leaves_d[1])
        args_t.append(tuple(leaves_t[1:]) if name == "LSTM" else leaves_t[1])
    assert_outputs_and_gradients_match(dm, tm, args_d, args_t, leaves_d, leaves_t)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(name):
    dm, tm = getattr(nn, name)(4, 3), getattr(torch.nn, name)(4, 3)
    copy(dm, tm)
    x = rng.standard_normal((2, 4))
    outs_d, outs_t = flat(dm(dg.tensor(x))), flat(tm(torch.tensor(x)))
    for a, b in zip(outs_d, outs_t):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10)
    outs_d[0].sum().backward()
    outs_t[0].sum().backward()
    np.testing.assert_allclose(dm.weight_hh.grad.numpy(), tm.weight_hh.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_unbatched_input_and_bad_input_size():
    m = nn.GRU(4, 5)
    out, h = m(dg.randn(6, 4))
    assert tuple(out.shape) == (6, 5) and tuple(h.shape) == (1, 5)
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 4, got 3"):
        m(dg.randn(6, 2, 3))


def test_dropout_between_layers_only_in_training():
    dm, tm = nn.LSTM(4, 5, num_layers=2, dropout=0.5), torch.nn.LSTM(4, 5, num_layers=2, dropout=0.5)
    copy(dm, tm)
    x = rng.standard_normal((7, 3, 4))
    dm.eval(), tm.eval()
    out_eval = dm(dg.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(out_eval, tm(torch.tensor(x))[0].detach().numpy(), rtol=1e-9, atol=1e-12)
    dm.train()
    out_a, out_b = (dm(dg.tensor(x))[0].detach().numpy() for _ in range(2))
    assert not np.allclose(out_a, out_eval) and not np.allclose(out_a, out_b)  # fresh masks each call
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        one_layer = nn.GRU(4, 5, dropout=0.5).double()  # dropout after the last layer: none, as torch
    one_layer.train()
    with dg.no_grad():
        np.testing.assert_array_equal(one_layer(dg.tensor(x))[0].numpy(), one_layer(dg.tensor(x))[0].numpy())


def test_unbatched_lstm_with_initial_state_matches_torch():
    dm, tm = nn.LSTM(4, 5, bidirectional=True), torch.nn.LSTM(4, 5, bidirectional=True)
    copy(dm, tm)
    x, h0, c0 = rng.standard_normal((6, 4)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    out_d, (h_d, c_d) = dm(dg.tensor(x), (dg.tensor(h0), dg.tensor(c0)))
    out_t, (h_t, c_t) = tm(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    for a, b in [(out_d, out_t), (h_d, h_t), (c_d, c_t)]:
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gradient_penalty_second_derivative_matches_torch(name):
    dm, tm = getattr(nn, name)(3, 4, bidirectional=True), getattr(torch.nn, name)(3, 4, bidirectional=True)
    copy(dm, tm)
    x = rng.standard_normal((5, 2, 3))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (gd,) = dg.autograd.grad([dm(xd)[0].tanh().sum()], [xd], create_graph=True)
    (gt,) = torch.autograd.grad([tm(xt)[0].tanh().sum()], [xt], create_graph=True)
    (gd * gd).sum().backward()
    (gt * gt).sum().backward()
    for (k, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("LSTM", dict(num_layers=2, batch_first=True, bidirectional=True, dropout=0.1)),
        ("GRU", dict(bias=False)),
        ("RNN", dict(nonlinearity="relu")),
        ("LSTMCell", dict()),
        ("GRUCell", dict(bias=False)),
        ("RNNCell", dict(nonlinearity="relu")),
    ],
)
def test_repr_matches_torch(name, kw):
    assert repr(getattr(nn, name)(4, 5, **kw)) == repr(getattr(torch.nn, name)(4, 5, **kw))


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["RNN", "LSTM", "GRU"]),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    steps=st.integers(1, 5),
    batch=st.integers(0, 3),  # 0: unbatched input
    seed=st.integers(0, 2**31 - 1),
)
def test_random_configurations_match_torch(name, layers, bidirectional, batch_first, bias, steps, batch, seed):
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    dm, tm = getattr(nn, name)(3, 4, **kw), getattr(torch.nn, name)(3, 4, **kw)
    copy(dm, tm)
    r = np.random.default_rng(seed)
    x = r.standard_normal((steps, 3) if batch == 0 else ((batch, steps, 3) if batch_first else (steps, batch, 3)))
    assert_outputs_and_gradients_match(dm, tm, [dg.tensor(x)], [torch.tensor(x)], draw=r)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_default_init_is_uniform_within_one_over_sqrt_hidden(name):
    m = getattr(nn, name)(10, 16)
    for k, p in m.named_parameters():
        v = p.detach().numpy()
        assert np.abs(v).max() <= 0.25 and v.std() > 0.1, k  # U(-1/4, 1/4): std 0.144


@pytest.mark.parametrize("name", ["RNN", "GRU"])
def test_backward_through_output_and_final_state_together_matches_torch(name):
    """autograd.backward([out, h_n]): h_n is a slice of out, so the two roots share the recurrent node."""
    dm, tm = getattr(nn, name)(4, 5), getattr(torch.nn, name)(4, 5)
    copy(dm, tm)
    x = rng.standard_normal((3, 2, 4))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (od, hd), (ot, ht) = dm(xd), tm(xt)
    so, sh = rng.standard_normal(tuple(ot.shape)), rng.standard_normal(tuple(ht.shape))
    dg.autograd.backward([od, hd], [dg.tensor(so), dg.tensor(sh)])
    torch.autograd.backward([ot, ht], [torch.tensor(so), torch.tensor(sh)])
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    for (k, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


def test_lstm_rejects_a_cell_state_of_the_wrong_shape_or_a_missing_one():
    """c_0 is read one row per layer and direction, so a wrong shape used to run silently."""
    from distgraph.errors import ShapeError

    m = nn.LSTM(3, 4)
    x, h0 = dg.randn(5, 2, 3), dg.randn(1, 2, 4)
    with pytest.raises(ShapeError, match=r"LSTM: expected cell size \(1, 2, 4\), got \(2, 2, 4\)"):
        m(x, (h0, dg.randn(2, 2, 4)))
    with pytest.raises(ShapeError, match=r"LSTM: the initial state must be a tuple \(h_0, c_0\)"):
        m(x, h0)


PROJ_CASES = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, bias=False),
]


@pytest.mark.parametrize("kw", PROJ_CASES, ids=[str(k) for k in PROJ_CASES])
@pytest.mark.parametrize("with_h0", [False, True])
def test_lstm_with_projection_matches_torch(kw, with_h0):
    dm, tm = nn.LSTM(4, 5, proj_size=3, **kw), torch.nn.LSTM(4, 5, proj_size=3, **kw)
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert [tuple(p.shape) for p in dm.parameters()] == [tuple(p.shape) for p in tm.parameters()]
    assert repr(dm) == repr(tm)
    copy(dm, tm)
    x = rng.standard_normal((6, 2, 4))
    leaves_d, leaves_t = [dg.tensor(x, requires_grad=True)], [torch.tensor(x, requires_grad=True)]
    if with_h0:
        layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
        batch = 6 if kw.get("batch_first") else 2
        states = [rng.standard_normal((layers, batch, 3)), rng.standard_normal((layers, batch, 5))]
        leaves_d += [dg.tensor(s, requires_grad=True) for s in states]
        leaves_t += [torch.tensor(s, requires_grad=True) for s in states]
    args_d = [leaves_d[0]] + ([tuple(leaves_d[1:])] if with_h0 else [])
    args_t = [leaves_t[0]] + ([tuple(leaves_t[1:])] if with_h0 else [])
    assert_outputs_and_gradients_match(dm, tm, args_d, args_t, leaves_d, leaves_t)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.GRU(4, 5, proj_size=2),
        lambda m: m.RNN(4, 5, proj_size=2),
        lambda m: m.LSTM(4, 5, proj_size=5),
        lambda m: m.LSTM(4, 5, proj_size=-1),
    ],
    ids=["gru", "rnn", "not-smaller", "negative"],
)
def test_bad_proj_size_is_refused_as_torch(make):
    with pytest.raises(ValueError):
        make(torch.nn)
    with pytest.raises(ValueError):
        make(nn)
