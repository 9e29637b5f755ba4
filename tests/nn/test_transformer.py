"""TransformerEncoderLayer and TransformerEncoder against torch float64 (weights from torch's state_dict):
outputs and the gradients of the input and every parameter, for each activation, norm placement, layout,
bias and mask; the encoder's layers are independent deep copies; a tiny sequence classifier learns."""

import itertools

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn, optim
from tests.nn.test_recurrent import assert_outputs_and_gradients_match, copy

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's fast-path notice
rng = np.random.default_rng(0)
D, HEADS, FF, T, B = 8, 2, 16, 5, 3

ACTIVATIONS = {  # name -> (distgraph's, torch's) activation argument
    "relu": ("relu", "relu"),
    "gelu": ("gelu", "gelu"),
    "F.relu-default": (F.relu, torch.nn.functional.relu),
    "module": (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    "function": (lambda x: F.silu(x), lambda x: torch.nn.functional.silu(x)),
}
MASKS = ["none", "float-causal", "bool-mask+padding", "is_causal", "padding"]


def _masks(kind):
    """(src_mask, src_key_padding_mask, is_causal) arrays for one mask case (bool: True = masked)."""
    causal = np.triu(np.ones((T, T), bool), 1)
    pad = np.zeros((B, T), bool)
    pad[-1, -2:] = True
    return {
        "none": (None, None, False),
        "float-causal": (np.where(causal, -np.inf, 0.0), None, False),
        "bool-mask+padding": ((rng.random((T, T)) < 0.3) & ~np.eye(T, dtype=bool), pad, False),
        "is_causal": (causal, None, True),
        "padding": (None, pad, False),
    }[kind]


def _run(dm, tm, batch_first, mask_kind, **call):
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    mask, pad, causal = _masks(mask_kind)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    conv = lambda mk, a: None if a is None else mk(a)  # noqa: E731
    kw_d = {"src_key_padding_mask": conv(dg.tensor, pad), "is_causal": causal, **call}
    kw_t = {"src_key_padding_mask": conv(torch.tensor, pad), "is_causal": causal, **call}
    name = "mask" if isinstance(dm, nn.TransformerEncoder) else "src_mask"
    kw_d[name], kw_t[name] = conv(dg.tensor, mask), conv(torch.tensor, mask)
    assert_outputs_and_gradients_match(dm, tm, [xd], [xt], [xd], [xt], kwargs_d=kw_d, kwargs_t=kw_t)


LAYER_OPTIONS = list(itertools.product(ACTIVATIONS, [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("activation,norm_first,batch_first,bias", LAYER_OPTIONS, ids=str)
def test_encoder_layer_matches_torch(activation, norm_first, batch_first, bias):
    kw = dict(dim_feedforward=FF, dropout=0.0, norm_first=norm_first, batch_first=batch_first, bias=bias)
    act_d, act_t = ACTIVATIONS[activation]
    if activation == "F.relu-default":  # the default argument itself
        dm, tm = nn.TransformerEncoderLayer(D, HEADS, **kw), torch.nn.TransformerEncoderLayer(D, HEADS, **kw)
    else:
        dm = nn.TransformerEncoderLayer(D, HEADS, activation=act_d, layer_norm_eps=1e-3, **kw)
        tm = torch.nn.TransformerEncoderLayer(D, HEADS, activation=act_t, layer_norm_eps=1e-3, **kw)
    copy(dm, tm)
    for mask_kind in MASKS:
        dm.zero_grad(), tm.zero_grad()
        _run(dm, tm, batch_first, mask_kind)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("batch_first,norm", [(False, True), (True, False)])
def test_encoder_matches_torch(mask_kind, batch_first, norm):
    kw = dict(dim_feedforward=FF, dropout=0.1, batch_first=batch_first, activation="gelu")
    dm = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, **kw), 2, nn.LayerNorm(D) if norm else None)
    tm = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(D, HEADS, **kw), 2, torch.nn.LayerNorm(D) if norm else None
    )
    copy(dm, tm)
    dm.eval(), tm.eval()  # dropout off; with autograd recording, torch takes its reference path too
    _run(dm, tm, batch_first, mask_kind)


def test_encoder_layers_are_independent_deep_copies():
    layer = nn.TransformerEncoderLayer(D, HEADS, FF)
    enc = nn.TransformerEncoder(layer, 3)
    params = [p for m in enc.layers for p in m.parameters()]
    assert len({id(p) for p in params}) == len(params) == 3 * len(list(layer.parameters()))
    assert not {id(p) for p in params} & {id(p) for p in layer.parameters()}
    np.testing.assert_array_equal(enc.layers[2].linear1.weight.detach().numpy(), layer.linear1.weight.detach().numpy())
    with dg.no_grad():
        enc.layers[0].linear1.weight.add_(1.0)
    assert not np.allclose(enc.layers[0].linear1.weight.detach().numpy(), enc.layers[1].linear1.weight.detach().numpy())
    assert list(enc.state_dict()) == list(
        torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, HEADS, FF), 3).state_dict()
    )


def test_dropout_only_in_training():
    dm = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.3)
    x = dg.randn(T, B, D)
    dm.eval()
    with dg.no_grad():
        a, b = dm(x).numpy(), dm(x).numpy()
        np.testing.assert_array_equal(a, b)
        dm.train()
        assert not np.allclose(dm(x).numpy(), a)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="activation should be relu/gelu, not 'tanh'"):
        nn.TransformerEncoderLayer(D, HEADS, activation="tanh")
    with pytest.raises(TypeError, match="activation must be 'relu', 'gelu' or a callable"):
        nn.TransformerEncoderLayer(D, HEADS, activation=3)
    with pytest.raises(ValueError, match="embed_dim 8 is not divisible by num_heads 3"):
        nn.TransformerEncoderLayer(D, 3)
    with pytest.raises(dg.errors.ShapeError, match=r"2-D attn_mask is \(4, 4\), but should be \(5, 5\)"):
        nn.TransformerEncoderLayer(D, HEADS, FF)(dg.randn(T, B, D), src_mask=dg.zeros(4, 4))


class Classifier(nn.Module):
    """Token + position embeddings, a 1-layer TransformerEncoder, the mean over unpadded positions, a Linear."""

    def __init__(self, vocab, length, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.position = nn.Embedding(length, 16)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1)
        self.head = nn.Linear(16, classes)

    def forward(self, tokens, padding):
        x = self.embed(tokens) + self.position(dg.arange(tokens.shape[1]))  # (B, T, 16)
        h = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).to(h.dtype).unsqueeze(-1)
        return self.head((h * keep).sum(1) / keep.sum(1))


def _order_task(r, n, t):
    """Sequences of tokens 3..5 of lengths 3..t, padded with 0, holding tokens 1 and 2 once each at random
    positions; the label says whether 1 comes first. Order matters: a bag of tokens cannot tell."""
    tokens = r.integers(3, 6, (n, t))
    first = r.integers(0, 2, n)
    lengths = r.integers(3, t + 1, n)
    padding = np.arange(t)[None, :] >= lengths[:, None]
    for i in range(n):
        a, b = np.sort(r.choice(lengths[i], 2, replace=False))
        tokens[i, a], tokens[i, b] = (1, 2) if first[i] else (2, 1)
    tokens[padding] = 0
    return dg.tensor(tokens), dg.tensor(padding), dg.tensor(first)


def test_tiny_sequence_classifier_learns():
    dg.manual_seed(0)
    r = np.random.default_rng(0)
    (x, pad, y), held_out = _order_task(r, 128, 6), _order_task(r, 128, 6)
    model = Classifier(6, 6, 2)
    opt = optim.Adam(model.parameters(), lr=0.01)
    first_loss = None
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x, pad), y)
        loss.backward()
        opt.step()
        first_loss = first_loss or loss.item()
    with dg.no_grad():
        accuracy = (model(*held_out[:2]).argmax(1) == held_out[2]).float().mean().item()
    assert first_loss > 0.5 and loss.item() < 0.1 and accuracy > 0.9, (first_loss, loss.item(), accuracy)
