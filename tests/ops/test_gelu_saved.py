"""gelu keeps its erf (the tanh form: its tanh) for the backward where eager autograd records it (the op
`gelu_saving`, ops/activation.py): the same output and gradient bits as the op that keeps nothing and
recomputes them (`gelu`), in float32, float64 and float16, at the tails (±inf, NaN, ±100, ±0), for a
contiguous, strided or broadcast gradient, an array below, between and above cache_blocks' thresholds and a
strided input; and nothing kept under no_grad, for an input that needs no gradient, or in a captured graph."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner
from distgraph.ops import activation, cache_blocks, kernels

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the tails overflow, as torch's do, silently
_RNG = np.random.default_rng(0)
_SPECIAL = [np.inf, -np.inf, np.nan, 100.0, -100.0, 0.0, -0.0, 1e-30, -1e30, 7.0, -7.0]
# (136, 1024) float32: its forward (x, out, kept, 4 work arrays) under MIN_BYTES, the kept backward over it
_SHAPES = [(3, 4), (), (136, 1024), (256, 1024)]
_GRADS = {
    "contiguous": lambda a: _RNG.standard_normal(a.shape).astype(a.dtype),
    "broadcast": lambda a: np.broadcast_to(a.dtype.type(1.5), a.shape),
    "strided": lambda a: _RNG.standard_normal(a.shape[:-1] + (2 * a.shape[-1],)).astype(a.dtype)[..., ::2],
}


def _input(shape, dtype):
    a = (_RNG.standard_normal(shape) * 6).astype(dtype)
    flat = a.reshape(-1)
    flat[: min(len(_SPECIAL), flat.size)] = _SPECIAL[: flat.size]
    return a


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    bits = f"u{got.itemsize}"  # NaN payloads and signed zeros included
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(bits), np.ascontiguousarray(want).view(bits))


def _forward_and_grad(op, a, g, approximate):
    x = dg.tensor(a, requires_grad=True)
    y = op(x, approximate=approximate)
    (gx,) = dg.autograd.grad(y, [x], dg.tensor(g))
    return y.grad_fn.op.name, y.detach().numpy(), gx.numpy()


@pytest.mark.parametrize("grad", sorted(_GRADS))
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_kept_backward_gives_the_recomputing_ones_bits(approximate, dtype, shape, grad):
    if grad == "strided" and not shape:
        pytest.skip("a 0-d gradient has no stride")
    a = _input(shape, dtype)
    g = _GRADS[grad](a)
    saving = _forward_and_grad(F.gelu, a, g, approximate)
    plain = _forward_and_grad(activation._gelu, a, g, approximate)
    # a half input runs the op keeping nothing (its kept array would be float32: twice the input's bytes)
    assert (saving[0], plain[0]) == ("gelu" if dtype == np.float16 else "gelu_saving", "gelu")
    for got, want in zip(saving[1:], plain[1:]):
        _same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_a_strided_input_and_a_second_backward_keep_the_bits(approximate, dtype):
    a = _input((96, 2 * 1500), dtype)
    g = _RNG.standard_normal((96, 1500)).astype(dtype)
    outs = []
    for op in (F.gelu, activation._gelu):
        base = dg.tensor(a, requires_grad=True)
        y = op(base[:, ::2], approximate=approximate)
        first = dg.autograd.grad(y, [base], dg.tensor(g), retain_graph=True)[0].numpy()
        second = dg.autograd.grad(y, [base], dg.tensor(g))[0].numpy()  # the kept array was not written
        _same_bits(first, second)
        outs.append((y.detach().numpy(), first))
    for got, want in zip(*outs):
        _same_bits(got, want)


def test_the_kept_array_is_the_step_the_backward_recomputes():
    """float32: 1 + erf(x·√½) (kernels._gelu_erf, the float32 approximation), one activation-sized array."""
    a = _input((256, 1024), np.float32)
    y = F.gelu(dg.tensor(a, requires_grad=True))
    kept = y.grad_fn.saved
    assert kept.dtype == np.float32 and kept.shape == a.shape and kept.nbytes == a.nbytes
    _same_bits(kept, kernels._gelu_erf(np, a) + np.float32(1))
    y.sum().backward()
    assert y.grad_fn.saved is None  # freed with the graph


def test_a_half_input_keeps_nothing_and_the_saving_op_would_keep_float32():
    x = dg.tensor(np.ones((2, 3), np.float16), requires_grad=True)
    assert F.gelu(x, approximate="tanh").grad_fn.op.name == "gelu"
    y = activation._gelu_saving(x, approximate="tanh")
    assert y.dtype == dg.float16 and y.grad_fn.saved.dtype == np.float32


def test_inside_inference_mode_enable_grad_asks_for_nothing_it_keeps_nothing(monkeypatch):
    """grad mode as in force (what apply records by), not as asked for: no kept array computed and dropped."""
    ran = []
    monkeypatch.setattr(activation, "_gelu_saving", lambda *a, **k: ran.append(1))
    x = dg.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with dg.inference_mode(), dg.enable_grad():
        y = F.gelu(x)
    assert y.grad_fn is None and not ran


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_nothing_is_kept_without_eager_autograd(approximate):
    a = _RNG.standard_normal((3, 4)).astype(np.float32)
    with dg.no_grad():
        assert F.gelu(dg.tensor(a, requires_grad=True), approximate=approximate).grad_fn is None
    x = dg.tensor(a)
    w = dg.tensor(np.ones(4, np.float32), requires_grad=True)
    assert F.gelu(x, approximate=approximate).grad_fn is None
    assert F.gelu(x * w, approximate=approximate).grad_fn.op.name == "gelu_saving"

    loss_fn = lambda x: F.gelu(x * w, approximate=approximate).sum()  # noqa: E731
    graph, params, _ = capture(loss_fn, [x], grad_of=[w])
    ops = [n.op for n in graph.nodes]
    assert "gelu" in ops and "gelu_backward" in ops and "gelu_saving" not in ops  # as before: no vjp node
    outs = Runner(graph)(x.array, *[p.array for p in params])
    loss = loss_fn(x)
    loss.backward()
    _same_bits(outs[0], loss.array)
    _same_bits(outs[1], w.grad.array)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_double_backward_runs_the_differentiable_rule(approximate):
    a = _input((3, 4), np.float64)[1:]
    a = np.nan_to_num(a, nan=0.5, posinf=3.0, neginf=-3.0)
    outs = []
    for op in (F.gelu, activation._gelu):
        x = dg.tensor(a, requires_grad=True)
        (gx,) = dg.autograd.grad(op(x, approximate=approximate).sum(), [x], create_graph=True)
        (ggx,) = dg.autograd.grad((gx * gx).sum(), [x])
        outs += [gx.detach().numpy(), ggx.numpy()]
    _same_bits(outs[0], outs[2])
    _same_bits(outs[1], outs[3])


def test_elementwise_returns_the_kept_array_whole_and_blocked(monkeypatch):
    x = _input((300, 700), np.float32)
    for min_bytes in (0, np.inf):
        monkeypatch.setattr(cache_blocks, "MIN_BYTES", min_bytes)
        out, kept = cache_blocks.elementwise(kernels.gelu, np, x, kept=True, approximate="tanh")
        assert out.shape == kept.shape == x.shape
        _same_bits(out, kernels.gelu(np, x, "tanh"))


def test_a_saving_variant_reports_its_ops_name_to_the_user():
    """gelu_saving, layer_norm_saving, rnn_layer_saving: the same op to a user (grad_fn.name())."""
    x = dg.randn(4, 8, requires_grad=True)
    assert F.gelu(x).grad_fn.name() == "GeluBackward0"  # (torch's names)
    assert F.layer_norm(x, (8,)).grad_fn.name() == "NativeLayerNormBackward0"
