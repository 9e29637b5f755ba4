"""TransformerDecoderLayer, TransformerDecoder and Transformer against torch float64 (weights from torch's
state_dict): outputs and the gradients of the inputs (target, memory / source) and every parameter, for each
activation, norm placement, layout, bias and mask; torch's parameter names and initialization, state_dicts
loading both ways, the causal mask, the checks on the inputs."""

import itertools

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from tests.nn.test_recurrent import assert_outputs_and_gradients_match, copy
from tests.nn.test_transformer import ACTIVATIONS

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's fast-path notice
rng = np.random.default_rng(1)
D, HEADS, FF, T, S, B = 8, 2, 16, 5, 6, 3  # target length T, source (memory) length S


def _some(shape):
    """A random bool mask (True = masked) that keeps key 0, so no query has every key masked."""
    mask = rng.random(shape) < 0.3
    mask[..., 0] = False
    return mask


def _decoder_masks(kind):
    """Keyword arguments (arrays, bools) of one mask case of a decoder: tgt masks (T, T), memory (T, S)."""
    causal = np.triu(np.ones((T, T), bool), 1)
    tgt_pad, mem_pad = np.zeros((B, T), bool), np.zeros((B, S), bool)
    tgt_pad[-1, -2:] = mem_pad[0, -3:] = True
    return {
        "none": {},
        "float": {"tgt_mask": np.where(causal, -np.inf, 0.0), "memory_mask": rng.standard_normal((T, S))},
        "bool+padding": {
            "tgt_mask": _some((T, T)),
            "memory_mask": _some((T, S)),
            "tgt_key_padding_mask": tgt_pad,
            "memory_key_padding_mask": mem_pad,
        },
        "is_causal": {
            "tgt_mask": causal,
            "tgt_is_causal": True,
            "memory_mask": np.triu(np.ones((T, S), bool), 1),
            "memory_is_causal": True,
        },
        "per-head+padding": {"tgt_mask": rng.standard_normal((B * HEADS, T, T)), "memory_key_padding_mask": mem_pad},
    }[kind]


def _transformer_masks(kind):
    """The decoder's case plus the source's masks (S, S) and padding (memory's padding is the source's)."""
    kw = _decoder_masks(kind)
    if "memory_key_padding_mask" in kw:
        kw["src_key_padding_mask"] = kw["memory_key_padding_mask"]
    if kind in ("float", "bool+padding"):
        kw["src_mask"] = rng.standard_normal((S, S)) if kind == "float" else _some((S, S))
    if kind == "is_causal":
        kw.update(src_mask=np.triu(np.ones((S, S), bool), 1), src_is_causal=True)
    return kw


def _run(dm, tm, shapes, batch_first, kw):
    """dm(a, b, **kw) against tm: `shapes` of the two positional inputs in (length, features) sequence-first
    order, made (N, L, E) with batch_first; kw's arrays become tensors of each library."""
    xs = [rng.standard_normal((B, n, D) if batch_first else (n, B, D)) for n in shapes]
    xd, xt = [dg.tensor(x, requires_grad=True) for x in xs], [torch.tensor(x, requires_grad=True) for x in xs]
    kw_d = {k: dg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    kw_t = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    assert_outputs_and_gradients_match(dm, tm, xd, xt, xd, xt, kwargs_d=kw_d, kwargs_t=kw_t)


DECODER_MASKS = ["none", "float", "bool+padding", "is_causal", "per-head+padding"]
LAYER_OPTIONS = list(itertools.product(ACTIVATIONS, [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("activation,norm_first,batch_first,bias", LAYER_OPTIONS, ids=str)
def test_decoder_layer_matches_torch(activation, norm_first, batch_first, bias):
    kw = dict(dim_feedforward=FF, dropout=0.0, norm_first=norm_first, batch_first=batch_first, bias=bias)
    act_d, act_t = ACTIVATIONS[activation]
    if activation == "F.relu-default":  # the default argument itself
        dm, tm = nn.TransformerDecoderLayer(D, HEADS, **kw), torch.nn.TransformerDecoderLayer(D, HEADS, **kw)
    else:
        dm = nn.TransformerDecoderLayer(D, HEADS, activation=act_d, layer_norm_eps=1e-3, **kw)
        tm = torch.nn.TransformerDecoderLayer(D, HEADS, activation=act_t, layer_norm_eps=1e-3, **kw)
    copy(dm, tm)
    for mask_kind in DECODER_MASKS:
        dm.zero_grad(), tm.zero_grad()
        _run(dm, tm, (T, S), batch_first, _decoder_masks(mask_kind))


@pytest.mark.parametrize("mask_kind", DECODER_MASKS)
@pytest.mark.parametrize("batch_first,norm", [(False, True), (True, False)])
def test_decoder_matches_torch(mask_kind, batch_first, norm):
    kw = dict(dim_feedforward=FF, dropout=0.1, batch_first=batch_first, activation="gelu", norm_first=norm)
    dm = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, HEADS, **kw), 2, nn.LayerNorm(D) if norm else None)
    tm = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(D, HEADS, **kw), 2, torch.nn.LayerNorm(D) if norm else None
    )
    copy(dm, tm)
    dm.eval(), tm.eval()  # dropout off
    _run(dm, tm, (T, S), batch_first, _decoder_masks(mask_kind))


def _transformers(**kw):
    kw = dict(d_model=D, nhead=HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF, **kw)
    return nn.Transformer(**kw), torch.nn.Transformer(**kw)


@pytest.mark.parametrize("mask_kind", DECODER_MASKS)
@pytest.mark.parametrize(
    "options",
    [{}, {"batch_first": True, "norm_first": True, "activation": "gelu"}, {"bias": False, "layer_norm_eps": 1e-3}],
    ids=str,
)
def test_transformer_matches_torch(mask_kind, options):
    dm, tm = _transformers(**options)
    copy(dm, tm)
    dm.eval(), tm.eval()  # dropout (0.1 by default) off; with autograd recording torch takes its reference path
    _run(dm, tm, (S, T), options.get("batch_first", False), _transformer_masks(mask_kind))


def test_transformer_unbatched_and_custom_stacks_match_torch():
    """Unbatched (S, E), (T, E) inputs; custom_encoder / custom_decoder stand in for the built stacks."""
    dm, tm = _transformers(dropout=0.0)
    copy(dm, tm)
    xs = [rng.standard_normal((n, D)) for n in (S, T)]
    xd, xt = [dg.tensor(x, requires_grad=True) for x in xs], [torch.tensor(x, requires_grad=True) for x in xs]
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=dg.float64)
    assert_outputs_and_gradients_match(
        dm, tm, xd, xt, xd, xt, kwargs_d={"tgt_mask": mask}, kwargs_t={"tgt_mask": torch.tensor(mask.numpy())}
    )

    enc_d = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0), 1)
    enc_t = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0), 1)
    dec_d = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0), 3)
    dec_t = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0), 3)
    dm = nn.Transformer(D, HEADS, custom_encoder=enc_d, custom_decoder=dec_d)
    tm = torch.nn.Transformer(D, HEADS, custom_encoder=enc_t, custom_decoder=dec_t)
    assert dm.encoder is enc_d and dm.decoder is dec_d and len(dm.decoder.layers) == 3
    copy(dm, tm)
    _run(dm, tm, (S, T), False, _transformer_masks("bool+padding"))


def test_state_dicts_load_both_ways():
    """torch's names and shapes: a distgraph Transformer's state_dict loads into torch and gives its outputs."""
    dg.manual_seed(0)
    dm, tm = _transformers(dropout=0.0, batch_first=True)
    dm.double(), tm.double()
    assert [(k, tuple(v.shape)) for k, v in dm.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in tm.state_dict().items()
    ]
    tm.load_state_dict({k: torch.tensor(v.numpy()) for k, v in dm.state_dict().items()})
    src, tgt = rng.standard_normal((B, S, D)), rng.standard_normal((B, T, D))
    out_d = dm(dg.tensor(src), dg.tensor(tgt)).detach().numpy()
    out_t = tm(torch.tensor(src), torch.tensor(tgt)).detach().numpy()
    np.testing.assert_allclose(out_d, out_t, rtol=1e-9, atol=1e-12)


def test_transformer_initialization_is_torchs():
    """Every parameter of more than one dimension is re-drawn Xavier-uniform (the stacks' layers stop being
    copies); attention biases 0, LayerNorm 1 and 0, Linear biases U(±1/√fan_in): each drawn from torch's range."""
    dg.manual_seed(0), torch.manual_seed(0)
    dm, tm = nn.Transformer(64, 4, 2, 2, 128), torch.nn.Transformer(64, 4, 2, 2, 128)
    for (name, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters(), strict=True):
        a, b = p.detach().numpy(), q.detach().numpy()
        if np.all(b == b.flat[0]):  # a constant: zeros or ones
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:  # U(-r, r) with ≥ 64 draws: the largest |value| lies in (0.8 r, r] for both
            assert 0.8 < np.abs(a).max() / np.abs(b).max() < 1.25, name
    for stack in (dm.encoder, dm.decoder):
        w0, w1 = (layer.linear1.weight.detach().numpy() for layer in stack.layers)
        assert not np.allclose(w0, w1)


def test_decoder_layers_are_independent_deep_copies():
    layer = nn.TransformerDecoderLayer(D, HEADS, FF)
    dec = nn.TransformerDecoder(layer, 3)
    params = [p for m in dec.layers for p in m.parameters()]
    assert len({id(p) for p in params}) == len(params) == 3 * len(list(layer.parameters()))
    assert not {id(p) for p in params} & {id(p) for p in layer.parameters()}
    np.testing.assert_array_equal(
        dec.layers[2].multihead_attn.in_proj_weight.detach().numpy(),
        layer.multihead_attn.in_proj_weight.detach().numpy(),
    )
    assert list(dec.state_dict()) == list(
        torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, HEADS, FF), 3).state_dict()
    )


def test_generate_square_subsequent_mask_is_torchs():
    for kw_d, kw_t in (({}, {}), ({"dtype": dg.float64}, {"dtype": torch.float64})):
        mask = nn.Transformer.generate_square_subsequent_mask(4, **kw_d)
        ref = torch.nn.Transformer.generate_square_subsequent_mask(4, **kw_t)
        assert str(mask.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
        np.testing.assert_array_equal(mask.numpy(), ref.numpy())


def test_dropout_only_in_training():
    dm = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.3)
    x, memory = dg.randn(T, B, D), dg.randn(S, B, D)
    dm.eval()
    with dg.no_grad():
        a = dm(x, memory).numpy()
        np.testing.assert_array_equal(a, dm(x, memory).numpy())
        dm.train()
        assert not np.allclose(dm(x, memory).numpy(), a)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="TransformerDecoderLayer: activation should be relu/gelu, not 'tanh'"):
        nn.TransformerDecoderLayer(D, HEADS, activation="tanh")
    with pytest.raises(TypeError, match="TransformerEncoderLayer: activation must be 'relu', 'gelu' or a callable"):
        nn.Transformer(D, HEADS, activation=3)
    model = nn.Transformer(D, HEADS, 1, 1, FF)
    with pytest.raises(dg.errors.ShapeError, match=r"batch number of src and tgt must be equal, got src \(6, 3, 8\)"):
        model(dg.randn(S, B, D), dg.randn(T, B + 1, D))
    with pytest.raises(dg.errors.ShapeError, match=r"feature number of src and tgt must be equal to d_model=8"):
        model(dg.randn(S, B, D), dg.randn(T, B, D + 1))
    with pytest.raises(dg.errors.ShapeError, match=r"2-D attn_mask is \(4, 4\), but should be \(5, 6\)"):
        model(dg.randn(S, B, D), dg.randn(T, B, D), memory_mask=dg.zeros(4, 4))
