"""Every op of issue 2 against torch in float64: forward values and input gradients (rtol 1e-7), on
shapes with broadcasting and size-1/size-0 dims, then central-difference gradcheck on a small case.

One row per op (tinygrad style): name, the distgraph and torch calls (same code, `m` is the module:
`dg` or `torch`), the input shapes, and the input domain.
"""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

POS, UNIT, ANY, GT1 = "pos", "unit", "any", "gt1"


def rows():
    r = []

    def op(name, fn, *shapes, domain=ANY, grad=True, gradcheck=True):
        r.append(pytest.param(fn, shapes, domain, grad, gradcheck, id=name))

    # arithmetic with broadcasting and size-1 / size-0 dims
    for name, fn in [
        ("add", lambda m, a, b: a + b), ("sub", lambda m, a, b: a - b), ("mul", lambda m, a, b: a * b),
        ("div", lambda m, a, b: a / b), ("maximum", lambda m, a, b: m.maximum(a, b)),
        ("minimum", lambda m, a, b: m.minimum(a, b)), ("atan2", lambda m, a, b: m.atan2(a, b)),
        ("add_alpha", lambda m, a, b: m.add(a, b, alpha=2.5)), ("lerp", lambda m, a, b: m.lerp(a, b, 0.3)),
    ]:  # fmt: skip
        op(name, fn, (3, 4), (4,))
        op(name + "-size1", fn, (2, 1, 3), (1, 5, 1))
        op(name + "-size0", fn, (0, 3), (1, 3))
    op("pow", lambda m, a, b: a**b, (3, 4), (3, 4), domain=POS)
    op("pow-scalar", lambda m, a: a**2.5, (3, 4), domain=POS)
    op("rpow", lambda m, a: 2.0**a, (3, 4))
    op("fmod", lambda m, a: m.fmod(a, 0.7), (3, 4))
    op("remainder", lambda m, a: m.remainder(a, 0.7), (3, 4))
    op("neg", lambda m, a: -a, (3, 4))
    op("where", lambda m, a, b: m.where(a > 0, a, b), (3, 4), (4,))
    op("clamp", lambda m, a: m.clamp(a, -0.5, 0.7), (3, 4))
    op("clamp-min", lambda m, a: m.clamp(a, min=-0.2), (3, 4))
    # unary math
    for name in ["exp", "sin", "cos", "tanh", "sigmoid", "atan", "sinh", "cosh", "asinh", "abs", "erf", "expm1"]:
        op(name, lambda m, a, name=name: getattr(m, name)(a), (2, 3, 4))
    for name in ["log", "sqrt", "rsqrt", "log1p", "log2", "log10", "reciprocal"]:
        op(name, lambda m, a, name=name: getattr(m, name)(a), (3, 4), domain=POS)
    for name in ["asin", "acos", "atanh"]:
        op(name, lambda m, a, name=name: getattr(m, name)(a), (3, 4), domain=UNIT)
    op("acosh", lambda m, a: m.acosh(a), (3, 4), domain=GT1)
    op("tan", lambda m, a: m.tan(a), (3, 4), domain=UNIT)
    for name in ["sign", "floor", "ceil", "round", "trunc"]:
        op(name, lambda m, a, name=name: getattr(m, name)(a), (3, 4), gradcheck=False)
    # activations
    F = {"dg": dg.nn.functional, "torch": torch.nn.functional}
    for name, kw in [("relu", {}), ("leaky_relu", {"negative_slope": 0.1}), ("elu", {}), ("gelu", {}), ("silu", {}),
                     ("softplus", {}), ("softmax", {"dim": 1}), ("log_softmax", {"dim": -1})]:  # fmt: skip
        op(name, lambda m, a, name=name, kw=kw: getattr(F["dg" if m is dg else "torch"], name)(a, **kw), (3, 5))
    # reductions over dims, keepdim, tuple dims
    for name in ["sum", "mean", "amax", "amin", "logsumexp", "prod"]:
        op(
            name + "-all",
            lambda m, a, name=name: getattr(m, name)(a) if name not in ("logsumexp",) else m.logsumexp(a, (0, 1)),
            (3, 4),
        )
        op(name + "-dim", lambda m, a, name=name: getattr(m, name)(a, 1), (3, 4, 2))
        if name != "prod":  # torch.prod takes one int dim only (distgraph raises the same TypeError)
            op(name + "-tuple-keep", lambda m, a, name=name: getattr(m, name)(a, (0, 2), keepdim=True), (3, 4, 2))
    op("var", lambda m, a: m.var(a, 1), (3, 5))
    op("std-keep", lambda m, a: m.std(a, (0, 1), keepdim=True), (3, 4, 2))
    op("var-unbiased0", lambda m, a: m.var(a, 0, correction=0), (4, 3))
    op("max-dim", lambda m, a: m.max(a, 1)[0], (3, 5))
    op("min-dim-keep", lambda m, a: m.min(a, 0, keepdim=True)[0], (3, 5))
    op("max-all", lambda m, a: m.max(a), (3, 5))
    op("norm", lambda m, a: m.norm(a), (3, 4))
    op("cumsum", lambda m, a: m.cumsum(a, 1), (3, 4))
    op("cumprod", lambda m, a: m.cumprod(a, 1), (3, 4), domain=POS)
    # shapes
    op("reshape", lambda m, a: a.reshape(4, 3), (3, 4))
    op("view", lambda m, a: a.view(2, -1), (3, 4))
    op("flatten", lambda m, a: m.flatten(a, 1), (2, 3, 4))
    op("squeeze", lambda m, a: a.squeeze(1), (3, 1, 4))
    op("unsqueeze", lambda m, a: a.unsqueeze(-1), (3, 4))
    op("permute", lambda m, a: a.permute(2, 0, 1), (2, 3, 4))
    op("transpose", lambda m, a: a.transpose(0, 2), (2, 3, 4))
    op("T", lambda m, a: a.T, (3, 4))
    op("expand", lambda m, a: a.expand(2, 3, 4), (3, 1))
    op("repeat", lambda m, a: a.repeat(2, 1, 3), (3, 4))
    op("cat", lambda m, a, b: m.cat([a, b], 1), (3, 2), (3, 4))
    op("stack", lambda m, a, b: m.stack([a, b], 0), (3, 4), (3, 4))
    op("split", lambda m, a: m.split(a, 2, 1)[1], (3, 5))
    op("chunk", lambda m, a: m.chunk(a, 3, 0)[2], (7, 2))
    op("flip", lambda m, a: m.flip(a, (0, 1)), (3, 4))
    op("roll", lambda m, a: m.roll(a, 2, 1), (3, 4))
    op("pad", lambda m, a: F["dg" if m is dg else "torch"].pad(a, (1, 2, 0, 1)), (3, 4))
    op("tril", lambda m, a: m.tril(a, -1), (4, 4))
    op("triu", lambda m, a: m.triu(a, 1), (3, 5))
    op("diagonal", lambda m, a: m.diagonal(a, 1), (4, 5))
    op("repeat_interleave", lambda m, a: m.repeat_interleave(a, 2, 0), (3, 2))
    op("unfold", lambda m, a: a.unfold(1, 3, 2), (2, 7))
    op("unflatten", lambda m, a: a.unflatten(1, (2, 3)), (4, 6))
    # indexing
    idx = np.array([2, 0, 2])
    op("getitem-int-slice", lambda m, a: a[1, 1:3], (3, 4))
    op("getitem-none-ellipsis", lambda m, a: a[None, ..., ::2], (3, 4))
    op("getitem-bool", lambda m, a: a[a > 0], (3, 4))
    op("getitem-int-array", lambda m, a: a[m.tensor(idx)], (3, 4))
    op("gather", lambda m, a: m.gather(a, 1, m.tensor(np.array([[0, 2], [1, 1], [3, 0]]))), (3, 4))
    op(
        "scatter_add",
        lambda m, a, b: m.scatter_add(a, 1, m.tensor(np.array([[0, 2], [1, 1], [3, 0]])), b),
        (3, 4),
        (3, 2),
    )
    op("index_select", lambda m, a: m.index_select(a, 0, m.tensor(idx)), (3, 4))
    op("masked_fill", lambda m, a: a.masked_fill(a > 0.5, -1.0), (3, 4))
    op("sort", lambda m, a: m.sort(a, 1)[0], (3, 4))
    op("topk", lambda m, a: m.topk(a, 2, 1)[0], (3, 4))
    # linear algebra
    op("matmul", lambda m, a, b: a @ b, (3, 4), (4, 2))
    op("matmul-batched-broadcast", lambda m, a, b: a @ b, (2, 1, 3, 4), (5, 4, 2))
    op("matmul-vec", lambda m, a, b: a @ b, (3, 4), (4,))
    op("einsum", lambda m, a, b: m.einsum("bij,bjk->bik", a, b), (2, 3, 4), (2, 4, 5))
    op("einsum-trace", lambda m, a: m.einsum("ii->", a), (4, 4))
    op("einsum-diag", lambda m, a: m.einsum("ii->i", a), (4, 4))
    op("einsum-diag-batched", lambda m, a, b: m.einsum("bii,bj->bij", a, b), (2, 3, 3), (2, 4))
    return r


def inputs(shapes, domain, rng):
    out = []
    for s in shapes:
        a = rng.standard_normal(s)
        if domain == POS:
            a = np.abs(a) + 0.5
        elif domain == UNIT:
            a = np.tanh(a) * 0.9
        elif domain == GT1:
            a = np.abs(a) + 1.5
        out.append(a)
    return out


@pytest.mark.parametrize("fn,shapes,domain,grad,gradcheck", rows())
def test_op_matches_torch(fn, shapes, domain, grad, gradcheck, device):
    rng = np.random.default_rng(0)
    check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *inputs(shapes, domain, rng), grad=grad, device=device)


@pytest.mark.parametrize("fn,shapes,domain,grad,gradcheck", [r for r in rows() if r.values[4]])
def test_op_gradcheck(fn, shapes, domain, grad, gradcheck):
    rng = np.random.default_rng(1)
    xs = [dg.tensor(a, requires_grad=True) for a in inputs(shapes, domain, rng) if 0 not in a.shape]
    if len(xs) != len(shapes):
        pytest.skip("size-0 input: nothing to perturb")
    assert dg.autograd.gradcheck(lambda *a: fn(dg, *a), xs)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("tanh", lambda m, a: m.tanh(a)),
        ("mul-exp", lambda m, a: m.exp(a) * a),
        ("matmul-sigmoid", lambda m, a: m.sigmoid(a @ a.T)),
        ("log_softmax", lambda m, a: m.log_softmax(a, 1)),
        ("div-sqrt", lambda m, a: a / m.sqrt(a * a + 1)),
    ],
)
def test_double_backward_matches_torch(name, fn):
    a = np.random.default_rng(2).standard_normal((3, 4))
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (g,) = dg.autograd.grad(fn(dg, x).sum(), [x], create_graph=True)
    (gt,) = torch.autograd.grad(fn(torch, xt).sum(), [xt], create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-7, atol=1e-12)
    (g * g).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-12)
