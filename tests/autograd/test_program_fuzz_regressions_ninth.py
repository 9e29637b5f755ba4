"""Bugs the random-program fuzzer found in the ops of the API round (test_program_fuzz_new_ops.py, third hunt),
each pinned against torch (float64 values and gradients; errors where torch refuses)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated")

NAN, INF = float("nan"), float("inf")
SPD = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])


# ---- slogdet of a matrix holding NaN (seeds 2084, 3950) -----------------------------------------------------
def test_slogdet_sign_is_zero_where_the_matrix_holds_nan():
    """numpy's slogdet gives sign ±1 and log|det| NaN for a NaN matrix; torch's sign (the product of the LU
    diagonal's x/|x|) is 0 there. A finite matrix keeps its sign, an exactly singular one 0 and -inf."""
    a = np.stack([np.full((3, 3), NAN), SPD, -SPD, np.ones((3, 3))])
    got, want = dg.slogdet(dg.tensor(a)), torch.linalg.slogdet(torch.tensor(a))
    np.testing.assert_array_equal(got.sign.array, want.sign.numpy())
    np.testing.assert_allclose(got.logabsdet.array, want.logabsdet.numpy(), rtol=1e-12)


def test_slogdet_gradient_of_a_finite_matrix_is_unchanged():
    check(lambda x: dg.slogdet(x)[1], lambda x: torch.linalg.slogdet(x)[1], SPD + 0.1 * np.arange(9).reshape(3, 3))


# ---- addr's promotion of a 0-d input (seeds 819, 3853) ------------------------------------------------------
@pytest.mark.parametrize("input_dtype", [np.float64, np.int64])
def test_addr_of_a_0d_input_promotes_as_a_dimensioned_tensor(input_dtype):
    """torch expands addr's input to the product's shape first, so a float64 0-d input with float32 vectors
    gives float64 (the add's 0-d rule gave float32)."""
    a = np.array(1.5).astype(input_dtype)
    v, w = np.arange(3, dtype=np.float32), np.arange(4, dtype=np.float32)
    got = dg.addr(dg.tensor(a), dg.tensor(v), dg.tensor(w), alpha=2)
    want = torch.addr(torch.tensor(a), torch.tensor(v), torch.tensor(w), alpha=2)
    assert got.dtype.name == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.array, want.numpy())


def test_addr_gradient_of_a_0d_input():
    check(lambda a, v, w: dg.addr(a, v, w, beta=0.5, alpha=2), lambda a, v, w: torch.addr(a, v, w, beta=0.5, alpha=2),
          np.array(1.5), np.arange(3.0), np.arange(4.0) - 1)  # fmt: skip


# ---- einsum's saved operands (seed 919) -------------------------------------------------------------------------
@pytest.mark.parametrize("eq", ["ij,kj->ik", "ij,jk,kl->il"])
def test_einsum_operand_written_in_place_where_no_partner_needs_a_gradient(eq):
    """einsum saved every operand for every gradient: a write into an operand after einsum stopped backward
    although only the other operands' gradients read it and they need none; torch saves it only then."""
    r = np.random.default_rng(0)
    shapes = {"ij,kj->ik": [(3, 4), (2, 4)], "ij,jk,kl->il": [(3, 4), (4, 4), (4, 2)]}[eq]
    arrays = [r.standard_normal(s) for s in shapes]
    for m in (dg, torch):
        x = m.tensor(arrays[0], requires_grad=True)
        a = x * 1
        out = m.einsum(eq, a, *[m.tensor(b) for b in arrays[1:]])
        a.zero_()
        (g,) = m.autograd.grad(out.sum(), [x])
        if m is dg:
            got = g.array
    np.testing.assert_allclose(got, g.numpy(), rtol=1e-12)


def test_einsum_still_refuses_a_written_operand_a_gradient_reads():
    for m in (dg, torch):
        x, y = m.tensor(np.ones((2, 3)), requires_grad=True), m.tensor(np.ones((4, 3)), requires_grad=True)
        a = x * 1
        out = m.einsum("ij,kj->ik", a, y)
        a.zero_()
        with pytest.raises(Exception, match="modified by an inplace operation"):
            m.autograd.grad(out.sum(), [y])


# ---- diff returns a new tensor (seed 1151) ----------------------------------------------------------------------
def test_diff_of_a_size_1_dim_is_not_a_view_of_its_input():
    """diff along a dim of size 1 returned an empty narrow of its input, a view: a later in-place write with a
    grad-requiring value into the input made it report requires_grad (torch's is a new tensor)."""
    for m in (dg, torch):
        a = m.tensor(np.ones((3, 4), np.float32))
        d = m.diff(a.narrow(-1, 0, 1), dim=-1)
        a.put_(m.tensor([0, -1]), m.tensor([1.0, 2.0], requires_grad=True) * 1, accumulate=True)
        assert tuple(d.shape) == (3, 0) and not d.requires_grad


def test_diff_of_order_0_is_a_copy():
    x = dg.tensor(np.arange(4.0))
    y = dg.diff(x, n=0)
    y.add_(1)
    np.testing.assert_array_equal(x.array, np.arange(4.0))
    check(lambda x: dg.diff(x, n=0) * 2, lambda x: torch.diff(x, n=0) * 2, np.arange(4.0))


def test_diff_past_its_length_and_gradient():
    check(lambda x: dg.diff(x, n=3, dim=0).sum() + x.sum(), lambda x: torch.diff(x, n=3, dim=0).sum() + x.sum(),
          np.arange(6.0).reshape(2, 3))  # fmt: skip
    b = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(dg.diff(dg.tensor(b), n=3).array, torch.diff(torch.tensor(b), n=3).numpy())


# ---- scatter / scatter_add with a 0-d src (seed 3550) ------------------------------------------------------------
@pytest.mark.parametrize("op", ["scatter_add", "scatter"])
def test_scatter_reads_a_0d_src_as_one_element(op):
    """torch counts a 0-d src as 1-d (size 1); distgraph indexed the 0-d array with the 1-d index."""
    check(lambda x, s: getattr(x, op)(0, dg.tensor([2]), s) * dg.tensor(np.arange(3.0)),
          lambda x, s: getattr(x, op)(0, torch.tensor([2]), s) * torch.arange(3.0, dtype=torch.float64),
          np.array([1.0, -2.0, 3.0]), np.array(4.0))  # fmt: skip


@pytest.mark.parametrize("op", ["scatter_add", "scatter"])
def test_scatter_refuses_an_index_larger_than_src(op):
    """An index of 2 elements and a src of 1: torch refuses; distgraph's scatter_add failed in backward only."""
    for m in (dg, torch):
        x, s = m.zeros(3, dtype=m.float64), m.tensor(2.0, dtype=m.float64, requires_grad=True)
        with pytest.raises(Exception, match="no larger"):
            getattr(x, op)(0, m.tensor([0, 1]), s)


# ---- cholesky of non-finite input, and its upper triangle (seeds 2703, 2973) ---------------------------------
@pytest.mark.parametrize(
    "a, upper",
    [
        (np.full((3, 3), NAN), False),
        (np.array([[INF, NAN], [NAN, INF]]), False),
        (np.array([[1.0, INF], [INF, 1.0]]), True),
        (np.array([[1.0, NAN], [1.0, 2.0]]), True),
        (np.array([[1.0, 1.0], [NAN, 2.0]]), False),
        (np.array([[INF, INF], [INF, INF]]), False),
    ],
)
def test_cholesky_refuses_nan_or_an_off_diagonal_inf_in_the_triangle_it_reads(a, upper):
    """numpy's cholesky returns NaNs (or a diagonal matrix for inf input) where torch's potrf fails."""
    with pytest.raises(RuntimeError, match="not positive-definite"):
        torch.cholesky(torch.tensor(a), upper=upper)
    with pytest.raises(dg.errors.InputRangeError, match="cholesky: .*not positive-definite"):
        dg.cholesky(dg.tensor(a), upper=upper)


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_of_finite_input_with_nan_only_in_the_unread_triangle(upper):
    a = np.array([[1.0, 1.0], [1.0, 2.0]])
    a[(0, 1) if not upper else (1, 0)] = NAN
    np.testing.assert_allclose(
        dg.cholesky(dg.tensor(a), upper=upper).array, torch.cholesky(torch.tensor(a), upper=upper)
    )


def test_cholesky_upper_reads_the_upper_triangle():
    """upper=True factored the lower triangle (numpy's) and transposed; torch's reads the upper one."""
    a = SPD + np.triu(np.full((3, 3), 0.3), 1)  # not symmetric
    check(lambda x: dg.cholesky(x, upper=True), lambda x: torch.cholesky(x, upper=True), a)


# ---- pad reflect/replicate of empty input (seed 2076) --------------------------------------------------------
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (2, 0, 4)])
def test_border_pad_refuses_empty_non_batch_dims(mode, shape):
    with pytest.raises(RuntimeError, match="non-zero dimensions"):
        torch.nn.functional.pad(torch.zeros(shape), (2, 1), mode=mode)
    with pytest.raises(dg.errors.ShapeError, match=f"pad: {mode} .*non-zero dims"):
        dg.nn.functional.pad(dg.zeros(*shape), (2, 1), mode=mode)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_border_pad_of_an_empty_batch(mode):
    got = dg.nn.functional.pad(dg.zeros(0, 2, 3), (2, 1), mode=mode)
    assert tuple(got.shape) == tuple(torch.nn.functional.pad(torch.zeros(0, 2, 3), (2, 1), mode=mode).shape)


# ---- batched vector solve's layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape, b_shape", [((2, 3, 3), (2, 3)), ((2, 2, 3, 3), (2, 2, 3)), ((2, 3, 3), (3,))])
def test_batched_vector_solve_is_laid_out_as_torch(a_shape, b_shape):
    """torch's (batch, n) result has each (last batch, n) matrix column-major: it is not contiguous, so view()
    of it refuses where distgraph's C-ordered result allowed it."""
    r = np.random.default_rng(1)
    a, b = r.standard_normal(a_shape) + 3 * np.eye(3), r.standard_normal(b_shape)
    got, want = dg.linalg.solve(dg.tensor(a), dg.tensor(b)), torch.linalg.solve(torch.tensor(a), torch.tensor(b))
    assert got.is_contiguous() == want.is_contiguous()
    assert tuple(s // 8 for s in got.array.strides) == want.stride()
    check(lambda a, b: dg.linalg.solve(a, b), lambda a, b: torch.linalg.solve(a, b), a, b)


# ---- addcmul / addcdiv's dtype (seed 5105) ---------------------------------------------------------------------
@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_addcmul_of_a_bool_tensor1_and_0d_float64_operands_is_float64(op):
    """value · tensor1 first made a bool tensor1 float32, which then outranked the float64 of the 0-d operands."""
    x, t = np.array(2.0), np.array([[True, False], [True, True]])
    got = getattr(dg, op)(dg.tensor(x), dg.tensor(t), dg.tensor(x), value=-1.5)
    want = getattr(torch, op)(torch.tensor(x), torch.tensor(t), torch.tensor(x), value=-1.5)
    assert got.dtype.name == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.array, want.numpy(), rtol=1e-12)
    check(lambda a, b: getattr(dg, op)(a, dg.tensor(t), b, value=-1.5),
          lambda a, b: getattr(torch, op)(a, torch.tensor(t), b, value=-1.5), x, np.array(3.0))  # fmt: skip
