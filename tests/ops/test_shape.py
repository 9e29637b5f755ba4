"""Shape and movement ops (ops/shape.py, regions.py) against torch float64: views, joins, splits,
flips, padding, triangles and diagonals, on plain, size-1 and size-0 shapes; gradcheck; views share
memory with their base as in torch."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch

T = Table()
F = {dg: dg.nn.functional, torch: torch.nn.functional}
T.op("reshape", lambda m, a: a.reshape(4, 3), (3, 4))
T.op("reshape-infer", lambda m, a: m.reshape(a, (-1, 2)), (3, 4))
T.op("reshape-size0", lambda m, a: a.reshape(3, 0, 2), (0, 6))
T.op("view", lambda m, a: a.view(2, -1), (3, 4))
T.op("view-0d", lambda m, a: a.view(1, 1), ())
T.op("flatten", lambda m, a: m.flatten(a, 1), (2, 3, 4))
T.op("flatten-all", lambda m, a: a.flatten(), (2, 3, 4))
T.op("flatten-0d", lambda m, a: a.flatten(), ())
T.op("unflatten", lambda m, a: a.unflatten(1, (2, 3)), (4, 6))
T.op("unflatten-infer", lambda m, a: a.unflatten(-1, (-1, 2)), (4, 6))
T.op("squeeze-dim", lambda m, a: a.squeeze(1), (3, 1, 4))
T.op("squeeze-all", lambda m, a: m.squeeze(a), (1, 3, 1, 4, 1))
T.op("squeeze-not-size1", lambda m, a: a.squeeze(0), (3, 4))
T.op("squeeze-tuple", lambda m, a: a.squeeze((0, 2)), (1, 3, 1))
T.op("unsqueeze", lambda m, a: a.unsqueeze(-1), (3, 4))
T.op("unsqueeze-front", lambda m, a: m.unsqueeze(a, 0), (0, 4))
T.op("permute", lambda m, a: a.permute(2, 0, 1), (2, 3, 4), double=False)
T.op("permute-tuple-neg", lambda m, a: m.permute(a, (-1, 0, 1)), (2, 3, 4))
T.op("transpose", lambda m, a: a.transpose(0, 2), (2, 3, 4))
T.op("transpose-neg", lambda m, a: m.transpose(a, -1, -2), (2, 3, 4))
T.op("T", lambda m, a: a.T, (3, 4))
T.op("t", lambda m, a: a.t(), (3, 4))
T.op("mT", lambda m, a: a.mT, (2, 3, 4))
T.op("movedim", lambda m, a: m.movedim(a, 0, -1), (2, 3, 4))
T.op("expand", lambda m, a: a.expand(2, 3, 4), (3, 1))
T.op("expand-minus1", lambda m, a: a.expand(-1, 5), (3, 1))
T.op("expand-size0", lambda m, a: a.expand(0, 3, 4), (3, 1))
T.op("expand_as", lambda m, a, b: a.expand_as(b), (1, 4), (3, 4))
T.op("broadcast_to", lambda m, a: m.broadcast_to(a, (2, 3, 4)), (4,))
T.op("broadcast_tensors", lambda m, a, b: m.broadcast_tensors(a, b), (3, 1), (1, 4))
T.op("repeat", lambda m, a: a.repeat(2, 1, 3), (3, 4))
T.op("repeat-size0", lambda m, a: a.repeat(0, 2), (3, 4))
T.op("tile", lambda m, a: m.tile(a, (2,)), (3, 4))
T.op("repeat_interleave", lambda m, a: m.repeat_interleave(a, 2, 0), (3, 2))
T.op("repeat_interleave-flat", lambda m, a: a.repeat_interleave(3), (3, 2))
T.op("repeat_interleave-tensor", lambda m, a: m.repeat_interleave(a, m.tensor([1, 0, 2]), dim=0), (3, 2))
T.op("cat", lambda m, a, b: m.cat([a, b], 1), (3, 2), (3, 4))
T.op("cat-neg-three", lambda m, a, b, c: m.cat((a, b, c), -1), (2, 1), (2, 3), (2, 2))
T.op("cat-size0", lambda m, a, b: m.cat([a, b], 0), (0, 4), (3, 4))
T.op("concat-alias", lambda m, a, b: m.concat([a, b]), (1, 4), (3, 4))
T.op("stack", lambda m, a, b: m.stack([a, b], 0), (3, 4), (3, 4))
T.op("stack-last", lambda m, a, b: m.stack((a, b), -1), (3, 4), (3, 4))
T.op("hstack", lambda m, a, b: m.hstack([a, b]), (3, 2), (3, 4))
T.op("vstack", lambda m, a, b: m.vstack([a, b]), (2, 4), (3, 4))
T.op("split", lambda m, a: m.split(a, 2, 1), (3, 5))
T.op("split-sizes", lambda m, a: a.split([1, 3, 1], dim=1), (3, 5))
T.op("split-one-used", lambda m, a: m.split(a, 2, 1)[1], (3, 5))
T.op("chunk", lambda m, a: m.chunk(a, 3, 0), (7, 2))
T.op("chunk-uneven-last", lambda m, a: a.chunk(4, 1)[-1], (2, 10))
T.op("unbind", lambda m, a: m.unbind(a, 1), (3, 4))
T.op("narrow", lambda m, a: m.narrow(a, 1, 1, 2), (3, 4))
T.op("flip", lambda m, a: m.flip(a, (0, 1)), (3, 4))
T.op("flip-neg", lambda m, a: a.flip(-1), (3, 4))
T.op("fliplr-flipud", lambda m, a: m.flipud(m.fliplr(a)), (3, 4))
T.op("roll", lambda m, a: m.roll(a, 2, 1), (3, 4))
T.op("roll-multi", lambda m, a: m.roll(a, (1, -2), (0, 1)), (3, 4))
T.op("roll-flat", lambda m, a: m.roll(a, 5), (3, 4))
T.op("pad", lambda m, a: F[m].pad(a, (1, 2, 0, 1)), (3, 4))
T.op("pad-value", lambda m, a: F[m].pad(a, (1, 1), value=2.5), (3, 4))
T.op("pad-negative", lambda m, a: F[m].pad(a, (-1, 2)), (3, 4))
T.op("pad-reflect", lambda m, a: F[m].pad(a, (2, 1), mode="reflect"), (2, 3, 5))
T.op("pad-replicate", lambda m, a: F[m].pad(a, (2, 1), mode="replicate"), (2, 3, 5))
T.op("pad-circular", lambda m, a: F[m].pad(a, (2, 1), mode="circular"), (2, 3, 5))
T.op("tril", lambda m, a: m.tril(a, -1), (4, 4))
T.op("tril-batched", lambda m, a: a.tril(), (2, 3, 5))
T.op("triu", lambda m, a: m.triu(a, 1), (3, 5))
T.op("triu-size0", lambda m, a: m.triu(a), (0, 5))
T.op("diagonal", lambda m, a: m.diagonal(a, 1), (4, 5))
T.op("diagonal-neg-dims", lambda m, a: m.diagonal(a, -1, 0, 2), (4, 3, 5))
T.op("diag-of-vector", lambda m, a: m.diag(a, 1), (4,))
T.op("diag-of-matrix", lambda m, a: m.diag(a), (4, 3))
T.op("unfold", lambda m, a: a.unfold(1, 3, 2), (2, 7))
T.op("unfold-overlap", lambda m, a: a.unfold(0, 2, 1), (5, 2))
T.op("contiguous-clone", lambda m, a: a.T.contiguous().clone(), (3, 4))
T.op("chain-view-ops", lambda m, a: a.permute(1, 0, 2).reshape(3, -1)[:, 1:].flip(0) * 2, (2, 3, 4), double=True)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


def test_double_backward_through_view_ops_matches_torch():
    T2 = Table()
    T2.op("view-then-square", lambda m, a: (a.reshape(4, 3).T * a).exp(), (3, 4))
    for row in T2._rows:
        run_double_backward(row)


def test_views_share_memory_like_torch():
    x = dg.zeros(3, 4)
    for view in [x.view(12), x.reshape(4, 3), x.T, x[1], x.unsqueeze(0), x.permute(1, 0), x.expand(2, 3, 4)]:
        assert np.shares_memory(view.numpy(), x.numpy())
    with dg.no_grad():
        x.view(12)[5] = 7.0
    assert x[1, 1].item() == 7.0


def test_view_of_a_tensor_no_view_can_hold_raises_like_torch():
    """torch: "view size is not compatible with input tensor's size and stride ... Use .reshape(...)";
    a silent copy would break the aliasing a view promises. What a view can hold still works."""
    torch = pytest.importorskip("torch")
    x, t = dg.zeros(3, 4), torch.zeros(3, 4)
    with pytest.raises(
        dg.errors.ShapeError, match=r"view: shape \[12\] .* \(shape \(4, 3\), not contiguous\).*reshape"
    ):
        x.T.view(12)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        t.T.view(12)
    assert np.shares_memory(x.T.view(4, 3).numpy(), x.numpy())  # the same shape: the tensor itself
    y = dg.zeros(2, 3, 4)[:, 1]  # a strided slice whose rows are still contiguous
    assert np.shares_memory(y.view(2, 2, 2).numpy(), y.numpy()) and tuple(
        torch.zeros(2, 3, 4)[:, 1].view(2, 2, 2).shape
    ) == (2, 2, 2)
    assert x.T.reshape(12).shape == (12,)  # reshape copies where it must


def test_reshape_errors_name_op_and_shapes():
    with pytest.raises(dg.errors.ShapeError, match=r"shape '\[5, -1\]' is invalid for input of size 12"):
        dg.zeros(3, 4).reshape(5, -1)
    with pytest.raises(ValueError, match="cat"):
        dg.cat([dg.zeros(2, 3), dg.zeros(2, 4)], 0)
    with pytest.raises(ValueError, match="stack"):
        dg.stack([dg.zeros(2, 3), dg.zeros(3, 2)])
    with pytest.raises(ValueError, match="expand"):
        dg.zeros(3, 2).expand(3, 4)


def test_chunk_of_an_empty_dim_gives_chunks_empty_pieces_like_torch():
    for shape, chunks, dim in [((0, 3), 2, 0), ((0, 3), 5, 0), ((3, 0), 2, 1), ((0, 3), 1, 0)]:
        got, want = dg.zeros(*shape).chunk(chunks, dim), torch.zeros(*shape).chunk(chunks, dim)
        assert [tuple(c.shape) for c in got] == [tuple(c.shape) for c in want]
