"""scaled_dot_product_attention and MultiheadAttention against torch float64: outputs, attention weights and
the gradients of every input, float mask and parameter (weights loaded from torch's state_dict), over the
combinations of options and masks; torch's NaN / zero behaviour on fully masked rows; errors naming shapes."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from tests.nn.test_recurrent import assert_outputs_and_gradients_match, copy
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)


def sdpa(m, *args, **kw):
    return (TF if m is torch else F).scaled_dot_product_attention(*args, **kw)


def _rows_masked(shape, rows=(1,)):
    """A bool 'attend' mask (True = take part) with random holes, every position of `rows` masked out."""
    mask = rng.random(shape) > 0.3
    mask[..., :, 0] = True
    for r in rows:
        mask[..., r, :] = False
    return mask


def _float(mask):
    return np.where(mask, rng.standard_normal(mask.shape), -np.inf)


# ---- scaled_dot_product_attention -----------------------------------------------------------------------
SDPA_SHAPES = {  # query, key, value
    "2d": ((3, 4), (5, 4), (5, 6)),
    "3d": ((2, 3, 4), (2, 5, 4), (2, 5, 6)),
    "4d": ((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 2)),
    "batch-broadcast": ((2, 1, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)),
}
SDPA_MASKS = {
    "none": lambda L, S: None,
    "bool-2d": lambda L, S: rng.random((L, S)) > 0.4,
    "bool-fully-masked-row": lambda L, S: _rows_masked((L, S)),
    "float-2d": lambda L, S: rng.standard_normal((L, S)),
    "float-inf-row": lambda L, S: _float(_rows_masked((L, S), rows=(0, 2))),
    "bool-broadcast-batch": lambda L, S: _rows_masked((2, 1, L, S)),
    "float-broadcast-batch": lambda L, S: _float(_rows_masked((2, 1, L, S))),
}


@pytest.mark.parametrize("shapes", SDPA_SHAPES, ids=str)
@pytest.mark.parametrize("mask", SDPA_MASKS, ids=str)
@pytest.mark.parametrize("scale", [None, 0.3])
def test_sdpa_matches_torch(shapes, mask, scale):
    q, k, v = (rng.standard_normal(s) for s in SDPA_SHAPES[shapes])
    m = SDPA_MASKS[mask](q.shape[-2], k.shape[-2])
    if m is not None and m.ndim > q.ndim:
        m = m[(0,) * (m.ndim - q.ndim)]  # (2, 1, L, S) -> (1, L, S) for a 3-D batch, (L, S) for 2-D
    if m is None:
        check(lambda *a: sdpa(dg, *a, scale=scale), lambda *a: sdpa(torch, *a, scale=scale), q, k, v)
    else:  # a float mask is an input too: its gradient is compared
        check(
            lambda *a: sdpa(dg, *a[:3], a[3], scale=scale),
            lambda *a: sdpa(torch, *a[:3], a[3], scale=scale),
            q,
            k,
            v,
            m,
        )


@pytest.mark.parametrize("L,S", [(4, 4), (3, 5), (5, 3)], ids=["square", "L<S", "L>S"])
def test_sdpa_is_causal_matches_torch(L, S):
    q, k, v = rng.standard_normal((2, L, 4)), rng.standard_normal((2, S, 4)), rng.standard_normal((2, S, 3))
    check(lambda *a: sdpa(dg, *a, is_causal=True), lambda *a: sdpa(torch, *a, is_causal=True), q, k, v)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_sdpa_grouped_query_attention_matches_torch(kv_heads):
    q, k, v = (
        rng.standard_normal((2, 4, 3, 6)),
        rng.standard_normal((2, kv_heads, 5, 6)),
        rng.standard_normal((2, kv_heads, 5, 6)),
    )
    mask = _rows_masked((3, 5))
    kw = dict(enable_gqa=True)
    check(
        lambda *a: sdpa(dg, *a, attn_mask=dg.tensor(mask), **kw),
        lambda *a: sdpa(torch, *a, attn_mask=torch.tensor(mask), **kw),
        q,
        k,
        v,
    )
    check(lambda *a: sdpa(dg, *a, is_causal=True, **kw), lambda *a: sdpa(torch, *a, is_causal=True, **kw), q, k, v)


def test_sdpa_fully_masked_row_is_zero_with_zero_gradient():
    q, k, v = (dg.tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4), (5, 4), (5, 2)))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=dg.tensor(_rows_masked((3, 5))))
    out.sum().backward()
    assert not out[1].detach().numpy().any() and np.isfinite(out.detach().numpy()).all()
    assert not q.grad[1].numpy().any() and np.isfinite(k.grad.numpy()).all()


def test_sdpa_dropout_zeroes_weights_and_is_unbiased():
    dg.manual_seed(0)
    q, k, v = (dg.tensor(rng.standard_normal(s)) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 4)))
    exact = F.scaled_dot_product_attention(q, k, v).numpy()
    eye = dg.tensor(np.broadcast_to(np.eye(5), (2, 5, 5)).copy())  # values = identity: the output is the weights
    draws = np.stack([F.scaled_dot_product_attention(q, k, eye, dropout_p=0.4).numpy() for _ in range(3000)])
    weights = F.scaled_dot_product_attention(q, k, eye).numpy()
    assert (draws == 0).mean() == pytest.approx(0.4, abs=0.02)
    np.testing.assert_allclose(draws.mean(0), weights, atol=0.03)  # kept weights are scaled by 1/(1-p)
    assert not F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy().any()
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, k, v, dropout_p=0.0).numpy(), exact)


@pytest.mark.parametrize("mask", ["bool", "none", "causal"])  # none and causal: the fused weights op
def test_sdpa_double_backward_matches_torch(mask):
    arrays = [rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3))]
    bool_mask = _rows_masked((3, 5))
    grads = []
    for m, mk in ((dg, dg.tensor), (torch, torch.tensor)):
        xs = [mk(a, requires_grad=True) for a in arrays]
        kw = {"attn_mask": mk(bool_mask)} if mask == "bool" else {"is_causal": mask == "causal", "scale": 0.7}
        gs = m.autograd.grad(sdpa(m, *xs, **kw).pow(2).sum(), xs, create_graph=True)
        grads.append(m.autograd.grad(sum((g * g).sum() for g in gs), xs))
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-8, atol=1e-11)


# ---- MultiheadAttention -----------------------------------------------------------------------------------
E, H, L, S, N = 8, 2, 4, 5, 3


def _pair(**kw):
    dm, tm = nn.MultiheadAttention(E, H, **kw), torch.nn.MultiheadAttention(E, H, **kw)
    copy(dm, tm)  # also asserts the parameter names and order are torch's
    return dm, tm


def _attn_mask(kind, tgt, src, n=N, r=rng):
    """(mask, is_causal) in MultiheadAttention's convention: bool True = masked; float is added. n=0: unbatched."""
    if kind is None:
        return None, False
    if kind == "causal":  # the is_causal hint comes with the mask itself, as torch requires
        return np.triu(np.ones((tgt, src), bool), 1), True
    shape = (tgt, src) if kind.endswith("2d") else (max(n, 1) * H, tgt, src)
    m = r.random(shape) < 0.3
    m[..., 0] = False  # every query row keeps a key (fully masked rows are tested on their own)
    return (m if kind.startswith("bool") else np.where(m, -np.inf, r.standard_normal(shape))), False


def _kpm(kind, src, n=N, r=rng):
    """A key_padding_mask whose last sequence is shorter (bool: True = padding; float: -inf there)."""
    if kind is None:
        return None
    pad = np.zeros((max(n, 1), src), bool)
    pad[-1, src - max(src // 2, 1) + (src == 1) :] = True  # never every key of a sequence
    pad = pad if n else pad[0]
    return pad if kind == "bool" else np.where(pad, -np.inf, r.standard_normal(pad.shape))


def _inputs(kind, kdim, vdim, batch_first, tgt=L, src=S, n=N, r=rng):
    """query, key, value arrays; "self" passes one array three times, "kv" one for key and value (torch
    projects such inputs in one product, and so must distgraph: identity has to survive batch_first)."""
    seq = (lambda t, e: (t, e)) if not n else (lambda t, e: (n, t, e)) if batch_first else (lambda t, e: (t, n, e))
    q = r.standard_normal(seq(tgt, E))
    if kind == "self" and kdim == vdim == E:
        return q, q, q
    if kind == "kv" and kdim == vdim:
        kv = r.standard_normal(seq(src, kdim))
        return q, kv, kv
    return q, r.standard_normal(seq(src, kdim)), r.standard_normal(seq(src, vdim))


def _leaves(*arrays):
    """A dg and a torch tensor per distinct array (by identity); float ones require grad."""
    d, t = {}, {}
    for a in arrays:
        if a is not None and id(a) not in d:
            grad = a.dtype.kind == "f"
            d[id(a)], t[id(a)] = dg.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)
    return d, t


def run_mha(dm, tm, q, k, v, mask=None, kpm=None, r=rng, **kw):
    """dm and tm on the same inputs: outputs, weights, and the gradients of every parameter, input and float mask."""
    d, t = _leaves(q, k, v, mask, kpm)
    kwargs_d = {"attn_mask": d.get(id(mask)), "key_padding_mask": d.get(id(kpm)), **kw}
    kwargs_t = {"attn_mask": t.get(id(mask)), "key_padding_mask": t.get(id(kpm)), **kw}
    leaves = [(x, t[i]) for i, x in d.items() if x.requires_grad]
    dm.zero_grad(), tm.zero_grad()
    assert_outputs_and_gradients_match(
        dm,
        tm,
        [d[id(a)] for a in (q, k, v)],
        [t[id(a)] for a in (q, k, v)],
        [x for x, _ in leaves],
        [y for _, y in leaves],
        draw=r,
        kwargs_d=kwargs_d,
        kwargs_t=kwargs_t,
    )


MODULE_OPTIONS = [
    dict(bias=b, add_bias_kv=bkv, add_zero_attn=z, kdim=kv[0], vdim=kv[1], batch_first=bf)
    for b, bkv, z, kv, bf in itertools.product(
        [True, False], [False, True], [False, True], [(None, None), (6, 3)], [False, True]
    )
]
CALLS = [  # (inputs, attn_mask, key_padding_mask, need_weights, average_attn_weights): every mask kind, with and
    ("self", None, None, True, True),  # without padding, through both of torch's paths (need_weights or not)
    ("self", "bool-2d", "bool", False, True),
    ("kv", "float-2d", None, True, False),
    ("separate", "bool-3d", "bool", True, True),
    ("separate", "float-3d", "bool", False, True),
    ("self", "causal", None, False, True),  # the is_causal hint alone reaches scaled_dot_product_attention
    ("self", "causal", "bool", True, False),
    ("kv", "float-2d", "float", False, True),
]


@pytest.mark.parametrize("options", MODULE_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("n", [N, 0], ids=["batched", "unbatched"])
@pytest.mark.filterwarnings("ignore:Support for mismatched")
def test_multihead_attention_matches_torch(options, n):
    dm, tm = _pair(**options)
    kdim, vdim = options["kdim"] or E, options["vdim"] or E
    for inputs, mask_kind, kpm_kind, need_weights, average in CALLS:
        q, k, v = _inputs(inputs, kdim, vdim, options["batch_first"], n=n)
        src = k.shape[-2 if n and options["batch_first"] else 0]
        mask, causal = _attn_mask(mask_kind, L, src, n)
        kw = dict(need_weights=need_weights, average_attn_weights=average, is_causal=causal)
        run_mha(dm, tm, q, k, v, mask, _kpm(kpm_kind, src, n), **kw)


@settings(max_examples=40, deadline=None)
@given(
    bias=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
    kvdim=st.sampled_from([(None, None), (5, 5), (6, 3)]),
    batch_first=st.booleans(),
    inputs=st.sampled_from(["self", "kv", "separate"]),
    mask=st.sampled_from([None, "bool-2d", "float-2d", "bool-3d", "float-3d", "causal"]),
    kpm=st.sampled_from([None, "bool", "float"]),
    need_weights=st.booleans(),
    average=st.booleans(),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(0, 3)),  # target, source, batch (0: unbatched)
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.filterwarnings("ignore:Support for mismatched")
def test_random_configurations_match_torch(
    bias, add_bias_kv, add_zero_attn, kvdim, batch_first, inputs, mask, kpm, need_weights, average, sizes, seed
):
    options = dict(bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, kdim=kvdim[0], vdim=kvdim[1])
    dm, tm = _pair(batch_first=batch_first, **options)
    r, (tgt, src, n) = np.random.default_rng(seed), sizes
    if inputs == "self" and kvdim[0] is None:
        src = tgt
    q, k, v = _inputs(inputs, kvdim[0] or E, kvdim[1] or E, batch_first, tgt, src, n, r)
    attn_mask, causal = _attn_mask(mask, tgt, src, n, r)
    kw = dict(need_weights=need_weights, average_attn_weights=average, is_causal=causal)
    run_mha(dm, tm, q, k, v, attn_mask, _kpm(kpm, src, n, r), r, **kw)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_fully_padded_sequence_is_nan_with_weights_and_zero_attention_without_as_torch(need_weights):
    """torch's two paths differ on a sequence whose every key is padding: need_weights=True softmaxes a row
    of -inf (NaN, in the output and weights); need_weights=False goes through scaled_dot_product_attention,
    whose fully masked rows are 0, so the output is out_proj's bias there and gradients stay finite."""
    dm, tm = _pair()
    q = rng.standard_normal((L, N, E))
    kpm = np.zeros((N, L), bool)
    kpm[1] = True
    if not need_weights:
        run_mha(dm, tm, q, q, q, kpm=kpm, need_weights=False)
        return
    xd, xt = dg.tensor(q), torch.tensor(q)
    (od, wd), (ot, wt) = (
        dm(xd, xd, xd, key_padding_mask=dg.tensor(kpm)),
        tm(xt, xt, xt, key_padding_mask=torch.tensor(kpm)),
    )
    assert np.isnan(od.detach().numpy()[:, 1]).all() and np.isnan(wd.detach().numpy()[1]).all()
    for a, b in ((od, ot), (wd, wt)):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12, equal_nan=True)


def test_dropout_acts_in_training_only():
    dm, tm = _pair(dropout=0.5)
    x = dg.tensor(rng.standard_normal((L, N, E)))
    dm.eval(), tm.eval()
    eval_out, eval_w = dm(x, x, x, average_attn_weights=False)
    expected = tm(*(torch.tensor(x.numpy()),) * 3)[0].detach().numpy()
    np.testing.assert_allclose(eval_out.detach().numpy(), expected, rtol=1e-9, atol=1e-12)
    dm.train()
    for need_weights in (True, False):
        a, b = (dm(x, x, x, need_weights=need_weights)[0].detach().numpy() for _ in range(2))
        assert not np.allclose(a, eval_out.detach().numpy()) and not np.allclose(a, b)  # a fresh mask per call
    w = dm(x, x, x, average_attn_weights=False)[1].detach().numpy()
    kept = w > 0
    assert 0.3 < 1 - kept.mean() < 0.7
    np.testing.assert_allclose(w[kept], 2 * eval_w.detach().numpy()[kept])  # survivors scaled by 1/(1-p)


def test_default_initialization_is_torchs():
    m = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    bound = np.sqrt(6 / (16 + 48))  # xavier_uniform over the packed (3E, E) weight
    w = m.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and w.std() > bound / 2
    assert not m.in_proj_bias.detach().numpy().any() and not m.out_proj.bias.detach().numpy().any()
    assert m.bias_k.shape == (1, 1, 16) and m.bias_k.detach().numpy().std() > 0
    separate = nn.MultiheadAttention(16, 4, kdim=5, vdim=7, bias=False)
    assert separate.in_proj_weight is None and separate.in_proj_bias is None and separate.out_proj.bias is None
    assert [tuple(p.shape) for p in separate.parameters()] == [(16, 16), (16, 5), (16, 7), (16, 16)]
    assert repr(m) == repr(torch.nn.MultiheadAttention(16, 4))


def _mha_call(query=(L, N, E), key=(S, N, E), value=(S, N, E), **masks):
    m = nn.MultiheadAttention(E, H)
    t = {k: dg.tensor(np.zeros(v, bool) if isinstance(v, tuple) else v) for k, v in masks.items()}
    return m(dg.randn(*query), dg.randn(*key), dg.randn(*value), **t)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: nn.MultiheadAttention(10, 3), ValueError, "embed_dim 10 is not divisible by num_heads 3"),
        (lambda: nn.MultiheadAttention(0, 1), ValueError, "greater than 0"),
        (
            lambda: _mha_call(attn_mask=(L, L)),
            dg.errors.ShapeError,
            r"2-D attn_mask is \(4, 4\), but should be \(4, 5\)",
        ),
        (
            lambda: _mha_call(attn_mask=(N, L, S)),
            dg.errors.ShapeError,
            r"3-D attn_mask is \(3, 4, 5\), but should be \(6, 4, 5\)",
        ),
        (
            lambda: _mha_call(attn_mask=(1, 1, L, S)),
            dg.errors.ShapeError,
            r"attn_mask must be 2-D or 3-D.*\(1, 1, 4, 5\)",
        ),
        (
            lambda: _mha_call(key_padding_mask=(N, L)),
            dg.errors.ShapeError,
            r"key_padding_mask of shape \(3, 5\).*got \(3, 4\)",
        ),
        (lambda: _mha_call(key_padding_mask=(S,)), dg.errors.ShapeError, r"key_padding_mask must be 2-D.*\(5,\)"),
        (
            lambda: _mha_call(value=(S + 1, N, E)),
            dg.errors.ShapeError,
            r"key shape does not match value shape.*\(6, 3, 8\)",
        ),
        (lambda: _mha_call(query=(L, N, E - 2)), dg.errors.ShapeError, r"expected embedding dimension 8.*\(4, 3, 6\)"),
        (lambda: _mha_call(key=(S, 2, E), value=(S, 2, E)), dg.errors.ShapeError, r"same batch size.*\(5, 2, 8\)"),
        (lambda: _mha_call(query=(1, L, N, E)), dg.errors.ShapeError, r"query must be 2-D .*\(1, 4, 3, 8\)"),
        (
            lambda: _mha_call(attn_mask=np.zeros((L, S), np.int64)),
            dg.errors.DTypeError,
            "bool and floating types of attn_mask",
        ),
        (
            lambda: F.multi_head_attention_forward(
                *(dg.randn(L, N, E),) * 3, E, H, None, None, None, None, False, 0.0, dg.randn(E, E), None
            ),
            ValueError,
            "in_proj_weight must be given",
        ),
        (
            lambda: nn.MultiheadAttention(E, H, add_bias_kv=True)(
                *(dg.randn(L, N, E),) * 3, key_padding_mask=dg.zeros(N, S, dtype=dg.bool)
            ),
            dg.errors.ShapeError,
            r"key_padding_mask of shape \(3, 4\) \(batch, source length\), got \(3, 5\)",
        ),
        (
            lambda: nn.MultiheadAttention(E, H)(*(dg.randn(L, N, E),) * 3, is_causal=True),
            ValueError,
            "is_causal needs attn_mask",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_multihead_input_raises_naming_shapes(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "kw,error,match",
    [
        (
            dict(attn_mask=np.ones((4, 5), bool)),
            dg.errors.ShapeError,
            r"attn_mask \(4, 5\) does not broadcast to the attention weights \(2, 3, 5\)",
        ),
        (
            dict(attn_mask=np.ones((3, 5), np.int64)),
            dg.errors.DTypeError,
            "Expected attn_mask dtype to be bool or float or to match query dtype, but got attn_mask.dtype: long",
        ),
        (
            dict(attn_mask=np.ones((3, 5), bool), is_causal=True),  # 3-D: not torch's fused path, which takes both
            ValueError,
            "Explicit attn_mask should not be set when is_causal=True",
        ),
        (dict(key=(2, 3, 4)), dg.errors.ShapeError, r"same embedding size.*key \(2, 3, 4\)"),
        (dict(value=(2, 4, 2)), dg.errors.ShapeError, r"same sequence length.*value \(2, 4, 2\)"),
        (dict(query=(4,)), dg.errors.ShapeError, r"at least 2-D.*query \(4,\)"),
        (dict(query=(3, 3, 6)), dg.errors.ShapeError, r"batch dims .* do not broadcast.*query \(3, 3, 6\)"),
        (
            dict(enable_gqa=True, query=(3, 3, 6)),
            dg.errors.ShapeError,
            r"heads of key \(2\) and value \(2\) must divide the heads of query \(3\)",
        ),
        (dict(dropout_p=1.5), ValueError, "dropout probability has to be between 0 and 1, but got 1.5"),
        (
            dict(value=np.float32),
            dg.errors.DTypeError,
            "Expected query, key, and value to have the same dtype, but got query.dtype: double key.dtype: double",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_sdpa_input_raises_naming_shapes(kw, error, match):
    args = {"query": (2, 3, 6), "key": (2, 5, 6), "value": (2, 5, 2)}
    for name in ("query", "key", "value"):
        v = kw.pop(name, args[name])
        args[name] = (
            dg.randn(*args[name], dtype=dg.float64).to(dg.float32)
            if v is np.float32
            else dg.randn(*v, dtype=dg.float64)
        )
    if "attn_mask" in kw:
        kw["attn_mask"] = dg.tensor(kw["attn_mask"])
    with pytest.raises(error, match=match):
        F.scaled_dot_product_attention(**args, **kw)


@pytest.mark.parametrize("need_weights", [True, False])
def test_functional_with_static_key_value_and_separate_weights_matches_torch(need_weights):
    """multi_head_attention_forward called directly: separate projection weights, and static_k / static_v
    (already projected (N*H, S, head_dim) keys and values) in place of the projected key and value."""
    arrays = {
        "query": rng.standard_normal((L, N, E)),
        "key": rng.standard_normal((S, N, 6)),
        "value": rng.standard_normal((S, N, 6)),
        "in_proj_bias": rng.standard_normal(3 * E),
        "out_proj_weight": rng.standard_normal((E, E)),
        "out_proj_bias": rng.standard_normal(E),
        "q_proj_weight": rng.standard_normal((E, E)),
        "k_proj_weight": rng.standard_normal((E, 6)),
        "v_proj_weight": rng.standard_normal((E, 6)),
        "static_k": rng.standard_normal((N * H, S + 1, E // H)),
        "static_v": rng.standard_normal((N * H, S + 1, E // H)),
    }
    names = list(arrays)

    def call(m, *xs):
        kw = dict(zip(names, xs))
        f = (TF if m is torch else F).multi_head_attention_forward
        q, k, v = kw.pop("query"), kw.pop("key"), kw.pop("value")
        out = f(q, k, v, E, H, None, kw.pop("in_proj_bias"), None, None, False, 0.0, kw.pop("out_proj_weight"),
                kw.pop("out_proj_bias"), use_separate_proj_weight=True, need_weights=need_weights, **kw)  # fmt: skip
        return tuple(o for o in out if o is not None)

    check(lambda *xs: call(dg, *xs), lambda *xs: call(torch, *xs), *arrays.values())
    with pytest.raises(dg.errors.ShapeError, match=r"static_k of shape \(batch\*num_heads=6, S, head_dim=4\)"):
        call(dg, *(dg.tensor(a[:2] if n == "static_k" else a) for n, a in arrays.items()))
