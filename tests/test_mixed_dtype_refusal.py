"""Products, convolutions, normalizations and attention refuse operands of mixed dtypes in torch's words
(ops/same_dtype.py); elementwise ops still promote. Each case runs in torch and in distgraph from the same
numpy arrays; distgraph must raise DTypeError with torch's message, or agree with torch's result dtype."""

import contextlib
import re
import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ConfigError, DTypeError

torch = pytest.importorskip("torch")

rng = np.random.default_rng(0)
A = rng.standard_normal((2, 3))
IMG = rng.standard_normal((1, 2, 5, 5))
QKV = rng.standard_normal((1, 2, 4, 8))


def f32(a):
    return a.astype(np.float32)


def i64(a):
    return np.ones(a.shape, np.int64)


# (name, fn(lib, F, t)): t makes a tensor of lib from a numpy array (its dtype kept)
REFUSED = [
    ("matmul 2d", lambda lib, F, t: t(f32(A)) @ t(A.T)),
    ("matmul 1d", lambda lib, F, t: t(f32(A[0])) @ t(A[0])),
    ("matmul 2d·1d", lambda lib, F, t: t(f32(A)) @ t(A[0])),
    ("matmul 1d·2d", lambda lib, F, t: t(A[0]) @ t(f32(A.T))),
    ("matmul 3d", lambda lib, F, t: t(f32(A[None])) @ t(A.T[None])),
    ("matmul 3d·2d", lambda lib, F, t: t(f32(A[None])) @ t(A.T)),
    ("matmul 3d·1d", lambda lib, F, t: t(f32(A[None])) @ t(A[0])),
    ("matmul int", lambda lib, F, t: t(f32(A)) @ t(i64(A.T))),
    ("mm", lambda lib, F, t: lib.mm(t(f32(A)), t(A.T))),
    ("mv", lambda lib, F, t: lib.mv(t(A), t(f32(A[0])))),
    ("dot", lambda lib, F, t: lib.dot(t(f32(A[0])), t(A[0]))),
    ("vdot", lambda lib, F, t: lib.vdot(t(f32(A[0])), t(A[0]))),
    ("bmm", lambda lib, F, t: lib.bmm(t(f32(A[None])), t(A.T[None]))),
    ("addmm self", lambda lib, F, t: lib.addmm(t(np.zeros((2, 2))), t(f32(A)), t(f32(A.T)))),
    ("addmm mat1", lambda lib, F, t: lib.addmm(t(f32(np.zeros((2, 2)))), t(A), t(f32(A.T)))),
    ("addmv", lambda lib, F, t: lib.addmv(t(np.zeros(2)), t(f32(A)), t(f32(A[0])))),
    ("baddbmm input", lambda lib, F, t: lib.baddbmm(t(np.zeros((1, 2, 2))), t(f32(A[None])), t(f32(A.T[None])))),
    ("baddbmm batch2", lambda lib, F, t: lib.baddbmm(t(f32(np.zeros((1, 2, 2)))), t(f32(A[None])), t(A.T[None]))),
    ("addbmm", lambda lib, F, t: lib.addbmm(t(np.zeros((2, 2))), t(f32(A[None])), t(f32(A.T[None])))),
    ("tensordot", lambda lib, F, t: lib.tensordot(t(f32(A)), t(A), dims=([1], [1]))),
    ("inner", lambda lib, F, t: lib.inner(t(f32(A)), t(A))),
    ("einsum", lambda lib, F, t: lib.einsum("ij,kj->ik", t(f32(A)), t(A))),
    ("einsum summed", lambda lib, F, t: lib.einsum("ij,ij->i", t(f32(A)), t(A))),
    ("einsum third", lambda lib, F, t: lib.einsum("ij,kj,k->i", t(f32(A)), t(f32(A)), t(A[:, 0]))),
    ("linear input", lambda lib, F, t: F.linear(t(A), t(f32(A)))),
    ("linear weight", lambda lib, F, t: F.linear(t(f32(A)), t(A))),
    ("linear bias", lambda lib, F, t: F.linear(t(f32(A)), t(f32(A)), t(np.zeros(2)))),
    ("linear input with bias", lambda lib, F, t: F.linear(t(A[None]), t(f32(A)), t(f32(np.zeros(2))))),
    ("linear 1-D weight", lambda lib, F, t: F.linear(t(A), t(f32(A[0])))),
    ("bilinear", lambda lib, F, t: F.bilinear(t(A), t(f32(A)), t(f32(np.ones((5, 3, 3)))))),
    ("conv2d", lambda lib, F, t: F.conv2d(t(IMG), t(f32(np.ones((3, 2, 3, 3)))))),
    ("conv2d bias", lambda lib, F, t: F.conv2d(t(f32(IMG)), t(f32(np.ones((3, 2, 3, 3)))), t(np.zeros(3)))),
    ("conv2d unbatched", lambda lib, F, t: F.conv2d(t(IMG[0]), t(f32(np.ones((3, 2, 3, 3)))))),
    ("conv1d", lambda lib, F, t: F.conv1d(t(IMG[:, :, 0]), t(f32(np.ones((3, 2, 3)))))),
    ("conv1d bias", lambda lib, F, t: F.conv1d(t(f32(IMG[:, :, 0])), t(f32(np.ones((3, 2, 3)))), t(np.zeros(3)))),
    ("conv3d", lambda lib, F, t: F.conv3d(t(IMG[None]), t(f32(np.ones((3, 1, 1, 3, 3)))))),
    ("conv3d bias", lambda lib, F, t: F.conv3d(t(f32(IMG[None])), t(f32(np.ones((3, 1, 1, 3, 3)))), t(np.zeros(3)))),
    ("conv_transpose2d", lambda lib, F, t: F.conv_transpose2d(t(IMG), t(f32(np.ones((2, 3, 3, 3)))))),
    ("conv_transpose1d", lambda lib, F, t: F.conv_transpose1d(t(IMG[:, :, 0]), t(f32(np.ones((2, 3, 3)))))),
    ("conv_transpose3d", lambda lib, F, t: F.conv_transpose3d(t(IMG[None]), t(f32(np.ones((1, 3, 1, 3, 3)))))),
    (
        "conv_transpose3d bias",
        lambda lib, F, t: F.conv_transpose3d(t(f32(IMG[None])), t(f32(np.ones((1, 3, 1, 3, 3)))), t(np.zeros(3))),
    ),
    ("layer_norm input", lambda lib, F, t: F.layer_norm(t(A), (3,), t(f32(np.ones(3))))),
    ("layer_norm weight", lambda lib, F, t: F.layer_norm(t(f32(A)), (3,), t(np.ones(3)))),
    ("layer_norm bias", lambda lib, F, t: F.layer_norm(t(f32(A)), (3,), t(f32(np.ones(3))), t(np.zeros(3)))),
    ("batch_norm", lambda lib, F, t: F.batch_norm(t(A), t(f32(np.zeros(3))), t(f32(np.ones(3))), training=True)),
    ("batch_norm eval", lambda lib, F, t: F.batch_norm(t(f32(A)), t(np.zeros(3)), t(np.ones(3)))),
    (
        "batch_norm bias",
        lambda lib, F, t: F.batch_norm(t(f32(A)), None, None, t(f32(np.ones(3))), t(np.zeros(3)), True),
    ),
    ("group_norm", lambda lib, F, t: F.group_norm(t(IMG), 1, t(f32(np.ones(2))))),
    ("instance_norm", lambda lib, F, t: F.instance_norm(t(IMG), weight=t(f32(np.ones(2))), bias=t(f32(np.zeros(2))))),
    ("sdpa key", lambda lib, F, t: F.scaled_dot_product_attention(t(f32(QKV)), t(QKV), t(f32(QKV)))),
    ("sdpa value", lambda lib, F, t: F.scaled_dot_product_attention(t(f32(QKV)), t(f32(QKV)), t(QKV))),
    ("sdpa mask", lambda lib, F, t: F.scaled_dot_product_attention(*[t(f32(QKV))] * 3, attn_mask=t(np.zeros((4, 4))))),
    ("prelu", lambda lib, F, t: F.prelu(t(A), t(f32(np.ones(1))))),
    (
        "embedding_bag",
        lambda lib, F, t: F.embedding_bag(
            t(np.array([[0, 1]])), t(f32(np.ones((3, 4)))), mode="sum", per_sample_weights=t(np.ones((1, 2)))
        ),
    ),
]

# torch computes these, promoting (elementwise) or keeping the input's dtype: distgraph must agree
COMPUTED = [
    ("add", lambda lib, F, t: t(f32(A)) + t(A)),
    ("where", lambda lib, F, t: lib.where(t(A) > 0, t(f32(A)), t(A))),
    ("outer", lambda lib, F, t: lib.outer(t(f32(A[0])), t(A[0]))),
    ("einsum without a sum", lambda lib, F, t: lib.einsum("i,j->ij", t(f32(A[0])), t(A[0]))),
    ("rms_norm weight", lambda lib, F, t: F.rms_norm(t(f32(A)), (3,), t(np.ones(3)))),
    ("rms_norm input", lambda lib, F, t: F.rms_norm(t(A), (3,), t(f32(np.ones(3))))),
    ("layer_norm float16 input", lambda lib, F, t: F.layer_norm(t(A.astype(np.float16)), (3,), t(f32(np.ones(3))))),
    ("instance_norm running stats", lambda lib, F, t: F.instance_norm(t(IMG), t(f32(np.zeros(2))), t(f32(np.ones(2))))),
    (
        "conv_transpose2d bias",
        lambda lib, F, t: F.conv_transpose2d(t(f32(IMG)), t(f32(np.ones((2, 3, 3, 3)))), t(np.zeros(3))),
    ),
    (
        "sdpa float32 mask",
        lambda lib, F, t: F.scaled_dot_product_attention(*[t(QKV)] * 3, attn_mask=t(f32(np.zeros((4, 4))))),
    ),
]


def _run(fn, lib):
    if lib is torch:
        return fn(torch, torch.nn.functional, torch.tensor)
    return fn(dg, dg.nn.functional, dg.tensor)


@contextlib.contextmanager
def _quiet():
    """torch warns on some mixes it computes (rms_norm's weight); the test reads results, not warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_error(fn):
    with _quiet(), pytest.raises(RuntimeError) as info:
        _run(fn, torch)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("name,fn", REFUSED, ids=[c[0] for c in REFUSED])
def test_mixed_dtypes_are_refused_in_torchs_words(name, fn):
    message = _torch_error(fn)
    with pytest.raises(DTypeError) as info:
        _run(fn, dg)
    assert str(info.value) == message


@pytest.mark.parametrize("name,fn", COMPUTED, ids=[c[0] for c in COMPUTED])
def test_where_torch_computes_distgraph_gives_its_dtype(name, fn):
    with _quiet():
        want = _run(fn, torch)
    got = _run(fn, dg)
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-3)


def test_modules_refuse_an_input_of_another_dtype():
    x = A.astype(np.float64)
    for mod, dmod in ((torch.nn.Linear(3, 4), dg.nn.Linear(3, 4)), (torch.nn.BatchNorm1d(3), dg.nn.BatchNorm1d(3))):
        message = _torch_error(lambda lib, F, t, m=mod, d=dmod: (m if lib is torch else d)(t(x)))
        with pytest.raises(DTypeError, match=f"^{re.escape(message)}$"):
            dmod(dg.tensor(x))
    mha = dg.nn.MultiheadAttention(4, 1)
    with pytest.raises(DTypeError, match="mat1 and mat2 must have the same dtype, but got Double and Float"):
        mha(*[dg.tensor(rng.standard_normal((2, 1, 4)))] * 3)


@pytest.mark.parametrize("cls", ["RNN", "GRU", "RNNCell", "GRUCell"])
def test_recurrent_state_of_another_dtype_is_refused_in_torchs_words(cls):
    x = f32(rng.standard_normal((2, 3) if "Cell" in cls else (1, 2, 3)))
    h = np.zeros((2, 4) if "Cell" in cls else (1, 2, 4))
    message = _torch_error(lambda lib, F, t: getattr(lib.nn, cls)(3, 4)(t(x), t(h)))
    with pytest.raises(DTypeError) as info:
        getattr(dg.nn, cls)(3, 4)(dg.tensor(x), dg.tensor(h))
    assert str(info.value) == message


def test_autocast_casts_before_the_check():
    x, w = dg.tensor(A), dg.tensor(f32(A))  # float64 runs as is in autocast; float32 is lowered to float16
    with dg.autocast("cpu", dtype=dg.float16):
        out = dg.nn.functional.linear(dg.tensor(f32(A)), w)
    assert out.dtype == dg.float16
    with dg.autocast("cpu", dtype=dg.float16), pytest.raises(DTypeError):
        dg.nn.functional.linear(x, w)


# ---- scaled_dot_product_attention with attn_mask and is_causal: both apply (torch's fused CPU kernel) ----
@pytest.mark.parametrize("L,S", [(4, 4), (3, 5), (5, 3)])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_applies_attn_mask_and_is_causal_together(L, S, kind):
    q, k, v = (f32(rng.standard_normal((1, 2, n, 8))) for n in (L, S, S))
    mask = rng.random((L, S)) > 0.3 if kind == "bool" else f32(rng.standard_normal((L, S)))
    want = torch.nn.functional.scaled_dot_product_attention(
        *map(torch.tensor, (q, k, v)), attn_mask=torch.tensor(mask), is_causal=True
    )
    got = dg.nn.functional.scaled_dot_product_attention(
        *map(dg.tensor, (q, k, v)), attn_mask=dg.tensor(mask), is_causal=True
    )
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shapes,extra",
    [
        (((2, 3, 4),) * 3, {}),
        (((1, 1, 3, 4),) * 3, {"dropout_p": 0.5}),
        (((2, 1, 3, 4), (1, 1, 3, 4), (1, 1, 3, 4)), {}),
    ],
    ids=["3-D", "dropout", "broadcast batch"],
)
def test_sdpa_refuses_attn_mask_with_is_causal_off_torchs_fused_kernel(shapes, extra):
    mask = np.ones((3, 3), bool)
    message = "_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True"
    args = [f32(rng.standard_normal(s)) for s in shapes]
    with pytest.raises(RuntimeError, match=message):
        torch.nn.functional.scaled_dot_product_attention(*map(torch.tensor, args), torch.tensor(mask), is_causal=True, **extra)  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        dg.nn.functional.scaled_dot_product_attention(*map(dg.tensor, args), dg.tensor(mask), is_causal=True, **extra)


def test_trainer_casts_numpy_inputs_to_the_models_dtype_and_refuses_tensors_of_another():
    from distgraph.trainer import Trainer

    model = dg.nn.Linear(3, 2)
    x, y = rng.standard_normal((8, 3)), np.arange(8) % 2  # numpy's float64 for a float32 model
    trainer = Trainer(model, dg.nn.CrossEntropyLoss(), dg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    trainer.fit((x, y), epochs=1, batch_size=4)
    assert model.weight.dtype == dg.float32
    with pytest.raises(DTypeError, match="mat1 and mat2 must have the same dtype, but got Double and Float"):
        trainer.fit((dg.tensor(x), dg.tensor(y)), epochs=2, batch_size=4)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("norm", ["BatchNorm2d", "InstanceNorm2d"])
def test_a_float32_norm_in_a_half_model_gives_float16_as_torch(norm, training):
    """Batch norm kept in float32 inside a float16 model (the usual recipe): the norm computes in float32 and
    returns the input's float16, so the next half layer takes it (it returned float32, which that layer refused)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float16)
    weights, outs = {}, {}
    for lib in (torch, dg):
        m = lib.nn.Sequential(lib.nn.Conv2d(3, 4, 3), getattr(lib.nn, norm)(4, affine=True), lib.nn.Conv2d(4, 2, 1))
        if lib is torch:
            weights = {k: v.numpy() for k, v in m.state_dict().items()}
        else:
            m.load_state_dict({k: dg.tensor(v) for k, v in weights.items()})
        m = m.half()
        m[1].float()
        m.train(training)
        outs[lib] = m(lib.tensor(x)).detach()
    ours, theirs = outs[dg], outs[torch]
    assert ours.dtype is dg.float16 and theirs.dtype is torch.float16
    np.testing.assert_allclose(ours.numpy().astype(np.float32), theirs.numpy().astype(np.float32), atol=2e-3)


def test_fsdp_half_precision_with_a_batch_norm_left_in_float32_runs():
    from distgraph.distributed.fsdp import FSDP, MixedPrecision, ModuleWrapPolicy

    m = dg.nn.Sequential(dg.nn.Linear(4, 8), dg.nn.BatchNorm1d(8), dg.nn.ReLU(), dg.nn.Linear(8, 3))
    mp = MixedPrecision(param_dtype=dg.float16, reduce_dtype=dg.float32)
    y = FSDP(m, mixed_precision=mp, auto_wrap_policy=ModuleWrapPolicy({dg.nn.Linear}))(dg.randn(6, 4))
    assert y.dtype is dg.float16
