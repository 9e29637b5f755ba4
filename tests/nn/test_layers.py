"""Each layer against torch with copied weights: forward and parameter gradients, float64, train/eval."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn

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
    ("LogSoftmax", lambda m: m.LogSoftmax(dim=1), (3, 7)),
    ("Flatten", lambda m: m.Flatten(), (2, 3, 4)),
]


@pytest.mark.parametrize("name,make,shape", [c for c in CASES if c[1] is not None], ids=[c[0] for c in CASES if c[1]])
@pytest.mark.parametrize("train", [True, False])
def test_layer_matches_torch(name, make, shape, train):
    compare(make(nn), make(torch.nn), rng.standard_normal(shape), train)


def test_embedding_matches_torch():
    idx = np.array([[1, 0, 3], [2, 2, 0]])
    compare(nn.Embedding(5, 4, padding_idx=0), torch.nn.Embedding(5, 4, padding_idx=0), idx)


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


def test_dropout_train_scales_and_eval_is_identity():
    d = nn.Dropout(0.25)
    x = dg.ones(1000, 10)
    y = d(x).detach().numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.03
    d.eval()
    assert np.array_equal(d(x).detach().numpy(), x.detach().numpy())


def test_default_init_bounds_match_torch_formula():
    lin = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)  # kaiming_uniform(a=√5) gives U(-1/√fan_in, 1/√fan_in)
    w = lin.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(lin.bias.detach().numpy()).max() <= bound
