"""gelu, silu's gradient and softmax's gradient run a cache-sized block at a time on large host arrays
(ops/cache_blocks.py): the same bits as the whole-array kernels (blocks forced on small arrays, and off), for
rows larger than a block, reductions along a middle axis, a broadcast or strided gradient, a transposed
input, float32 and float64; and against torch on the benchmark's (256, 1024) activation."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops import cache_blocks

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(0)
_FNS = {
    "gelu": lambda lib, x: lib.nn.functional.gelu(x),
    "gelu_tanh": lambda lib, x: lib.nn.functional.gelu(x, approximate="tanh"),
    "silu": lambda lib, x: lib.nn.functional.silu(x),
    "softmax_last": lambda lib, x: lib.nn.functional.softmax(x, -1),
    "softmax_middle": lambda lib, x: lib.nn.functional.softmax(x, 1),
}
_GRADS = {
    "contiguous": lambda a: _RNG.standard_normal(a.shape).astype(a.dtype),
    "broadcast": lambda a: np.broadcast_to(a.dtype.type(1.5), a.shape),
    "strided": lambda a: _RNG.standard_normal(a.shape[:-1] + (2 * a.shape[-1],)).astype(a.dtype)[..., ::2],
}


def _run(name, a, g, min_bytes, monkeypatch):
    monkeypatch.setattr(cache_blocks, "MIN_BYTES", min_bytes)
    outs = []
    for create_graph in (False, True):  # the fast mode's array rule, then the differentiable rule
        x = dg.tensor(a, requires_grad=True)
        y = _FNS[name](dg, x)
        (gx,) = dg.autograd.grad(y, [x], dg.tensor(g), create_graph=create_graph)
        outs += [y.detach().numpy(), gx.detach().numpy()]
    return outs


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isnan(want) | ((got == want) & (np.signbit(got) == np.signbit(want)))
    assert ok.all(), (got[~ok], want[~ok])


@pytest.mark.parametrize("grad", sorted(_GRADS))
@pytest.mark.parametrize("shape", [(96, 7, 130), (3, 2, 70001)], ids=["rows", "rows-over-a-block"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_FNS))
def test_blocks_give_the_whole_arrays_bits(name, dtype, shape, grad, monkeypatch):
    a = (_RNG.standard_normal(shape) * 6).astype(dtype)
    a.reshape(-1)[[0, 1, 2, 5000, 9001]] = [np.inf, -np.inf, np.nan, 100.0, -100.0]
    g = _GRADS[grad](a)
    blocked = _run(name, a, g, 0, monkeypatch)
    whole = _run(name, a, g, np.inf, monkeypatch)
    for got, want in zip(blocked, whole):
        _same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
def test_a_transposed_input_runs_whole_with_the_same_bits(name, dtype, monkeypatch):
    a = (_RNG.standard_normal((130, 96)) * 6).astype(dtype).T
    a[0, :3] = [np.inf, np.nan, -100.0]
    g = _RNG.standard_normal(a.shape).astype(dtype)
    for got, want in zip(_run(name, a, g, 0, monkeypatch), _run(name, a, g, np.inf, monkeypatch)):
        _same_bits(got, want)


def test_a_kernel_gets_the_work_arrays_it_asks_for(monkeypatch):
    monkeypatch.setattr(cache_blocks, "MIN_BYTES", 0)
    seen = []

    def kernel(xp, x, out=None, scratch=None):
        seen.append(None if scratch is None else len(scratch))
        return xp.multiply(x, 2, out=out)

    x = _RNG.standard_normal(200000).astype(np.float32)
    np.testing.assert_array_equal(cache_blocks.elementwise(kernel, np, x, work=1), x * 2)
    assert set(seen) == {1} and len(seen) > 1
    assert cache_blocks.elementwise(kernel, np, x[::2], work=1).shape == (100000,) and seen[-1] is None


@pytest.mark.parametrize("name", [n for n in sorted(_FNS) if "middle" not in n])
def test_large_float32_matches_torch(name):
    """(256, 1024) float32, blocked at the default threshold: forward and gradient to float32 rounding (of
    the array's largest term: softmax's gradient sums a row of g, in another order in torch)."""
    a = (_RNG.standard_normal((256, 1024)) * 4).astype(np.float32)
    g = _RNG.standard_normal(a.shape).astype(np.float32)
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, yt = _FNS[name](dg, x), _FNS[name](torch, xt)
    y.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    for got, want in ((y.detach().numpy(), yt.detach().numpy()), (x.grad.numpy(), xt.grad.numpy())):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_small_half_and_axis_0_run_whole():
    assert cache_blocks._row_blocks(np.zeros((256, 1024), np.float32), 2, axis=1) is None  # 2 MiB in all
    assert cache_blocks._row_blocks(np.zeros((256, 1024), np.float32), 4, axis=1) is not None
    assert cache_blocks._row_blocks(np.zeros((2048, 1024), np.float16), 4, axis=1) is None
    assert cache_blocks._row_blocks(np.zeros((2048, 1024), np.float32), 4, axis=0) is None
    assert cache_blocks._row_blocks(np.zeros((2048, 1024), np.float32).T, 4, axis=1) is None
