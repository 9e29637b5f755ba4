"""torch's top-level ATen native forms: native_layer_norm / native_group_norm / native_batch_norm (output and
statistics), native_dropout, native_channel_shuffle, grid_sampler(_2d/_3d), affine_grid_generator, conv_tbc and
embedding_renorm_: against torch 2.13 in float64 (forward and gradient), finite differences, torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import InputRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(21)


@pytest.mark.parametrize("normalized", [[4], [3, 4]])
@pytest.mark.parametrize("affine", [False, True])
def test_native_layer_norm_matches_torch_with_its_statistics(normalized, affine):
    x = rng.standard_normal((2, 3, 4))
    w, b = rng.standard_normal(normalized), rng.standard_normal(normalized)
    if affine:
        outs = check(lambda a, c, d: dg.native_layer_norm(a, normalized, c, d, 1e-5),
                     lambda a, c, d: torch.native_layer_norm(a, normalized, c, d, 1e-5), x, w, b)  # fmt: skip
    else:
        outs = check(lambda a: dg.native_layer_norm(a, normalized, None, None, 1e-5),
                     lambda a: torch.native_layer_norm(a, normalized, None, None, 1e-5), x)  # fmt: skip
    assert not outs[1].requires_grad and not outs[2].requires_grad  # as torch's: statistics without a graph
    assert dg.autograd.gradcheck(lambda a: dg.native_layer_norm(a, normalized, None, None, 1e-5)[0],
                                 (dg.tensor(x, requires_grad=True),))  # fmt: skip


def test_native_layer_norm_refuses_a_shape_that_does_not_end_the_input_as_torch():
    message = r"Given normalized_shape=\[3\], expected input with shape \[\*, 3\], but got input of size\[4, 3, 5\]"
    with pytest.raises(RuntimeError, match=message):
        torch.native_layer_norm(torch.ones(4, 3, 5), [3], None, None, 1e-5)
    with pytest.raises(ShapeError, match=message):
        dg.native_layer_norm(dg.ones(4, 3, 5), [3], None, None, 1e-5)


@pytest.mark.parametrize("shape,group", [((4, 6, 5), 3), ((2, 4, 3, 2), 2), ((3, 2), 1)])
def test_native_group_norm_matches_torch_with_differentiable_statistics(shape, group):
    n, c, hxw = shape[0], shape[1], int(np.prod(shape[2:]))
    x, w, b = rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)
    check(lambda a, k, d: dg.native_group_norm(a, k, d, n, c, hxw, group, 1e-5),
          lambda a, k, d: torch.native_group_norm(a, k, d, n, c, hxw, group, 1e-5), x, w, b)  # fmt: skip
    assert dg.autograd.gradcheck(lambda a: dg.native_group_norm(a, None, None, n, c, hxw, group, 1e-5)[2],
                                 (dg.tensor(x, requires_grad=True),))  # fmt: skip


def test_native_group_norm_refuses_what_torch_refuses():
    x, tx = dg.ones(4, 3, 5), torch.ones(4, 3, 5)
    message = r"Expected number of channels in input to be divisible by num_groups, but got input of shape \[4, 3, 5\]"
    with pytest.raises(RuntimeError, match=message):
        torch.native_group_norm(tx, None, None, 4, 3, 5, 2, 1e-5)
    with pytest.raises(ShapeError, match=message):
        dg.native_group_norm(x, None, None, 4, 3, 5, 2, 1e-5)
    with pytest.raises(RuntimeError, match="Expected X.numel\\(\\) == N \\* C \\* HxW"):
        torch.native_group_norm(tx, None, None, 4, 3, 6, 1, 1e-5)
    with pytest.raises(ShapeError, match="Expected X.numel\\(\\) == N \\* C \\* HxW"):
        dg.native_group_norm(x, None, None, 4, 3, 6, 1, 1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_native_batch_norm_matches_torch_with_statistics_and_running_updates(training):
    x, w, b = rng.standard_normal((4, 3, 5)), rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), np.abs(rng.standard_normal(3)) + 0.5
    ours_rm, ours_rv, theirs_rm, theirs_rv = dg.tensor(rm), dg.tensor(rv), torch.tensor(rm), torch.tensor(rv)
    outs = check(lambda a, k, d: dg.native_batch_norm(a, k, d, ours_rm, ours_rv, training, 0.1, 1e-5),
                 lambda a, k, d: torch.native_batch_norm(a, k, d, theirs_rm, theirs_rv, training, 0.1, 1e-5),
                 x, w, b)  # fmt: skip
    assert not outs[1].requires_grad and tuple(outs[1].shape) == ((3,) if training else (0,))
    np.testing.assert_allclose(ours_rm.numpy(), theirs_rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_rv.numpy(), theirs_rv.numpy(), rtol=1e-12)
    assert dg.autograd.gradcheck(lambda a: dg.native_batch_norm(a, None, None, None, None, True, 0.1, 1e-5)[0],
                                 (dg.tensor(x, requires_grad=True),))  # fmt: skip


@pytest.mark.parametrize("p,train", [(0.3, True), (0.0, True), (1.0, True), (0.5, False)])
def test_native_dropout_returns_the_output_and_its_keep_mask_as_torch(p, train):
    x = dg.tensor(rng.standard_normal((50, 40)), requires_grad=True)
    out, mask = dg.native_dropout(x, p, train)
    t_out, t_mask = torch.native_dropout(torch.tensor(x.detach().numpy(), requires_grad=True), p, train)
    assert mask.dtype == dg.bool and t_mask.dtype == torch.bool and out.requires_grad == t_out.requires_grad
    kept = mask.numpy()
    scale = 0.0 if p == 1 else (1 / (1 - p) if train else 1.0)
    np.testing.assert_allclose(out.detach().numpy(), np.where(kept, x.detach().numpy() * scale, 0.0), rtol=1e-12)
    if p in (0.0, 1.0) or not train:  # deterministic masks: torch's exactly
        assert np.array_equal(kept, t_mask.numpy())
    else:
        assert abs(kept.mean() - (1 - p)) < 0.06
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept * scale, rtol=1e-12)


def test_native_dropout_refuses_a_probability_outside_0_1_as_torch():
    with pytest.raises(RuntimeError, match=r"bernoulli_ expects p to be in \[0, 1\], but got p=-0.5"):
        torch.native_dropout(torch.ones(3), 1.5, True)
    with pytest.raises(InputRangeError, match=r"bernoulli_ expects p to be in \[0, 1\], but got p=-0.5"):
        dg.native_dropout(dg.ones(3), 1.5, True)


def test_native_channel_shuffle_matches_torch():
    x = rng.standard_normal((2, 4, 3))
    check(lambda a: dg.native_channel_shuffle(a, 2), lambda a: torch.native_channel_shuffle(a, 2), x, grad=False)
    # torch has no derivative for it: the gradient is channel_shuffle's, checked by finite differences
    assert dg.autograd.gradcheck(lambda a: dg.native_channel_shuffle(a, 2), (dg.tensor(x, requires_grad=True),))


@pytest.mark.parametrize("interpolation", [0, 1, 2])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sampler_2d_takes_atens_codes_as_torch(interpolation, padding, align):
    x, grid = rng.standard_normal((2, 2, 4, 5)), rng.uniform(-1.2, 1.2, (2, 3, 3, 2))
    for name in ("grid_sampler", "grid_sampler_2d"):
        check(lambda a, g: getattr(dg, name)(a, g, interpolation, padding, align),
              lambda a, g: getattr(torch, name)(a, g, interpolation, padding, align), x, grid,
              grad=interpolation != 1)  # fmt: skip


@pytest.mark.parametrize("interpolation", [0, 1])
def test_grid_sampler_3d_matches_torch(interpolation):
    x, grid = rng.standard_normal((1, 2, 3, 4, 3)), rng.uniform(-1, 1, (1, 2, 2, 3, 3))
    check(lambda a, g: dg.grid_sampler_3d(a, g, interpolation, 1, False),
          lambda a, g: torch.grid_sampler_3d(a, g, interpolation, 1, False), x, grid, grad=interpolation == 0)  # fmt: skip
    assert dg.autograd.gradcheck(lambda a: dg.grid_sampler(a, dg.tensor(grid), 0, 0, True),
                                 (dg.tensor(x, requires_grad=True),))  # fmt: skip


def test_grid_sampler_of_a_rank_refuses_another_as_torch():
    message = r"grid_sampler\(\): expected 4D input and grid with same number of dimensions, but got input with sizes \[1, 1, 3, 3, 3\]"
    with pytest.raises(RuntimeError, match=message):
        torch.grid_sampler_2d(torch.ones(1, 1, 3, 3, 3), torch.ones(1, 2, 2, 2, 3), 0, 0, False)
    with pytest.raises(ShapeError, match=message):
        dg.grid_sampler_2d(dg.ones(1, 1, 3, 3, 3), dg.ones(1, 2, 2, 2, 3), 0, 0, False)
    with pytest.raises(InputRangeError, match="interpolation_mode must be 0, 1 or 2"):
        dg.grid_sampler(dg.ones(1, 1, 3, 3), dg.ones(1, 2, 2, 2), 3, 0, False)


@pytest.mark.parametrize("size", [[2, 1, 3, 4], [2, 2, 2, 3, 4]])
def test_affine_grid_generator_matches_torch(size):
    theta = rng.standard_normal((2, 2, 3) if len(size) == 4 else (2, 3, 4))
    check(lambda t: dg.affine_grid_generator(t, size, False), lambda t: torch.affine_grid_generator(t, size, False),
          theta)  # fmt: skip


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_conv_tbc_matches_torch_with_finite_differences(pad):
    x, w, b = rng.standard_normal((6, 2, 3)), rng.standard_normal((3, 3, 4)), rng.standard_normal(4)
    check(lambda a, k, c: dg.conv_tbc(a, k, c, pad), lambda a, k, c: torch.conv_tbc(a, k, c, pad), x, w, b)
    tensors = tuple(dg.tensor(v, requires_grad=True) for v in (x, w, b))
    assert dg.autograd.gradcheck(lambda a, k, c: dg.conv_tbc(a, k, c, pad), tensors)


@pytest.mark.parametrize(
    "x,w,b,message",
    [((5, 2, 3), (3, 2, 4), (4,), "Input dim 2 \\(input channels\\) is not == dim 1 in the weight tensor"),
     ((5, 2, 3), (3, 3, 4), (5,), "Bias size must equal dim 2 in the weight tensor \\(output channels\\)"),
     ((5, 2), (3, 3, 4), (4,), "Input must have 3 dims: time, batch, in_channel")],
)  # fmt: skip
def test_conv_tbc_refuses_what_torch_refuses(x, w, b, message):
    with pytest.raises(RuntimeError, match=message):
        torch.conv_tbc(torch.ones(x), torch.ones(w), torch.ones(b), 1)
    with pytest.raises(ShapeError, match=message):
        dg.conv_tbc(dg.ones(x), dg.ones(w), dg.ones(b), 1)


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (0.5, 1.0), (100.0, 2.0)])
def test_embedding_renorm_rescales_the_rows_looked_up_in_place_as_torch(max_norm, norm_type):
    w = rng.standard_normal((5, 3))
    ours, theirs = dg.tensor(w), torch.tensor(w)
    idx = [0, 2, 2, 4]
    assert dg.embedding_renorm_(ours, dg.tensor(idx), max_norm, norm_type) is ours
    torch.embedding_renorm_(theirs, torch.tensor(idx), max_norm, norm_type)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    assert ours._version == 1


def _flat_weights(mode, layers, bidirectional, bias):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}[mode]
    extra = {"nonlinearity": mode[4:]} if mode.startswith("rnn") else {}
    module = cls(3, 4, num_layers=layers, bidirectional=bidirectional, bias=bias, **extra).double()
    return [p.detach().numpy() for p in module._flat_weights]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers,bidirectional,bias,batch_first", [(1, False, True, False), (2, True, True, True),
                                                                    (2, False, False, False)])  # fmt: skip
def test_aten_rnns_over_flat_weights_match_torch(mode, layers, bidirectional, bias, batch_first):
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    h0, c0 = rng.standard_normal((layers * dirs, 2, 4)), rng.standard_normal((layers * dirs, 2, 4))
    weights = _flat_weights(mode, layers, bidirectional, bias)

    def run(lib, a, h, c, *w):
        hx = (h, c) if mode == "lstm" else h
        return getattr(lib, mode)(a, hx, list(w), bias, layers, 0.0, False, bidirectional, batch_first)

    check(lambda *t: run(dg, *t), lambda *t: run(torch, *t), x, h0, c0, *weights)
    if layers == 1 and not bidirectional:
        tensors = (dg.tensor(x, requires_grad=True), dg.tensor(h0), dg.tensor(c0), *map(dg.tensor, weights))
        assert dg.autograd.gradcheck(lambda a: run(dg, a, *tensors[1:])[0], tensors[:1])


def test_aten_rnn_refuses_a_wrong_number_of_weights():
    weights = [dg.tensor(w) for w in _flat_weights("gru", 1, False, True)]
    with pytest.raises(RuntimeError, match="got an incorrect number of RNN parameters"):
        torch.gru(torch.ones(5, 2, 3), torch.zeros(1, 2, 4), [torch.tensor(w.numpy()) for w in weights[:-1]], True,
                  1, 0.0, False, False, False)  # fmt: skip
    with pytest.raises(ShapeError, match="got an incorrect number of RNN parameters"):
        dg.gru(dg.ones(5, 2, 3), dg.zeros(1, 2, 4), weights[:-1], True, 1, 0.0, False, False, False)
