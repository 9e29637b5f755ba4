"""The module fuzz's second menu: the families added after tests/nn/test_module_fuzz.py was written (3-d
convolution and pooling, LP pooling, unpooling, instance and local response norm, EmbeddingBag, CTC, the
distance and margin losses, AdaptiveLogSoftmaxWithLoss, SyncBatchNorm outside a process group, the Lazy
modules after their first forward, F.grid_sample and F.affine_grid, fractional max pooling). Each case draws constructor options and
inputs from `r` and hands both modules to the fuzz's `module_parity`, which compares them against torch.
"""

import numpy as np
import torch

import distgraph as dg
from distgraph import nn
from tests.nn.test_module_fuzz import _each, _pool_case, _randn, _reduction, _tup, conv, module_parity, pool

TN = torch.nn

# torch 2.13's own bugs, left out of the draws (each with why)
KNOWN = {
    "EmbeddingBag scale_grad_by_freq": "torch's CPU backward divides by the count of the wrong index once indices "
    "repeat unevenly (pytorch/pytorch#190063, fixed after 2.13): [0, 0, 1] gives row 1 a gradient of 0.5, not 1",
    "EmbeddingBag one offset, include_last_offset": "torch 2.13 segfaults (zero bags) where distgraph returns "
    "an empty (0, embedding_dim) result; the draws give such a module two offsets or more",
}


def _gen(r):
    return np.random.default_rng(r.randint(0, 2**31))


def _lead(r, p=0.8):
    return (r.randint(1, 3),) if r.random() < p else ()


def conv_transpose3d(r):
    g = r.choice([1, 1, 2])
    cin, cout = g * r.randint(1, 2), g * r.randint(1, 2)
    k, s, dil = _tup(r, 1, 3, 3), _tup(r, 1, 3, 3), _tup(r, 1, 2, 3)
    pad = _tup(r, 0, 2, 3)
    # output_padding must stay below stride or dilation, per dimension
    opad = tuple(r.randint(0, max(ss, dd) - 1) for ss, dd in zip(_each(s, 3), _each(dil, 3)))
    size = [r.randint(1, 3) for _ in range(3)]
    a = dict(kernel_size=k, stride=s, padding=pad, output_padding=opad, groups=g, dilation=dil, bias=r.random() < 0.7)
    out = [(i - 1) * ss - 2 * p + dd * (kk - 1) + o + 1 for i, ss, p, dd, kk, o in
           zip(size, _each(s, 3), _each(pad, 3), _each(dil, 3), _each(k, 3), opad)]  # fmt: skip
    if min(out) < 1:  # both refuse an empty output
        a["padding"] = 0
    x = _randn(r, (*_lead(r), cin, *size))
    module_parity(nn.ConvTranspose3d(cin, cout, **a), TN.ConvTranspose3d(cin, cout, **a), [x], train=r.random() < 0.5)


def adaptive3d(r, kind):
    out = r.choice([r.randint(1, 4), tuple(r.choice([None, r.randint(1, 4)]) for _ in range(3))])
    a = {"output_size": out, **({"return_indices": r.random() < 0.5} if kind == "Max" else {})}
    _pool_case(r, f"Adaptive{kind}Pool3d", a, [r.randint(1, 5) for _ in range(3)])


def lp_pool(r, dims):
    k = _tup(r, 1, 4, dims)
    a = dict(norm_type=r.choice([1, 2, 3, 1.5, 2.0]), kernel_size=k, stride=r.choice([None, _tup(r, 1, 3, dims)]),
             ceil_mode=r.random() < 0.5)  # fmt: skip
    size = [kk + r.randint(0, 4) for kk in _each(k, dims)]
    x = _randn(r, (*_lead(r), r.randint(1, 3), *size))
    if a["norm_type"] != int(a["norm_type"]) or r.random() < 0.5:
        x = np.abs(x) + 0.1  # a fractional power of a negative sum is NaN on both sides: a dull draw
    name = f"LPPool{dims}d"
    module_parity(getattr(nn, name)(**a), getattr(TN, name)(**a), [x])


def max_unpool(r, dims):
    k = _tup(r, 1, 4, dims)
    s = r.choice([None, _tup(r, 1, 3, dims)])
    pad = tuple(min(r.randint(0, 1), kk // 2) for kk in _each(k, dims))
    pad = min(pad) if r.random() < 0.5 else pad  # one int must fit every kernel side
    # an input the unpooling's default output size restores: (pooled - 1) * stride - 2 * padding + kernel
    steps = _each(k if s is None else s, dims)
    size = [(m - 1) * ss - 2 * p + kk for ss, p, kk in zip(steps, _each(pad, dims), _each(k, dims))
            for m in [r.randint(1, 3) + (2 * p >= kk)]]  # fmt: skip
    src = torch.tensor(_randn(r, (*_lead(r), r.randint(1, 3), *size)))
    pooled, idx = getattr(torch.nn.functional, f"max_pool{dims}d")(src, k, s, pad, return_indices=True)
    name = f"MaxUnpool{dims}d"
    dm, tm, inputs = getattr(nn, name)(k, s, pad), getattr(TN, name)(k, s, pad), [_randn(r, pooled.shape), idx.numpy()]
    if r.random() < 0.4:  # an explicit output_size (within a stride of the default), with or without (N, C)
        out = [v + r.randint(0, ss - 1) for v, ss in zip(size, steps)]
        if src.ndim == dims + 2 and r.random() < 0.5:
            out = list(src.shape[:2]) + out
        dm, tm = (_Wrap(lib, m, lambda m, x, i: m(x, i, out)) for lib, m in ((nn, dm), (TN, tm)))
    module_parity(dm, tm, inputs, nograd=(1,))


def _norm_state(r, dm, c):
    """Random affine parameters and running statistics, so eval mode can tell them from the defaults."""
    if getattr(dm, "track_running_stats", False) and r.random() < 0.5:
        dm.running_mean.copy_(dg.tensor(_randn(r, c)))
        dm.running_var.copy_(dg.tensor(np.abs(_randn(r, c)) + 0.5))
        dm.num_batches_tracked.fill_(r.randint(0, 5))
    for p in dm.parameters():
        p.detach().copy_(dg.tensor(_randn(r, p.shape)))


def _norm_options(r):
    return dict(eps=r.choice([1e-5, 0.1]), momentum=r.choice([0.1, 0.5, None]), affine=r.random() < 0.7,
                track_running_stats=r.random() < 0.7)  # fmt: skip


def _channels(r, c, a):
    """The input's channel count: without affine parameters or running statistics, sometimes not c (torch's
    batch norm then takes any count, its instance norm warns)."""
    return c + 1 if not (a["affine"] or a["track_running_stats"]) and r.random() < 0.3 else c


def instance_norm(r, dims):
    c, a = r.randint(1, 4), _norm_options(r)
    shape = (*_lead(r), _channels(r, c, a), *(r.randint(2, 4) for _ in range(dims)))
    name = f"InstanceNorm{dims}d"
    dm, tm = getattr(nn, name)(c, **a), getattr(TN, name)(c, **a)
    _norm_state(r, dm, c)
    module_parity(dm, tm, [_randn(r, shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


def batch_norm3d(r, name="BatchNorm3d"):
    c, a = r.randint(1, 4), _norm_options(r)
    shape = (r.randint(1, 3), _channels(r, c, a), r.randint(1, 3), r.randint(1, 3), r.randint(2, 3))
    dm, tm = getattr(nn, name)(c, **a), getattr(TN, name)(c, **a)
    _norm_state(r, dm, c)
    module_parity(dm, tm, [_randn(r, shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


def sync_batch_norm(r):
    """Outside a process group SyncBatchNorm is BatchNorm over any input of 2 or more dimensions."""
    c, a = r.randint(1, 4), _norm_options(r)
    shape = (r.randint(2, 3), _channels(r, c, a), *(r.randint(1, 3) for _ in range(r.randint(0, 3))))
    dm, tm = nn.SyncBatchNorm(c, **a), TN.SyncBatchNorm(c, **a)
    _norm_state(r, dm, c)
    module_parity(dm, tm, [_randn(r, shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


def local_response_norm(r):
    a = dict(size=r.randint(1, 5), alpha=r.choice([1e-4, 0.5, 2.0]), beta=r.choice([0.75, 0.5, 2.0]),
             k=r.choice([1.0, 2.0, 0.5]))  # fmt: skip
    shape = (r.randint(1, 3), r.randint(1, 6), *(r.randint(1, 3) for _ in range(r.randint(1, 3))))
    module_parity(nn.LocalResponseNorm(**a), TN.LocalResponseNorm(**a), [_randn(r, shape)])


def embedding_bag(r):
    n, d, g = r.randint(2, 8), r.randint(1, 4), _gen(r)
    a = dict(max_norm=r.choice([None, 0.5, 2.0]), norm_type=r.choice([2.0, 1.0]), mode=r.choice(["sum", "mean", "max"]),
             scale_grad_by_freq=False, include_last_offset=r.random() < 0.3,
             padding_idx=r.choice([None, r.randint(-n, n - 1)]))  # fmt: skip
    if r.random() < 0.5:  # 2-D input: one bag per row
        ids = g.integers(0, n, (r.randint(1, 3), r.randint(1, 4)))
        a["include_last_offset"] = False
        if a["mode"] == "sum" and r.random() < 0.5:  # per_sample_weights, offsets None
            dm, tm = (_Wrap(lib, lib.EmbeddingBag(n, d, **a), lambda m, x, w: m(x, None, w)) for lib in (nn, TN))
            return module_parity(dm, tm, [ids, g.standard_normal(ids.shape)], passes=2)
        inputs = [ids]
    else:
        ids = g.integers(0, n, r.randint(1, 8))
        # include_last_offset with a lone offset (no bag) crashes torch: see KNOWN
        offsets = np.sort(g.integers(0, len(ids) + 1, r.randint(1 + a["include_last_offset"], 4)))
        offsets[0] = 0
        inputs = [ids, offsets]
        if a["mode"] == "sum" and r.random() < 0.5:
            inputs.append(g.standard_normal(ids.shape))  # per_sample_weights
    dm, tm = nn.EmbeddingBag(n, d, **a), TN.EmbeddingBag(n, d, **a)
    module_parity(dm, tm, inputs, passes=2)


def ctc(r):
    g = _gen(r)
    c, batch, t = r.randint(2, 5), r.randint(1, 3), r.randint(1, 7)
    a = dict(blank=r.randint(0, c - 1), reduction=_reduction(r), zero_infinity=r.random() < 0.5)
    unbatched = r.random() < 0.2
    if unbatched:
        batch = 1
    x = g.standard_normal((t, batch, c))
    if r.random() < 0.8:  # torch takes any values; mostly log-probabilities
        x = x - np.log(np.exp(x).sum(-1, keepdims=True))
    in_len = g.integers(1, t + 1, batch)
    tgt_len = g.integers(0, t + 2, batch)  # above the input length: an impossible alignment (inf)
    labels = [v for v in range(c) if v != a["blank"]]
    s = int(tgt_len.max()) if tgt_len.max() else 1
    targets = g.choice(labels, (batch, s))
    if r.random() < 0.4:  # concatenated form
        targets = np.concatenate([targets[i, : tgt_len[i]] for i in range(batch)])
    if unbatched:
        x, in_len, tgt_len = x[:, 0], in_len[0], tgt_len[0]
        targets = targets[0, : int(tgt_len)] if targets.ndim == 2 else targets
    module_parity(nn.CTCLoss(**a), TN.CTCLoss(**a), [x, targets, in_len, tgt_len])


def _pair(r, g):
    d = r.randint(1, 4)
    s1 = (*_lead(r), d)
    s2 = s1 if r.random() < 0.7 else (1, d) if len(s1) == 2 else s1
    return g.standard_normal(s1), g.standard_normal(s2)


def pairwise(r):
    g = _gen(r)
    a = dict(p=r.choice([2.0, 1.0, 3.0, 0.5, 0.0, float("inf")]), eps=r.choice([1e-6, 0.1]), keepdim=r.random() < 0.5)
    module_parity(nn.PairwiseDistance(**a), TN.PairwiseDistance(**a), list(_pair(r, g)))


def cosine(r):
    g = _gen(r)
    shape = tuple(r.randint(1, 4) for _ in range(r.randint(1, 3)))
    other = tuple(1 if r.random() < 0.2 else s for s in shape)
    a = dict(dim=r.randint(-len(shape), len(shape) - 1), eps=r.choice([1e-8, 0.5]))
    module_parity(
        nn.CosineSimilarity(**a), TN.CosineSimilarity(**a), [g.standard_normal(shape), g.standard_normal(other)]
    )


def triplet(r):
    g, d = _gen(r), r.randint(1, 4)
    shape = (*_lead(r), d)
    a = dict(margin=r.choice([1.0, 0.1, 2.0]), p=r.choice([2.0, 1.0, 3.0]), eps=r.choice([1e-6, 0.1]),
             swap=r.random() < 0.5, reduction=_reduction(r))  # fmt: skip
    module_parity(nn.TripletMarginLoss(**a), TN.TripletMarginLoss(**a), [g.standard_normal(shape) for _ in range(3)])


def triplet_distance(r):
    g, d = _gen(r), r.randint(1, 4)
    shape = (*_lead(r), d)
    kind = r.choice(["none", "module", "cosine"])
    a = dict(margin=r.choice([1.0, 0.1, 2.0]), swap=r.random() < 0.5, reduction=_reduction(r))

    def make(lib, F):
        fn = {
            "none": None,
            "module": lib.PairwiseDistance(p=1.0),
            "cosine": lambda x, y: 1 - F.cosine_similarity(x, y, dim=-1),
        }
        return lib.TripletMarginWithDistanceLoss(distance_function=fn[kind], **a)

    dm, tm = make(nn, nn.functional), make(TN, torch.nn.functional)
    module_parity(dm, tm, [g.standard_normal(shape) for _ in range(3)])


def hinge_embedding(r):
    g, shape = _gen(r), tuple(r.randint(1, 4) for _ in range(r.randint(0, 3)))
    a = dict(margin=r.choice([1.0, 0.0, 2.0]), reduction=_reduction(r))
    x, t = g.standard_normal(shape), np.sign(g.standard_normal(shape))
    if r.random() < 0.3:  # targets other than 1 and -1: torch's formula still defines the loss
        t = g.integers(-1, 3, shape).astype(float)
    module_parity(nn.HingeEmbeddingLoss(**a), TN.HingeEmbeddingLoss(**a), [x, t], nograd=(1,))


def cosine_embedding(r):
    g, d, lead = _gen(r), r.randint(1, 4), _lead(r)
    a = dict(margin=r.choice([0.0, 0.5, -0.5]), reduction=_reduction(r))
    t = np.sign(g.standard_normal(lead)) if r.random() < 0.7 else g.integers(-1, 3, lead).astype(float)
    inputs = [g.standard_normal((*lead, d)), g.standard_normal((*lead, d)), t]
    module_parity(nn.CosineEmbeddingLoss(**a), TN.CosineEmbeddingLoss(**a), inputs, nograd=(2,))


def multi_margin(r):
    g, c, lead = _gen(r), r.randint(1, 5), _lead(r)
    w = np.abs(g.standard_normal(c)) + 0.1 if r.random() < 0.5 else None
    a = dict(p=r.choice([1, 2]), margin=r.choice([1.0, 0.5, 2.0]), reduction=_reduction(r))
    x, t = g.standard_normal((*lead, c)), g.integers(0, c, lead)
    dm = nn.MultiMarginLoss(weight=None if w is None else dg.tensor(w), **a)
    tm = TN.MultiMarginLoss(weight=None if w is None else torch.tensor(w), **a)
    module_parity(dm, tm, [x, t])


def multilabel_margin(r):
    g, c, lead = _gen(r), r.randint(1, 5), _lead(r)
    t = g.integers(-1, c, (*lead, c))  # labels up to the first -1 count
    red = _reduction(r)
    module_parity(nn.MultiLabelMarginLoss(reduction=red), TN.MultiLabelMarginLoss(reduction=red),
                  [g.standard_normal((*lead, c)), t])  # fmt: skip


def multilabel_soft_margin(r):
    g, c, lead = _gen(r), r.randint(1, 5), _lead(r)
    w = np.abs(g.standard_normal(c)) + 0.1 if r.random() < 0.5 else None
    red = _reduction(r)
    dm = nn.MultiLabelSoftMarginLoss(weight=None if w is None else dg.tensor(w), reduction=red)
    tm = TN.MultiLabelSoftMarginLoss(weight=None if w is None else torch.tensor(w), reduction=red)
    module_parity(dm, tm, [g.standard_normal((*lead, c)), (g.random((*lead, c)) < 0.5).astype(float)])


def shuffles(r):
    """ChannelShuffle, Softmax2d, and FeatureAlphaDropout and RReLU in eval mode (where they are deterministic)."""
    g, groups = _gen(r), r.randint(1, 3)
    x = g.standard_normal(
        (r.randint(1, 3), groups * r.randint(1, 3), *(r.randint(1, 3) for _ in range(r.randint(1, 2))))
    )
    module_parity(nn.ChannelShuffle(groups), TN.ChannelShuffle(groups), [x])
    x = g.standard_normal((*_lead(r), r.randint(1, 4), r.randint(1, 3), r.randint(1, 3)))
    module_parity(nn.Softmax2d(), TN.Softmax2d(), [x])
    p = r.choice([0.0, 0.3, 0.9, 1.0])
    train = p in (0.0, 1.0) and r.random() < 0.5  # the train-mode draws without randomness
    module_parity(nn.FeatureAlphaDropout(p), TN.FeatureAlphaDropout(p), [x], train=train)
    a = dict(lower=r.choice([1 / 8, 0.0, 0.3]), upper=r.choice([1 / 3, 0.5, 1.0]))
    if r.random() < 0.3:  # equal bounds: train mode samples the one slope
        a["upper"] = a["lower"]
    module_parity(nn.RReLU(**a), TN.RReLU(**a), [np.round(x * 3) if r.random() < 0.3 else x],
                  train=a["lower"] == a["upper"] and r.random() < 0.5)  # fmt: skip


def adaptive_log_softmax(r):
    g, d = _gen(r), r.randint(1, 4)
    n = r.randint(3, 12)
    cuts = sorted(r.sample(range(1, n), r.randint(1, min(3, n - 1))))
    a = dict(div_value=r.choice([4.0, 2.0, 1.5]), head_bias=r.random() < 0.5)
    dm, tm = nn.AdaptiveLogSoftmaxWithLoss(d, n, cuts, **a), TN.AdaptiveLogSoftmaxWithLoss(d, n, cuts, **a)
    lead = _lead(r, 0.85)
    module_parity(dm, tm, [g.standard_normal((*lead, d)), g.integers(0, n, lead)])


def lazy(r, name):
    """A Lazy module after its first forward: it has become the plain module (class, repr, state_dict)."""
    g, c, kw = _gen(r), r.randint(1, 3), {}
    if name == "LazyLinear":
        args, shape = (r.randint(1, 4),), (*_lead(r), r.randint(1, 3), r.randint(1, 4))
        kw["bias"] = r.random() < 0.7
    elif "Conv" in name:
        dims = int(name[-2])
        args = (r.randint(1, 3), _tup(r, 1, 3, dims))
        shape = (*_lead(r), c, *(r.randint(3, 5) for _ in range(dims)))
        kw = dict(stride=_tup(r, 1, 2, dims), padding=r.randint(0, 1), bias=r.random() < 0.7)
    else:
        dims = int(name[-2])
        args, shape = (), (r.randint(2, 3), c, *(r.randint(2, 3) for _ in range(dims)))
        kw = _norm_options(r)
    dm, tm = getattr(nn, name)(*args, **kw), getattr(TN, name)(*args, **kw)
    x = g.standard_normal(shape)
    first = x.astype(np.float32)  # lazy parameters materialize in the default dtype
    dm(dg.tensor(first)), tm(torch.tensor(first))
    assert type(dm).__name__ == type(tm).__name__, f"{name} became {type(dm).__name__}, torch {type(tm).__name__}"
    module_parity(dm, tm, [x], train=r.random() < 0.5)


def _functional(lib, fn, **a):
    """A module around one functional call, so module_parity can compare it."""
    return _Wrap(lib, None, lambda _, *args: getattr(lib.functional, fn)(*args, **a))


def _Wrap(lib, inner, call):
    """A module whose forward is call(inner, *tensors): for arguments module_parity cannot pass (None, sizes)."""

    class Call(lib.Module):
        def __init__(self):
            super().__init__()
            if inner is not None:
                self.inner = inner

        def forward(self, *args):
            return call(self.inner if inner is not None else None, *args)

    return Call()


def grid_sample(r):
    g, dims = _gen(r), r.choice([2, 3])
    a = dict(mode=r.choice(["bilinear", "nearest"] + ["bicubic"] * (dims == 2)),  # bicubic: 4-D input only
             padding_mode=r.choice(["zeros", "border", "reflection"]), align_corners=r.choice([True, False, None]))  # fmt: skip
    n, c = r.randint(1, 2), r.randint(1, 3)
    x = g.standard_normal((n, c, *(r.randint(1, 4) for _ in range(dims))))
    grid = g.uniform(-1.4, 1.4, (n, *(r.randint(1, 3) for _ in range(dims)), dims))
    if r.random() < 0.3:  # on pixel centres and half-way between them: rounding and reflection edges
        grid = np.round(grid * 4) / 4
    module_parity(_functional(nn, "grid_sample", **a), _functional(TN, "grid_sample", **a), [x, grid])


def affine_grid(r):
    g, dims = _gen(r), r.choice([2, 3])
    n = r.randint(1, 3)
    size = [n, r.randint(1, 3), *(r.randint(1, 4) for _ in range(dims))]
    a = dict(size=size, align_corners=r.choice([True, False, None]))
    theta = g.standard_normal((n, dims, dims + 1))
    module_parity(_functional(nn, "affine_grid", **a), _functional(TN, "affine_grid", **a), [theta])


def fractional_max_pool(r, dims):
    """Fixed `_random_samples` (a buffer, so the state dict carries it to torch): the same windows on both
    sides; ratios or sizes torch accepts (its 3-d check is strict: one input row more)."""
    g, k = _gen(r), _tup(r, 1, 3, dims)
    sizes = [kk + r.randint(0, 5) + (dims == 3) for kk in _each(k, dims)]
    lead = _lead(r)
    c = r.randint(1, 3)
    a = dict(kernel_size=k, return_indices=r.random() < 0.5)
    if r.random() < 0.5:
        out = [r.randint(1, s - kk + 1 - (dims == 3)) for s, kk in zip(sizes, _each(k, dims))]
        a["output_size"] = min(out) if r.random() < 0.3 else tuple(out)  # one int: every dim's
    else:  # a ratio in (0, 1) whose sizes fit the kernel
        ratios = [r.choice([0.25, 0.5, 0.6, 0.75, 0.9]) for _ in range(dims)]
        ratios = [
            q if int(s * q) + kk - 1 + (dims == 3) <= s else 0.01 for q, s, kk in zip(ratios, sizes, _each(k, dims))
        ]
        a["output_ratio"] = ratios[0] if r.random() < 0.3 and len(set(ratios)) == 1 else tuple(ratios)
    u = g.random(((lead or (1,))[0] + r.randint(0, 1), c, dims))
    x = g.standard_normal((*lead, c, *sizes))
    if r.random() < 0.4:  # ties within windows: torch's pick (the first maximum) takes the gradient
        x = np.maximum(np.round(x), 0)
    name = f"FractionalMaxPool{dims}d"
    dm = getattr(nn, name)(**a, _random_samples=dg.tensor(u).float())
    tm = getattr(TN, name)(**a, _random_samples=torch.tensor(u).float())
    module_parity(dm, tm, [x])


LAZY = ["LazyLinear"] + [
    f"Lazy{k}{d}d" for k in ("Conv", "ConvTranspose", "BatchNorm", "InstanceNorm") for d in (1, 2, 3)
]

FAMILIES = {
    "Conv3d": (lambda r: conv(r, 3), 20),
    "ConvTranspose3d": (conv_transpose3d, 20),
    **{f"{k}Pool3d": ((lambda r, k=k: pool(r, k, 3)), 15) for k in ("Max", "Avg")},
    **{f"Adaptive{k}Pool3d": ((lambda r, k=k: adaptive3d(r, k)), 15) for k in ("Max", "Avg")},
    **{f"LPPool{d}d": ((lambda r, d=d: lp_pool(r, d)), 15) for d in (1, 2, 3)},
    **{f"MaxUnpool{d}d": ((lambda r, d=d: max_unpool(r, d)), 15) for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": ((lambda r, d=d: instance_norm(r, d)), 15) for d in (1, 2, 3)},
    "BatchNorm3d": (batch_norm3d, 15),
    "SyncBatchNorm": (sync_batch_norm, 15),
    "LocalResponseNorm": (local_response_norm, 15),
    "EmbeddingBag": (embedding_bag, 30),
    "CTCLoss": (ctc, 30),
    "PairwiseDistance": (pairwise, 15),
    "CosineSimilarity": (cosine, 15),
    "TripletMarginLoss": (triplet, 15),
    "TripletMarginWithDistanceLoss": (triplet_distance, 15),
    "HingeEmbeddingLoss": (hinge_embedding, 10),
    "CosineEmbeddingLoss": (cosine_embedding, 10),
    "MultiMarginLoss": (multi_margin, 15),
    "MultiLabelMarginLoss": (multilabel_margin, 15),
    "MultiLabelSoftMarginLoss": (multilabel_soft_margin, 10),
    "shuffles": (shuffles, 15),
    "AdaptiveLogSoftmaxWithLoss": (adaptive_log_softmax, 15),
    **{n: ((lambda r, n=n: lazy(r, n)), 6) for n in LAZY},
    "grid_sample": (grid_sample, 30),
    "affine_grid": (affine_grid, 15),
    **{f"FractionalMaxPool{d}d": ((lambda r, d=d: fractional_max_pool(r, d)), 20) for d in (2, 3)},
}
