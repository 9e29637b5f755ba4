"""dg.autocast against torch.autocast("cpu", dtype=torch.float16) (torch 2.13's CPU autocast runs float16):
output dtypes, values within float16 tolerance, float32 gradients of float32 leaves; nesting, the decorator,
a GradScaler training step, bfloat16 refused, and nothing changed outside the context.

The "cuda" lists (softmax, layer_norm, sum, ... to float32; addcmul promoting) cannot run against torch here
(torch CPU): they are checked against torch's documented CUDA lists ("CUDA Ops that can autocast to float32")
on CPU tensors by pretending the device type, in test_cuda_table_runs_float32_ops_in_float32.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.ops import autocast as autocast_module

RNG = np.random.default_rng(0)


def _arr(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def _t(a):
    return torch.tensor(a, requires_grad=True)


def _d(a):
    return dg.tensor(a, requires_grad=True)


def _labels(n, c):
    return RNG.integers(0, c, n)


# name -> (arrays, fn(lib, F, *tensors)); lib is torch or dg, F the matching functional module
CASES = {
    "matmul": ([_arr(4, 8), _arr(8, 3)], lambda lib, f, a, b: lib.matmul(a, b)),
    "mm": ([_arr(4, 8), _arr(8, 3)], lambda lib, f, a, b: lib.mm(a, b)),
    "bmm": ([_arr(2, 4, 8), _arr(2, 8, 3)], lambda lib, f, a, b: lib.bmm(a, b)),
    "addmm": ([_arr(4, 3), _arr(4, 8), _arr(8, 3)], lambda lib, f, c, a, b: lib.addmm(c, a, b)),
    "baddbmm": ([_arr(2, 4, 3), _arr(2, 4, 8), _arr(2, 8, 3)], lambda lib, f, c, a, b: lib.baddbmm(c, a, b)),
    "addbmm": ([_arr(4, 3), _arr(2, 4, 8), _arr(2, 8, 3)], lambda lib, f, c, a, b: lib.addbmm(c, a, b)),
    "linear": ([_arr(4, 8), _arr(3, 8), _arr(3)], lambda lib, f, x, w, b: f.linear(x, w, b)),
    "matmul_operator": ([_arr(4, 8), _arr(8, 3)], lambda lib, f, a, b: a @ b),
    "einsum": ([_arr(4, 8), _arr(8, 3)], lambda lib, f, a, b: lib.einsum("ij,jk->ik", a, b)),
    "conv1d": ([_arr(2, 3, 9), _arr(4, 3, 3), _arr(4)], lambda lib, f, x, w, b: f.conv1d(x, w, b, padding=1)),
    "conv2d": ([_arr(2, 3, 6, 6), _arr(4, 3, 3, 3), _arr(4)], lambda lib, f, x, w, b: f.conv2d(x, w, b)),
    "conv3d": ([_arr(1, 2, 4, 4, 4), _arr(3, 2, 2, 2, 2)], lambda lib, f, x, w: f.conv3d(x, w)),
    "conv_transpose1d": ([_arr(2, 3, 5), _arr(3, 4, 3)], lambda lib, f, x, w: f.conv_transpose1d(x, w, stride=2)),
    "conv_transpose2d": ([_arr(1, 3, 4, 4), _arr(3, 2, 3, 3)], lambda lib, f, x, w: f.conv_transpose2d(x, w)),
    "conv_transpose3d": ([_arr(1, 2, 3, 3, 3), _arr(2, 2, 2, 2, 2)], lambda lib, f, x, w: f.conv_transpose3d(x, w)),
    "scaled_dot_product_attention": (
        [_arr(2, 5, 8), _arr(2, 5, 8), _arr(2, 5, 8)],
        lambda lib, f, q, k, v: f.scaled_dot_product_attention(q, k, v),
    ),
    "prelu": ([_arr(4, 3), np.array([0.25], np.float32)], lambda lib, f, x, w: f.prelu(x, w)),
    "cross_entropy": ([_arr(6, 5)], lambda lib, f, x: f.cross_entropy(x, lib.tensor(_LABELS))),
    "nll_loss": ([_arr(6, 5)], lambda lib, f, x: f.nll_loss(f.log_softmax(x, -1), lib.tensor(_LABELS))),
    "mse_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, b: f.mse_loss(a, b)),
    "l1_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, b: f.l1_loss(a, b)),
    "smooth_l1_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, b: f.smooth_l1_loss(a, b)),
    "huber_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, b: f.huber_loss(a, b)),
    "kl_div": ([_arr(4, 3), _arr(4, 3, positive=True)], lambda lib, f, a, b: f.kl_div(a, b, reduction="batchmean")),
    "binary_cross_entropy": (
        [_arr(4, 3), _arr(4, 3, positive=True)],
        lambda lib, f, a, b: f.binary_cross_entropy(a.sigmoid(), (b / 4).clamp(0, 1)),
    ),
    "binary_cross_entropy_with_logits": (
        [_arr(4, 3), _arr(4, 3, positive=True)],
        lambda lib, f, a, b: f.binary_cross_entropy_with_logits(a, (b / 4).clamp(0, 1)),
    ),
    "soft_margin_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, b: f.soft_margin_loss(a, b.detach().sign())),
    "margin_ranking_loss": ([_arr(4), _arr(4), _arr(4)], lambda lib, f, a, b, y: f.margin_ranking_loss(a, b, y.sign())),
    "poisson_nll_loss": ([_arr(4, 3), _arr(4, 3, positive=True)], lambda lib, f, a, b: f.poisson_nll_loss(a, b)),
    "cosine_embedding_loss": (
        [_arr(4, 3), _arr(4, 3), _arr(4)],
        lambda lib, f, a, b, y: f.cosine_embedding_loss(a, b, y.sign()),
    ),
    "hinge_embedding_loss": ([_arr(4, 3), _arr(4, 3)], lambda lib, f, a, y: f.hinge_embedding_loss(a, y.sign())),
    "prod": ([_arr(5, positive=True)], lambda lib, f, a: a.half().prod()),
    "cdist": ([_arr(4, 3), _arr(5, 3)], lambda lib, f, a, b: lib.cdist(a.half(), b.half())),
    "trace": ([_arr(4, 4)], lambda lib, f, a: lib.trace(a.half())),
    "inverse": ([_arr(3, 3)], lambda lib, f, a: lib.inverse(a + 4 * lib.eye(3))),
    # not on torch's CPU lists: left alone (a float16 input stays float16)
    "softmax_unlisted": ([_arr(4, 5)], lambda lib, f, a: f.softmax(a.half(), -1)),
    "layer_norm_unlisted": ([_arr(4, 5)], lambda lib, f, a: f.layer_norm(a.half(), (5,))),
    "sum_unlisted": ([_arr(4, 5)], lambda lib, f, a: a.half().sum()),
    "promote_cat": ([_arr(2, 3), _arr(2, 3)], lambda lib, f, a, b: lib.cat([a.half(), b])),
}
_LABELS = _labels(6, 5)


def _run_both(name):
    arrays, fn = CASES[name]
    tx, dx = [_t(a) for a in arrays], [_d(a) for a in arrays]
    with torch.autocast("cpu", dtype=torch.float16):
        t_out = fn(torch, TF, *tx)
    with dg.autocast("cpu", dtype=dg.float16):
        d_out = fn(dg, F, *dx)
    return tx, dx, t_out, d_out


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_dtype_and_values_match_torch_cpu_autocast(name):
    _, _, t_out, d_out = _run_both(name)
    assert str(d_out.dtype).split(".")[-1] == str(t_out.dtype).split(".")[-1]
    np.testing.assert_allclose(
        d_out.detach().numpy().astype(np.float64), t_out.detach().double().numpy(), rtol=2e-2, atol=2e-2
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_leaves_get_float32_gradients_close_to_torch(name):
    tx, dx, t_out, d_out = _run_both(name)
    t_out.float().sum().backward()
    d_out.float().sum().backward()
    for t, d in zip(tx, dx, strict=True):
        if t.grad is None:
            assert d.grad is None
            continue
        assert d.grad.dtype == dg.float32
        np.testing.assert_allclose(d.grad.numpy(), t.grad.numpy(), rtol=3e-2, atol=3e-2)


def test_nested_and_disabled_contexts():
    a, b = dg.randn(3, 4), dg.randn(4, 2)
    assert not dg.is_autocast_enabled("cpu")
    with dg.autocast("cpu"):
        assert dg.is_autocast_enabled("cpu") and not dg.is_autocast_enabled("cuda")
        assert dg.get_autocast_dtype("cpu") == dg.float16
        assert dg.mm(a, b).dtype == dg.float16
        with dg.autocast("cpu", enabled=False):
            assert not dg.is_autocast_enabled("cpu")
            assert dg.mm(a, b).dtype == dg.float32
            with dg.autocast("cpu"):
                assert dg.mm(a, b).dtype == dg.float16
            assert dg.mm(a, b).dtype == dg.float32
        assert dg.mm(a, b).dtype == dg.float16
    assert not dg.is_autocast_enabled("cpu")
    assert dg.mm(a, b).dtype == dg.float32


def test_cuda_autocast_leaves_cpu_tensors_alone():
    with dg.autocast("cuda"):
        assert dg.mm(dg.randn(3, 4), dg.randn(4, 2)).dtype == dg.float32


def test_decorator_form_and_amp_alias():
    assert dg.amp.autocast is dg.autocast

    @dg.amp.autocast("cpu", dtype=dg.float16)
    def forward(x, w):
        assert dg.is_autocast_enabled("cpu")
        return F.linear(x, w)

    assert forward(dg.randn(2, 3), dg.randn(4, 3)).dtype == dg.float16
    assert not dg.is_autocast_enabled("cpu")


def test_state_is_thread_local():
    import threading

    seen = []
    with dg.autocast("cpu"):
        worker = threading.Thread(target=lambda: seen.append(dg.is_autocast_enabled("cpu")))
        worker.start()
        worker.join()
    assert seen == [False]


def test_bfloat16_and_other_dtypes_refused_clearly():
    with pytest.raises(dg.errors.DTypeError, match="bfloat16"):
        dg.autocast("cpu", dtype="bfloat16")
    with pytest.raises(dg.errors.DTypeError, match="float16 only"):
        dg.autocast("cuda", dtype=dg.float64)
    with pytest.raises(dg.errors.DeviceError, match="device_type"):
        dg.autocast("tpu")


def test_cached_parameter_cast_is_shared_within_a_region():
    w = dg.randn(4, 3, requires_grad=True)
    with dg.autocast("cpu"):
        out = F.linear(dg.randn(2, 3), w) + F.linear(dg.randn(2, 3), w)
    out.float().sum().backward()
    assert w.grad.dtype == dg.float32 and w.grad.shape == (4, 3)


def test_cuda_table_runs_float32_ops_in_float32(monkeypatch):
    """torch's documented CUDA lists, checked on CPU tensors by reading the 'cuda' table for device 'cpu'."""
    monkeypatch.setitem(autocast_module.POLICIES, "cpu", autocast_module.POLICIES["cuda"])
    h = dg.randn(4, 5).half()
    with dg.autocast("cpu"):
        for out in (F.softmax(h, -1), F.log_softmax(h, -1), F.layer_norm(h, (5,)), h.sum(), dg.cumsum(h, 0)):
            assert out.dtype == dg.float32
        assert dg.addcmul(dg.randn(4, 5), h, h).dtype == dg.float32


def test_custom_fwd_casts_inputs_and_custom_bwd_keeps_the_state():
    class Square(dg.autograd.Function):
        @staticmethod
        @dg.amp.custom_fwd(device_type="cpu", cast_inputs=dg.float32)
        def forward(ctx, x):
            ctx.save_for_backward(x)
            assert not dg.is_autocast_enabled("cpu")
            return x * x

        @staticmethod
        @dg.amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    x = dg.randn(3, requires_grad=True)
    with dg.autocast("cpu"):
        y = Square.apply(x.half())
    assert y.dtype == dg.float32
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().half().float().numpy(), rtol=1e-6)


def test_mlp_training_step_with_grad_scaler_decreases_the_loss():
    dg.manual_seed(0)
    model = dg.nn.Sequential(dg.nn.Linear(8, 16), dg.nn.ReLU(), dg.nn.Linear(16, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    scaler = dg.amp.GradScaler(init_scale=2.0**10)
    x, y = dg.randn(32, 8), dg.tensor(_labels(32, 3))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with dg.autocast("cpu", dtype=dg.float16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        assert logits.dtype == dg.float16 and loss.dtype == dg.float32
        scaler.scale(loss).backward()
        assert all(p.grad.dtype == dg.float32 for p in model.parameters())
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("fn", "shapes"),
    [
        (dg.matmul, [(4, 8), (8, 3)]),
        (F.linear, [(4, 8), (3, 8), (3,)]),
        (F.conv2d, [(2, 3, 6, 6), (4, 3, 3, 3)]),
        (F.mse_loss, [(4, 3), (4, 3)]),
        (dg.inverse, [(3, 3)]),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_nothing_changes_outside_the_context(fn, shapes):
    """Bit-identical to the op without its autocast wrapper (functools.wraps keeps it as __wrapped__)."""
    with dg.autocast("cpu"):
        pass
    arrays = [_arr(*s) for s in shapes]
    wrapped = fn(*[_d(a) for a in arrays])
    plain = fn.__wrapped__(*[_d(a) for a in arrays])
    assert wrapped.dtype == plain.dtype == dg.float32
    np.testing.assert_array_equal(wrapped.detach().numpy(), plain.detach().numpy())
