"""embedding_bag / EmbeddingBag against torch: every mode with offsets, 2-D input, include_last_offset,
padding_idx, per_sample_weights, max_norm and empty bags; float64 values and gradients, and the errors.

scale_grad_by_freq is checked against its documented meaning (each row's gradient divided by its
index's count) rather than torch 2.13's CPU kernel, which divides the k-th distinct index's gradient by
the count of the k-th entry of the sorted input (e.g. ids [[1, 1, 2], [3, 1, 0]] scale rows 2 and 3 by 1/3)."""

import random

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import IndexOutOfRangeError, ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
TF, TN = torch.nn.functional, torch.nn
rng = np.random.default_rng(0)
W = rng.standard_normal((7, 3))
IDS = np.array([1, 2, 4, 5, 4, 3, 2, 6, 0, 0])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("offsets", [[0, 3, 3, 7], [0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 5, 10]])  # empty bags too
@pytest.mark.parametrize("include_last_offset", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 4, -1])
def test_embedding_bag_matches_torch(mode, offsets, include_last_offset, padding_idx):
    if include_last_offset and len(offsets) == 1:
        pytest.skip("no bag at all: torch 2.13's CPU kernel crashes (segfault) on it")
    o = np.array(offsets)
    kw = dict(mode=mode, include_last_offset=include_last_offset, padding_idx=padding_idx)
    check(lambda w: F.embedding_bag(dg.tensor(IDS), w, dg.tensor(o), **kw),
          lambda w: TF.embedding_bag(torch.tensor(IDS), w, torch.tensor(o), **kw), W)  # fmt: skip


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_2d_input_ties_and_scale_grad_by_freq(mode):
    ids = rng.integers(0, 7, (4, 3))
    check(lambda w: F.embedding_bag(dg.tensor(ids), w, mode=mode),
          lambda w: TF.embedding_bag(torch.tensor(ids), w, mode=mode), W)  # fmt: skip
    tied = np.round(W)  # equal maxima within a bag: the first one gets the gradient, as torch
    check(lambda w: F.embedding_bag(dg.tensor(ids), w, mode=mode),
          lambda w: TF.embedding_bag(torch.tensor(ids), w, mode=mode), tied)  # fmt: skip
    if mode != "max":  # each row's gradient divided by its index's count in the input, as documented
        w, t = dg.tensor(W, requires_grad=True), torch.tensor(W, requires_grad=True)
        seed = rng.standard_normal((4, 3))
        F.embedding_bag(dg.tensor(ids), w, mode=mode, scale_grad_by_freq=True).backward(dg.tensor(seed))
        TF.embedding_bag(torch.tensor(ids), t, mode=mode).backward(torch.tensor(seed))
        counts = np.maximum(np.bincount(ids.ravel(), minlength=7), 1)[:, None]
        np.testing.assert_allclose(w.grad.numpy(), t.grad.numpy() / counts, rtol=1e-12)
    check(lambda w: F.embedding_bag(dg.tensor(ids), w, mode=mode),
          lambda w: TF.embedding_bag(torch.tensor(ids), w, mode=mode), W, dtype=np.float32, rtol=1e-6)  # fmt: skip


def test_embedding_bag_per_sample_weights_and_max_norm():
    o, psw = np.array([0, 4, 4, 8]), rng.standard_normal(len(IDS))
    check(lambda w, p: F.embedding_bag(dg.tensor(IDS), w, dg.tensor(o), mode="sum", per_sample_weights=p),
          lambda w, p: TF.embedding_bag(torch.tensor(IDS), w, torch.tensor(o), mode="sum", per_sample_weights=p),
          W, psw)  # fmt: skip
    assert dg.autograd.gradcheck(
        lambda w, p: F.embedding_bag(dg.tensor(IDS), w, dg.tensor(o), mode="sum", per_sample_weights=p, padding_idx=2),
        [dg.tensor(W, requires_grad=True), dg.tensor(psw, requires_grad=True)],
    )
    dw, tw = dg.tensor(W * 3), torch.tensor(W * 3)
    got = F.embedding_bag(dg.tensor(IDS), dw, dg.tensor(o), max_norm=1.0)
    want = TF.embedding_bag(torch.tensor(IDS), tw, torch.tensor(o), max_norm=1.0)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(dw.numpy(), tw.numpy(), rtol=1e-6)  # looked-up rows renormed in place


def test_embedding_bag_errors():
    w, ids = dg.tensor(W), dg.tensor(IDS)
    with pytest.raises(ValueError, match="offsets has to be a 1D Tensor but got None"):
        F.embedding_bag(ids, w)
    with pytest.raises(ValueError, match="if input is 2D, then offsets has to be None"):
        F.embedding_bag(dg.tensor(IDS.reshape(2, 5)), w, dg.tensor(np.array([0])))
    with pytest.raises(ValueError, match="offsets\\[0\\] has to be 0"):
        F.embedding_bag(ids, w, dg.tensor(np.array([1, 3])))
    with pytest.raises(NotImplementedError, match="per_sample_weights is only supported for mode='sum'"):
        F.embedding_bag(ids, w, dg.tensor(np.array([0])), per_sample_weights=dg.ones(10))
    with pytest.raises(IndexOutOfRangeError, match="index 9 is out of range for 7 embeddings"):
        F.embedding_bag(dg.tensor(np.array([1, 9])), w, dg.tensor(np.array([0])))
    with pytest.raises(ValueError, match="mode has to be one of sum, mean or max"):
        F.embedding_bag(ids, w, dg.tensor(np.array([0])), mode="min")
    with pytest.raises(ShapeError, match="weight has to be a 2D Tensor"):
        F.embedding_bag(ids, dg.ones(7), dg.tensor(np.array([0])))


def bag_case(r):
    n, d = r.randint(2, 8), r.randint(1, 4)
    g = np.random.default_rng(r.randint(0, 2**31))
    a = dict(mode=r.choice(["sum", "mean", "max"]), padding_idx=r.choice([None, r.randint(-n, n - 1)]),
             max_norm=r.choice([None, None, 1.5]), include_last_offset=r.random() < 0.3)  # fmt: skip
    if r.random() < 0.4:
        inputs = [g.integers(0, n, (r.randint(1, 3), r.randint(1, 4)))]
        a["include_last_offset"] = False
    else:
        length = r.randint(0, 8)
        cuts = np.sort(g.integers(0, length + 1, r.randint(0, 3)))
        inputs = [
            g.integers(0, n, length),
            np.concatenate([[0], cuts, [length] if a["include_last_offset"] else []]).astype(np.int64),
        ]
    if a["mode"] == "sum" and len(inputs) == 2 and r.random() < 0.5:
        inputs.append(g.standard_normal(inputs[0].shape))
    module_parity(nn.EmbeddingBag(n, d, **a), TN.EmbeddingBag(n, d, **a), inputs, passes=2)


@pytest.mark.parametrize("draw", range(40))
def test_embedding_bag_module_options_match_torch(draw):
    bag_case(random.Random(f"EmbeddingBag-{draw}"))
