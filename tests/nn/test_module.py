"""Module behaviour against torch: registration, traversal, state_dict, hooks, repr, modes, devices."""

import copy

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph import optim

torch = pytest.importorskip("torch")


def build(m):
    """The same architecture from either library (nn = distgraph.nn or torch.nn)."""
    return m.Sequential(
        m.Linear(4, 8),
        m.BatchNorm1d(8),
        m.ReLU(),
        m.Dropout(0.1),
        m.Sequential(m.Linear(8, 8, bias=False), m.LayerNorm(8)),
        m.ModuleList([m.Linear(8, 8), m.Linear(8, 8), m.Tanh()]),
        m.ModuleDict({"head": m.Linear(8, 3), "emb": m.Embedding(5, 2, padding_idx=0)}),
    )


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4, 2)
        self.register_buffer("scale", dg.ones(2))
        self.register_buffer("cache", dg.zeros(2), persistent=False)

    def forward(self, x, shift=0.0):
        return self.fc2(self.act(self.fc1(x))) * self.scale + shift


def test_state_dict_keys_and_parameter_order_match_torch():
    dm, tm = build(nn), build(torch.nn)
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert [n for n, _ in dm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in dm.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert [n for n, _ in dm.named_modules()] == [n for n, _ in tm.named_modules()]
    assert [n for n, _ in dm.named_children()] == [n for n, _ in tm.named_children()]
    assert [tuple(p.shape) for p in dm.parameters()] == [tuple(p.shape) for p in tm.parameters()]


def test_state_dict_round_trip_restores_outputs():
    a, b = Net(), Net()
    x = dg.randn(5, 3)
    assert not np.allclose(a(x).detach().numpy(), b(x).detach().numpy())
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    assert "cache" not in a.state_dict() and "cache" in dict(a.named_buffers())


def test_state_dict_shares_memory_and_is_detached():
    m = Net()
    sd = m.state_dict()
    assert not sd["fc1.weight"].requires_grad
    m.fc1.weight.array[0, 0] = 42.0
    assert sd["fc1.weight"].array[0, 0] == 42.0
    assert m.state_dict(keep_vars=True)["fc1.weight"] is m.fc1.weight


def test_load_state_dict_accepts_numpy_arrays_and_keeps_parameter_identity():
    m = Net()
    w = m.fc1.weight
    sd = {k: np.full(tuple(v.shape), 0.5) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    assert m.fc1.weight is w and np.all(w.detach().numpy() == 0.5) and w.dtype == dg.float32


def test_load_state_dict_accepts_numbers_and_nested_lists():
    """A 0-d buffer saved as a Python int (num_batches_tracked), weights as lists: values, not an
    AttributeError on `.shape`; a list of the wrong shape is a size mismatch like any other."""
    bn = nn.BatchNorm1d(2)
    bn.load_state_dict({"weight": [1.0, 2.0], "bias": [0.0, 0.0], "running_mean": [0.0, 0.0],
                        "running_var": [1.0, 1.0], "num_batches_tracked": 5})  # fmt: skip
    assert int(bn.num_batches_tracked.item()) == 5 and bn.weight.detach().numpy().tolist() == [1.0, 2.0]
    with pytest.raises(
        nn.StateDictError, match=r"size mismatch for bias: .* shape torch.Size\(\[3\]\) from checkpoint"
    ):
        nn.Linear(2, 2).load_state_dict({"weight": [[0.0] * 2] * 2, "bias": [0.0] * 3})


@pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])
def test_batchnorm_loads_an_old_checkpoint_without_num_batches_tracked(m):
    # torch's BatchNorm fills it in for checkpoints older than the buffer (a plain dict has no version):
    # nothing missing, the module keeps its own count
    net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.BatchNorm1d(2))
    net[1].num_batches_tracked.fill_(4)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert tuple(net.load_state_dict(sd)) == ([], [])
    assert int(net[1].num_batches_tracked.item()) == 4


def test_strict_load_names_missing_and_unexpected_keys():
    m = Net()
    sd = dict(m.state_dict())
    del sd["fc2.bias"]
    sd["fc3.weight"] = dg.zeros(1)
    with pytest.raises(nn.StateDictError, match=r'Missing key\(s\) in state_dict: "fc2.bias"') as err:
        m.load_state_dict(sd)
    assert 'Unexpected key(s) in state_dict: "fc3.weight"' in str(err.value)
    assert str(err.value).index("Missing") < str(err.value).index("Unexpected")  # torch's order
    assert isinstance(err.value, RuntimeError)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["fc2.bias"] and unexpected == ["fc3.weight"]


@pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])
def test_load_state_dict_assign_takes_the_checkpoints_tensors_as_torch(m):
    net = m.nn.Sequential(m.nn.Linear(3, 2), m.nn.BatchNorm1d(2))
    net[0].weight.requires_grad_(False)
    sd = {k: (v.double() + 1) if v.is_floating_point() else v + 3 for k, v in net.state_dict().items()}
    assert tuple(net.load_state_dict(sd, assign=True)) == ([], [])
    w, b, mean = net[0].weight, net[0].bias, net[1].running_mean
    assert isinstance(w, m.nn.Parameter) and isinstance(b, m.nn.Parameter)
    assert (w.requires_grad, b.requires_grad) == (False, True)  # the old parameters' flags
    assert w.dtype == mean.dtype == m.float64  # the checkpoint's dtype, not converted
    assert w.data_ptr() == sd["0.weight"].data_ptr() if m is torch else np.shares_memory(w.array, sd["0.weight"].array)
    assert int(net[1].num_batches_tracked) == 3


@pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])
def test_a_one_element_value_loads_into_a_0d_tensor(m):
    net = m.nn.BatchNorm1d(2)
    sd = {**net.state_dict(), "num_batches_tracked": m.tensor([5])}
    net.load_state_dict(sd)
    assert int(net.num_batches_tracked) == 5 and net.num_batches_tracked.ndim == 0


def test_shape_mismatch_is_named_even_when_not_strict():
    m = Net()
    sd = dict(m.state_dict())
    sd["fc1.weight"] = dg.zeros(4, 5)
    msg = r"size mismatch for fc1.weight: copying a param with shape torch.Size\(\[4, 5\]\) from checkpoint, .* is torch.Size\(\[4, 3\]\)"
    with pytest.raises(nn.StateDictError, match=msg):
        m.load_state_dict(sd, strict=False)


def test_torch_weights_load_into_same_architecture():
    torch.manual_seed(0)  # unseeded, a value near zero now and then failed the relative tolerance alone
    dm, tm = build(nn).double(), build(torch.nn).double()
    dm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    dm.eval(), tm.eval()
    x = np.random.default_rng(0).standard_normal((6, 4))
    body = slice(0, 5)
    np.testing.assert_allclose(
        dm[body](dg.tensor(x)).detach().numpy(), tm[body](torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12
    )


def test_setattr_follows_torch_rules():
    m = Net()
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'weight'"):
        m.fc1.weight = dg.zeros(4, 3)
    m.fc1.bias = None
    assert "fc1.bias" not in m.state_dict() and m.fc1.bias is None
    m.scale = dg.full((2,), 3.0)  # stays a buffer
    assert "scale" in m.state_dict() and m.state_dict()["scale"].detach().numpy()[0] == 3.0
    m.extra = nn.Linear(1, 1)
    assert "extra.weight" in m.state_dict()
    del m.extra
    assert "extra.weight" not in m.state_dict() and not hasattr(m, "extra")
    with pytest.raises(KeyError, match="empty or contain"):
        m.register_buffer("a.b", dg.zeros(1))

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(dg.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_shared_parameters_appear_once_like_torch():
    def tied(m):
        a, b = m.Linear(3, 3), m.Linear(3, 3)
        b.weight = a.weight
        return m.Sequential(a, b, a)

    dm, tm = tied(nn), tied(torch.nn)
    assert [n for n, _ in dm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert len(list(dm.modules())) == len(list(tm.modules()))
    assert list(dm.state_dict()) == list(tm.state_dict())


def test_forward_hooks_pre_post_kwargs_prepend_and_remove():
    m = Net()
    calls = []
    x = dg.randn(2, 3)
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append("post") or out + 1)
    h3 = m.register_forward_hook(lambda mod, args, out: calls.append("first"), prepend=True)
    base = m.fc2(m.act(m.fc1(dg.zeros(2, 3))))
    np.testing.assert_allclose(m(x).detach().numpy(), base.detach().numpy() + 1, rtol=1e-6)
    assert calls == ["first", "post"]
    h4 = m.register_forward_pre_hook(lambda mod, args, kwargs: (args, {"shift": 10.0}), with_kwargs=True)
    h5 = m.register_forward_hook(lambda mod, args, kwargs, out: out * kwargs["shift"], with_kwargs=True)
    np.testing.assert_allclose(m(x).detach().numpy(), (base.detach().numpy() + 10.0 + 1) * 10.0, rtol=1e-6)
    for h in (h1, h2, h3, h4, h5):
        h.remove()
    np.testing.assert_allclose(m(x).detach().numpy(), m.fc2(m.act(m.fc1(x))).detach().numpy())


def test_repr_matches_torch():
    dm, tm = build(nn), build(torch.nn)
    assert repr(dm) == repr(tm)
    rep = [
        lambda m: m.ModuleList([m.Linear(2, 2) for _ in range(3)] + [m.ReLU(inplace=True)]),
        lambda m: m.Sequential(m.Softmax(dim=1), m.LeakyReLU(0.2), m.ELU(), m.GELU("tanh"), m.Softplus(2.0)),
        lambda m: m.Sequential(m.Flatten(), m.Unflatten(1, (2, 3)), m.Identity(), m.PReLU(3), m.Hardtanh(-2.0, 2.0)),
        lambda m: m.Sequential(m.BatchNorm2d(3, momentum=None), m.LayerNorm((2, 3), elementwise_affine=False)),
        lambda m: m.Sequential(m.GroupNorm(2, 4), m.RMSNorm(3), m.RMSNorm((2, 3), eps=0.1, elementwise_affine=False)),
        lambda m: m.Sequential(m.Bilinear(2, 3, 4), m.Embedding(10, 3, max_norm=1.0), m.Dropout2d(0.3)),
        lambda m: m.Sequential(m.CrossEntropyLoss(), m.MSELoss(), m.SiLU(), m.GLU(), m.Threshold(0.1, 2.0)),
    ]
    for make in rep:
        assert repr(make(nn)) == repr(make(torch.nn))


def test_train_eval_propagates_and_changes_behaviour():
    m = build(nn)
    assert all(mod.training for mod in m.modules())
    m.eval()
    assert not any(mod.training for mod in m.modules())
    x = dg.randn(4, 4)
    np.testing.assert_array_equal(
        m[:5](x).detach().numpy(), m[:5](x).detach().numpy()
    )  # eval: dropout off, running stats used
    m.train()
    assert m[3].training and m[1].training


def test_to_double_casts_floats_only_and_keeps_parameter_identity():
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    w = m[0].weight
    opt = optim.SGD(m.parameters(), lr=0.1)
    m(dg.randn(4, 3)).sum().backward()
    m.to(dg.float64)
    assert m[0].weight is w and w.dtype == dg.float64 and w.grad.dtype == dg.float64
    assert m[1].running_mean.dtype == dg.float64 and m[1].num_batches_tracked.dtype == dg.int64
    opt.step()  # the optimizer still holds the (now float64) parameters
    assert w.dtype == dg.float64
    assert m.float() is m and w.dtype == dg.float32
    with pytest.raises(TypeError, match="floating point"):
        m.to(dg.int64)


def test_to_device(device):
    m = Net().to(device)
    assert all(str(p.device) == str(dg.device(device)) for p in m.parameters())
    assert all(str(b.device) == str(dg.device(device)) for b in m.buffers())
    y = m(dg.randn(2, 3, device=device))
    assert str(y.device) == str(dg.device(device))


def test_zero_grad_set_to_none_and_in_place():
    m = Net()
    m(dg.randn(2, 3)).sum().backward()
    g = m.fc1.weight.grad
    m.zero_grad(set_to_none=False)
    assert m.fc1.weight.grad is g and not g.detach().numpy().any()
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_apply_visits_children_first_like_torch():
    seen_dg, seen_th = [], []
    build(nn).apply(lambda mod: seen_dg.append(type(mod).__name__))
    build(torch.nn).apply(lambda mod: seen_th.append(type(mod).__name__))
    assert seen_dg == seen_th


def test_requires_grad_and_submodule_lookup():
    m = build(nn)
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    assert m.get_submodule("6.head") is m[6]["head"]
    assert m.get_parameter("4.0.weight") is m[4][0].weight
    assert m.get_buffer("1.running_var") is m[1].running_var
    with pytest.raises(AttributeError, match="no submodule `nope`"):
        m.get_submodule("4.nope")


def test_deepcopy_gives_an_independent_module():
    m = Net()
    m(dg.randn(2, 3)).sum().backward()
    c = copy.deepcopy(m)
    np.testing.assert_array_equal(c.fc2.bias.grad.numpy(), m.fc2.bias.grad.numpy())
    assert isinstance(c.fc1.weight, nn.Parameter)
    np.testing.assert_array_equal(c.fc1.weight.detach().numpy(), m.fc1.weight.detach().numpy())
    c.fc1.weight.array[...] = 0
    assert m.fc1.weight.detach().numpy().any()
    assert list(c.state_dict()) == list(m.state_dict())


def test_containers_behave_like_lists_and_dicts():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    seq.append(nn.Sigmoid())
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    with pytest.raises(IndexError):
        seq[5]
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml += [nn.Linear(1, 2)]
    ml.insert(0, nn.Tanh())
    assert [type(x).__name__ for x in ml] == ["Tanh", "Linear", "Linear"]
    md = nn.ModuleDict({"a": nn.Linear(1, 1)})
    md["b"] = nn.ReLU()
    assert list(md) == ["a", "b"] and "b" in md and md.pop("b").__class__ is nn.ReLU
    pl = nn.ParameterList([dg.zeros(2), nn.Parameter(dg.ones(3))])
    pd = nn.ParameterDict({"w": dg.zeros(2, 2)})
    holder = nn.Module()
    holder.pl, holder.pd = pl, pd
    assert [n for n, _ in holder.named_parameters()] == ["pl.0", "pl.1", "pd.w"]
    assert all(isinstance(p, nn.Parameter) for p in holder.parameters())


def test_forward_missing_names_the_module():
    class NoForward(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match=r"Module \[NoForward\] is missing"):
        NoForward()(dg.zeros(1))


def _dict_and_namedtuple_model(m):
    import collections

    Out = collections.namedtuple("Out", "logits hidden")

    class Heads(m.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.body = m.Linear(3, 4)
            self.head = m.Linear(4, 2)

        def forward(self, x):
            h = m.functional.relu(self.body(x))
            if self.kind == "dict":
                return {"logits": self.head(h), "hidden": h}
            return Out(self.head(h), h)

    return Heads


@pytest.mark.parametrize("kind", ["dict", "namedtuple"])
def test_module_returning_a_dict_or_namedtuple_backward_state_dict_and_forward_hooks_as_torch(kind):
    tm = _dict_and_namedtuple_model(torch.nn)(kind).double()
    dm = _dict_and_namedtuple_model(nn)(kind).double()
    assert list(dm.state_dict()) == list(tm.state_dict()) == ["body.weight", "body.bias", "head.weight", "head.bias"]
    dm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    seen = {}

    def hook(lib):
        def fn(mod, args, out):
            seen[lib] = type(out).__name__
            get = (lambda k: out[k]) if isinstance(out, dict) else (lambda k: getattr(out, k))
            return {"logits": get("logits") * 2, "hidden": get("hidden")} if isinstance(out, dict) else out

        return fn

    dm.register_forward_hook(hook("dg"))
    tm.register_forward_hook(hook("torch"))
    x = np.random.default_rng(0).standard_normal((5, 3))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    outs = []
    for model, inp in ((dm, xd), (tm, xt)):
        out = model(inp)
        parts = (out["logits"], out["hidden"]) if kind == "dict" else (out.logits, out.hidden)
        ((parts[0] ** 2).sum() + parts[1].sum()).backward()
        outs.append(parts[0])
    assert seen["dg"] == seen["torch"]
    np.testing.assert_allclose(outs[0].detach().numpy(), outs[1].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10)
    for (name, p), q in zip(dm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, err_msg=name)
