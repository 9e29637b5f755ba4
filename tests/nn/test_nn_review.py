"""Divergences from torch found by a review of the nn layers, each pinned against torch: embedding max_norm
for every norm_type, class-weight lengths, 1-d conv/pool arguments of the wrong length, the norm layers'
weight shapes, the key_padding_mask check under static_k, embedding_bag's max mode, the recurrent layers'
state/dtype/length checks, empty adaptive pools, BCE-with-logits weights and the legacy size_average/reduce.
"""

import inspect
import math
import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import DTypeError, ShapeError

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional
rng = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy()


# ---- 1. embedding max_norm -------------------------------------------------------------------------------------
_ROWS = np.array([[3.0, -4.0, 0.0], [0.5, 0.2, 0.1], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])


@pytest.mark.parametrize("norm_type", [math.inf, 0, -math.inf, 3])  # inf and 0 were wrong; -inf, 3 guard
def test_embedding_max_norm_renorms_as_torch_for_every_norm_type(norm_type):
    dm = nn.Embedding(4, 3, max_norm=1.0, norm_type=norm_type, _weight=dg.tensor(_ROWS.copy()))
    tm = torch.nn.Embedding(4, 3, max_norm=1.0, norm_type=norm_type, _weight=torch.tensor(_ROWS.copy()))
    idx = np.array([0, 1, 2, 3, 0])
    np.testing.assert_allclose(_np(dm(dg.tensor(idx))), _np(tm(torch.tensor(idx))), rtol=1e-12)
    np.testing.assert_allclose(_np(dm.weight), _np(tm.weight), rtol=1e-12)


@pytest.mark.parametrize("norm_type", [math.inf, 0])
def test_embedding_bag_max_norm_renorms_as_torch(norm_type):
    dw, tw = dg.tensor(_ROWS.copy()), torch.tensor(_ROWS.copy())
    idx, offs = np.array([0, 1, 3, 2]), np.array([0, 2])
    out = F.embedding_bag(dg.tensor(idx), dw, dg.tensor(offs), max_norm=1.0, norm_type=norm_type)
    ref = TF.embedding_bag(torch.tensor(idx), tw, torch.tensor(offs), max_norm=1.0, norm_type=norm_type)
    np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12)
    np.testing.assert_allclose(_np(dw), _np(tw), rtol=1e-12)


# ---- 2. class weights of the wrong length -----------------------------------------------------------------------
_LOGITS = rng.standard_normal((2, 5))


@pytest.mark.parametrize(
    "call",
    [
        lambda f, T: f.cross_entropy(T(_LOGITS), T(np.array([1, 2])), T(np.ones(4))),
        lambda f, T: f.cross_entropy(T(_LOGITS), T(np.full((2, 5), 0.2)), T(np.ones(4))),  # probabilities
        lambda f, T: f.cross_entropy(T(_LOGITS), T(np.array([1, 2])), T(np.ones((1, 5)))),
        lambda f, T: f.nll_loss(T(_LOGITS), T(np.array([1, 2])), T(np.ones(6))),
    ],
)
def test_class_weight_must_have_one_value_per_class(call):
    with pytest.raises(RuntimeError, match="weight tensor should be defined either for all 5 classes"):
        call(TF, torch.tensor)
    with pytest.raises(ShapeError, match="weight tensor should be defined either for all 5 classes"):
        call(F, dg.tensor)


# ---- 3. 1-d convolution and pooling arguments ---------------------------------------------------------------------
_X1 = rng.standard_normal((2, 3, 8))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda f, T: f.conv1d(T(_X1), T(np.ones((4, 3, 3))), stride=(2, 3)), "stride"),
        (lambda f, T: f.conv1d(T(_X1), T(np.ones((4, 3, 3))), padding=(1, 1)), "padding"),
        (lambda f, T: f.conv1d(T(_X1), T(np.ones((4, 3, 3))), dilation=(1, 2)), "dilation"),
        (lambda f, T: f.conv_transpose1d(T(_X1), T(np.ones((3, 4, 3))), stride=(2, 3)), "stride"),
        (lambda f, T: f.conv_transpose1d(T(_X1), T(np.ones((3, 4, 3))), padding=(0, 1)), "padding"),
        (lambda f, T: f.max_pool1d(T(_X1), (2, 3)), "kernel_size"),
        (lambda f, T: f.max_pool1d(T(_X1), 2, (1, 2)), "stride"),
        (lambda f, T: f.avg_pool1d(T(_X1), (2, 3)), "kernel_size"),
        (lambda f, T: f.avg_pool1d(T(_X1), 2, (2, 3)), "stride"),
        (lambda f, T: f.adaptive_avg_pool1d(T(_X1), (2, 3)), "output_size"),
        (lambda f, T: f.adaptive_max_pool1d(T(_X1), (2, 3)), "output_size"),
        (lambda f, T: f.lp_pool1d(T(_X1), 2, (2, 3)), "kernel_size"),
    ],
)
def test_1d_conv_and_pool_refuse_a_tuple_of_another_length(call, name):
    with pytest.raises(RuntimeError, match=name):
        call(TF, torch.tensor)
    with pytest.raises(ShapeError, match=rf"1d: {name} must be an int or a tuple of 1 ints"):
        call(F, dg.tensor)


def test_1d_pool_and_conv_accept_one_element_tuples_as_torch():
    x, tx = dg.tensor(_X1), torch.tensor(_X1)
    w = rng.standard_normal((4, 3, 3))
    pairs = [
        (
            F.conv1d(x, dg.tensor(w), stride=(2,), padding=(1,)),
            TF.conv1d(tx, torch.tensor(w), stride=(2,), padding=(1,)),
        ),
        (F.max_pool1d(x, (3,), (2,), (1,)), TF.max_pool1d(tx, (3,), (2,), (1,))),
        (F.avg_pool1d(x, (3,), (2,)), TF.avg_pool1d(tx, (3,), (2,))),
        (F.adaptive_avg_pool1d(x, (3,)), TF.adaptive_avg_pool1d(tx, (3,))),
    ]
    for out, ref in pairs:
        np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12)


@pytest.mark.parametrize("cls", ["Conv1d", "ConvTranspose1d"])
def test_conv1d_module_refuses_a_stride_pair(cls):
    with pytest.raises(RuntimeError, match="stride"):  # torch: at the first call
        getattr(torch.nn, cls)(3, 4, 3, stride=(2, 3)).double()(torch.tensor(_X1))
    with pytest.raises(ShapeError, match=f"{cls}: stride must be an int or a tuple of 1 ints"):
        getattr(nn, cls)(3, 4, 3, stride=(2, 3))
    assert getattr(nn, cls)(3, 4, (3,), stride=(2,)).stride == getattr(torch.nn, cls)(3, 4, (3,), stride=(2,)).stride


# ---- 4. norm weights and conv biases ---------------------------------------------------------------------------
_XN = rng.standard_normal((2, 6, 4))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda f, T: f.rms_norm(T(_XN), (4,), T(np.ones(1))), r"rms_norm: expected weight to be of same shape"),
        (lambda f, T: f.rms_norm(T(_XN), (6, 4), T(np.ones(4))), r"rms_norm: expected weight to be of same shape"),
        (lambda f, T: f.group_norm(T(_XN), 2, T(np.ones(4))), r"group_norm: .*weight.*num_channels=6.*\(2, 6, 4\)"),
        (lambda f, T: f.group_norm(T(_XN), 3, None, T(np.ones(3))), r"group_norm: .*bias.*num_channels=6"),
        (lambda f, T: f.batch_norm(T(_XN), T(np.zeros(6)), T(np.ones(6)), T(np.ones(4))), "weight should contain 6"),
        (lambda f, T: f.batch_norm(T(_XN), None, None, None, T(np.ones(3)), True), "bias should contain 6"),
        (lambda f, T: f.batch_norm(T(_XN), T(np.zeros(4)), T(np.ones(4))), "running_mean should contain 6"),
        (
            lambda f, T: f.conv2d(T(np.ones((1, 3, 5, 5))), T(np.ones((4, 3, 3, 3))), T(np.ones(3))),
            r"expected bias to be 1-dimensional with 4 elements",
        ),  # fmt: skip
        (lambda f, T: f.conv1d(T(_X1), T(np.ones((4, 3, 3))), T(np.ones(5))), r"bias to be 1-dimensional with 4"),
        (
            lambda f, T: f.conv_transpose2d(T(np.ones((1, 3, 5, 5))), T(np.ones((3, 4, 3, 3))), T(np.ones(3))),
            r"bias to be 1-dimensional with 4 elements",
        ),  # fmt: skip
    ],
)
def test_norm_weights_and_conv_biases_must_match_the_channels(call, match):
    with pytest.raises(RuntimeError):
        call(TF, torch.tensor)
    with pytest.raises(ShapeError, match=match):
        call(F, dg.tensor)


# ---- 5. key_padding_mask under static_k ----------------------------------------------------------------------------
def _mha(f, T, m, q, k, mask, sk, sv):
    return f.multi_head_attention_forward(T(q), T(k), T(k), 8, 2, m.in_proj_weight, m.in_proj_bias, None, None, False,
                                          0.0, m.out_proj.weight, m.out_proj.bias, training=False,
                                          key_padding_mask=T(mask), static_k=T(sk), static_v=T(sv))  # fmt: skip


def test_key_padding_mask_is_checked_against_static_k_length():
    """static_k replaces the keys, so the mask covers its length (7), not the key's (5), as torch."""
    N, H, S_static = 3, 2, 7
    tm = torch.nn.MultiheadAttention(8, H).double()
    dm = nn.MultiheadAttention(8, H).double()
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    q, k = rng.standard_normal((4, N, 8)), rng.standard_normal((5, N, 8))
    sk, sv = rng.standard_normal((N * H, S_static, 4)), rng.standard_normal((N * H, S_static, 4))
    mask = rng.random((N, S_static)) > 0.7
    mask[:, 0] = False
    d_out, d_w = _mha(F, dg.tensor, dm, q, k, mask, sk, sv)
    t_out, t_w = _mha(TF, torch.tensor, tm, q, k, mask, sk, sv)
    np.testing.assert_allclose(_np(d_out), _np(t_out), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(d_w), _np(t_w), rtol=1e-10, atol=1e-12)
    with pytest.raises(ShapeError, match=r"key_padding_mask of shape \(3, 7\)"):
        _mha(F, dg.tensor, dm, q, k, np.zeros((N, 5), bool), sk, sv)  # the key's length, not static_k's


# ---- 6. embedding_bag max mode -------------------------------------------------------------------------------------
def test_embedding_bag_max_mode_refuses_scale_grad_by_freq():
    idx = np.array([[0, 1]])
    with pytest.raises(ValueError, match="max mode does not support scaling the gradient by the frequency"):
        torch.nn.EmbeddingBag(6, 4, mode="max", scale_grad_by_freq=True)(torch.tensor(idx))
    with pytest.raises(ValueError, match="max mode does not support scaling the gradient by the frequency"):
        nn.EmbeddingBag(6, 4, mode="max", scale_grad_by_freq=True)(dg.tensor(idx))
    with pytest.raises(ValueError, match="max mode does not support scaling the gradient by the frequency"):
        F.embedding_bag(dg.tensor(idx), dg.randn(6, 4), mode="max", scale_grad_by_freq=True)


# ---- 7. recurrent checks, empty adaptive pools, BCE-with-logits weights -----------------------------------------------
_XC = rng.standard_normal((3, 4))


@pytest.mark.parametrize(
    "cls,hx,match",
    [
        ("RNNCell", lambda T: T(np.zeros((3, 6))), r"RNNCell: expected hx of shape \(3, 5\)"),
        ("RNNCell", lambda T: T(np.zeros((2, 5))), r"RNNCell: expected hx of shape \(3, 5\)"),
        ("GRUCell", lambda T: T(np.zeros(5)), r"GRUCell: expected hx of shape \(3, 5\)"),
        ("LSTMCell", lambda T: (T(np.zeros((3, 5))), T(np.zeros((3, 6)))), r"LSTMCell: expected cx of shape \(3, 5\)"),
        ("LSTMCell", lambda T: (T(np.zeros((3, 5))),), r"LSTMCell: expected hx to be a tuple \(h, c\)"),
    ],
)
def test_rnn_cells_check_the_state_shape(cls, hx, match):
    with pytest.raises(RuntimeError):
        getattr(torch.nn, cls)(4, 5).double()(torch.tensor(_XC), hx(torch.tensor))
    with pytest.raises(ShapeError, match=match):
        getattr(nn, cls)(4, 5).double()(dg.tensor(_XC), hx(dg.tensor))


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU", "RNNCell", "GRUCell", "LSTMCell"])
def test_recurrent_layers_refuse_an_input_of_another_dtype(cls):
    x = rng.standard_normal((2, 3, 4) if "Cell" not in cls else (3, 4)).astype(np.float32)
    with pytest.raises((ValueError, RuntimeError)):
        getattr(torch.nn, cls)(4, 5).double()(torch.tensor(x))
    with pytest.raises(DTypeError, match=r"input dtype \(distgraph.float32\) does not match weight dtype"):
        getattr(nn, cls)(4, 5).double()(dg.tensor(x))


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("shape,batch_first", [((0, 3, 4), False), ((3, 0, 4), True), ((0, 4), False)])
def test_recurrent_layers_refuse_an_empty_sequence(cls, shape, batch_first):
    x = np.zeros(shape)
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
        getattr(torch.nn, cls)(4, 5, batch_first=batch_first).double()(torch.tensor(x))
    with pytest.raises(ShapeError, match=f"{cls}: expected sequence length to be larger than 0"):
        getattr(nn, cls)(4, 5, batch_first=batch_first).double()(dg.tensor(x))


@pytest.mark.parametrize(
    "name,size",
    [
        ("adaptive_avg_pool2d", 0),
        ("adaptive_avg_pool2d", (3, 0)),
        ("adaptive_max_pool2d", (0, 2)),
        ("adaptive_avg_pool1d", 0),
        ("adaptive_max_pool1d", 0),
    ],
)
def test_adaptive_pools_to_an_empty_output_match_torch(name, size):
    x = rng.standard_normal((2, 3, 5, 4) if name.endswith("2d") else (2, 3, 5))
    xd = dg.tensor(x, requires_grad=True)
    out, ref = getattr(F, name)(xd, size), getattr(TF, name)(torch.tensor(x), size)
    assert tuple(out.shape) == tuple(ref.shape)
    out.sum().backward()  # torch's own backward refuses the empty gradient; distgraph's is zeros
    np.testing.assert_array_equal(xd.grad.numpy(), np.zeros_like(x))
    if "max" in name:
        out, idx = getattr(F, name)(dg.tensor(x), size, return_indices=True)
        assert tuple(idx.shape) == tuple(getattr(TF, name)(torch.tensor(x), size, return_indices=True)[1].shape)


@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_pools_refuse_an_empty_spatial_dim(name):
    x = np.zeros((2, 3, 0, 4))
    with pytest.raises(RuntimeError, match="non-zero size for non-batch dimensions"):
        getattr(TF, name)(torch.tensor(x), 2)
    with pytest.raises(ShapeError, match=f"{name}: expected input to have non-zero size.*dimension 2 being empty"):
        getattr(F, name)(dg.tensor(x), 2)


@pytest.mark.parametrize("arg,shape", [("pos_weight", (3,)), ("weight", (3,)), ("pos_weight", (3, 2, 4))])
def test_bce_with_logits_weights_must_broadcast_to_the_input(arg, shape):
    x, t = rng.standard_normal((2, 4)), rng.random((2, 4))
    with pytest.raises(RuntimeError):
        TF.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t), **{arg: torch.ones(shape, dtype=torch.float64)})  # fmt: skip
    with pytest.raises(ShapeError, match=f"binary_cross_entropy_with_logits: {arg} of shape"):
        F.binary_cross_entropy_with_logits(dg.tensor(x), dg.tensor(t), **{arg: dg.tensor(np.ones(shape))})


# ---- 8. the legacy size_average / reduce arguments -------------------------------------------------------------------
_FUNCTIONS = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
              "binary_cross_entropy_with_logits", "kl_div", "smooth_l1_loss", "margin_ranking_loss",
              "poisson_nll_loss", "soft_margin_loss"]  # fmt: skip
_MODULES = ["CrossEntropyLoss", "NLLLoss", "NLLLoss2d", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss",
            "KLDivLoss", "SmoothL1Loss", "MarginRankingLoss", "PoissonNLLLoss", "SoftMarginLoss"]  # fmt: skip


def _params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", _FUNCTIONS)
def test_loss_functions_have_torch_signatures(name):
    assert _params(getattr(F, name)) == _params(getattr(TF, name))


@pytest.mark.parametrize("name", _MODULES)
def test_loss_modules_have_torch_signatures(name):
    assert _params(getattr(nn, name).__init__) == _params(getattr(torch.nn, name).__init__)


def test_positional_ignore_index_lands_in_its_slot():
    x, t = rng.standard_normal((4, 3)), np.array([2, 0, 2, 1])
    out = F.nll_loss(dg.tensor(x), dg.tensor(t), None, None, 2)
    ref = TF.nll_loss(torch.tensor(x), torch.tensor(t), None, None, 2)
    np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12)
    out = F.cross_entropy(dg.tensor(x), dg.tensor(t), None, None, 2)
    ref = TF.cross_entropy(torch.tensor(x), torch.tensor(t), None, None, 2)
    np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12)


_X, _P = rng.standard_normal((3, 4)), rng.random((3, 4))
_LEGACY = {  # name: (args as numpy arrays, target is an index)
    "cross_entropy": ((_X, np.array([0, 3, 1])), {}),
    "nll_loss": ((_X, np.array([0, 3, 1])), {}),
    "mse_loss": ((_X, _P), {}),
    "l1_loss": ((_X, _P), {}),
    "binary_cross_entropy": ((_P, _P[::-1].copy()), {}),
    "binary_cross_entropy_with_logits": ((_X, _P), {}),
    "kl_div": ((_X, _P), {}),
    "smooth_l1_loss": ((_X, _P), {}),
    "margin_ranking_loss": ((_X, _P, np.sign(_X)), {}),
    "poisson_nll_loss": ((_X, _P), {}),
    "soft_margin_loss": ((_X, np.sign(_P - 0.5)), {}),
}


@pytest.mark.parametrize("name", _FUNCTIONS)
@pytest.mark.parametrize("size_average,reduce", [(False, None), (None, False), (True, True)])
def test_legacy_size_average_and_reduce_fold_into_reduction(name, size_average, reduce):
    args, _ = _LEGACY[name]
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = getattr(F, name)(*(dg.tensor(a) for a in args), size_average=size_average, reduce=reduce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(TF, name)(*(torch.tensor(a) for a in args), size_average=size_average, reduce=reduce)
    np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["MSELoss", "NLLLoss", "KLDivLoss", "BCEWithLogitsLoss", "SmoothL1Loss"])
def test_loss_modules_fold_legacy_arguments_at_construction(name):
    with pytest.warns(UserWarning, match=r"please use reduction='sum' instead"):
        dm = getattr(nn, name)(size_average=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm = getattr(torch.nn, name)(size_average=False)
    assert dm.reduction == tm.reduction == "sum"
