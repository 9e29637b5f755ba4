"""Attention models through the graph layer: a MultiheadAttention / TransformerEncoder / Transformer model
captures and compiles without falling back to eager (masks are graph inputs, the causal mask a constant of the shapes),
and the compiled training step's loss and parameter gradients, and the inference outputs, equal eager."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner
from tests.graph.helpers import assert_step_matches_eager, randn

# a fallback to eager execution warns: here it fails the test
pytestmark = pytest.mark.filterwarnings("error::distgraph.graph.compile.CompileWarning")
B, T, E = 4, 5, 8


class Attender(nn.Module):
    """Self-attention (with bias_kv and a zero key, so cat and pad are in the graph too), a residual, a head."""

    def __init__(self, need_weights):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, 2, batch_first=True, add_bias_kv=True, add_zero_attn=True)
        self.head = nn.Linear(E, 3)
        self.need_weights = need_weights

    def forward(self, x, padding):
        causal = dg.triu(dg.ones(T, T, dtype=dg.bool), 1)
        h, _ = self.attn(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=self.need_weights)
        return self.head((x + h).mean(1))


def _padding(shorter):
    pad = np.zeros((B, T), bool)
    pad[shorter, -2:] = True
    return dg.tensor(pad)


@pytest.mark.parametrize("need_weights", [True, False])
def test_compiled_attention_training_step_equals_eager(need_weights):
    dg.manual_seed(0)
    model = Attender(need_weights).double()
    x, y = randn(B, T, E), dg.tensor(np.arange(B) % 3)
    step = dg.compile(model, (x, _padding(0), y), loss_fn=F.cross_entropy)
    for shorter, scale in ((0, 1.0), (2, -0.5)):  # new values: other sequences padded, other inputs
        assert_step_matches_eager(step, model, F.cross_entropy, (x * scale, _padding(shorter)), y)
    assert len(step.variants) == 1


def test_compiled_transformer_encoder_inference_equals_eager():
    dg.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.1, activation="gelu", batch_first=True, norm_first=True)
    model = nn.TransformerEncoder(layer, 2, nn.LayerNorm(E)).double().eval()
    x, causal = randn(B, T, E), dg.triu(dg.ones(T, T, dtype=dg.bool), 1)

    def encode(x, padding):
        return model(x, mask=causal, src_key_padding_mask=padding)

    with dg.no_grad():
        f = dg.compile(encode, (x, _padding(0)))
        for shorter in (0, 3):
            out, ref = f(x, _padding(shorter)), encode(x, _padding(shorter))
            assert np.max(np.abs(out.array - ref.array)) <= 1e-12


class Seq2Seq(nn.Module):
    """Token embeddings, an encoder-decoder nn.Transformer with a causal target mask and padded sources, a head."""

    def __init__(self, vocab, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, E)
        self.transformer = nn.Transformer(E, 2, 1, 2, 16, dropout=dropout, batch_first=True, norm_first=True)
        self.head = nn.Linear(E, vocab)

    def forward(self, src, tgt, src_padding):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=dg.float64)
        h = self.transformer(
            self.embed(src), self.embed(tgt), tgt_mask=causal, tgt_is_causal=True,
            src_key_padding_mask=src_padding, memory_key_padding_mask=src_padding,
        )  # fmt: skip
        return self.head(h).reshape(-1, self.head.out_features)  # (B·T, vocab)


def test_compiled_transformer_training_step_and_inference_equal_eager():
    dg.manual_seed(0)
    model = Seq2Seq(7, dropout=0.0).double()
    r = np.random.default_rng(0)
    src, tgt, y = (dg.tensor(r.integers(0, 7, shape)) for shape in ((B, T), (B, T - 1), (B * (T - 1),)))
    step = dg.compile(model, (src, tgt, _padding(0), y), loss_fn=F.cross_entropy)
    for shorter in (0, 2):  # new values: other sequences padded
        assert_step_matches_eager(step, model, F.cross_entropy, (src, tgt, _padding(shorter)), y)
    assert len(step.variants) == 1

    model = Seq2Seq(7, dropout=0.1).double().eval()
    with dg.no_grad():
        f = dg.compile(model, (src, tgt, _padding(0)))
        for shorter in (0, 3):
            out, ref = f(src, tgt, _padding(shorter)), model(src, tgt, _padding(shorter))
            assert np.max(np.abs(out.array - ref.array)) <= 1e-12


def test_compiled_attention_weights_and_captured_sdpa_gradients_equal_eager():
    """A function returning the output and the per-head weights; a captured SDPA loss and its input gradients."""
    mha = nn.MultiheadAttention(E, 2).double()
    x = randn(T, B, E)
    with dg.no_grad():
        f = dg.compile(lambda x: mha(x, x, x, average_attn_weights=False), (x,))
        for a, b in zip(f(x * 2), mha(x * 2, x * 2, x * 2, average_attn_weights=False)):
            assert np.max(np.abs(a.array - b.array)) <= 1e-12

    q, k, v = (randn(2, 3, n, d).requires_grad_(True) for n, d in ((T, 4), (T + 1, 4), (T + 1, 2)))
    loss = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True).square().sum()  # noqa: E731
    graph, _, _ = capture(loss, [q, k, v], grad_of=[q, k, v])
    outs = Runner(graph)(q.array, k.array, v.array)
    ref = loss(q, k, v)
    ref.backward()
    for a, b in zip(outs, [ref, q.grad, k.grad, v.grad]):
        assert np.max(np.abs(a - b.array)) <= 1e-12
