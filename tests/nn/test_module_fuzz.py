"""nn modules against torch over their constructor options (seeded random draws): each draw builds the
distgraph module and torch's, checks that their state_dict keys and shapes agree and that the reprs are
equal, loads distgraph's values into torch, then compares, in float64, the outputs, the gradients of every
input and parameter, and the state (running statistics, renormed embedding rows) after the passes, plus
whether each side warned. Families whose options were just fuzzed elsewhere (attention, transformer,
transposed convolution, padding, upsampling) are left out.
"""

import random
import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn

torch = pytest.importorskip("torch")
TN = torch.nn


def _flat(out):
    return [y for x in out for y in _flat(x)] if isinstance(out, tuple | list) else [out]


def _np(t):
    return np.asarray(t.__array__()) if isinstance(t, dg.Tensor) else t.detach().numpy()


def _close(a, b, what):
    assert a.shape == b.shape, f"{what}: shape {a.shape} != torch {b.shape}"
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10, equal_nan=True, err_msg=what)


def _tensors(inputs, lib, nograd):
    """One library's tensors for the inputs; float arrays (and tuples of them, an LSTM state) require grad."""
    make = (
        (lambda a, g: dg.tensor(a, requires_grad=g)) if lib == "dg" else (lambda a, g: torch.tensor(a, requires_grad=g))
    )
    out = []
    for i, a in enumerate(inputs):
        if isinstance(a, tuple):
            out.append(tuple(make(v, i not in nograd) for v in a))
        else:
            out.append(make(a, a.dtype.kind == "f" and i not in nograd))
    return out


def _call(module, args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = module(*args)
    return out, [str(w.message) for w in caught]


def module_parity(dm, tm, inputs, train=True, passes=1, nograd=(), warn=True):
    """The comparison the module docstring describes; `inputs` are numpy arrays (tuples for an LSTM state)."""
    inputs = [np.asarray(a) if isinstance(a, np.generic) else a for a in inputs]
    dm.double(), tm.double()
    dsd, tsd = dm.state_dict(), tm.state_dict()
    assert [(k, tuple(v.shape)) for k, v in dsd.items()] == [(k, tuple(v.shape)) for k, v in tsd.items()]
    tm.load_state_dict({k: torch.from_numpy(np.array(_np(v), copy=True)) for k, v in dsd.items()})
    assert repr(dm) == repr(tm)
    dm.train(train), tm.train(train)
    rng = np.random.default_rng(0)
    for step in range(passes):
        din, tin = _tensors(inputs, "dg", nograd), _tensors(inputs, "torch", nograd)
        (to, twarn), (do, dwarn) = _call(tm, tin), _call(dm, din)
        if warn:
            assert bool(dwarn) == bool(twarn), f"warnings: distgraph {dwarn} vs torch {twarn}"
        outs = list(zip(_flat(do), _flat(to), strict=True))
        for i, (d, t) in enumerate(outs):
            _close(_np(d), _np(t), f"pass {step}: output {i}")
        pairs = [(d, t) for d, t in outs if t.requires_grad]
        if not pairs:
            continue
        seeds = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
        dg.autograd.backward([d for d, _ in pairs], [dg.tensor(s) for s in seeds])
        torch.autograd.backward([t for _, t in pairs], [torch.tensor(s) for s in seeds])
        for i, (d, t) in enumerate(zip(_flat(din), _flat(tin), strict=True)):
            if t.grad is not None:
                _close(_np(d.grad), _np(t.grad), f"pass {step}: gradient of input {i}")
        tparams = dict(tm.named_parameters())
        for name, p in dm.named_parameters():
            if tparams[name].grad is None:
                assert p.grad is None or not np.any(_np(p.grad)), f"{name}: torch has no gradient"
            else:
                _close(_np(p.grad), _np(tparams[name].grad), f"pass {step}: gradient of {name}")
        dm.zero_grad(), tm.zero_grad()
    dsd, tsd = dm.state_dict(), tm.state_dict()
    for k in tsd:
        _close(_np(dsd[k]), _np(tsd[k]), f"{k} after {passes} pass(es)")


def _tup(r, lo, hi, dims):
    return r.randint(lo, hi) if dims == 1 or r.random() < 0.5 else tuple(r.randint(lo, hi) for _ in range(dims))


def _each(v, dims):
    return (v,) * dims if isinstance(v, int) else tuple(v)


def _randn(r, shape):
    return np.random.default_rng(r.randint(0, 2**31)).standard_normal(shape)


# ---- one case per family: build both modules from drawn options, run module_parity --------------------------
def conv(r, dims):
    g = r.choice([1, 1, 2, 3])
    cin, cout = g * r.randint(1, 2), g * r.randint(1, 3)
    k, dil = _tup(r, 1, 4, dims), _tup(r, 1, 2, dims)
    mode, kind = r.choice(["zeros", "reflect", "replicate", "circular"]), r.choice(["int", "tuple", "same", "valid"])
    pad = {"int": r.randint(0, 3), "tuple": tuple(r.randint(0, 3) for _ in range(dims))}.get(kind, kind)
    stride = 1 if kind == "same" else _tup(r, 1, 3, dims)
    size = []
    for kk, d, p in zip(_each(k, dims), _each(dil, dims), _each(0 if isinstance(pad, str) else pad, dims)):
        span = d * (kk - 1) + 1  # the input holds one window, and a border pad narrower than it
        size.append(max(span, p + 1, span if kind == "same" else 1) + r.randint(0, 4))
    shape = ((r.randint(1, 3),) if r.random() < 0.8 else ()) + (cin, *size)
    a = dict(
        kernel_size=k, stride=stride, padding=pad, dilation=dil, groups=g, bias=r.random() < 0.7, padding_mode=mode
    )
    make = lambda lib: getattr(lib, f"Conv{dims}d")(cin, cout, **a)  # noqa: E731
    # torch warns that its 'same' with an even kernel copies the input: an implementation note, not behaviour
    module_parity(make(nn), make(TN), [_randn(r, shape)], train=r.random() < 0.5, warn=False)


def pool(r, kind, dims):
    k = _tup(r, 1, 4, dims)
    pad = tuple(min(r.randint(0, 2), kk // 2) for kk in _each(k, dims))
    a = dict(kernel_size=k, stride=None if r.random() < 0.3 else _tup(r, 1, 3, dims), ceil_mode=r.random() < 0.5,
             padding=pad[0] if dims == 1 else pad)  # fmt: skip
    dil = (1,) * dims
    if kind == "Max":
        a["dilation"] = _tup(r, 1, 2, dims)
        a["return_indices"], dil = r.random() < 0.5, _each(a["dilation"], dims)
    else:
        a["count_include_pad"] = r.random() < 0.5
        if dims == 2 and r.random() < 0.3:
            a["divisor_override"] = r.randint(1, 5)
    size = [d * (kk - 1) + 1 + r.randint(0, 6) for kk, d in zip(_each(k, dims), dil)]
    _pool_case(r, f"{kind}Pool{dims}d", a, size)


def adaptive(r, kind, dims):
    if dims == 1:
        out = r.randint(1, 10)
    else:
        out = r.choice([r.randint(1, 10), (r.randint(1, 10), r.randint(1, 10)), (None, r.randint(1, 7))])
    a = {"output_size": out, **({"return_indices": r.random() < 0.5} if kind == "Max" else {})}
    _pool_case(r, f"Adaptive{kind}Pool{dims}d", a, [r.randint(1, 9) for _ in range(dims)])


def _pool_case(r, name, a, size):
    shape = ((r.randint(1, 2),) if r.random() < 0.8 else ()) + (r.randint(1, 3), *size)
    x = _randn(r, shape)
    if r.random() < 0.4:  # ties within windows (as after a ReLU): the gradient goes to torch's pick alone
        x = np.maximum(np.round(x), 0)
    module_parity(getattr(nn, name)(**a), getattr(TN, name)(**a), [x])


def batch_norm(r, dims):
    c = r.randint(1, 4)
    a = dict(eps=r.choice([1e-5, 0.1]), momentum=r.choice([0.1, 0.5, None]), affine=r.random() < 0.7,
             track_running_stats=r.random() < 0.7)  # fmt: skip
    if dims == 1:
        shape = (r.randint(2, 4), c) + ((r.randint(1, 4),) if r.random() < 0.5 else ())
    else:
        shape = (r.randint(1, 3), c, r.randint(1, 3), r.randint(2, 3))
    dm, tm = getattr(nn, f"BatchNorm{dims}d")(c, **a), getattr(TN, f"BatchNorm{dims}d")(c, **a)
    if a["track_running_stats"] and r.random() < 0.5:  # statistics eval mode can tell from the defaults
        dm.running_mean.copy_(dg.tensor(_randn(r, c)))
        dm.running_var.copy_(dg.tensor(np.abs(_randn(r, c)) + 0.5))
        dm.num_batches_tracked.fill_(r.randint(0, 5))
    for p in dm.parameters():
        p.detach().copy_(dg.tensor(_randn(r, p.shape)))
    module_parity(dm, tm, [_randn(r, shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


def _trailing(r):
    dims = tuple(r.randint(1, 4) for _ in range(r.randint(1, 3)))
    normalized = dims[-1] if r.random() < 0.3 else dims[len(dims) - r.randint(1, len(dims)) :]
    return normalized, tuple(r.randint(1, 3) for _ in range(r.randint(0, 2))) + dims


def _with_params(r, dm, tm, shape):
    for p in dm.parameters():
        p.detach().copy_(dg.tensor(_randn(r, p.shape)))
    module_parity(dm, tm, [_randn(r, shape)])


def layer_norm(r):
    normalized, shape = _trailing(r)
    a = dict(eps=r.choice([1e-5, 0.1]), elementwise_affine=r.random() < 0.7, bias=r.random() < 0.7)
    _with_params(r, nn.LayerNorm(normalized, **a), TN.LayerNorm(normalized, **a), shape)


def rms_norm(r):
    normalized, shape = _trailing(r)
    a = dict(eps=r.choice([None, 1e-5, 0.1]), elementwise_affine=r.random() < 0.7)
    _with_params(r, nn.RMSNorm(normalized, **a), TN.RMSNorm(normalized, **a), shape)


def group_norm(r):
    g = r.randint(1, 3)
    c, a = g * r.randint(1, 3), dict(eps=r.choice([1e-5, 0.1]), affine=r.random() < 0.7)
    shape = (r.randint(1, 3), c) + tuple(r.randint(1, 3) for _ in range(r.randint(0, 2)))
    if np.prod(shape) == g:  # one value per group: both refuse (test_module_options checks the error)
        shape = (2, *shape[1:])
    _with_params(r, nn.GroupNorm(g, c, **a), TN.GroupNorm(g, c, **a), shape)


def embedding(r):
    n, d = r.randint(2, 8), r.randint(1, 4)
    a = dict(padding_idx=r.choice([None, r.randint(-n, n - 1)]), max_norm=r.choice([None, 0.5, 2.0]),
             norm_type=r.choice([2.0, 1.0, 3.0]), scale_grad_by_freq=r.random() < 0.4)  # fmt: skip
    ids = np.random.default_rng(r.randint(0, 2**31)).integers(
        0, n, tuple(r.randint(1, 4) for _ in range(r.randint(0, 3)))
    )
    module_parity(nn.Embedding(n, d, **a), TN.Embedding(n, d, **a), [ids], passes=2)


def recurrent(r, name):
    i, h = r.randint(1, 4), r.randint(1, 4)
    a = dict(num_layers=r.randint(1, 3), bias=r.random() < 0.7, batch_first=r.random() < 0.5,
             bidirectional=r.random() < 0.5)  # fmt: skip
    a["dropout"] = r.choice([0.0, 0.3]) if a["num_layers"] > 1 else 0.0  # only eval mode is deterministic
    if name == "RNN":
        a["nonlinearity"] = r.choice(["tanh", "relu"])
    if name == "LSTM" and h > 1 and r.random() < 0.3:
        a["proj_size"] = r.randint(1, h - 1)
    steps, batch, unbatched = r.randint(1, 4), r.randint(1, 3), r.random() < 0.25
    lead = () if unbatched else (batch,)
    inputs = [_randn(r, (steps, i) if unbatched else ((batch, steps, i) if a["batch_first"] else (steps, batch, i)))]
    if r.random() < 0.5:
        layers = (2 if a["bidirectional"] else 1) * a["num_layers"]
        h0 = _randn(r, (layers, *lead, a.get("proj_size") or h))
        inputs.append((h0, _randn(r, (layers, *lead, h))) if name == "LSTM" else h0)
    train = not a["dropout"] and r.random() < 0.5
    module_parity(getattr(nn, name)(i, h, **a), getattr(TN, name)(i, h, **a), inputs, train=train)


def cell(r, name):
    i, h, a = r.randint(1, 4), r.randint(1, 4), dict(bias=r.random() < 0.7)
    if name == "RNNCell":
        a["nonlinearity"] = r.choice(["tanh", "relu"])
    lead = () if r.random() < 0.3 else (r.randint(1, 3),)
    inputs = [_randn(r, (*lead, i))]
    if r.random() < 0.5:
        inputs.append((_randn(r, (*lead, h)), _randn(r, (*lead, h))) if name == "LSTMCell" else _randn(r, (*lead, h)))
    module_parity(getattr(nn, name)(i, h, **a), getattr(TN, name)(i, h, **a), inputs)


def shapes(r):
    """Linear, Bilinear, Flatten and Unflatten (a list size stays a list in the repr)."""
    g = np.random.default_rng(r.randint(0, 2**31))
    lead = tuple(r.randint(1, 3) for _ in range(r.randint(0, 2)))
    i, j, o, bias = r.randint(1, 4), r.randint(1, 4), r.randint(1, 4), r.random() < 0.7
    module_parity(nn.Linear(i, o, bias), TN.Linear(i, o, bias), [g.standard_normal((*lead, i))])
    module_parity(nn.Bilinear(i, j, o, bias), TN.Bilinear(i, j, o, bias),
                  [g.standard_normal((*lead, i)), g.standard_normal((*lead, j))])  # fmt: skip
    x = g.standard_normal(tuple(r.randint(1, 3) for _ in range(r.randint(1, 4))))
    start = r.randint(-x.ndim, x.ndim - 1)
    end = r.randint(start % x.ndim, x.ndim - 1) - r.choice([0, x.ndim])  # not before start; maybe negative
    module_parity(nn.Flatten(start, end), TN.Flatten(start, end), [x])
    dim, parts = r.randint(-x.ndim, x.ndim - 1), [r.randint(1, 3) for _ in range(r.randint(1, 3))]
    x = g.standard_normal(tuple(int(np.prod(parts)) if d == dim % x.ndim else s for d, s in enumerate(x.shape)))
    if r.random() < 0.3:
        parts[r.randrange(len(parts))] = -1
    size = parts if r.random() < 0.5 else tuple(parts)
    module_parity(nn.Unflatten(dim, size), TN.Unflatten(dim, size), [x])


def _reduction(r, *extra):
    return r.choice(["none", "mean", "sum", *extra])


def class_loss(r, name):
    """CrossEntropyLoss (class indices or probabilities, label smoothing) and NLLLoss; weight, ignore_index."""
    c, lead = r.randint(1, 5), (r.randint(1, 4),) if r.random() < 0.85 else ()
    spatial = tuple(r.randint(1, 3) for _ in range(r.choice([0, 0, 1, 2]))) if lead else ()
    g, dim = np.random.default_rng(r.randint(0, 2**31)), 1 if lead else 0
    x, a = g.standard_normal((*lead, c, *spatial)), dict(reduction=_reduction(r))
    weight = np.abs(g.standard_normal(c)) + 0.1 if r.random() < 0.5 else None
    if name == "CrossEntropyLoss" and r.random() < 0.4:
        target = g.random(x.shape)
        target /= target.sum(axis=dim, keepdims=True)
    else:
        target = g.integers(0, c, (*lead, *spatial))
        if r.random() < 0.5:
            a["ignore_index"] = r.choice([-100, 0, c - 1])
            target.flat[0] = a["ignore_index"]
    if name == "NLLLoss":
        x = x - np.log(np.exp(x).sum(axis=dim, keepdims=True))
    elif r.random() < 0.5:
        a["label_smoothing"] = r.choice([0.1, 0.5, 1.0])
    dm = getattr(nn, name)(None if weight is None else dg.tensor(weight), **a)
    tm = getattr(TN, name)(None if weight is None else torch.tensor(weight), **a)
    module_parity(dm, tm, [x, target])


def pointwise_loss(r, name):
    shape = tuple(r.randint(1, 4) for _ in range(r.randint(0, 3)))
    g = np.random.default_rng(r.randint(0, 2**31))
    x, t, a, bufs, nograd = g.standard_normal(shape), g.standard_normal(shape), dict(reduction=_reduction(r)), {}, ()
    if name == "SmoothL1Loss":
        a["beta"] = r.choice([1.0, 0.5, 0.0])
    elif name == "HuberLoss":
        a["delta"] = r.choice([1.0, 0.5, 2.0])
    elif name == "SoftMarginLoss":
        t, nograd = np.sign(t), (1,)  # torch has no target gradient here
    elif name == "KLDivLoss":
        a.update(log_target=r.random() < 0.5, reduction=_reduction(r, "batchmean"))
        x, t = -np.abs(x), -np.abs(t) if a["log_target"] else np.abs(t) * (g.random(shape) > 0.2)
        nograd = () if a["log_target"] else (1,)  # at a zero target torch's target gradient is NaN
    elif name in ("BCELoss", "BCEWithLogitsLoss"):
        x, t = 1 / (1 + np.exp(-x)) if name == "BCELoss" else x, g.random(shape)
        if r.random() < 0.5:
            bufs["weight"] = np.abs(g.standard_normal(shape[-1:] if r.random() < 0.5 else shape)) + 0.1
        if name == "BCEWithLogitsLoss" and r.random() < 0.5:
            bufs["pos_weight"] = np.abs(g.standard_normal(shape[-1:])) + 0.1
    elif name == "PoissonNLLLoss":
        a.update(log_input=r.random() < 0.5, full=r.random() < 0.5)
        x, t, nograd = x if a["log_input"] else np.abs(x), np.round(np.abs(t) * 3), (1,)  # zero targets: see below
    dm = getattr(nn, name)(**a, **{k: dg.tensor(v) for k, v in bufs.items()})
    tm = getattr(TN, name)(**a, **{k: torch.tensor(v) for k, v in bufs.items()})
    module_parity(dm, tm, [x, t], nograd=nograd)


def gaussian_nll(r):
    shape = tuple(r.randint(1, 4) for _ in range(r.randint(1, 3)))
    g = np.random.default_rng(r.randint(0, 2**31))
    var_shape = r.choice([shape, shape[:-1], (*shape[:-1], 1)])
    var = np.abs(g.standard_normal(var_shape)) * (g.random(var_shape) > 0.2)  # zeros: clamped at eps
    a = dict(full=r.random() < 0.5, eps=r.choice([1e-6, 0.1]), reduction=_reduction(r))
    module_parity(
        nn.GaussianNLLLoss(**a), TN.GaussianNLLLoss(**a), [g.standard_normal(shape), g.standard_normal(shape), var]
    )


def margin_ranking(r):
    g, shape = np.random.default_rng(r.randint(0, 2**31)), tuple(r.randint(1, 4) for _ in range(r.randint(0, 2)))
    a = dict(margin=r.choice([0.0, 0.5, -0.3]), reduction=_reduction(r))
    inputs = [g.standard_normal(shape), g.standard_normal(shape), np.sign(g.standard_normal(shape))]
    module_parity(nn.MarginRankingLoss(**a), TN.MarginRankingLoss(**a), inputs, nograd=(2,))


ACTIVATIONS = {
    **{
        n: lambda r: dict(inplace=r.random() < 0.5)
        for n in ("ReLU", "ReLU6", "SELU", "Hardsigmoid", "Hardswish", "SiLU", "Mish")
    },
    **{n: lambda r: {} for n in ("Sigmoid", "Tanh", "LogSigmoid", "Softsign", "Tanhshrink")},
    "LeakyReLU": lambda r: dict(negative_slope=r.choice([0.01, 0.2, 2.0]), inplace=r.random() < 0.5),
    "ELU": lambda r: dict(alpha=r.choice([1.0, 0.5, 2.0]), inplace=r.random() < 0.5),
    "CELU": lambda r: dict(alpha=r.choice([1.0, 0.5, 2.0]), inplace=r.random() < 0.5),
    "GELU": lambda r: dict(approximate=r.choice(["none", "tanh"])),
    "Softplus": lambda r: dict(beta=r.choice([1.0, 0.5, 2.0, -1.0]), threshold=r.choice([20.0, 1.0])),
    "Hardtanh": lambda r: dict(
        min_val=r.choice([-1.0, -2.0, 0.5]), max_val=r.choice([1.0, 2.5]), inplace=r.random() < 0.5
    ),
    "Threshold": lambda r: dict(threshold=r.choice([0.0, 0.5]), value=r.choice([0.0, -2.0]), inplace=r.random() < 0.5),
    "Hardshrink": lambda r: dict(lambd=r.choice([0.5, 0.0, 1.5])),
    "Softshrink": lambda r: dict(lambd=r.choice([0.5, 0.0, 1.5])),
    **{n: lambda r: dict(dim=r.choice([None, 0, -1])) for n in ("Softmax", "LogSoftmax", "Softmin")},
    "PReLU": lambda r: dict(num_parameters=r.choice([1, 3]), init=r.choice([0.25, -0.5])),
    "GLU": lambda r: dict(dim=-1),
}


def activation(r, name):
    """Each activation with drawn options; inplace=True is run as torch requires, on a non-leaf, and the
    input tensor must end up holding the output (and be what is returned)."""
    a = ACTIVATIONS[name](r)
    shape = [r.randint(1, 4) for _ in range(r.randint(0, 4))]
    if name == "GLU":
        shape = [*shape, 2 * r.randint(1, 2)]
    if name == "PReLU" and a["num_parameters"] > 1:
        shape = [shape[0] if shape else 2, 3, *shape[2:]]  # below 2-D, torch sees one channel
    x = _randn(r, shape) * 3
    if r.random() < 0.2:
        x = np.round(x)  # on the kinks
    dm, tm = getattr(nn, name)(**a), getattr(TN, name)(**a)
    if not a.get("inplace"):
        return module_parity(dm, tm, [x])
    assert repr(dm) == repr(tm)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd, yt = xd * 1.0, xt * 1.0
    od, ot = dm(yd), tm(yt)
    assert od is yd and ot is yt
    _close(_np(yd), _np(yt), "input written in place")
    seed = _randn(r, shape)
    od.backward(dg.tensor(seed)), ot.backward(torch.tensor(seed))
    _close(_np(xd.grad), _np(xt.grad), "gradient through the in-place activation")


FAMILIES = {
    "Conv1d": (lambda r: conv(r, 1), 25),
    "Conv2d": (lambda r: conv(r, 2), 25),
    **{f"{k}Pool{d}d": ((lambda r, k=k, d=d: pool(r, k, d)), 20) for k in ("Max", "Avg") for d in (1, 2)},
    **{f"Adaptive{k}Pool{d}d": ((lambda r, k=k, d=d: adaptive(r, k, d)), 20) for k in ("Max", "Avg") for d in (1, 2)},
    "BatchNorm1d": (lambda r: batch_norm(r, 1), 20),
    "BatchNorm2d": (lambda r: batch_norm(r, 2), 20),
    "LayerNorm": (layer_norm, 15),
    "RMSNorm": (rms_norm, 15),
    "GroupNorm": (group_norm, 15),
    "Embedding": (embedding, 30),
    **{n: ((lambda r, n=n: recurrent(r, n)), 12) for n in ("RNN", "GRU", "LSTM")},
    **{n: ((lambda r, n=n: cell(r, n)), 8) for n in ("RNNCell", "GRUCell", "LSTMCell")},
    "shapes": (shapes, 15),
    **{n: ((lambda r, n=n: class_loss(r, n)), 25) for n in ("CrossEntropyLoss", "NLLLoss")},
    **{
        n: ((lambda r, n=n: pointwise_loss(r, n)), 12)
        for n in (
            "MSELoss",
            "L1Loss",
            "SmoothL1Loss",
            "HuberLoss",
            "SoftMarginLoss",
            "KLDivLoss",
            "BCELoss",
            "BCEWithLogitsLoss",
            "PoissonNLLLoss",
        )  # fmt: skip
    },
    "GaussianNLLLoss": (gaussian_nll, 15),
    "MarginRankingLoss": (margin_ranking, 8),
    **{n: ((lambda r, n=n: activation(r, n)), 10) for n in ACTIVATIONS},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_module_options_match_torch(family):
    make, draws = FAMILIES[family]
    for i in range(draws):
        r = random.Random(f"{family}-{i}")
        try:
            make(r)
        except AssertionError as e:
            raise AssertionError(f"{family} draw {i} (random.Random('{family}-{i}')): {e}") from None
