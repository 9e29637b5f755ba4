"""Bugs the random-program fuzzer (test_program_fuzz.py, seeds 9000-11000) found, each pinned against torch
(float64 values and gradients)."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


# ---- unbind of an empty dim (seed 10079) --------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "dim"), [((0,), 0), ((0, 3), 0), ((0, 4, 2), -3), ((2, 0), 1), ((2, 0), 0)])
def test_unbind_of_an_empty_dim_gives_no_tensors(shape, dim):
    """unbind was squeeze of split(1), and split of an empty dim gives one empty piece: unbind gave one
    tensor where torch gives none."""
    got, want = dg.zeros(shape).unbind(dim), torch.zeros(shape).unbind(dim)
    assert len(got) == len(want)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    assert len(dg.unbind(dg.zeros(shape), dim)) == len(want)


def test_unbind_of_an_empty_dim_in_a_graph_backwards_as_torch():
    grads = []
    for m in (dg, torch):
        x = m.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
        pieces = x[:, :0].unbind(1) + x.unbind(1)
        sum(p.sum() * (k + 1) for k, p in enumerate(pieces)).backward()
        grads.append((len(pieces), np.asarray(x.grad)))
    assert grads[0][0] == grads[1][0]
    np.testing.assert_array_equal(grads[0][1], grads[1][1])
