"""ctc_loss / nn.CTCLoss against torch in float64: padded and concatenated targets, every reduction,
repeated labels, empty targets, another blank, lengths as tensors or tuples, unbatched input, infeasible
alignments (inf loss, NaN gradient; zero_infinity), float32; finite differences through log_softmax;
and the argument errors."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import AutogradError, DTypeError, IndexOutOfRangeError, ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)
T, N, C = 8, 4, 5
X = rng.standard_normal((T, N, C))
PADDED = np.array([[1, 1, 2, 3], [3, 4, 4, 0], [2, 2, 2, 0], [0, 0, 0, 0]])  # repeats; an empty target
IN_LENS, TG_LENS = (8, 6, 7, 3), (4, 3, 3, 0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("log_softmax", [False, True])
def test_ctc_loss_padded_targets_match_torch(reduction, log_softmax):
    def prep(x, lib):
        return lib.log_softmax(x, 2) if log_softmax else x

    check(lambda x: F.ctc_loss(prep(x, F), dg.tensor(PADDED), IN_LENS, TG_LENS, reduction=reduction),
          lambda x: TF.ctc_loss(prep(x, TF), torch.tensor(PADDED), IN_LENS, TG_LENS, reduction=reduction),
          X)  # fmt: skip


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_ctc_loss_concatenated_targets_tensor_lengths_and_blank(reduction):
    blank = 2
    tg = np.array([[1, 1, 3, 4], [3, 4, 4, 0], [0, 0, 0, 0], [4, 0, 0, 0]])
    lens = np.array([4, 3, 0, 1])
    flat = np.concatenate([tg[b, :n] for b, n in enumerate(lens)]).astype(np.int32)
    il = np.array([8, 7, 5, 2])
    check(lambda x: F.ctc_loss(x, dg.tensor(flat), dg.tensor(il), dg.tensor(lens), blank, reduction),
          lambda x: TF.ctc_loss(x, torch.tensor(flat), torch.tensor(il), torch.tensor(lens), blank, reduction),
          X)  # fmt: skip


def test_ctc_loss_random_cases_match_torch():
    r = np.random.default_rng(3)
    for _ in range(6):
        t, n, c = r.integers(1, 12), r.integers(1, 5), r.integers(2, 6)
        tl = r.integers(0, 5, n)
        tg = r.integers(1, c, (n, max(int(tl.max()), 1)))
        il = r.integers(0, t + 1, n)
        x = r.standard_normal((t, n, c))
        check(lambda x: F.ctc_loss(F.log_softmax(x, 2), dg.tensor(tg), tuple(il), tuple(tl), reduction="sum"),
              lambda x: TF.ctc_loss(TF.log_softmax(x, 2), torch.tensor(tg), tuple(il), tuple(tl), reduction="sum"),
              x)  # fmt: skip


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_ctc_loss_infeasible_alignment_is_inf_or_zeroed(zero_infinity, reduction):
    # 3 repeated labels need 5 frames; sequence 0 has 4, sequence 3 has none for one label
    tg = np.array([[1, 1, 1], [2, 3, 0], [1, 0, 0], [4, 0, 0]])
    il, tl = (4, 6, 1, 0), (3, 2, 1, 1)
    out = check(lambda x: F.ctc_loss(x, dg.tensor(tg), il, tl, reduction=reduction, zero_infinity=zero_infinity),
                lambda x: TF.ctc_loss(x, torch.tensor(tg), il, tl, reduction=reduction, zero_infinity=zero_infinity),
                X)  # fmt: skip
    if reduction == "none":
        assert np.isinf(out.detach().numpy()[0]) != zero_infinity


def test_ctc_loss_unbatched_and_module():
    x = X[:, 0]
    tg = np.array([1, 1, 2])
    check(lambda x: F.ctc_loss(x, dg.tensor(tg), dg.tensor(8), dg.tensor(3), reduction="none"),
          lambda x: TF.ctc_loss(x, torch.tensor(tg), torch.tensor(8), torch.tensor(3), reduction="none"), x)  # fmt: skip
    for kw in ({}, {"blank": 1, "reduction": "sum", "zero_infinity": True}):
        module_parity(nn.CTCLoss(**kw), torch.nn.CTCLoss(**kw), [X, PADDED, np.array(IN_LENS), np.array(TG_LENS)])


def test_ctc_loss_float32_matches_torch():
    x = X.astype(np.float32)
    check(lambda x: F.ctc_loss(x, dg.tensor(PADDED), IN_LENS, TG_LENS),
          lambda x: TF.ctc_loss(x, torch.tensor(PADDED), IN_LENS, TG_LENS), x,
          dtype=np.float32, rtol=1e-5, atol=1e-6)  # fmt: skip
    out = F.ctc_loss(dg.tensor(x), dg.tensor(PADDED), IN_LENS, TG_LENS)
    assert out.dtype == dg.float32


def test_ctc_loss_gradcheck_through_log_softmax():
    x = dg.tensor(rng.standard_normal((5, 2, 4)), requires_grad=True)
    tg = dg.tensor(np.array([[1, 1], [2, 3]]))
    assert dg.autograd.gradcheck(lambda x: F.ctc_loss(F.log_softmax(x, 2), tg, (5, 4), (2, 2), reduction="sum"), [x])


def test_ctc_loss_double_backward_raises_as_torch():
    x = dg.tensor(X, requires_grad=True)
    (g,) = dg.autograd.grad(F.ctc_loss(x, dg.tensor(PADDED), IN_LENS, TG_LENS), [x], create_graph=True)
    with pytest.raises(AutogradError, match="ctc_loss: the derivative of its backward"):
        g.sum().backward()


def test_ctc_loss_errors_name_the_op():
    x, tg = dg.tensor(X), dg.tensor(PADDED)
    cases = [
        (ValueError, "input_lengths to have value at most 8", (x, tg, (9, 1, 1, 1), TG_LENS), {}),
        (ValueError, "input_lengths to have value at least 0", (x, tg, (8, -1, 1, 1), TG_LENS), {}),
        (ValueError, "target_lengths to have value at least 0", (x, tg, IN_LENS, (1, -1, 1, 1)), {}),
        (ShapeError, "input_lengths must be of size batch_size 4", (x, tg, (8,), TG_LENS), {}),
        (ShapeError, "S at least the largest target length 5", (x, tg, IN_LENS, (5, 1, 1, 1)), {}),
        (ShapeError, "sum\\(target_lengths\\) = 4", (x, dg.tensor(np.array([1, 2, 3])), IN_LENS, (1, 1, 1, 1)), {}),
        (ShapeError, "log_probs must be \\(T, N, C\\)", (dg.tensor(X[0, 0]), tg, IN_LENS, TG_LENS), {}),
        (DTypeError, "float32 or float64", (dg.tensor(X.astype(np.float16)), tg, IN_LENS, TG_LENS), {}),
        (
            IndexOutOfRangeError,
            "label 7 is out of range for 5 classes",
            (x, dg.tensor(PADDED + 3), IN_LENS, TG_LENS),
            {},
        ),
        (ValueError, "blank 5 must be in the label range", (x, tg, IN_LENS, TG_LENS), {"blank": 5}),
        (ValueError, "reduction must be", (x, tg, IN_LENS, TG_LENS), {"reduction": "avg"}),
    ]
    for err, msg, args, kw in cases:
        with pytest.raises(err, match=f"ctc_loss: .*{msg}"):
            F.ctc_loss(*args, **kw)
