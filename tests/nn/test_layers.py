"""Each layer against torch with copied weights: forward and parameter gradients, float64, train/eval."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import ShapeError

torch = pytest.importorskip("torch")


def copy_weights(dg_mod, th_mod):
    sd = {k: v.detach().detach().numpy().copy() for k, v in th_mod.state_dict().items()}
    dg_mod.load_state_dict({k: dg.tensor(v) for k, v in sd.items()})


def compare(dg_mod, th_mod, x, train=True, target_dtype=None):
    dg_mod.double() if hasattr(dg_mod, "double") else None
    th_mod.double()
    copy_weights(dg_mod, th_mod)
    dg_mod.train(train)
    th_mod.train(train)
    xd = dg.tensor(x, requires_grad=x.dtype.kind == "f")
    xt = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    yd, yt = dg_mod(xd), th_mod(xt)
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-7, atol=1e-10)
    seed = np.random.default_rng(1).standard_normal(yt.shape)
    (yd * dg.tensor(seed)).sum().backward()
    (yt * torch.tensor(seed)).sum().backward()
    for (name, p), (_, q) in zip(dg_mod.named_parameters(), th_mod.named_parameters()):
        np.testing.assert_allclose(
            p.grad.detach().numpy(), q.grad.detach().numpy(), rtol=1e-7, atol=1e-10, err_msg=name
        )
    if x.dtype.kind == "f":
        np.testing.assert_allclose(xd.grad.detach().numpy(), xt.grad.detach().numpy(), rtol=1e-7, atol=1e-10)
    for (name, b), (_, c) in zip(dg_mod.named_buffers(), th_mod.named_buffers()):
        np.testing.assert_allclose(b.detach().numpy(), c.detach().numpy(), rtol=1e-7, atol=1e-10, err_msg=name)


rng = np.random.default_rng(0)

CASES = [
    ("Linear", lambda m: m.Linear(5, 3), (4, 5)),
    ("Linear-nobias", lambda m: m.Linear(5, 3, bias=False), (2, 7, 5)),
    ("Bilinear", None, None),
    ("LayerNorm", lambda m: m.LayerNorm(6), (3, 4, 6)),
    ("LayerNorm-2d", lambda m: m.LayerNorm((4, 6)), (3, 4, 6)),
    ("BatchNorm1d", lambda m: m.BatchNorm1d(5), (8, 5)),
    ("BatchNorm1d-3d", lambda m: m.BatchNorm1d(3), (4, 3, 6)),
    ("BatchNorm2d", lambda m: m.BatchNorm2d(3), (4, 3, 5, 5)),
    (
        "Sequential-MLP",
        lambda m: m.Sequential(m.Linear(6, 8), m.Tanh(), m.Linear(8, 8), m.GELU(), m.Linear(8, 2)),
        (5, 6),
    ),
    (
        "Activations",
        lambda m: m.Sequential(m.ReLU(), m.SiLU(), m.ELU(), m.LeakyReLU(0.2), m.Softplus(), m.Sigmoid()),
        (3, 7),
    ),
    (
        "Activations-2",
        lambda m: m.Sequential(m.SELU(), m.CELU(0.7), m.Hardswish(), m.Mish(), m.Softsign(), m.Tanhshrink()),
        (3, 7),
    ),
    (
        "Activations-3",
        lambda m: m.Sequential(m.Hardsigmoid(), m.Hardshrink(0.3), m.Softshrink(0.1), m.Threshold(0.2, -1.0)),
        (3, 7),
    ),
    ("Activations-4", lambda m: m.Sequential(m.ReLU6(), m.Hardtanh(-0.5, 0.5), m.LogSigmoid(), m.Softmin(1)), (3, 7)),
    ("GLU", lambda m: m.GLU(dim=1), (3, 8, 2)),
    ("PReLU-shared", lambda m: m.PReLU(), (3, 7)),
    ("PReLU-channels", lambda m: m.PReLU(4, init=0.1), (2, 4, 3, 3)),
    ("LogSoftmax", lambda m: m.LogSoftmax(dim=1), (3, 7)),
    ("Linear-3d", lambda m: m.Linear(5, 4), (2, 3, 5)),
    ("LayerNorm-noaffine", lambda m: m.LayerNorm(6, elementwise_affine=False), (3, 6)),
    ("LayerNorm-nobias", lambda m: m.LayerNorm(6, bias=False, eps=1e-3), (3, 6)),
    ("BatchNorm1d-noaffine", lambda m: m.BatchNorm1d(5, affine=False, momentum=0.3), (8, 5)),
    ("BatchNorm1d-untracked", lambda m: m.BatchNorm1d(5, track_running_stats=False), (8, 5)),
    ("BatchNorm2d-cumulative", lambda m: m.BatchNorm2d(3, momentum=None, bias=False), (4, 3, 2, 2)),
    ("GroupNorm", lambda m: m.GroupNorm(2, 6), (3, 6, 4)),
    ("GroupNorm-noaffine", lambda m: m.GroupNorm(3, 3, affine=False, eps=1e-3), (2, 3, 2, 2)),
    ("RMSNorm", lambda m: m.RMSNorm((2, 5)), (3, 2, 5)),
    ("RMSNorm-eps", lambda m: m.RMSNorm(5, eps=1e-2, elementwise_affine=False), (4, 5)),
    ("Unflatten", lambda m: m.Sequential(m.Unflatten(1, (2, 3)), m.Flatten(0, 1)), (4, 6)),
    ("Flatten", lambda m: m.Flatten(), (2, 3, 4)),
]


@pytest.mark.parametrize("name,make,shape", [c for c in CASES if c[1] is not None], ids=[c[0] for c in CASES if c[1]])
@pytest.mark.parametrize("train", [True, False])
def test_layer_matches_torch(name, make, shape, train):
    compare(make(nn), make(torch.nn), rng.standard_normal(shape), train)


def test_embedding_matches_torch():
    idx = np.array([[1, 0, 3], [2, 2, 0]])
    compare(nn.Embedding(5, 4, padding_idx=0), torch.nn.Embedding(5, 4, padding_idx=0), idx)


def test_embedding_padding_row_is_returned_but_gets_no_gradient():
    tm = torch.nn.Embedding(5, 3, padding_idx=-1).double()
    with torch.no_grad():
        tm.weight[4] = 7.0  # a changed padding row is still looked up, as torch does
    dm = nn.Embedding(5, 3, padding_idx=-1)
    assert dm.padding_idx == 4
    compare(dm, tm, np.array([4, 1, 4, 0]))
    assert not dm.weight.grad.numpy()[4].any()


def test_embedding_max_norm_renormalizes_looked_up_rows_like_torch():
    dm, tm = nn.Embedding(6, 4, max_norm=1.0), torch.nn.Embedding(6, 4, max_norm=1.0)
    compare(dm, tm, np.array([[0, 2], [2, 5]]))
    np.testing.assert_allclose(dm.weight.detach().numpy(), tm.weight.detach().numpy(), rtol=1e-7)
    assert np.linalg.norm(dm.weight.detach().numpy()[[0, 2, 5]], axis=1).max() <= 1.0 + 1e-9


def test_embedding_from_pretrained_freezes_by_default():
    w = dg.tensor(np.arange(6.0).reshape(3, 2))
    e = nn.Embedding.from_pretrained(w)
    assert not e.weight.requires_grad and e.num_embeddings == 3
    np.testing.assert_array_equal(e(dg.tensor(np.array([2]))).numpy(), [[4.0, 5.0]])
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad


def test_bilinear_matches_torch():
    dm, tm = nn.Bilinear(3, 4, 2).double(), torch.nn.Bilinear(3, 4, 2).double()
    copy_weights(dm, tm)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    yd, yt = dm(dg.tensor(a), dg.tensor(b)), tm(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-7)
    yd.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(dm.weight.grad.detach().numpy(), tm.weight.grad.detach().numpy(), rtol=1e-7)


def test_batchnorm_running_stats_over_steps_and_eval():
    dm, tm = nn.BatchNorm1d(4).double(), torch.nn.BatchNorm1d(4).double()
    for _ in range(3):
        x = rng.standard_normal((6, 4)) * 3 + 1
        dm(dg.tensor(x))
        tm(torch.tensor(x))
    np.testing.assert_allclose(dm.running_var.detach().numpy(), tm.running_var.detach().numpy(), rtol=1e-10)
    assert int(dm.num_batches_tracked.item()) == 3
    dm.eval(), tm.eval()
    x = rng.standard_normal((2, 4))
    np.testing.assert_allclose(dm(dg.tensor(x)).detach().numpy(), tm(torch.tensor(x)).detach().numpy(), rtol=1e-10)


def test_batchnorm_rejects_wrong_rank_or_channels():
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(3\): expected 4-D input with 3 channels"):
        nn.BatchNorm2d(3)(dg.zeros(2, 3, 4))
    with pytest.raises(ShapeError, match=r"got shape \(4, 5\)"):
        nn.BatchNorm1d(3)(dg.zeros(4, 5))


def test_dropout_train_scales_and_eval_is_identity():
    d = nn.Dropout(0.25)
    x = dg.ones(1000, 10)
    y = d(x).detach().numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.03
    d.eval()
    assert np.array_equal(d(x).detach().numpy(), x.detach().numpy())


@pytest.mark.parametrize(
    "cls,shape,unit",
    [
        (nn.Dropout1d, (64, 50, 4), (2,)),
        (nn.Dropout2d, (64, 50, 3, 3), (2, 3)),
        (nn.Dropout3d, (8, 50, 2, 2, 2), (2, 3, 4)),
    ],
)
def test_channel_dropout_zeroes_whole_channels(cls, shape, unit):
    y = cls(0.3)(dg.ones(*shape)).numpy()
    per_channel = y.min(axis=unit)
    np.testing.assert_array_equal(per_channel, y.max(axis=unit))  # each channel all kept or all dropped
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((per_channel == 0).mean() - 0.3) < 0.06
    if cls is nn.Dropout2d:  # torch reads a 3-D input to dropout2d as (N, C, L): test_module_fuzz checks it
        return
    unbatched = cls(0.5)(dg.ones(*shape[1:])).numpy()
    np.testing.assert_array_equal(
        unbatched.min(axis=tuple(u - 1 for u in unit)), unbatched.max(axis=tuple(u - 1 for u in unit))
    )


def test_alpha_dropout_keeps_zero_mean_unit_variance():
    x = dg.randn(200_000, dtype=dg.float64)
    y = nn.AlphaDropout(0.2)(x).numpy()
    assert abs(y.mean()) < 0.02 and abs(y.std() - 1) < 0.02
    assert np.array_equal(nn.AlphaDropout(0.2).eval()(x).numpy(), x.numpy())


@pytest.mark.parametrize(
    "make,args",
    [
        (lambda m, w: m.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=1), "logits"),
        (lambda m, w: m.NLLLoss(weight=w), "logits"),
        (lambda m, w: m.BCEWithLogitsLoss(pos_weight=w), "binary"),
        (lambda m, w: m.BCELoss(weight=w), "probs"),
    ],
)
def test_loss_modules_register_weights_as_buffers(make, args):
    w = np.array([0.5, 2.0, 1.0, 1.5])
    dm, tm = make(nn, dg.tensor(w)), make(torch.nn, torch.tensor(w))
    assert list(dm.state_dict()) == list(tm.state_dict())
    x = rng.standard_normal((5, 4))
    if args == "logits":
        y = np.array([0, 1, 3, 2, 1])
        if isinstance(dm, nn.NLLLoss):  # NLL takes log-probabilities
            x = x - np.log(np.exp(x).sum(1, keepdims=True))
    else:
        x = 1 / (1 + np.exp(-x)) if args == "probs" else x
        y = (rng.random((5, 4)) > 0.5).astype(np.float64)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ld, lt = dm(xd, dg.tensor(y)), tm(xt, torch.tensor(y))
    np.testing.assert_allclose(ld.item(), lt.item(), rtol=1e-10)
    ld.backward(), lt.backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_default_init_bounds_match_torch_formula():
    lin = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)  # kaiming_uniform(a=√5) gives U(-1/√fan_in, 1/√fan_in)
    w = lin.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(lin.bias.detach().numpy()).max() <= bound


def test_fused_layer_ops_replay_in_a_captured_graph_on_a_new_batch():
    """Embedding indices, targets and activations are graph inputs, not constants baked in at capture."""
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import Runner

    model = nn.Sequential(
        nn.Embedding(10, 4, padding_idx=0), nn.Flatten(), nn.Linear(12, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)
    )

    def batch():
        return dg.tensor(rng.integers(0, 10, (5, 3))), dg.tensor(rng.integers(0, 3, 5))

    def loss_fn(x, y):
        return nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)

    graph, params, _ = capture(loss_fn, list(batch()), grad_of=list(model.parameters()))
    x, y = batch()
    outs = Runner(graph)(x.array, y.array, *[p.array for p in params])
    loss = loss_fn(x, y)
    loss.backward()
    assert outs[0] == loss.item()
    for g, p in zip(outs[1:], model.parameters()):
        np.testing.assert_array_equal(g, p.grad.numpy())


def test_captured_dropout_draws_a_fresh_mask_each_run():
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import Runner

    x = dg.ones(50, 20)
    graph, _, _ = capture(lambda t: nn.functional.dropout(t, 0.5), [x])
    runner = Runner(graph)
    (a,), (b,) = runner(x.array), runner(x.array)
    assert set(np.unique(a)) == {0.0, 2.0} and not np.array_equal(a, b)


def test_compiled_dropouts_of_one_tensor_stay_independent():
    """Two masks of the same tensor are distinct draws: CSE must not merge them, folding must not freeze them."""
    x = dg.ones(40, 10)
    f = dg.compile(lambda t: nn.functional.dropout(t, 0.5) - nn.functional.dropout(t, 0.5), (x,))
    assert np.abs(f(x).numpy()).sum() > 0
    g = dg.compile(lambda t: t + nn.functional.dropout(dg.ones(40, 10), 0.5), (x,))
    assert not np.array_equal(g(x).numpy(), g(x).numpy())


def test_conv_rejects_unknown_padding_strings_and_strided_same_at_construction():
    from distgraph.errors import ConfigError

    with pytest.raises(ConfigError, match="Conv2d: invalid padding string 'foo'"):
        nn.Conv2d(3, 4, 3, padding="foo")
    with pytest.raises(ConfigError, match="Conv1d: padding='same' is not supported for strided convolutions"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
