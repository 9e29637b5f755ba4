"""layer_norm keeps its mean and rstd for the backward where eager autograd records it (`layer_norm_saving`,
ops/layers.py): the gradients from them are the bits of the backward that recomputes them, and nothing is
kept under no_grad, without an input that needs grad, or while a graph is captured."""

from types import SimpleNamespace

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.autograd.function import set_tracer
from distgraph.ops import cache_blocks, fused_norm
from distgraph.ops import layers as L

# (x shape, normalized shape): rows of 300 and 240 elements take the row buffer (cache_blocks.row_buffer,
# 192 and more), rows of 40 and 60 do not
_SHAPES = [((5, 300), (300,)), ((2, 3, 40), (40,)), ((4, 6, 40), (6, 40)), ((2, 3, 20), (3, 20))]


def _inputs(shape, norm, dtype, affine, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.uniform(0.5, 2, norm).astype(dtype), rng.standard_normal(norm).astype(dtype)
    wide = rng.standard_normal((*shape[:-1], 2 * shape[-1])).astype(dtype)
    return x, (w if "w" in affine else None), (b if "b" in affine else None), wide[..., ::2]  # g: strided


def _grads(x, w, b, g, norm):
    xs = [dg.tensor(a, requires_grad=True) for a in (x, w, b) if a is not None]
    out = F.layer_norm(xs[0], norm, xs[1] if w is not None else None, xs[-1] if b is not None else None)
    node = out.grad_fn
    out.backward(dg.tensor(g))
    return node, [t.grad.numpy() for t in xs]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "norm"), _SHAPES)
@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
def test_gradients_from_the_kept_statistics_equal_recomputing_them(shape, norm, dtype, affine, monkeypatch):
    x, w, b, g = _inputs(shape, norm, dtype, affine)
    assert not g.flags.c_contiguous
    node, kept = _grads(x, w, b, g, norm)
    assert node.op is L._layer_norm_saving
    monkeypatch.setattr(L, "_layer_norm_saving", L._layer_norm)  # record the op that keeps nothing
    node, recomputed = _grads(x, w, b, g, norm)
    assert node.op is L._layer_norm and node.saved is None
    for a, r in zip(kept, recomputed):
        assert a.dtype == dtype and np.array_equal(a, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "norm"), _SHAPES)
def test_the_kept_statistics_are_the_backwards_own(shape, norm, dtype):
    """(M,) mean and rstd, the very bits the backward's centering computes from x."""
    x, w, b, _ = _inputs(shape, norm, dtype, "wb", seed=1)
    ins = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    mean, rstd = F.layer_norm(ins[0], norm, ins[1], ins[2]).grad_fn.saved
    rows = x.size // np.prod(norm)
    with cache_blocks.row_buffer(x, int(np.prod(norm))):  # as layer_norm_grads runs it
        _, want_mean, want_rstd = fused_norm.centered(np, x, len(norm), 1e-5)
    assert mean.shape == rstd.shape == (rows,) and mean.dtype == rstd.dtype == dtype
    assert np.array_equal(mean, want_mean) and np.array_equal(rstd, want_rstd)


def _record_calls(monkeypatch):
    calls = []
    forward = L._layer_norm_saving.forward
    monkeypatch.setattr(L._layer_norm_saving, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    return calls


def test_nothing_is_kept_under_no_grad_or_without_an_input_needing_grad(monkeypatch):
    calls = _record_calls(monkeypatch)
    x, w, b, _ = _inputs((4, 300), (300,), np.float32, "wb")
    with dg.no_grad():
        assert F.layer_norm(dg.tensor(x, requires_grad=True), (300,), dg.tensor(w), dg.tensor(b)).grad_fn is None
    assert F.layer_norm(dg.tensor(x), (300,), dg.tensor(w), dg.tensor(b)).grad_fn is None
    assert not calls
    node = F.layer_norm(dg.tensor(x), (300,), dg.tensor(w, requires_grad=True)).grad_fn  # the weight alone
    assert node.op is L._layer_norm_saving and calls


def test_capture_records_the_layer_norm_that_keeps_nothing(monkeypatch):
    """A saves_extra op's captured gradient would be an opaque vjp node per input, each rerunning the forward."""
    calls = _record_calls(monkeypatch)
    recorded = []
    prev = set_tracer(SimpleNamespace(record=lambda op, inputs, attrs, out: recorded.append(op.name)))
    try:
        x = dg.tensor(np.ones((3, 4)), requires_grad=True)
        node = F.layer_norm(x, (4,)).grad_fn
    finally:
        set_tracer(prev)
    assert recorded == ["layer_norm"] and node.op is L._layer_norm and node.saved is None and not calls


def test_double_backward_through_the_kept_statistics_matches_recomputing():
    """create_graph takes the differentiable rule, which recomputes: the kept statistics change nothing there."""
    x, w, b, g = _inputs((3, 40), (40,), np.float64, "wb", seed=2)
    xs = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = F.layer_norm(xs[0], (40,), xs[1], xs[2])
    assert out.grad_fn.op is L._layer_norm_saving
    gx, gw = dg.autograd.grad(out, xs[:2], dg.tensor(g), create_graph=True)
    (ggx,) = dg.autograd.grad((gx * gx).sum() + (gw * gw).sum(), [xs[0]])
    ys = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = L._layer_norm(*ys, k=1, eps=1e-5, has_bias=True)
    hx, hw = dg.autograd.grad(out, ys[:2], dg.tensor(g), create_graph=True)
    (hhx,) = dg.autograd.grad((hx * hx).sum() + (hw * hw).sum(), [ys[0]])
    assert np.array_equal(ggx.numpy(), hhx.numpy())


def test_a_retained_graph_gives_the_same_gradients_twice():
    """The backward only reads the kept statistics (never writes into them)."""
    x, w, b, g = _inputs((4, 300), (300,), np.float32, "wb", seed=3)
    xs = [dg.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = F.layer_norm(xs[0], (300,), xs[1], xs[2])
    first = dg.autograd.grad(out, xs, dg.tensor(g), retain_graph=True)
    second = dg.autograd.grad(out, xs, dg.tensor(g))
    for a, c in zip(first, second):
        assert np.array_equal(a.numpy(), c.numpy())
