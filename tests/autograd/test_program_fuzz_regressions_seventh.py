"""Bugs the random-program fuzzer found in the ops of the API round (test_program_fuzz_new_ops.py, seeds
0..N), each pinned against torch (float64, values and gradients; second-order where the bug was there)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.array([[0.3, -0.5, 0.1], [0.7, -0.2, 0.05]])


def _both(fn):
    """fn(m) on distgraph and torch: (result or None, error or None) for each."""
    out = []
    for m in (dg, torch):
        try:
            out.append((fn(m), None))
        except Exception as exc:  # noqa: BLE001 - the test compares whether each raises
            out.append((None, exc))
    return out


# ---- erfinv's gradient survives a write to its output (seed 34) ----------------------------------------------
def test_erfinv_gradient_after_its_output_is_written_in_place():
    """torch's rule recomputes erfinv from the input; distgraph's saved the output, so a later in-place
    write to it (scatter_ through a slice) made the backward refuse where torch's gives the gradient."""

    def fn(m, x):
        y = m.erfinv(x)
        y[:, :1].mul_(2.0)
        return y * y

    check(lambda x: fn(dg, x), lambda x: fn(torch, x), X)


def test_erfinv_in_place_on_a_non_leaf_second_order():
    for m in (dg, torch):
        x = m.tensor(X, requires_grad=True)
        (g,) = m.autograd.grad((x * 1).erfinv_().sum(), x, create_graph=True)
        (gg,) = m.autograd.grad((g * g).sum(), x)
        if m is dg:
            want = gg.numpy()
        else:
            np.testing.assert_allclose(want, gg.numpy(), rtol=1e-12)


# ---- nanmean of an all-NaN slice: torch's gradient is NaN (seed 91) ------------------------------------------
NAN = float("nan")


@pytest.mark.parametrize("row", [[NAN], [NAN, NAN], [NAN, 1.5], [NAN, 2.0, -1.0]])
def test_nanmean_and_nansum_gradient_at_nan_as_torchs(row):
    """torch's nansum backward is grad · (x == x): the infinite gradient of an all-NaN nanmean (1 / 0
    counted values) gives NaN at the NaNs; distgraph's `where` gave 0 there."""
    x = np.array(row)
    check(lambda a: dg.nanmean(a, dim=-1, keepdim=True), lambda a: torch.nanmean(a, -1, True), x)
    check(lambda a: dg.nanmean(a), lambda a: torch.nanmean(a), x)
    check(lambda a: dg.nansum(a, 0), lambda a: torch.nansum(a, 0), x)


# ---- writes of a source that requires grad into an integer tensor raise, as torch's autograd (seed 12) ----------
@pytest.mark.parametrize(
    "name",
    ["select_scatter", "slice_scatter", "diagonal_scatter", "index_fill"],
)
@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_scatter_of_a_grad_source_into_an_integer_tensor_raises(name, dtype):
    calls = {
        "select_scatter": lambda m, a, s: m.select_scatter(a, s[0], 0, 1),
        "slice_scatter": lambda m, a, s: m.slice_scatter(a, s[:1], 0, 0, 1),
        "diagonal_scatter": lambda m, a, s: m.diagonal_scatter(a, s[0, :2]),
        "index_fill": lambda m, a, s: a.index_fill(1, m.tensor([0, 2]), s.sum()),
    }

    def fn(m, grad):
        a = m.tensor(np.array([[1, 0, 3], [0, 5, 6]]).astype(dtype))
        return calls[name](m, a, m.tensor(X, requires_grad=grad))

    (d, d_err), (t, t_err) = _both(lambda m: fn(m, True))
    assert t_err is not None and "Autograd not support dtype" in str(t_err)
    assert isinstance(d_err, dg.errors.DTypeError) and name.rstrip("_") in str(d_err)
    (d, d_err), (t, t_err) = _both(lambda m: fn(m, False))  # without grad both write, in self's dtype
    assert d_err is None and t_err is None
    np.testing.assert_array_equal(d.numpy(), t.numpy())
    with dg.no_grad():
        assert fn(dg, True).dtype == getattr(dg, dtype)


def test_index_fill_in_place_into_an_integer_tensor_writes_as_torchs():
    """torch's in-place index_fill_ lets a grad-requiring value into an integer self (no error)."""

    def fn(m):
        a = m.tensor([[1, 0, 3], [0, 5, 6]])
        return a.index_fill_(1, m.tensor([0, 2]), m.tensor(X, requires_grad=True).sum())

    np.testing.assert_array_equal(fn(dg).detach().numpy(), fn(torch).detach().numpy())


# ---- cov: bool input and NaN weights refused, as torch (seeds 2, 11) -----------------------------------------
def test_cov_refuses_bool_input_and_nan_aweights():
    for fn in (
        lambda m: m.cov(m.tensor([[True, False, True]])),
        lambda m: m.corrcoef(m.tensor([[True, False, True], [False, False, True]])),
        lambda m: m.cov(m.tensor([[1.0, 2, 4]]), aweights=m.tensor([1.0, float("nan"), 2])),
    ):
        (_, d_err), (_, t_err) = _both(fn)
        assert t_err is not None and d_err is not None, (d_err, t_err)
        assert "cov()" in str(d_err)
    check(lambda a: dg.cov(a, aweights=dg.tensor([1.0, 0.5, 2.0])),
          lambda a: torch.cov(a, aweights=torch.tensor([1.0, 0.5, 2.0])), X)  # fmt: skip
    check(lambda a: dg.cov(a.long().float()), lambda a: torch.cov(a.long().float()), X * 10)  # ints still cast


# ---- diff: prepend/append of another dimension refused, as torch (seed 0) ------------------------------------
@pytest.mark.parametrize("extra", [(), (4,), (1, 2, 3)])
def test_diff_refuses_prepend_and_append_of_another_dimension(extra):
    for kw in ("prepend", "append"):
        (_, d_err), (_, t_err) = _both(lambda m: m.diff(m.tensor(X), dim=-1, **{kw: m.ones(extra, dtype=m.float64)}))
        assert t_err is not None and isinstance(d_err, dg.errors.ShapeError), (kw, d_err)
        assert "same dimension as input" in str(d_err)
    check(
        lambda a: dg.diff(a, dim=-1, prepend=a[:, :1] * 2, append=a),
        lambda a: torch.diff(a, dim=-1, prepend=a[:, :1] * 2, append=a),
        X,
    )
