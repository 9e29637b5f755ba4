"""grad_fn names, reprs and a few module/cuda names read as torch's (torch as the reference)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as DF

torch = pytest.importorskip("torch")
TF = torch.nn.functional

_A = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
_B3 = np.random.default_rng(1).standard_normal((2, 1, 4)).astype(np.float32)
_T = np.array([1, 0, 2])

CASES = {  # what each library computes, given (lib, F, a, b3, target)
    "mul": lambda L, F, a, b3, t: a * a,
    "rsub": lambda L, F, a, b3, t: 1 - a,
    "mean": lambda L, F, a, b3, t: a.mean(),
    "mean_dim": lambda L, F, a, b3, t: a.mean(1, keepdim=True),
    "max": lambda L, F, a, b3, t: a.max(),
    "max_dim": lambda L, F, a, b3, t: a.max(1)[0],
    "amin": lambda L, F, a, b3, t: a.amin(1),
    "t": lambda L, F, a, b3, t: a.t(),
    "transpose": lambda L, F, a, b3, t: b3.transpose(0, 2),
    "permute": lambda L, F, a, b3, t: b3.permute(0, 2, 1),
    "unsqueeze": lambda L, F, a, b3, t: a.unsqueeze(0),
    "squeeze": lambda L, F, a, b3, t: b3.squeeze(),
    "squeeze_dim": lambda L, F, a, b3, t: b3.squeeze(1),
    "squeeze_dims": lambda L, F, a, b3, t: b3.squeeze((0, 1)),
    "flatten": lambda L, F, a, b3, t: b3.flatten(),
    "expand": lambda L, F, a, b3, t: b3.expand(2, 3, 4),
    "var": lambda L, F, a, b3, t: a.var(1),
    "std": lambda L, F, a, b3, t: a.std(),
    "stack": lambda L, F, a, b3, t: L.stack([a, a]),
    "split": lambda L, F, a, b3, t: a.split(2)[1],
    "split_sizes": lambda L, F, a, b3, t: a.split([1, 3], 1)[1],
    "unbind": lambda L, F, a, b3, t: a.unbind()[1],
    "index_select": lambda L, F, a, b3, t: a.index_select(0, t),
    "masked_fill": lambda L, F, a, b3, t: a.masked_fill(a > 0, 0.0),
    "masked_select": lambda L, F, a, b3, t: a.masked_select(a > 0),
    "tril": lambda L, F, a, b3, t: a.tril(),
    "trace": lambda L, F, a, b3, t: a.trace(),
    "sort": lambda L, F, a, b3, t: a.sort()[0],
    "topk": lambda L, F, a, b3, t: a.topk(2)[0],
    "relu": lambda L, F, a, b3, t: F.relu(a),
    "logsigmoid": lambda L, F, a, b3, t: F.logsigmoid(a),
    "nll_loss": lambda L, F, a, b3, t: F.nll_loss(F.log_softmax(a, 1), t),
    "cross_entropy": lambda L, F, a, b3, t: F.cross_entropy(a, t),
    "l1_loss": lambda L, F, a, b3, t: F.l1_loss(a, a.detach() * 2),
    "pad": lambda L, F, a, b3, t: F.pad(a, (1, 1)),
    "matmul": lambda L, F, a, b3, t: a @ a.t(),
    "linear": lambda L, F, a, b3, t: F.linear(a, a, a[:, 0].detach()),
}


def _run(lib, F, case):
    a = lib.tensor(_A, requires_grad=True)
    return CASES[case](lib, F, a, lib.tensor(_B3, requires_grad=True), lib.tensor(_T))


@pytest.mark.parametrize("case", CASES)
def test_grad_fn_name_and_repr_are_torchs(case):
    ours, theirs = _run(dg, DF, case), _run(torch, TF, case)
    assert ours.grad_fn.name() == theirs.grad_fn.name()
    assert f"grad_fn=<{theirs.grad_fn.name()}>" in repr(ours)
    assert repr(ours.grad_fn).startswith(f"<{theirs.grad_fn.name()} object at ")


def test_naming_a_composite_leaves_its_input_alone():
    x = dg.randn(3, 4, requires_grad=True) * 2
    before = x.grad_fn.name()
    x.unsqueeze(0).squeeze(0).t()
    assert x.grad_fn.name() == before == "MulBackward0"


def test_parameter_list_and_dict_reprs_are_torchs():
    def build(lib):
        pl = lib.nn.ParameterList(
            [lib.nn.Parameter(lib.zeros(2)), lib.nn.Parameter(lib.zeros(2, 3, dtype=lib.float64))]
        )
        pd = lib.nn.ParameterDict({"a": lib.nn.Parameter(lib.zeros(2)), "b": lib.nn.Parameter(lib.zeros(1))})
        return repr(pl), repr(pd), repr(lib.nn.ParameterList())

    for ours, theirs in zip(build(dg), build(torch.nn and torch)):
        assert ours == theirs.replace("torch.", "distgraph.")


def test_multihead_attention_out_proj_class_is_torchs():
    ours, theirs = dg.nn.MultiheadAttention(4, 2), torch.nn.MultiheadAttention(4, 2)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    cls = dg.nn.modules.linear.NonDynamicallyQuantizableLinear
    assert type(ours.out_proj) is cls and issubclass(cls, dg.nn.Linear)
    assert dg.nn.modules.activation.NonDynamicallyQuantizableLinear is cls
    for space in ("nn", "nn.modules"):  # as torch: not in nn nor in nn.modules
        assert hasattr(eval(f"torch.{space}"), "NonDynamicallyQuantizableLinear") is False
        assert hasattr(eval(f"dg.{space}"), "NonDynamicallyQuantizableLinear") is False


def test_cuda_is_bf16_supported_is_false():
    assert dg.cuda.is_bf16_supported() is False
    assert dg.cuda.is_bf16_supported(including_emulation=False) is False
