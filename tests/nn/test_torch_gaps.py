"""torch names distgraph.nn lacked, against torch in float64: the deprecated upsample family, pdist,
linear_cross_entropy and LinearCrossEntropyLoss, conv_tbc, native_channel_shuffle, nn.grad's convolution
gradients, RNNBase/RNNCellBase, CrossMapLRN2d, Container and nn.init's deprecated names."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import ConfigError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)


@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("upsample", dict(scale_factor=2, mode="bilinear", align_corners=False), (1, 2, 3, 4)),
        ("upsample", dict(size=5), (1, 2, 3)),
        ("upsample_nearest", dict(scale_factor=2), (1, 2, 3, 3)),
        ("upsample_bilinear", dict(size=(5, 4)), (2, 1, 3, 3)),
    ],
)
def test_upsample_family_is_interpolate_with_torchs_warning(name, kwargs, shape):
    x = rng.standard_normal(shape)
    with pytest.warns(UserWarning, match=rf"`nn.functional.{name}` is deprecated. Use `nn.functional.interpolate`"):
        check(lambda t: getattr(F, name)(t, **kwargs), lambda t: _quiet(getattr(TF, name), t, **kwargs), x)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_pdist_and_native_channel_shuffle_are_torchs():
    check(lambda t: F.pdist(t, p=3), lambda t: TF.pdist(t, p=3), rng.standard_normal((5, 3)))
    x = rng.standard_normal((2, 6, 2, 2))  # torch's native kernel has no derivative: forward, then channel_shuffle's
    check(lambda t: F.native_channel_shuffle(t, 3), lambda t: TF.native_channel_shuffle(t, 3), x, grad=False)
    check(lambda t: F.native_channel_shuffle(t, 3), lambda t: TF.channel_shuffle(t, 3), x)


@pytest.mark.parametrize(
    "shapes,kwargs",
    [
        (((4, 3), (5, 3), (4,)), dict()),
        (((4, 3), (5, 3), (4,)), dict(reduction="sum", label_smoothing=0.1, ignore_index=2, weight=True)),
        (((3,), (5, 3), ()), dict(linear_bias=True)),
        (((4, 3), (5, 2, 3), (4, 2)), dict(linear_bias=True, reduction="none")),
        (((4, 3), (5, 3), (4, 5)), dict(label_smoothing=0.2)),  # class probabilities
    ],
)
def test_linear_cross_entropy_matches_torch(shapes, kwargs):
    x_shape, w_shape, t_shape = shapes
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    probs = len(t_shape) == len(x_shape) and t_shape[-1] == w_shape[0]
    target = rng.dirichlet(np.ones(w_shape[0]), t_shape[:-1]) if probs else rng.integers(0, w_shape[0], t_shape)
    extra = [rng.standard_normal(w_shape[:-1])] if kwargs.get("linear_bias") else []
    class_weight = rng.uniform(0.5, 2, w_shape[0])
    opts = {k: v for k, v in kwargs.items() if k not in ("linear_bias", "weight")}

    def run(lib, fn):
        def f(x, w, *rest):
            rest = list(rest)
            b = rest.pop(0) if kwargs.get("linear_bias") else None
            cw = lib.tensor(class_weight) if kwargs.get("weight") else None
            t = lib.tensor(target)
            return fn(x, w, t, linear_bias=b, weight=cw, **opts)

        return f

    check(run(dg, F.linear_cross_entropy), run(torch, TF.linear_cross_entropy), x, w, *extra)


@pytest.mark.parametrize(
    "args,match",
    [
        (((2, 2, 3), (5, 3), (2,)), "expected input with dimensionality 1 or 2, got 3"),
        (((2, 3), (3,), (2,)), "expected linear_weight with dimensionality at least 2, got 1"),
        (
            ((2, 3), (5, 4), (2,)),
            r"expected equal input and linear_weight last dimensions \(in_features\), got 3 and 4",
        ),
        (((3,), (5, 2, 3), (2,)), "requires batched input"),
    ],
)
def test_linear_cross_entropy_refuses_bad_shapes_with_torchs_words(args, match):
    x, w, t = (dg.zeros(*s) for s in args)
    with pytest.raises(ShapeError, match=match):
        F.linear_cross_entropy(x, w, t.long())


def test_linear_cross_entropy_refuses_ignore_index_with_probabilities_and_options():
    x, w = dg.zeros(2, 3), dg.zeros(4, 3)
    with pytest.raises(ValueError, match="ignore_index cannot be specified when target contains probabilities"):
        F.linear_cross_entropy(x, w, dg.zeros(2, 4), ignore_index=1)
    with pytest.raises(ShapeError, match=r"expected linear_bias shape \(4,\), got \(3,\)"):
        F.linear_cross_entropy(x, w, dg.zeros(2).long(), linear_bias=dg.zeros(3))
    with pytest.raises(ConfigError, match="options"):
        F.linear_cross_entropy(x, w, dg.zeros(2).long(), options=object())


def test_linear_cross_entropy_loss_module_matches_torch():
    torch.manual_seed(0)
    tm = torch.nn.LinearCrossEntropyLoss(3, 4, out_features=(2,), bias=True, label_smoothing=0.1).double()
    dm = nn.LinearCrossEntropyLoss(3, 4, out_features=(2,), bias=True, label_smoothing=0.1, dtype=dg.float64)
    dm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert list(dm.state_dict()) == list(tm.state_dict()) == ["linear.weight", "linear.bias"]
    assert repr(dm) == repr(tm).replace("reduction=mean", "reduction=mean")
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 4, (5, 2))
    check(lambda a: dm(a, dg.tensor(t)), lambda a: tm(a, torch.tensor(t)), x)
    with pytest.raises(ShapeError, match=r"expected weight shape to be \(4,\), got \(3,\)"):
        nn.LinearCrossEntropyLoss(3, 4, weight=dg.ones(3))
    with pytest.raises(ValueError, match=r"expected label_smoothing to be in range \[0, 1\], got 2"):
        nn.LinearCrossEntropyLoss(3, 4, label_smoothing=2)


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_conv_tbc_matches_torch(pad):
    x, w, b = rng.standard_normal((6, 2, 3)), rng.standard_normal((3, 3, 4)), rng.standard_normal(4)
    check(lambda *a: F.conv_tbc(*a, pad), lambda *a: TF.conv_tbc(*a, pad), x, w, b)


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((6, 2), (3, 3, 4), (4,)), "Input must have 3 dims: time, batch, in_channel"),
        (((6, 2, 3), (3, 4), (4,)), "Weight tensor must have 3 dims: kernel_width, in_channels, out_channels."),
        (((6, 2, 3), (3, 2, 4), (4,)), r"Input dim 2 \(input channels\) is not == dim 1 in the weight tensor"),
        (((6, 2, 3), (3, 3, 4), (5,)), r"Bias size must equal dim 2 in the weight tensor \(output channels\)."),
    ],
)
def test_conv_tbc_refuses_bad_shapes_with_torchs_words(shapes, match):
    with pytest.raises(ShapeError, match=match):
        F.conv_tbc(*(dg.zeros(*s) for s in shapes))


CONVS = [
    (1, (2, 4, 9), (6, 2, 3), dict(stride=2, padding=1, dilation=2, groups=2)),
    (2, (2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, dilation=(1, 2), groups=2)),
    (3, (1, 2, 5, 4, 4), (3, 2, 2, 2, 3), dict(stride=1, padding=(1, 0, 1))),
]


@pytest.mark.parametrize("dims,x_shape,w_shape,kwargs", CONVS)
def test_nn_grad_convolution_gradients_match_torch(dims, x_shape, w_shape, kwargs):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    conv = getattr(TF, f"conv{dims}d")
    go = rng.standard_normal(conv(torch.tensor(x), torch.tensor(w), **kwargs).shape)
    name = f"conv{dims}d"
    check(lambda w, g: getattr(nn.grad, f"{name}_input")(x_shape, w, g, **kwargs),
          lambda w, g: getattr(torch.nn.grad, f"{name}_input")(x_shape, w, g, **kwargs), w, go)  # fmt: skip
    check(lambda x, g: getattr(nn.grad, f"{name}_weight")(x, w_shape, g, **kwargs),
          lambda x, g: getattr(torch.nn.grad, f"{name}_weight")(x, w_shape, g, **kwargs), x, go)  # fmt: skip


def test_nn_grad_refuses_a_grad_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"conv1d_input: grad_output has shape \(1, 2, 3\), .* \(1, 2, 4\)"):
        nn.grad.conv1d_input((1, 3, 6), dg.zeros(2, 3, 3), dg.zeros(1, 2, 3))


def test_rnn_bases_are_the_base_classes_as_in_torch():
    for name in ("RNN", "LSTM", "GRU"):
        assert isinstance(getattr(nn, name)(3, 4), nn.RNNBase)
        assert isinstance(getattr(nn, f"{name}Cell")(3, 4), nn.RNNCellBase)
        assert not isinstance(getattr(nn, f"{name}Cell")(3, 4), nn.RNNBase)
    cell = nn.RNNCellBase(3, 4, True, 2)  # torch's signature: input, hidden, bias, num_chunks
    t = torch.nn.RNNCellBase(3, 4, True, 2)
    assert {k: tuple(v.shape) for k, v in cell.state_dict().items()} == {
        k: tuple(v.shape) for k, v in t.state_dict().items()
    }
    assert nn.RNNBase("LSTM", 3, 4).mode == torch.nn.RNNBase("LSTM", 3, 4).mode == "LSTM"


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
def test_cross_map_lrn2d_forward_matches_torch_and_its_gradient_is_the_derivative(size):
    x = rng.standard_normal((2, 7, 3, 4))
    expected = torch.nn.CrossMapLRN2d(size, 0.1, 0.75, 2)(torch.tensor(x)).numpy()
    m = nn.CrossMapLRN2d(size, 0.1, 0.75, 2)
    np.testing.assert_allclose(m(dg.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-14)
    assert dg.autograd.gradcheck(m, (dg.tensor(x[:1, :, :2, :2], requires_grad=True),))
    assert repr(m) == repr(torch.nn.CrossMapLRN2d(size, 0.1, 0.75, 2))


def test_cross_map_lrn2d_refuses_non_4d_input():
    with pytest.raises(ShapeError, match="CrossMapLRN2d: Expected input to be 4D, got 3D instead."):
        nn.CrossMapLRN2d(3)(dg.zeros(2, 3, 4))


def test_container_registers_its_keyword_modules():
    c = nn.Container(a=nn.Linear(2, 3), b=nn.ReLU())
    assert isinstance(c, nn.Module) and list(dict(c.named_children())) == ["a", "b"]
    assert list(c.state_dict()) == ["a.weight", "a.bias"]


@pytest.mark.parametrize(
    "name,args",
    [("uniform", (-1, 1)), ("normal", (0, 2)), ("constant", (0.5,)), ("eye", ()), ("dirac", ()),
     ("xavier_uniform", ()), ("xavier_normal", ()), ("kaiming_uniform", ()), ("kaiming_normal", ()),
     ("orthogonal", ()), ("sparse", (0.5,))],
)  # fmt: skip
def test_init_deprecated_names_warn_as_torch_and_run_the_new_one(name, args):
    shape = (3, 4, 1) if name == "dirac" else (4, 3)
    old, new = dg.empty(*shape), dg.empty(*shape)
    dg.manual_seed(5)
    with pytest.warns(FutureWarning, match=rf"`nn.init.{name}` is now deprecated in favor of `nn.init.{name}_`."):
        assert getattr(nn.init, name)(old, *args) is old
    dg.manual_seed(5)
    getattr(nn.init, f"{name}_")(new, *args)
    assert np.array_equal(old.numpy(), new.numpy())
    assert getattr(nn.init, name).__name__ == name
