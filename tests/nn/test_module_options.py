"""Options of nn modules and nn.functional that the differential fuzz (test_module_fuzz.py) found apart
from torch, each pinned by a direct case: in-place activations and dropout, torch's implicit softmax dim,
the rank rules of channel dropout, adaptive max pooling's indices and tied maxima, embedding's
scale_grad_by_freq, the variance shapes of gaussian_nll_loss, and the errors and warnings torch gives.
"""

import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import AutogradError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional


def _warned(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(
    "name,args",
    [("relu", ()), ("relu6", ()), ("elu", (0.5,)), ("leaky_relu", (0.2,)), ("hardtanh", (-0.5, 0.7)), ("silu", ()),
     ("mish", ()), ("selu", ()), ("celu", (2.0,)), ("hardsigmoid", ()), ("hardswish", ()), ("threshold", (0.1, -3.0))],
)  # fmt: skip
def test_functional_inplace_writes_the_input_and_backpropagates_as_torch(name, args):
    x = np.random.default_rng(0).standard_normal((3, 4)) * 3
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd, yt = xd * 2.0, xt * 2.0
    od, ot = getattr(F, name)(yd, *args, inplace=True), getattr(TF, name)(yt, *args, inplace=True)
    assert od is yd and ot is yt
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-12)
    (od * od).sum().backward(), (ot * ot).sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-7)  # torch: 1/6 as a float32 constant


def test_inplace_activation_refuses_a_leaf_that_requires_grad():
    with pytest.raises(AutogradError, match="relu_: a leaf Variable that requires grad"):
        nn.ReLU(inplace=True)(dg.ones(3, requires_grad=True))
    x = dg.tensor([-1.0, 2.0])  # no grad: written in place
    assert nn.ReLU(inplace=True)(x) is x and x.tolist() == [0.0, 2.0]


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout"])
def test_inplace_dropout_writes_the_input(name):
    x = dg.ones(200, 50, dtype=dg.float64, requires_grad=True)
    y = x * 1.0
    out = getattr(F, name)(y, 0.4, True, inplace=True)
    assert out is y
    out.sum().backward()
    if name == "dropout":  # the gradient is the mask the output shows
        np.testing.assert_array_equal(x.grad.numpy(), np.where(y.detach().numpy() != 0, 1 / 0.6, 0.0))
    evaluated = dg.ones(3)
    assert getattr(F, name)(evaluated, 0.4, False, inplace=True) is evaluated


@pytest.mark.parametrize("op", ["dropout1d", "dropout2d", "dropout3d"])
@pytest.mark.parametrize("ndim", range(6))
def test_channel_dropout_reads_each_rank_as_torch(op, ndim):
    """Which dims a channel mask is constant along, whether it raises, whether it warns: all as torch
    (dropout2d reads a 3-D input as (N, C, L); dropout3d reads all but 5-D input as unbatched)."""
    x = np.ones((40, 30, 2, 3, 2)[:ndim])  # wide enough that no random mask looks constant by chance

    def pattern(fn, make):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                y = np.asarray(fn(make(x), 0.5, True))
            except (RuntimeError, ValueError):
                return "raises"
        return tuple(d for d in range(ndim) if (y == np.take(y, [0], axis=d)).all()), len(caught)

    assert pattern(getattr(F, op), dg.tensor) == pattern(getattr(TF, op), torch.tensor)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_softmax_without_dim_uses_torchs_implicit_dim_and_warns(name, ndim):
    x = np.random.default_rng(ndim).standard_normal((2, 3, 4, 5)[:ndim])
    with pytest.warns(UserWarning, match=f"Implicit dimension choice for {name} has been deprecated"):
        check(lambda a: getattr(F, name)(a), lambda a: getattr(TF, name)(a), x)
    module = {"softmax": nn.Softmax, "log_softmax": nn.LogSoftmax, "softmin": nn.Softmin}[name]
    with pytest.warns(UserWarning, match="Implicit dimension"):
        module()(dg.tensor(x))


def test_prelu_keeps_a_0d_input_and_refuses_a_slope_count_that_is_not_the_channels():
    check(lambda x, w: F.prelu(x, w), lambda x, w: TF.prelu(x, w), np.array(-2.0), np.array([0.3]))
    check(lambda x, w: F.prelu(x, w), lambda x, w: TF.prelu(x, w), np.array([-2.0, 1.0, -1.0]), np.array([0.3]))
    with pytest.raises(ShapeError, match=r"prelu: .*3 slopes for input \(3,\) with 1 channel"):
        nn.PReLU(3)(dg.tensor([-2.0, 1.0, -1.0]))


@pytest.mark.parametrize("shape,out", [((1, 1, 5, 5), 3), ((2, 3, 7, 4), (3, 3)), ((2, 6, 9), (4, 5))])
def test_adaptive_max_pool_with_uneven_windows_returns_torchs_indices_and_routes_ties_to_them(shape, out):
    """Windows that overlap (sizes not divisible) and tied maxima, as after a ReLU: each output's gradient
    goes to torch's pick (the first maximum, row-major) alone, never split among the ties."""
    rng = np.random.default_rng(0)
    for x in (np.zeros(shape), np.maximum(np.round(rng.standard_normal(shape)), 0), rng.standard_normal(shape)):
        check(lambda a: F.adaptive_max_pool2d(a, out, return_indices=True),
              lambda a: TF.adaptive_max_pool2d(a, out, return_indices=True), x)  # fmt: skip
        check(lambda a: F.adaptive_max_pool1d(a.reshape(*a.shape[:-2], -1), 5),
              lambda a: TF.adaptive_max_pool1d(a.reshape(*a.shape[:-2], -1), 5), x)  # fmt: skip


def test_adaptive_max_pool_second_derivative_matches_torch():
    x, g = (
        np.random.default_rng(1).standard_normal((2, 3, 7, 5)),
        np.random.default_rng(2).standard_normal((2, 3, 3, 2)),
    )
    results = []
    for lib, pool in ((dg, F.adaptive_max_pool2d), (torch, TF.adaptive_max_pool2d)):
        a, seed = lib.tensor(x, requires_grad=True), lib.tensor(g, requires_grad=True)
        (ga,) = lib.autograd.grad(pool(a, (3, 2)), a, seed, create_graph=True)
        (ga * ga).sum().backward()
        results.append(np.asarray(seed.grad.numpy()))
    np.testing.assert_allclose(*results, rtol=1e-12)


def test_group_norm_refuses_one_value_per_group_as_torch():
    with pytest.raises(ValueError, match=r"group_norm: expected more than 1 value per group, got input \(1, 3\)"):
        nn.GroupNorm(3, 3)(dg.ones(1, 3))
    with pytest.raises(ValueError):
        TF.group_norm(torch.ones(1, 3), 3)


def test_embedding_scale_grad_by_freq_divides_each_rows_gradient_by_its_count():
    ids = np.array([[0, 2, 2], [2, 4, 0]])
    w = np.random.default_rng(0).standard_normal((5, 3))
    check(lambda w: F.embedding(dg.tensor(ids), w, padding_idx=4, scale_grad_by_freq=True),
          lambda w: TF.embedding(torch.tensor(ids), w, padding_idx=4, scale_grad_by_freq=True), w)  # fmt: skip
    e = nn.Embedding.from_pretrained(dg.tensor(w), freeze=False, scale_grad_by_freq=True)
    assert repr(e) == repr(torch.nn.Embedding.from_pretrained(torch.tensor(w), scale_grad_by_freq=True))
    with pytest.raises(NotImplementedError, match="sparse"):
        nn.Embedding(5, 3, sparse=True)


def test_embedding_scale_grad_by_freq_second_derivative_keeps_the_scaling():
    """torch's double backward of the embedding drops the 1/count scaling; distgraph differentiates the
    scaled gradient it returns: d(grad)/d(upstream) is that same scaled scatter."""
    ids = dg.tensor(np.array([0, 1, 1, 3, 1]))
    w = dg.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    seed = dg.tensor(np.random.default_rng(1).standard_normal((5, 3)), requires_grad=True)
    (gw,) = dg.autograd.grad(F.embedding(ids, w, scale_grad_by_freq=True), w, seed, create_graph=True)
    (gw * gw).sum().backward()
    counts = np.bincount(ids.numpy(), minlength=4)
    np.testing.assert_allclose(seed.grad.numpy(), 2 * gw.detach().numpy()[ids.numpy()] / counts[ids.numpy()][:, None])


@pytest.mark.parametrize("var_shape", [(4, 3), (4,), (4, 1), (1, 3), ()])
def test_gaussian_nll_loss_takes_the_variance_shapes_torch_takes(var_shape):
    rng = np.random.default_rng(0)
    x, t, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), np.abs(rng.standard_normal(var_shape)) + 0.1
    try:
        TF.gaussian_nll_loss(torch.tensor(x), torch.tensor(t), torch.tensor(v))
    except ValueError:
        with pytest.raises(ValueError, match="var is of incorrect size"):
            F.gaussian_nll_loss(dg.tensor(x), dg.tensor(t), dg.tensor(v))
        return
    check(F.gaussian_nll_loss, TF.gaussian_nll_loss, x, t, v)


def test_gaussian_nll_loss_refuses_a_negative_variance_and_takes_a_float():
    x, t = np.random.default_rng(0).standard_normal((2, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match="var has negative entry"):
        F.gaussian_nll_loss(dg.tensor(x), dg.tensor(t), dg.tensor(-np.ones((2, 3))))
    check(lambda a, b: F.gaussian_nll_loss(a, b, 0.5), lambda a, b: TF.gaussian_nll_loss(a, b, 0.5), x, t)


def test_kl_div_mean_warns_as_torch_and_batchmean_does_not():
    x, t = dg.tensor([[-1.0, -2.0]]), dg.tensor([[0.3, 0.7]])
    assert any("'batchmean' divides only by the batch size" in m for m in _warned(F.kl_div, x, t))
    assert not _warned(F.kl_div, x, t, reduction="batchmean")


def test_poisson_nll_loss_full_with_zero_targets_is_quiet_and_matches_torch():
    x, t = np.array([0.3, -1.0, 2.0, 0.5]), np.array([0.0, 1.0, 3.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) on the masked-out targets used to warn
        check(lambda a: F.poisson_nll_loss(a, dg.tensor(t), full=True),
              lambda a: TF.poisson_nll_loss(a, torch.tensor(t), full=True), x)  # fmt: skip


def test_recurrent_dropout_with_one_layer_warns_as_torch():
    for cls in (nn.RNN, nn.GRU, nn.LSTM):
        assert any("non-zero dropout expects num_layers greater than 1" in m for m in _warned(cls, 2, 3, dropout=0.2))
        assert not _warned(cls, 2, 3, num_layers=2, dropout=0.2)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_pointwise_losses_take_torchs_elementwise_weight(name, reduction):
    rng = np.random.default_rng(0)
    x, t, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), np.abs(rng.standard_normal((3, 4)))
    check(lambda a, b, c: getattr(F, name)(a, b, reduction=reduction, weight=c),
          lambda a, b, c: getattr(TF, name)(a, b, reduction=reduction, weight=c), x, t, w)  # fmt: skip
    with pytest.raises(ValueError, match=f"{name}: weights and input must have the same size"):
        getattr(F, name)(dg.tensor(x), dg.tensor(t), weight=dg.tensor(w[0]))


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("kwargs", [dict(num_layers=0), dict(hidden_size=0)])
def test_recurrent_layers_refuse_zero_layers_or_units_as_torch(cls, kwargs):
    kwargs = {"input_size": 2, "hidden_size": 3, **kwargs}
    with pytest.raises(ValueError):
        getattr(torch.nn, cls)(**kwargs)
    with pytest.raises(ValueError, match=f"{cls}: {next(iter(k for k in kwargs if kwargs[k] == 0))} must be"):
        getattr(nn, cls)(**kwargs)


@pytest.mark.parametrize("shapes", [((4, 4, 3), (1, 1, 1), 0), ((1, 4, 3), (1, 1, 3), 0), ((4, 1, 2), (4, 1, 2), 1)])
def test_cosine_similarity_broadcasts_first_and_floors_norms_in_value_only(shapes):
    """A broadcast size-1 dim counts once per copy in the norm; a norm under eps is floored in value
    while its gradient stays the norm's (torch clamps in place under no_grad)."""
    s1, s2, dim = shapes
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(s1), rng.standard_normal(s2) * 0.1
    check(
        lambda a, b: F.cosine_similarity(a, b, dim, eps=0.5),
        lambda a, b: TF.cosine_similarity(a, b, dim, eps=0.5),
        x,
        y,
    )
    check(lambda a, b: F.cosine_similarity(a, b, dim), lambda a, b: TF.cosine_similarity(a, b, dim), x, y)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize(
    "kernel,kwargs", [(3, {}), (2, dict(dilation=3)), (3, dict(ceil_mode=True)), (3, dict(padding=1))]
)
def test_pooling_refuses_an_empty_output_as_torch(name, kernel, kwargs):
    if name == "avg_pool2d" and "dilation" in kwargs:
        return
    x = np.zeros((1, 1, 2, 2))
    try:
        expected = getattr(TF, name)(torch.tensor(x), kernel, **kwargs).shape
    except RuntimeError:
        with pytest.raises(ShapeError, match=rf"{name}: given input size \(1x2x2\), .* output size is too small"):
            getattr(F, name)(dg.tensor(x), kernel, **kwargs)
        return
    assert tuple(getattr(F, name)(dg.tensor(x), kernel, **kwargs).shape) == tuple(expected)


def test_flatten_of_a_0d_tensor_takes_dims_minus_one_and_zero_only():
    assert tuple(dg.tensor(1.0).flatten(-1, 0).shape) == tuple(torch.tensor(1.0).flatten(-1, 0).shape) == (1,)
    with pytest.raises(ShapeError, match="flatten"):
        nn.Flatten()(dg.tensor(1.0))


@pytest.mark.parametrize("cell", [nn.RNNCell(3, 4), nn.GRUCell(3, 4), nn.LSTMCell(3, 4)])
def test_cells_name_themselves_on_a_wrong_input_size(cell):
    with pytest.raises(ShapeError, match=rf"{type(cell).__name__}: expected input of shape \(N, 3\)"):
        cell(dg.zeros(2, 5))
    with pytest.raises(ShapeError, match="bilinear: inputs"):
        nn.Bilinear(2, 3, 4)(dg.zeros(2, 2), dg.zeros(2, 4))


def test_margin_ranking_loss_refuses_inputs_of_different_ranks_as_torch():
    a, b, y = np.zeros((3, 1)), np.zeros(3), np.ones(3)
    with pytest.raises(RuntimeError):
        TF.margin_ranking_loss(torch.tensor(a), torch.tensor(b), torch.tensor(y))
    with pytest.raises(ShapeError, match=r"margin_ranking_loss: .* input1 \(3, 1\), input2 \(3,\)"):
        F.margin_ranking_loss(dg.tensor(a), dg.tensor(b), dg.tensor(y))
    check(F.margin_ranking_loss, TF.margin_ranking_loss, np.zeros((3, 1)) + 0.5, np.zeros((1, 2)), np.ones((3, 2)))


@pytest.mark.parametrize("name,args", [("threshold", (0.5, -2.0)), ("hardshrink", (0.5,)), ("softshrink", (0.5,))])
def test_thresholding_activations_keep_nan_and_infinities_as_torch(name, args):
    """A NaN input stays NaN (it was replaced by the fill value, hiding it), with torch's gradient there."""
    x = np.array([np.nan, np.inf, -np.inf, 0.5, -0.5, 0.0, 2.0, -2.0])
    check(lambda a: getattr(F, name)(a, *args), lambda a: getattr(TF, name)(a, *args), x)


def test_softshrink_and_celu_refuse_the_parameters_torch_refuses():
    with pytest.raises(ValueError, match="softshrink: lambda must be non-negative"):
        nn.Softshrink(-1.0)(dg.ones(2))
    with pytest.raises(ZeroDivisionError, match="celu: alpha cannot be 0"):
        nn.CELU(0.0)(dg.ones(2))


@pytest.mark.parametrize(
    "name,args,shape",
    [("GroupNorm", (1, 3), (0, 3, 2)), ("GroupNorm", (3, 3), (0, 3)), ("AdaptiveMaxPool2d", (3,), (0, 1, 5, 5)),
     ("AdaptiveMaxPool1d", (3,), (0, 2, 5)), ("Conv1d", (2, 3, 3, 1, 1, 1, 1, True, "reflect"), (0, 2, 5)),
     ("LayerNorm", (3,), (0, 3)), ("AdaptiveAvgPool2d", (3,), (0, 1, 5, 4)), ("Linear", (3, 2), (0, 3))],
)  # fmt: skip
def test_an_empty_batch_passes_forward_and_backward_as_torch(name, args, shape):
    """N = 0 (a reshape to -1 is ambiguous there: group_norm and uneven adaptive max pooling raised)."""
    grads = []
    for lib, make in ((nn, dg.tensor), (torch.nn, torch.tensor)):
        m = getattr(lib, name)(*args).double()
        x = make(np.zeros(shape), requires_grad=True)
        m(x).sum().backward()
        grads.append([tuple(x.grad.shape)] + [tuple(p.grad.shape) for p in m.parameters()])
    assert grads[0] == grads[1]


def test_modules_have_torchs_reset_and_recurrent_helpers():
    """reset_parameters (Bilinear, the norms, the cells), BatchNorm's reset_running_stats, an RNN's
    all_weights and flatten_parameters (a no-op here), a conv's `transposed`: code written for torch calls them."""
    for m in (nn.LayerNorm(3), nn.GroupNorm(1, 3), nn.RMSNorm(3), nn.BatchNorm1d(3)):
        for p in m.parameters():
            p.detach().fill_(7.0)
        m.reset_parameters()
        assert [p.tolist() for p in m.parameters()] == [[1.0] * 3, [0.0] * 3][: len(list(m.parameters()))]
    bn = nn.BatchNorm1d(3)
    bn(dg.randn(4, 3) * 3 + 1)
    bn.reset_running_stats()
    assert (
        bn.running_mean.tolist() == [0.0] * 3
        and bn.running_var.tolist() == [1.0] * 3
        and bn.num_batches_tracked.item() == 0
    )
    for m, bound in ((nn.Bilinear(4, 3, 2), 0.5), (nn.GRUCell(2, 16), 0.25)):
        for p in m.parameters():
            p.detach().fill_(7.0)
        m.reset_parameters()
        assert all(np.abs(p.detach().numpy()).max() <= bound for p in m.parameters())
    lstm, ref = (
        nn.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=1),
        torch.nn.LSTM(2, 3, 2, bidirectional=True, proj_size=1),
    )
    lstm.flatten_parameters()
    names = {id(p): n for n, p in lstm.named_parameters()}
    tnames = {id(p): n for n, p in ref.named_parameters()}
    assert [[names[id(p)] for p in ps] for ps in lstm.all_weights] == [
        [tnames[id(p)] for p in ps] for ps in ref.all_weights
    ]
    assert nn.Conv2d(1, 1, 1).transposed is False and nn.ConvTranspose2d(1, 1, 1).transposed is True


def test_relu_passes_the_gradient_at_a_nan_input_as_torch():
    """torch's threshold_backward zeroes where the output is ≤ 0; a NaN output is not, so g passes."""
    check(F.relu, TF.relu, np.array([np.nan, -1.0, 0.0, 2.0]))
    check(lambda a: F.relu(a, inplace=False) * 2, lambda a: TF.relu(a) * 2, np.array([[np.nan, 3.0], [-2.0, 0.0]]))
