"""nn.utils.rnn against torch (float64): padding, packing, unpacking (values, lengths, permutations and
gradients), their errors, and RNN/LSTM/GRU over a PackedSequence (outputs, final states at each true
length, every gradient) for batch_first both ways, bidirectional and stacked layers."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.nn.utils import rnn as R
from tests.parity import check

torch = pytest.importorskip("torch")
TR = torch.nn.utils.rnn
rng = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy()


def _seqs(lengths, feat=3):
    return [rng.standard_normal((n, feat)) for n in lengths]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_sequence_matches_torch_with_gradients(batch_first, padding_side):
    seqs = _seqs([2, 4, 1])
    check(
        lambda *s: R.pad_sequence(s, batch_first, -1.5, padding_side),
        lambda *s: TR.pad_sequence(s, batch_first, -1.5, padding_side),
        *seqs,
    )


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [[4, 3, 1], [1, 4, 2], [2, 4, 4, 2]])
def test_pack_padded_sequence_and_back_match_torch(batch_first, lengths):
    shape = (len(lengths), 5, 2) if batch_first else (5, len(lengths), 2)
    x = rng.standard_normal(shape)
    sort = lengths == sorted(lengths, reverse=True)

    def run(mod):
        def fn(x):
            p = mod.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=sort)
            padded, _ = mod.pad_packed_sequence(p, batch_first=batch_first, padding_value=7.0, total_length=6)
            return p.data, padded

        return fn

    check(run(R), run(TR), x)
    dp = R.pack_padded_sequence(dg.tensor(x), lengths, batch_first=batch_first, enforce_sorted=sort)
    tp = TR.pack_padded_sequence(torch.tensor(x), lengths, batch_first=batch_first, enforce_sorted=sort)
    for d, t in zip(dp[1:], tp[1:]):  # batch_sizes, sorted_indices, unsorted_indices (ties in torch's order)
        assert (d is None) == (t is None)
        if d is not None:
            np.testing.assert_array_equal(d.numpy(), t.numpy())
    assert dp.batch_sizes.dtype == dg.int64
    _, d_len = R.pad_packed_sequence(dp, batch_first=batch_first)
    _, t_len = TR.pad_packed_sequence(tp, batch_first=batch_first)
    np.testing.assert_array_equal(d_len.numpy(), t_len.numpy())


def test_pack_sequence_unpack_sequence_unpad_sequence_round_trip():
    seqs = _seqs([3, 5, 1])
    dp = R.pack_sequence([dg.tensor(s) for s in seqs], enforce_sorted=False)
    tp = TR.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False)
    np.testing.assert_array_equal(_np(dp.data), _np(tp.data))
    for got, want in zip(R.unpack_sequence(dp), seqs):
        np.testing.assert_array_equal(_np(got), want)
    padded = R.pad_sequence([dg.tensor(s) for s in seqs])
    for got, want in zip(R.unpad_sequence(padded, dg.tensor([3, 5, 1])), seqs):
        np.testing.assert_array_equal(_np(got), want)
    assert tuple(padded.shape) == (5, 3, 3)  # unpad_sequence left the caller's tensor as it was


def test_packed_sequence_to_moves_data_and_keeps_batch_sizes():
    p = R.pack_sequence([dg.tensor(s, dtype=dg.float32) for s in _seqs([3, 2])])
    assert p.to(dg.float32) is p
    q = p.double()
    assert q.data.dtype == dg.float64 and q.batch_sizes is p.batch_sizes
    assert isinstance(q, R.PackedSequence) and not q.is_cuda


def test_invert_permutation():
    perm = dg.tensor([2, 0, 3, 1])
    np.testing.assert_array_equal(R.invert_permutation(perm).numpy(), TR.invert_permutation(torch.tensor([2, 0, 3, 1])))
    assert R.invert_permutation(None) is None


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: R.pack_padded_sequence(x, [2, 3, 1]), RuntimeError, "must be sorted in decreasing order"),
        (lambda x: R.pack_padded_sequence(x, [3, 2]), RuntimeError, r"got 2 \(batch_size=3\)"),
        (lambda x: R.pack_padded_sequence(x, [3, 2, 0]), RuntimeError, "has to be greater than 0"),
        (lambda x: R.pack_padded_sequence(x, [3, 2, -1], enforce_sorted=False), RuntimeError, "greater than 0"),
        (lambda x: R.pack_padded_sequence(x, [5, 2, 1]), ValueError, "exceeds the padded input's 4 steps"),
        (lambda x: R.pack_padded_sequence(x, dg.tensor([[3, 2, 1]])), RuntimeError, "should be a 1D CPU int64"),
        (lambda x: R.pack_padded_sequence(x[:0], [3, 2, 1]), RuntimeError, "Cannot pack empty tensors"),
        (
            lambda x: R.pad_packed_sequence(R.pack_padded_sequence(x, [3, 2, 1]), total_length=2),
            ValueError,
            "total_length=2 and max sequence length being 3",
        ),  # fmt: skip
        (lambda x: R.pad_sequence([]), RuntimeError, "received an empty list of sequences"),
        (lambda x: R.pad_sequence(3), RuntimeError, "Expected iterable for input sequences"),
        (lambda x: R.pad_sequence([x[0], x[1]], padding_side="up"), RuntimeError, "one of left or right, but got up"),
        (lambda x: R.pad_sequence([x[0], x[1, :, :1]]), ValueError, r"pad_sequence: .*sequence 1"),
    ],
)
def test_errors_read_as_torch(call, error, match):
    with pytest.raises(error, match=match):
        call(dg.tensor(rng.standard_normal((4, 3, 2))))


PACKED_CASES = [
    ("RNN", dict(num_layers=2, nonlinearity="relu")),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(bidirectional=True, proj_size=2)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(bias=False)),
]


@pytest.mark.parametrize("mode, kwargs", PACKED_CASES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_layers_over_a_packed_sequence_match_torch(mode, kwargs, batch_first, with_state):
    tm = getattr(torch.nn, mode)(3, 4, batch_first=batch_first, **kwargs).double()
    dm = getattr(nn, mode)(3, 4, batch_first=batch_first, **kwargs).double()
    dm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    lengths = [2, 5, 3, 1]
    x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3))
    states = tm.num_layers * (2 if tm.bidirectional else 1)
    h0 = rng.standard_normal((states, 4, kwargs.get("proj_size") or 4))
    c0 = rng.standard_normal((states, 4, 4))

    def run(lib, rnn_utils, m):
        ins = [lib.tensor(a, requires_grad=True) for a in (x, h0, c0)]
        packed = rnn_utils.pack_padded_sequence(ins[0], lengths, batch_first=batch_first, enforce_sorted=False)
        hx = ((ins[1], ins[2]) if mode == "LSTM" else ins[1]) if with_state else None
        out, h = m(packed, hx)
        assert isinstance(out, rnn_utils.PackedSequence)
        outs = [out.data, *(h if mode == "LSTM" else (h,))]
        seeds = np.random.default_rng(1)
        lib.autograd.backward(outs, [lib.tensor(seeds.standard_normal(tuple(o.shape))) for o in outs])
        return outs, [i.grad for i in ins] + [p.grad for p in m.parameters()], out

    d_outs, d_grads, d_out = run(dg, R, dm)
    t_outs, t_grads, t_out = run(torch, TR, tm)
    for d, t in zip(d_outs, t_outs):
        np.testing.assert_allclose(_np(d), _np(t), rtol=1e-10, atol=1e-12)
    for d, t in zip(d_grads, t_grads):
        assert (d is None) == (t is None)
        if d is not None:
            np.testing.assert_allclose(_np(d), _np(t), rtol=1e-10, atol=1e-12)
    for d, t in zip(d_out[1:], t_out[1:]):
        np.testing.assert_array_equal(d.numpy(), t.numpy())


def test_packed_bidirectional_gru_passes_gradcheck():
    m = nn.GRU(2, 3, bidirectional=True).double()
    x = dg.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)

    def fn(x):
        out, h = m(R.pack_padded_sequence(x, [4, 2, 1]), None)
        return (R.pad_packed_sequence(out)[0] ** 2).sum() + h.sum()

    assert dg.autograd.gradcheck(fn, [x])


def test_packed_input_with_wrong_sizes_is_refused():
    m = nn.LSTM(3, 4)
    packed = R.pack_padded_sequence(dg.randn(5, 2, 3), [5, 2])
    with pytest.raises(ValueError, match="Expected hidden size|expected hidden size"):
        m(packed, (dg.zeros(1, 3, 4), dg.zeros(1, 3, 4)))
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 2, got 3"):
        nn.GRU(2, 4)(packed)


def test_nn_utils_keeps_its_names_as_a_package():
    from distgraph.nn.utils import (  # noqa: F401
        clip_grad_norm_,
        clip_grad_value_,
        clip_grads_with_norm_,
        get_total_norm,
        parameters_to_vector,
        vector_to_parameters,
    )

    assert nn.utils.rnn.PackedSequence is R.PackedSequence
