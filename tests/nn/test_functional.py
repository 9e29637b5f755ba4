"""Losses and functional forms against torch in float64 (values and input gradients)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.errors import IndexOutOfRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)
logits = rng.standard_normal((6, 5))
target = np.array([0, 4, 2, 2, -100, 1])
weight = rng.random(5) + 0.5


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_indices(reduction, label_smoothing, use_weight):
    w = dg.tensor(weight) if use_weight else None
    wt = torch.tensor(weight) if use_weight else None
    check(
        lambda x: F.cross_entropy(x, dg.tensor(target), w, reduction=reduction, label_smoothing=label_smoothing),
        lambda x: TF.cross_entropy(x, torch.tensor(target), wt, reduction=reduction, label_smoothing=label_smoothing),
        logits,
    )


def test_cross_entropy_spatial_and_probabilities():
    x = rng.standard_normal((2, 4, 3, 3))
    t = rng.integers(0, 4, (2, 3, 3))
    check(lambda a: F.cross_entropy(a, dg.tensor(t)), lambda a: TF.cross_entropy(a, torch.tensor(t)), x)
    probs = rng.dirichlet(np.ones(5), 6)
    check(
        lambda a, p: F.cross_entropy(a, p, label_smoothing=0.1),
        lambda a, p: TF.cross_entropy(a, p, label_smoothing=0.1),
        logits,
        probs,
    )


def test_cross_entropy_double_backward_matches_torch():
    x = dg.tensor(logits, requires_grad=True)
    xt = torch.tensor(logits, requires_grad=True)
    t = target.copy()
    t[4] = 3
    (g,) = dg.autograd.grad(F.cross_entropy(x, dg.tensor(t)), [x], create_graph=True)
    (gt,) = torch.autograd.grad(TF.cross_entropy(xt, torch.tensor(t)), [xt], create_graph=True)
    (g * g).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_cross_entropy_bad_target_errors():
    with pytest.raises(IndexOutOfRangeError, match="cross_entropy"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.array([0, 1, 2, 3, 4, 5])))
    with pytest.raises(ShapeError, match=r"target shape \(3,\)"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.array([0, 1, 2])))
    # float class indices: said so (torch: "expected scalar type Long but found Float")
    with pytest.raises(ShapeError, match=r"class indices of shape \(\d+,\) must be an integer dtype, got float64"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.zeros(logits.shape[0])))
    with pytest.raises(ShapeError, match=r"must have the input's shape .*, got \(2, 2\)$"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.zeros((2, 2))))


a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
p01 = rng.uniform(0.05, 0.95, (4, 3))
y01 = (rng.random((4, 3)) > 0.5).astype(np.float64)
LOSSES = [
    ("mse", lambda x, y: F.mse_loss(x, y), lambda x, y: TF.mse_loss(x, y), (a, b)),
    ("l1", lambda x, y: F.l1_loss(x, y, reduction="sum"), lambda x, y: TF.l1_loss(x, y, reduction="sum"), (a, b)),
    (
        "smooth_l1",
        lambda x, y: F.smooth_l1_loss(x, y, beta=0.5),
        lambda x, y: TF.smooth_l1_loss(x, y, beta=0.5),
        (a, b),
    ),
    ("bce", lambda x, y: F.binary_cross_entropy(x, y), lambda x, y: TF.binary_cross_entropy(x, y), (p01, y01)),
    (
        "bce_logits",
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=dg.tensor(np.array([1.0, 2.0, 0.5]))),
        lambda x, y: TF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([1.0, 2.0, 0.5])),
        (a, y01),
    ),
    (
        "kl_div",
        lambda x, y: F.kl_div(F.log_softmax(x, 1), F.softmax(y, 1), reduction="batchmean"),
        lambda x, y: TF.kl_div(TF.log_softmax(x, 1), TF.softmax(y, 1), reduction="batchmean"),
        (a, b),
    ),
    (
        "nll",
        lambda x: F.nll_loss(F.log_softmax(x, 1), dg.tensor(np.array([0, 2, 1, 2]))),
        lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.tensor([0, 2, 1, 2])),
        (a,),
    ),
    (
        "layer_norm",
        lambda x, w: F.layer_norm(x, (3,), w),
        lambda x, w: TF.layer_norm(x, (3,), w),
        (a, rng.standard_normal(3)),
    ),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), (a,)),
    ("normalize", lambda x: F.normalize(x, dim=1), lambda x: TF.normalize(x, dim=1), (a,)),
]


@pytest.mark.parametrize("name,fd,ft,args", LOSSES, ids=[c[0] for c in LOSSES])
def test_functional_matches_torch(name, fd, ft, args):
    check(fd, ft, *args)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize("shapes", [((4, 3), (3,)), ((3,), (4, 3)), ((4, 1), (4,))])
def test_regression_losses_warn_and_broadcast_a_target_of_another_shape_as_torch(name, shapes):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    for reduction in ("mean", "none"):
        with pytest.warns(UserWarning, match=r"Using a target size \(.*\) that is different to the input size"):
            check(lambda u, v: getattr(F, name)(u, v, reduction=reduction),
                  lambda u, v: getattr(TF, name)(u, v, reduction=reduction), x, y)  # fmt: skip


def test_loss_shape_mismatch_names_the_op():
    with pytest.raises(ShapeError, match=r"mse_loss: input shape \(4, 3\) and target shape \(5,\) do not broadcast"):
        F.mse_loss(dg.tensor(a), dg.ones(5))
    with pytest.raises(ShapeError, match=r"kl_div: input shape \(4, 3\) and target shape \(4,\) do not broadcast"):
        F.kl_div(dg.tensor(a), dg.ones(4))


CE_CASES = {
    "custom-ignore-index": dict(ignore_index=2),
    "weights-smoothing-ignore-sum": dict(weight=weight, ignore_index=2, label_smoothing=0.3, reduction="sum"),
    "full-smoothing": dict(label_smoothing=1.0),
    "plain": dict(),
    "weights-none-ignored": dict(weight=weight, label_smoothing=0.2, reduction="none"),
}


@pytest.mark.parametrize("kw", CE_CASES.values(), ids=CE_CASES.keys())
def test_cross_entropy_options(kw):
    t = np.array([0, 4, 2, 2, 3, 1])
    dkw = {k: dg.tensor(v) if k == "weight" else v for k, v in kw.items()}
    tkw = {k: torch.tensor(v) if k == "weight" else v for k, v in kw.items()}
    check(
        lambda x: F.cross_entropy(x, dg.tensor(t), **dkw), lambda x: TF.cross_entropy(x, torch.tensor(t), **tkw), logits
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_spatial_with_every_option(reduction):
    x = rng.standard_normal((2, 4, 3, 2))
    t = rng.integers(0, 4, (2, 3, 2))
    t[0, 1, 1] = -1
    w = rng.random(4) + 0.5
    kw = dict(ignore_index=-1, label_smoothing=0.15, reduction=reduction)
    check(
        lambda a: F.cross_entropy(a, dg.tensor(t), dg.tensor(w), **kw),
        lambda a: TF.cross_entropy(a, torch.tensor(t), torch.tensor(w), **kw),
        x,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probabilities_with_weight_and_smoothing(reduction):
    probs = rng.dirichlet(np.ones(5), 6)
    kw = dict(label_smoothing=0.2, reduction=reduction)
    check(
        lambda a, p: F.cross_entropy(a, p, dg.tensor(weight), **kw),
        lambda a, p: TF.cross_entropy(a, p, torch.tensor(weight), **kw),
        logits,
        probs,
    )


def test_cross_entropy_unbatched_float32_and_all_ignored():
    check(
        lambda a: F.cross_entropy(a, dg.tensor(np.array(3))),
        lambda a: TF.cross_entropy(a, torch.tensor(3)),
        logits[0],
    )
    x32 = logits.astype(np.float32)
    out = F.cross_entropy(dg.tensor(x32), dg.tensor(target))
    assert out.dtype == dg.float32
    assert out.item() == pytest.approx(TF.cross_entropy(torch.tensor(x32), torch.tensor(target)).item(), rel=1e-6)
    ignored = F.cross_entropy(dg.tensor(logits), dg.tensor(np.full(6, -100)))
    assert np.isnan(ignored.item()) and np.isnan(TF.cross_entropy(torch.tensor(logits), torch.full((6,), -100)).item())
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(target), label_smoothing=1.5)


def test_cross_entropy_double_backward_with_weights_and_smoothing():
    x, xt = dg.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    t = np.array([0, 4, 2, 2, -100, 1])
    kw = dict(label_smoothing=0.1, reduction="sum")
    (g,) = dg.autograd.grad(F.cross_entropy(x, dg.tensor(t), dg.tensor(weight), **kw), [x], create_graph=True)
    (gt,) = torch.autograd.grad(
        TF.cross_entropy(xt, torch.tensor(t), torch.tensor(weight), **kw), [xt], create_graph=True
    )
    (g**3).sum().backward()
    (gt**3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_weights_ignore_index_spatial(reduction):
    x = rng.standard_normal((3, 4, 5))
    t = rng.integers(0, 4, (3, 5))
    t[1, 2] = 3
    w = rng.random(4) + 0.1
    kw = dict(ignore_index=3, reduction=reduction)
    check(
        lambda a: F.nll_loss(F.log_softmax(a, 1), dg.tensor(t), dg.tensor(w), **kw),
        lambda a: TF.nll_loss(TF.log_softmax(a, 1), torch.tensor(t), torch.tensor(w), **kw),
        x,
    )


POS = rng.uniform(0.5, 2.0, (4, 3))
LABELS = np.sign(rng.standard_normal((4, 3)))
PAIRWISE = [
    ("mse", F.mse_loss, TF.mse_loss, (a, b), {}),
    ("l1", F.l1_loss, TF.l1_loss, (a, b), {}),
    ("smooth_l1-beta0", F.smooth_l1_loss, TF.smooth_l1_loss, (a, b), {"beta": 0.0}),
    ("huber", F.huber_loss, TF.huber_loss, (a, b), {"delta": 0.7}),
    ("kl_div-log_target", F.kl_div, TF.kl_div, (a, b), {"log_target": True}),
    ("poisson", F.poisson_nll_loss, TF.poisson_nll_loss, (a, POS), {"full": True}),
    ("poisson-rates", F.poisson_nll_loss, TF.poisson_nll_loss, (POS, POS * 2), {"log_input": False}),
]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,fd,ft,args,kw", PAIRWISE, ids=[c[0] for c in PAIRWISE])
def test_pairwise_losses_every_reduction(name, fd, ft, args, kw, reduction):
    check(lambda x, y: fd(x, y, reduction=reduction, **kw), lambda x, y: ft(x, y, reduction=reduction, **kw), *args)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropies_with_weights(reduction):
    w = rng.random((4, 3))
    check(
        lambda x, y: F.binary_cross_entropy(x, y, dg.tensor(w), reduction=reduction),
        lambda x, y: TF.binary_cross_entropy(x, y, torch.tensor(w), reduction=reduction),
        p01,
        y01,
    )
    big = a * 50  # |logits| up to ~100: log σ must not overflow
    check(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, dg.tensor(w), reduction=reduction),
        lambda x, y: TF.binary_cross_entropy_with_logits(x, y, torch.tensor(w), reduction=reduction),
        big,
        y01,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_at_saturated_probabilities_has_torchs_finite_gradient(reduction):
    """p = 0 or 1 exactly (a saturated sigmoid) and p below 1e−12: torch's gradient is
    (p − t) / max(p·(1 − p), 1e−12), finite; the derivative of the clamped logs was nan or 0."""
    p = p01.copy()
    p[0, 0], p[1, 1], p[2, 2], p[3, 0] = 0.0, 1.0, 1e-30, 1 - 1e-14
    t = y01.copy()
    t[0, 0], t[1, 1] = 0.3, 0.0
    check(
        lambda x: F.binary_cross_entropy(x, dg.tensor(t), reduction=reduction),
        lambda x: TF.binary_cross_entropy(x, torch.tensor(t), reduction=reduction),
        p,
    )


def test_binary_cross_entropy_second_order_matches_torch():
    xd, xt = dg.tensor(p01, requires_grad=True), torch.tensor(p01, requires_grad=True)
    (gd,) = dg.autograd.grad([F.binary_cross_entropy(xd, dg.tensor(y01))], [xd], create_graph=True)
    (gt,) = torch.autograd.grad([TF.binary_cross_entropy(xt, torch.tensor(y01))], [xt], create_graph=True)
    (hd,) = dg.autograd.grad([(gd * gd).sum()], [xd])
    (ht,) = torch.autograd.grad([(gt * gt).sum()], [xt])
    np.testing.assert_allclose(hd.numpy(), ht.numpy(), rtol=1e-9)


def test_soft_margin_loss_with_constant_labels():
    for r in ("mean", "none"):
        check(
            lambda x: F.soft_margin_loss(x, dg.tensor(LABELS), reduction=r),
            lambda x: TF.soft_margin_loss(x, torch.tensor(LABELS), reduction=r),
            a,
        )


def test_margin_ranking_and_gaussian_nll():
    y = np.sign(rng.standard_normal(4))
    check(
        lambda x1, x2: F.margin_ranking_loss(x1, x2, dg.tensor(y), margin=0.3),
        lambda x1, x2: TF.margin_ranking_loss(x1, x2, torch.tensor(y), margin=0.3),
        a[:, 0],
        b[:, 0],
    )
    tied = np.array([0.0, -0.5, 1.0, 2.0])  # ties at both margins: the gradient passes there, as torch's clamp_min
    for margin in (0.0, 0.5):
        check(
            lambda x1, x2, m=margin: F.margin_ranking_loss(x1, x2, dg.tensor([1.0, 1.0, -1.0, 1.0]), margin=m),
            lambda x1, x2, m=margin: TF.margin_ranking_loss(x1, x2, torch.tensor([1.0, 1.0, -1.0, 1.0]), margin=m),
            np.zeros(4),
            tied * (margin > 0),
        )
    var = rng.uniform(0.1, 2.0, (4, 3))
    var[0, 0] = 1e-9  # clamped to eps in value, gradient passes through
    for v, kw in ((var, {"full": True}), (var[:, 0], {"reduction": "sum"})):
        check(
            lambda x, t, s, kw=kw: F.gaussian_nll_loss(x, t, s, **kw),
            lambda x, t, s, kw=kw: TF.gaussian_nll_loss(x, t, s, **kw),
            a,
            b,
            v,
        )


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_matches_torch_to_second_order(shape, bias):
    w, bb = rng.standard_normal((3, 5)), rng.standard_normal(3)
    args = (rng.standard_normal(shape), w) + ((bb,) if bias else ())
    check(F.linear, TF.linear, *args)
    dts = [dg.tensor(x, requires_grad=True) for x in args]
    tts = [torch.tensor(x, requires_grad=True) for x in args]
    gd = dg.autograd.grad((F.linear(*dts) ** 2).sum(), dts, create_graph=True)
    gt = torch.autograd.grad((TF.linear(*tts) ** 2).sum(), tts, create_graph=True)
    sum((g**2).sum() for g in gd).backward()
    sum((g**2).sum() for g in gt).backward()
    for d, t in zip(dts, tts):
        np.testing.assert_allclose(d.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_linear_with_a_1d_weight_is_a_dot_product_like_torch():
    for shape in [(5,), (4, 5), (2, 3, 5)]:
        check(F.linear, TF.linear, rng.standard_normal(shape), rng.standard_normal(5))


def test_fused_layer_norm_second_order_and_shape_errors():
    x, w, bb = rng.standard_normal((3, 4, 6)), rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    check(
        lambda x, w, b: F.layer_norm(x, (4, 6), w, b, eps=1e-3),
        lambda x, w, b: TF.layer_norm(x, (4, 6), w, b, eps=1e-3),
        x,
        w,
        bb,
    )
    xd, wd = dg.tensor(x, requires_grad=True), dg.tensor(w[0], requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w[0], requires_grad=True)
    s = rng.standard_normal(x.shape)
    gd = dg.autograd.grad((F.layer_norm(xd, (6,), wd) * dg.tensor(s)).sum(), [xd, wd], create_graph=True)
    gt = torch.autograd.grad((TF.layer_norm(xt, (6,), wt) * torch.tensor(s)).sum(), [xt, wt], create_graph=True)
    ((gd[0] ** 2).sum() + (gd[1] ** 3).sum()).backward()
    ((gt[0] ** 2).sum() + (gt[1] ** 3).sum()).backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(wd.grad.numpy(), wt.grad.numpy(), rtol=1e-7, atol=1e-12)
    with pytest.raises(ShapeError, match=r"does not end with \(5,\)"):
        F.layer_norm(dg.tensor(x), (5,))
    with pytest.raises(ShapeError, match="weight shape"):
        F.layer_norm(dg.tensor(x), (6,), dg.ones(5))


def test_batch_norm_functional_updates_running_stats_like_torch():
    x = rng.standard_normal((6, 3, 4))
    rm, rv = np.zeros(3), np.ones(3)
    dm, dv, tmn, tv = dg.tensor(rm.copy()), dg.tensor(rv.copy()), torch.tensor(rm.copy()), torch.tensor(rv.copy())
    check(
        lambda a: F.batch_norm(a, dm, dv, training=True, momentum=0.2),
        lambda a: TF.batch_norm(a, tmn, tv, training=True, momentum=0.2),
        x,
    )
    np.testing.assert_allclose(dm.numpy(), tmn.numpy(), rtol=1e-10)
    np.testing.assert_allclose(dv.numpy(), tv.numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(dg.randn(1, 3), None, None, training=True)


def test_dropout_functional_edges():
    x = dg.ones(100, 10)
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).numpy().any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)
    g = dg.ones(100, 10, requires_grad=True)
    y = F.dropout(g, 0.4)
    y.sum().backward()
    np.testing.assert_array_equal(g.grad.numpy(), y.detach().numpy())  # grad = mask / (1 − p)


def test_embedding_one_hot_and_similarity():
    w = rng.standard_normal((5, 3))
    idx = np.array([[0, 4], [2, 2]])
    check(lambda t: F.embedding(dg.tensor(idx), t), lambda t: TF.embedding(torch.tensor(idx), t), w)
    with pytest.raises(IndexOutOfRangeError, match="index 5 is out of range for 5 embeddings"):
        F.embedding(dg.tensor(np.array([5])), dg.tensor(w))
    with pytest.raises(TypeError, match="integer"):
        F.embedding(dg.tensor(np.array([1.0])), dg.tensor(w))
    labels = np.array([0, 3, 1])
    np.testing.assert_array_equal(F.one_hot(dg.tensor(labels), 5).numpy(), TF.one_hot(torch.tensor(labels), 5))
    check(lambda x, y: F.cosine_similarity(x, y), lambda x, y: TF.cosine_similarity(x, y), a, b)


ACTS = [
    ("selu", F.selu, TF.selu),
    ("celu", lambda x: F.celu(x, 0.5), lambda x: TF.celu(x, 0.5)),
    ("hardswish", F.hardswish, TF.hardswish),
    ("softmin", lambda x: F.softmin(x, 1), lambda x: TF.softmin(x, 1)),
    ("glu", lambda x: F.glu(x, 0), lambda x: TF.glu(x, 0)),
    ("threshold", lambda x: F.threshold(x, 0.1, 20.0), lambda x: TF.threshold(x, 0.1, 20.0)),
]


@pytest.mark.parametrize("name,fd,ft", ACTS, ids=[c[0] for c in ACTS])
def test_activation_functions(name, fd, ft):
    check(fd, ft, a)


BOUNDED = [
    ("relu6", F.relu6, TF.relu6),
    ("hardtanh", lambda x: F.hardtanh(x, -3.0, 3.0), lambda x: TF.hardtanh(x, -3.0, 3.0)),
    ("hardsigmoid", F.hardsigmoid, TF.hardsigmoid),
    ("hardswish", F.hardswish, TF.hardswish),
]


@pytest.mark.parametrize("name,fd,ft", BOUNDED, ids=[c[0] for c in BOUNDED])
def test_bounded_activations_have_zero_gradient_at_their_kinks_like_torch(name, fd, ft):
    """torch's hardtanh family passes gradient only strictly inside the bounds (relu6'(0) = 0, like relu);
    a clamp passes it on the closed interval."""
    x = np.array([-4.0, -3.0, -1.0, 0.0, 0.5, 3.0, 4.0, 6.0, 7.0])
    check(fd, ft, x, rtol=1e-7)  # torch's hardsigmoid gradient uses a float32 1/6


@pytest.mark.parametrize("name", ["elu", "selu", "celu", "hardswish"])
def test_activation_gradients_at_nan_and_infinite_inputs_match_torch(name):
    # torch: elu/selu/celu pass 1·scale at a NaN input (its x <= 0 test fails), hardswish 1 at inf, 0 at -inf
    x = np.array([np.nan, np.inf, -np.inf, -3.0, -1.0, 0.5, 3.0])
    out = []
    for m in (dg, torch):
        t = m.tensor(x.copy(), requires_grad=True)
        (g,) = m.autograd.grad(getattr(m.nn.functional, name)(t).sum(), t)
        out.append(g.numpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-7)


def test_embedding_second_order_and_padding_gradient():
    w = rng.standard_normal((5, 3))
    idx = np.array([[0, 4, 4], [2, 0, 1]])
    wd, wt = dg.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    s = rng.standard_normal((2, 3, 3))
    gd = dg.autograd.grad(
        (F.embedding(dg.tensor(idx), wd, padding_idx=4) ** 2 * dg.tensor(s)).sum(), [wd], create_graph=True
    )
    gt = torch.autograd.grad(
        (TF.embedding(torch.tensor(idx), wt, padding_idx=4) ** 2 * torch.tensor(s)).sum(), [wt], create_graph=True
    )
    np.testing.assert_allclose(gd[0].detach().numpy(), gt[0].detach().numpy(), rtol=1e-12)
    assert not gd[0].detach().numpy()[4].any()
    (gd[0] ** 2).sum().backward()
    (gt[0] ** 2).sum().backward()
    np.testing.assert_allclose(wd.grad.numpy(), wt.grad.numpy(), rtol=1e-10)


def test_shapes_torch_refuses_are_refused_not_reshaped_to_fit():
    assert F.cross_entropy(dg.ones(3), dg.tensor([0])).item() == pytest.approx(np.log(3))  # (C,) with (1,): torch's
    assert F.cross_entropy(dg.ones(3), dg.tensor(0)).item() == pytest.approx(np.log(3))
    for target in ([[0]], [0, 1]):
        with pytest.raises(ShapeError, match=r"cross_entropy: unbatched input \(3,\) needs a 0-d or \(1,\) class"):
            F.cross_entropy(dg.ones(3), dg.tensor(target))
    with pytest.raises(ShapeError, match=r"embedding: 'weight' must be 2-D .* got \(3,\)"):
        F.embedding(dg.tensor([0]), dg.ones(3))
