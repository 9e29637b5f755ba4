"""The engine's fast mode (create_graph=False: gradients as arrays, ops' array rules) against its
differentiable mode (create_graph=True: the ops' differentiable rules): the same gradients, to 1e-12
in float64, for every op that has an array rule, on broadcast shapes. Double backward still goes
through the differentiable rules (checked against torch), and graph capture still sees them."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.autograd.function import set_tracer
from distgraph.ops.collective import all_reduce_sum
from distgraph.ops.linalg import safe_softmax
from distgraph.ops.reduction import sum_to
from distgraph.ops.registry import REGISTRY, get_op

torch = pytest.importorskip("torch")


_RNG = np.random.default_rng(0)  # case inputs are drawn once, at import: fixed across runs


def _pos(shape):
    return _RNG.uniform(0.5, 2.0, shape)


def _any(shape):
    return _RNG.standard_normal(shape)


_MASK = _any((3, 4)) > 0
_FULL_ROW = np.logical_or(_MASK, np.arange(3)[:, None] == 0)
_TARGET = np.array([0, 3, 1, 1, 2])
_CLASS_WEIGHT = _pos((4,))


class _OneRank:
    """A group of one rank (the sum over it is the array itself): all_reduce_sum's rules without peers."""

    rank, world_size = 0, 1

    def all_reduce_sum(self, array):
        return array


# op name -> cases; a case is (fn over dg tensors, input arrays); each op is reached through the public API
_LAYER_NORM = dg.ops.layers._layer_norm  # the plain op (F.layer_norm records layer_norm_saving)

CASES = {
    "all_reduce_sum": [(lambda a: all_reduce_sum(a * 2.0, _OneRank()) * a, [_any((2, 3))])],
    "ctc_loss": [
        (
            lambda lp: F.ctc_loss(
                lp.log_softmax(2), dg.tensor([[1, 2, 2], [3, 1, 0]]), (6, 5), (3, 2), reduction="sum"
            ),
            [_any((6, 2, 4))],
        )
    ],
    "add": [(lambda a, b: a + b, [_any((3, 1, 4)), _any((2, 4))]), (lambda a: a + 2.0, [_any((2, 3))])],
    "sub": [(lambda a, b: a - b, [_any((2, 4)), _any((3, 1, 4))]), (lambda a: 1.0 - a, [_any((3,))])],
    "mul": [(lambda a, b: a * b, [_any((3, 1)), _any((1, 4))]), (lambda a: a * 3.0, [_any((2, 3))])],
    "div": [(lambda a, b: a / b, [_any((3, 4)), _pos((4,))]), (lambda a: 2.0 / a, [_pos((2, 3))])],
    "neg": [(lambda a: -a, [_any((2, 3))])],
    "pow": [
        (lambda a, b: a**b, [_pos((3, 1)), _any((1, 4))]),
        (lambda a: a**2.5, [_pos((2, 3))]),
        (lambda a, b: a**b, [np.array([[0.0], [1.5], [0.0]]), np.array([[0.0, 2.0, 0.0, 1.5]])]),  # zeros: 0^0
    ],
    "exp": [(lambda a: a.exp(), [_any((2, 3))])],
    "log": [(lambda a: a.log(), [_pos((2, 3))])],
    "log1p": [(lambda a: a.log1p(), [_pos((2, 3))])],
    "sqrt": [(lambda a: a.sqrt(), [_pos((2, 3))])],
    "square": [(lambda a: a.square(), [_any((2, 3))])],
    "sin": [(lambda a: a.sin(), [_any((2, 3))])],
    "cos": [(lambda a: a.cos(), [_any((2, 3))])],
    "tanh": [(lambda a: a.tanh(), [_any((2, 3))])],
    "sigmoid": [(lambda a: a.sigmoid(), [_any((2, 3))])],
    "relu": [(lambda a: a.relu(), [_any((2, 3))])],
    "sum": [
        (lambda a: a.sum(), [_any((2, 3, 4))]),
        (lambda a: a.sum(1), [_any((2, 3, 4))]),
        (lambda a: a.sum((0, 2), keepdim=True), [_any((2, 3, 4))]),
        (lambda a: a.sum(-1, keepdim=True), [_any((2, 3, 4))]),
    ],
    "sum_to": [(lambda a: sum_to(a, (3, 1)), [_any((2, 3, 4))])],
    "expand": [(lambda a: a.expand(2, 3, 4), [_any((3, 1))]), (lambda a: a.expand(4, -1), [_any((1, 3))])],
    "reshape": [(lambda a: a.reshape(4, 6), [_any((2, 3, 4))]), (lambda a: a.view(-1), [_any((2, 3))])],
    "reshape_copy": [(lambda a: a.t().reshape(-1) * a.t().reshape(-1), [_any((2, 3))])],
    "permute": [(lambda a: a.permute(2, 0, 1), [_any((2, 3, 4))]), (lambda a: a.T, [_any((2, 3))])],
    "contiguous": [(lambda a: a.permute(2, 0, 1).contiguous(), [_any((2, 3, 4))])],
    "clone": [
        (lambda a: a.permute(2, 0, 1).clone(), [_any((2, 3, 4))]),
        (lambda a: a.clone(memory_format=dg.channels_last), [_any((2, 3, 4, 5))]),
    ],
    "matmul": [
        (lambda a, b: a @ b, [_any((2, 3, 4)), _any((4, 5))]),
        (lambda a, b: a @ b, [_any((5, 1, 3, 4)), _any((2, 4, 6))]),
    ],
    "matmul_nt": [(lambda a, b: get_op("matmul_nt")(a, b), [_any((2, 3, 4)), _any((5, 4))])],
    "matmul_tn": [(lambda a, b: get_op("matmul_tn")(a, b), [_any((4, 3)), _any((2, 4, 5))])],
    "cast": [(lambda a: a.float(), [_any((2, 3))])],
    "where": [(lambda a, b: dg.where(dg.tensor(_MASK, device=a.device), a, b), [_any((3, 1)), _any((1, 4))])],
    "slice": [(lambda a: a.narrow(1, 1, 2), [_any((2, 4, 3))]), (lambda a: a.chunk(2, 0)[1], [_any((4, 3))])],
    "cat": [(lambda a, b: dg.cat([a, b], 1), [_any((2, 3)), _any((2, 1))])],
    "softmax": [(lambda a: a.softmax(-1), [_any((3, 4))]), (lambda a: a.softmax(0), [_any((3, 4))])],
    "log_softmax": [(lambda a: a.log_softmax(1), [_any((2, 3, 4))])],
    "linear": [
        (lambda a, b, c: F.linear(a, b, c), [_any((2, 3, 4)), _any((5, 4)), _any((5,))]),
        (lambda a, b: F.linear(a, b), [_any((4,)), _any((5, 4))]),  # a 1-D input
    ],
    "cross_entropy": [
        (lambda a: F.cross_entropy(a, dg.tensor(_TARGET, device=a.device)), [_any((5, 4))]),
        (
            lambda a: F.cross_entropy(
                a,
                dg.tensor(_TARGET, device=a.device),
                weight=dg.tensor(_CLASS_WEIGHT, device=a.device),
                ignore_index=1,
                label_smoothing=0.2,
                reduction="none",
            ),
            [_any((5, 4))],
        ),  # fmt: skip
    ],
    "attention_weights": [  # scaled_dot_product_attention without a mask (ops/attention.py); k broadcast
        (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [_any((2, 3, 4)), _any((1, 5, 4)), _any((2, 5, 2))]),
        (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3), [_any((4, 3))] * 3),
    ],
    "safe_softmax": [  # row 0 entirely -inf: a zero row, and a zero gradient
        (lambda a: safe_softmax(a.masked_fill(dg.tensor(_FULL_ROW, device=a.device), float("-inf")), 1), [_any((3, 4))])
    ],
    "layer_norm_saving": [  # what eager autograd records (ops/layers.py): the op keeping its mean and rstd
        (lambda a, w, b: F.layer_norm(a, (3, 4), w, b), [_any((2, 3, 4)), _pos((3, 4)), _any((3, 4))]),
        (lambda a, w: F.layer_norm(a, (4,), w), [_any((3, 4)), _pos((4,))]),
        (lambda a, b: F.layer_norm(a, (4,), None, b), [_any((3, 4)), _any((4,))]),
        (lambda a: F.layer_norm(a, (4,)), [_any((3, 4))]),
    ],
    "layer_norm": [  # the same op keeping nothing (what no_grad and capture run): its backward recomputes them
        (
            lambda a, w, b: _LAYER_NORM(a, w, b, k=2, eps=1e-5, has_bias=True),
            [_any((2, 3, 4)), _pos((3, 4)), _any((3, 4))],
        ),
        (lambda a, w: _LAYER_NORM(a, w, k=1, eps=1e-5, has_bias=False), [_any((3, 4)), _pos((4,))]),
        (lambda a, b: _LAYER_NORM(a, b, k=1, eps=1e-5, has_bias=True), [_any((3, 4)), _any((4,))]),
        (lambda a: _LAYER_NORM(a, k=1, eps=1e-5, has_bias=False), [_any((3, 4))]),
    ],
    "batch_norm_train": [
        (lambda a, w, b: F.batch_norm(a, None, None, w, b, True), [_any((4, 3, 2, 5)), _pos((3,)), _any((3,))]),
        (lambda a, w: F.batch_norm(a, None, None, w, None, True), [_any((5, 2, 3)), _pos((2,))]),
        (lambda a: F.batch_norm(a, None, None, None, None, True), [_any((6, 3))]),
    ],
    "silu": [(lambda a: F.silu(a), [_any((3, 4))])],
    "gelu_saving": [(lambda a: F.gelu(a), [_any((3, 4))]), (lambda a: F.gelu(a, approximate="tanh"), [_any((3, 4))])],
    "gelu": [  # the same op keeping nothing (what no_grad and capture run): its backward recomputes erf, tanh
        (lambda a: dg.ops.activation._gelu(a, approximate="none"), [_any((3, 4))]),
        (lambda a: dg.ops.activation._gelu(a, approximate="tanh"), [_any((3, 4))]),
    ],
    "elu": [(lambda a: F.elu(a, 0.7), [_any((3, 4))])],
    "leaky_relu": [(lambda a: F.leaky_relu(a, 0.2), [_any((3, 4))])],
    "softplus": [(lambda a: F.softplus(a), [_any((3, 4))]), (lambda a: F.softplus(a, 2.0, 1.0), [_any((3, 4))])],
    "mish": [(lambda a: F.mish(a), [_any((3, 4))])],
    "rnn_layer_saving": [  # one layer, one direction (ops/recurrent.py): every mode's BPTT, from kept gates
        (
            lambda *a: dg.ops.recurrent.rnn_layer("LSTM", *a),
            [_any((4, 2, 12)), _any((2, 3)), _any((2, 3)), _any((12, 3))],
        ),
        (
            lambda *a: dg.ops.recurrent.rnn_layer("GRU", *a, reverse=True),
            [_any((4, 2, 9)), _any((2, 3)), _any((9, 3)), _any((9,))],
        ),
        (lambda *a: dg.ops.recurrent.rnn_layer("RNN_RELU", *a), [_any((4, 2, 3)), _any((2, 3)), _any((3, 3))]),
    ],
    "rnn_layer": [  # the same op keeping nothing (what no_grad and capture run): BPTT recomputing the gates
        (
            lambda *a: dg.ops.recurrent._rnn_layer(*a, mode="LSTM", reverse=True),
            [_any((4, 2, 12)), _any((2, 3)), _any((2, 3)), _any((12, 3))],
        ),
        (
            lambda *a: dg.ops.recurrent._rnn_layer(*a, mode="GRU", reverse=False),
            [_any((4, 2, 9)), _any((2, 3)), _any((9, 3)), _any((9,))],
        ),
    ],
}


def _grads(fn, arrays, create_graph, device):
    xs = [dg.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = fn(*xs)
    seed = dg.tensor(np.random.default_rng(1).standard_normal(out.shape), device=device)
    got = dg.autograd.grad(out, xs, seed, create_graph=create_graph)
    return [g.detach().cpu().numpy() for g in got]


def test_every_op_with_an_array_rule_has_a_case():
    with_rule = {name for name, op in REGISTRY.items() if op.array_backward is not None}
    assert with_rule == set(CASES)


@pytest.mark.parametrize(("name", "index"), [(n, i) for n, cases in CASES.items() for i in range(len(cases))])
def test_array_rule_matches_differentiable_rule(name, index, device):
    fn, arrays = CASES[name][index]
    fast = _grads(fn, arrays, create_graph=False, device=device)
    slow = _grads(fn, arrays, create_graph=True, device=device)
    for a, f, s in zip(arrays, fast, slow):
        assert f.shape == s.shape == a.shape and f.dtype == s.dtype == np.float64
        assert np.max(np.abs(f - s), initial=0.0) <= 1e-12


def test_float32_gradients_keep_the_input_dtype():
    a = dg.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    b = dg.tensor(np.ones((4,), np.float32), requires_grad=True)
    ((a * b).tanh() @ b).sum().backward()
    assert a.grad.dtype == dg.float32 and b.grad.dtype == dg.float32 and b.grad.shape == (4,)


def test_double_backward_through_chains_matches_torch():
    x0, w0 = np.random.standard_normal((3, 4)), np.random.standard_normal((4, 4))

    def chain(x, w):
        return (((x @ w).tanh() * x).sigmoid() - x.exp() / (w.relu() + 2.0).sum(0)).log_softmax(1).sum()

    x, w = dg.tensor(x0, requires_grad=True), dg.tensor(w0, requires_grad=True)
    xt, wt = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    gx, gw = dg.autograd.grad(chain(x, w), [x, w], create_graph=True)
    gxt, gwt = torch.autograd.grad(chain(xt, wt), [xt, wt], create_graph=True)
    ((gx * gx).sum() + (gw * w).sum()).backward()
    ((gxt * gxt).sum() + (gwt * wt).sum()).backward()
    np.testing.assert_allclose(gx.detach().numpy(), gxt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_hooks_see_tensors_and_can_replace_the_gradient_in_fast_mode():
    x = dg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2.0
    seen = []
    y.register_hook(lambda g: seen.append(type(g)) or g * 10.0)
    x.register_hook(lambda g: seen.append(type(g)))
    (y * y).sum().backward()
    assert seen == [dg.Tensor, dg.Tensor]
    np.testing.assert_allclose(x.grad.numpy(), 2.0 * 10.0 * 2.0 * np.array([2.0, 4.0, 6.0]))


def test_each_leaf_gets_its_own_writeable_gradient():
    a, b = dg.ones(2, 3, requires_grad=True), dg.ones(2, 3, requires_grad=True)
    s = dg.tensor(2.0, requires_grad=True)
    ((a + b) * 3.0).sum().backward()  # add's rule hands one array to both leaves
    (s * 3.0).backward()  # a 0-d gradient
    a.grad.array[...] = 0  # what zero_grad(set_to_none=False) does
    np.testing.assert_array_equal(b.grad.numpy(), np.full((2, 3), 3.0, np.float32))
    s.grad.array[...] = 0
    assert s.grad.item() == 0.0


def test_ops_without_an_array_rule_still_work_in_fast_mode():
    x0 = np.array([[-2.0, 0.5], [1.5, 3.0]])
    x, xt = dg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    (x.clamp(-1.0, 2.0) * x.cumsum(0)).sum().backward()
    (xt.clamp(-1.0, 2.0) * xt.cumsum(0)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12)


class _Recorder:
    def __init__(self):
        self.ops = []

    def record(self, op, inputs, attrs, out):
        self.ops.append(op.name)


def test_backward_under_a_tracer_records_the_differentiable_rules():
    x = dg.tensor(np.ones((2, 2)), requires_grad=True)
    loss = (x * x).tanh().sum()
    rec = _Recorder()
    prev = set_tracer(rec)
    try:
        loss.backward()
    finally:
        set_tracer(prev)
    assert "mul" in rec.ops and "expand" in rec.ops  # tanh's and sum's rules ran as recorded ops
    np.testing.assert_allclose(x.grad.numpy(), 2.0 * (1 - np.tanh(1.0) ** 2) * np.ones((2, 2)))
