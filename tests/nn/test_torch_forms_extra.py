"""torch's top-level conv3d, conv_transpose3d, max_pool3d, convolution, ctc_loss, embedding_bag (its four
outputs) and the feature dropouts: against torch in float64 (forward and gradient), finite differences, and
torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(11)


def test_conv3d_conv_transpose3d_and_max_pool3d_match_torch():
    x, w, b = rng.standard_normal((2, 2, 4, 5, 4)), rng.standard_normal((3, 2, 2, 3, 2)), rng.standard_normal(3)
    check(lambda a, k, c: dg.conv3d(a, k, c, 1, 1), lambda a, k, c: torch.conv3d(a, k, c, 1, 1), x, w, b)
    wt = rng.standard_normal((2, 3, 2, 2, 3))
    check(lambda a, k: dg.conv_transpose3d(a, k, None, 2, 1, 1), lambda a, k: torch.conv_transpose3d(a, k, None, 2, 1, 1),
          x, wt)  # fmt: skip
    check(lambda a: dg.max_pool3d(a, 2), lambda a: torch.max_pool3d(a, 2), x)
    check(
        lambda a: dg.max_pool3d(a, (2, 3, 2), (), 1, 1, True),
        lambda a: torch.max_pool3d(a, (2, 3, 2), (), 1, 1, True),
        x,
    )


CONVOLUTIONS = [
    ((2, 3, 7), (4, 3, 3), False, [2], [1], [1], [0], 1),
    ((2, 4, 6, 5), (4, 2, 3, 2), False, [1, 2], [1, 0], [2, 1], [0, 0], 2),
    ((1, 2, 4, 4, 3), (3, 2, 2, 2, 2), False, [1], [1], [1], [0], 1),
    ((2, 3, 5), (3, 2, 3), True, [2], [1], [1], [1], 1),
    ((2, 4, 3, 4), (4, 1, 2, 3), True, [2, 1], [0, 1], [1, 1], [1, 0], 2),
    ((1, 2, 3, 2, 3), (2, 2, 2, 2, 2), True, [2, 2, 2], [1, 0, 1], [1, 1, 1], [0, 1, 0], 1),
]


@pytest.mark.parametrize("xs,ws,transposed,stride,padding,dilation,output_padding,groups", CONVOLUTIONS)
def test_convolution_matches_torch(xs, ws, transposed, stride, padding, dilation, output_padding, groups):
    bias_size = ws[1] * groups if transposed else ws[0]
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(bias_size)
    args = (stride, padding, dilation, transposed, output_padding, groups)
    check(lambda a, k, c: dg.convolution(a, k, c, *args), lambda a, k, c: torch.convolution(a, k, c, *args), x, w, b)
    tensors = tuple(dg.tensor(v, requires_grad=True) for v in (x, w, b))
    assert dg.autograd.gradcheck(lambda a, k, c: dg.convolution(a, k, c, *args), tensors)


def test_convolution_errors_are_torchs():
    w = dg.ones(2, 3, 2, 2)
    with pytest.raises(ShapeError, match="Expected 4-dimensional input for 4-dimensional weight \\[2, 3, 2, 2\\]"):
        dg.convolution(dg.ones(3, 5, 5), w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    with pytest.raises(ShapeError, match="expected stride to be a single integer value or a list of 1 values"):
        dg.convolution(dg.ones(1, 3, 5), dg.ones(2, 3, 2), None, [1, 1], [0], [1], False, [0], 1)


@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_ctc_loss_takes_atens_int_reduction(reduction):
    t, n, c = 6, 2, 4
    logits = rng.standard_normal((t, n, c))
    targets, in_len, tgt_len = np.array([[1, 2, 2], [3, 1, 0]]), [6, 5], [3, 2]
    check(lambda a: dg.ctc_loss(a.log_softmax(2), dg.tensor(targets), in_len, tgt_len, 0, reduction),
          lambda a: torch.ctc_loss(a.log_softmax(2), torch.tensor(targets), in_len, tgt_len, 0, reduction), logits)  # fmt: skip
    with pytest.raises(Exception, match="ctc_loss: reduction must be 0"):
        dg.ctc_loss(dg.tensor(logits), dg.tensor(targets), in_len, tgt_len, 0, "mean")


WEIGHT = rng.standard_normal((6, 3))
INDICES = np.array([1, 2, 4, 5, 4, 3, 2, 0])
BAGS = [([0, 2, 2, 5], False), ([0, 2, 2, 5, 8], True), ([0, 2, 2, 5, 6], True), ([0, 3], False), ([0], False)]


@pytest.mark.parametrize("offsets,last", BAGS)
@pytest.mark.parametrize("padding_idx", [None, 2])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_embedding_bag_four_outputs_are_torchs(mode, padding_idx, offsets, last):
    offs = np.array(offsets)

    def run(lib, w):
        return lib.embedding_bag(w, lib.tensor(INDICES), lib.tensor(offs), False, mode, False, None, last, padding_idx)

    out = check(lambda w: run(dg, w), lambda w: run(torch, w), WEIGHT)
    assert [o.dtype for o in out[1:]] == [dg.int64] * 3 and not any(o.requires_grad for o in out[1:])
    check(lambda w: run(dg, w), lambda w: run(torch, w), WEIGHT, grad=False)  # torch's forward-only kernel
    assert dg.autograd.gradcheck(lambda w: run(dg, w)[0], (dg.tensor(WEIGHT, requires_grad=True),))


def test_embedding_bag_per_sample_weights_and_errors():
    psw, offs = rng.standard_normal(8), np.array([0, 3, 3])

    def run(lib, w, s):
        return lib.embedding_bag(w, lib.tensor(INDICES), lib.tensor(offs), False, 0, False, s, False, None)

    check(lambda w, s: run(dg, w, s), lambda w, s: run(torch, w, s), WEIGHT, psw)
    with pytest.raises(ValueError, match="`mode` must be sum, mean, or max."):
        dg.embedding_bag(dg.tensor(WEIGHT), dg.tensor(INDICES), dg.tensor(offs), False, 3, False, None, False, None)


@pytest.mark.parametrize("name", ["feature_dropout", "feature_alpha_dropout"])
def test_feature_dropouts_pass_through_and_zero_as_torch(name):
    x = rng.standard_normal((2, 3, 4))
    for p, train in ((0.5, False), (0.0, True)):
        assert (
            getattr(dg, name)(dg.tensor(x), p, train).tolist()
            == getattr(torch, name)(torch.tensor(x), p, train).tolist()
        )
    one_d = np.ones(4)  # p = 1 zeroes before the rank is checked, as torch's
    assert (
        getattr(dg, name)(dg.tensor(one_d), 1.0, True).tolist()
        == getattr(torch, name)(torch.tensor(one_d), 1.0, True).tolist()
    )
    with pytest.raises(ShapeError, match="Feature dropout requires at least 2 dimensions in the input"):
        getattr(dg, name)(dg.tensor(one_d), 0.5, True)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        getattr(dg, name)(dg.tensor(x), 1.5, True)


@pytest.mark.parametrize("shape", [(4, 5, 3, 2), (6, 7)])
def test_feature_dropout_draws_one_mask_per_sample_and_channel(shape):
    dg.manual_seed(0)
    x = dg.tensor(rng.uniform(1, 2, shape), requires_grad=True)
    out = dg.feature_dropout(x, 0.5, True)
    ratio = (out / x).detach().numpy().reshape(*shape[:2], -1)
    assert np.all(ratio == ratio[..., :1]) and set(np.unique(ratio)) <= {0.0, 2.0} and len(np.unique(ratio)) == 2
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy().reshape(ratio.shape), ratio)  # the gradient is the mask


def test_feature_alpha_dropout_keeps_channels_whole_and_in_place_forms_write_the_input():
    dg.manual_seed(1)
    x = dg.tensor(rng.uniform(1, 2, (8, 6, 5)))
    out = dg.feature_alpha_dropout(x, 0.5, True).numpy()
    dropped = np.isclose(out, out[..., :1]).all(-1)  # a dropped channel is one constant value
    assert dropped.any() and not dropped.all()
    for name in ("feature_dropout_", "feature_alpha_dropout_"):
        y = dg.tensor(rng.uniform(1, 2, (4, 3, 2)))
        before = y.numpy().copy()
        assert getattr(dg, name)(y, 0.5, True) is y and not np.array_equal(y.numpy(), before)
