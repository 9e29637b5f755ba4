"""Products and linalg against torch float64 for what a review found: addmm and its kin ignore input
when beta is 0, linalg.pinv's hermitian and atol, einsum's sublist form, empty matrix norms, and the
argument checks torch makes (multi_dot, norm's dim, vector_norm's dtypes, mv, outer, eigh's UPLO)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

RNG = np.random.default_rng(0)
NAN_INPUT = np.array([[np.nan, np.inf], [1.0, -np.inf]])


@pytest.mark.parametrize(
    "name, operands",
    [
        ("addmm", ((2, 3), (3, 2))),
        ("addmv", ((2, 3), (3,))),
        ("addr", ((2,), (2,))),
        ("addbmm", ((4, 2, 3), (4, 3, 2))),
        ("baddbmm", ((1, 2, 3), (1, 3, 2))),
    ],
)
def test_beta_zero_ignores_nan_and_inf_input_like_torch(name, operands):
    inp = NAN_INPUT if name != "addmv" else NAN_INPUT[0]
    if name == "baddbmm":
        inp = inp[None]
    check(
        lambda i, a, b: getattr(dg, name)(i, a, b, beta=0, alpha=2),
        lambda i, a, b: getattr(torch, name)(i, a, b, beta=0, alpha=2),
        inp,
        *(RNG.standard_normal(s) for s in operands),
    )


@pytest.mark.parametrize("name", ["addmm", "addbmm", "baddbmm", "addr"])
def test_scaled_sum_result_layout_like_torch(name):
    """addmm/addbmm/baddbmm lay out their result as the product (row-major), addr as its input."""
    shapes = {"addmm": ((3, 2), (2, 4)), "addbmm": ((2, 3, 2), (2, 2, 4)), "addr": ((3,), (4,))}
    shapes["baddbmm"] = ((5, 3, 2), (5, 2, 4))
    inp = RNG.standard_normal((5, 4, 3) if name == "baddbmm" else (4, 3))
    ops = [RNG.standard_normal(s) for s in shapes[name]]
    got = getattr(dg, name)(dg.tensor(inp).mT, *map(dg.tensor, ops), beta=0.5)
    want = getattr(torch, name)(torch.tensor(inp).mT, *map(torch.tensor, ops), beta=0.5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
    assert got.stride() == want.stride()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hermitian=True),
        dict(hermitian=True, rtol=0.3),
        dict(hermitian=True, atol=0.5),
        dict(atol=0.5),
        dict(atol=0.5, rtol=0.3),
        dict(atol=0.0),
        dict(rtol=0.3),
    ],
    ids=str,
)
def test_pinv_hermitian_reads_lower_triangle_and_atol_cuts_like_torch(kwargs):
    a = RNG.standard_normal((2, 4, 4))
    a[0] = a[0] @ np.diag([2.0, 1.0, 0.3, 0.01]) @ a[0].T  # spread singular values for the cutoffs to cut
    check(lambda x: dg.linalg.pinv(x, **kwargs), lambda x: torch.linalg.pinv(x, **kwargs), a, rtol=1e-6, atol=1e-8)


def test_pinv_hermitian_of_a_non_symmetric_matrix_uses_its_lower_triangle_like_torch():
    check(
        lambda x: dg.linalg.pinv(x, hermitian=True),
        lambda x: torch.linalg.pinv(x, hermitian=True),
        np.array([[1.0, 5.0], [0.0, 2.0]]),
    )


@pytest.mark.parametrize(
    "sublists",
    [
        ([0, 1], [1, 2]),
        ([0, 1], [1, 2], [2, 0]),
        ([Ellipsis, 0, 1], [1, 30], [Ellipsis, 30]),
        ([30, 0], [0, 51]),
    ],
    ids=str,
)
def test_einsum_sublist_form_like_torch(sublists):
    a = RNG.standard_normal((5, 2, 3) if Ellipsis in sublists[0] else (2, 3))
    b = RNG.standard_normal((3, 4))

    def call(m):
        return lambda x, y: m.einsum(x, sublists[0], y, sublists[1], *sublists[2:])

    check(call(dg), call(torch), a, b)


def test_einsum_sublist_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"einsum\(\): subscript 52 .* \[0, 52\)"):
        dg.einsum(dg.ones(2), [52])


@pytest.mark.parametrize("ord_", [2, "nuc", 1, float("inf"), "fro"])
@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 0)])
def test_matrix_norm_of_empty_matrix_is_zero_like_torch(ord_, shape):
    check(lambda x: dg.linalg.matrix_norm(x, ord_), lambda x: torch.linalg.matrix_norm(x, ord_), np.zeros(shape))


@pytest.mark.parametrize("ord_", [-2, -1, -float("inf")])
def test_matrix_norm_of_empty_matrix_min_ords_refuse_like_torch(ord_):
    shape = (2, 0, 3) if ord_ == -float("inf") else (2, 3, 0)
    with pytest.raises(IndexError):
        torch.linalg.matrix_norm(torch.zeros(shape), ord_)
    with pytest.raises(dg.errors.ShapeError, match="linalg.matrix_norm: Expected a non-empty tensor"):
        dg.linalg.matrix_norm(dg.zeros(shape), ord_)


REFUSED = {
    "multi_dot-first-3d": (
        lambda m, t: m.linalg.multi_dot([t(2, 3, 3), t(3, 3)]),
        dg.errors.ShapeError,
        r"multi_dot: the first tensor must be 1D or 2D but got 3D",
    ),
    "multi_dot-last-3d": (
        lambda m, t: m.linalg.multi_dot([t(3, 3), t(2, 3, 3)]),
        dg.errors.ShapeError,
        r"multi_dot: the last tensor must be 1D or 2D but got 3D",
    ),
    "multi_dot-middle-1d": (
        lambda m, t: m.linalg.multi_dot([t(3, 3), t(3), t(3, 3)]),
        dg.errors.ShapeError,
        r"multi_dot: tensor 1 must be 2D but got 1D",
    ),
    "norm-dim-3": (
        lambda m, t: m.linalg.norm(t(2, 3, 4), dim=(0, 1, 2)),
        dg.errors.ShapeError,
        r"linalg.norm: If dim is specified, it must be of length 1 or 2. Got \[0, 1, 2\]",
    ),
    "vector_norm-int": (
        lambda m, t: m.linalg.vector_norm(t(3).long()),
        dg.errors.DTypeError,
        r"linalg.vector_norm: Expected a floating point or complex tensor as input. Got int64",
    ),
    "vector_norm-narrowing-dtype": (
        lambda m, t: m.linalg.vector_norm(t(3), dtype=m.float32),
        dg.errors.DTypeError,
        r"linalg.vector_norm: the dtype of the input \(float64\) should be convertible without narrowing",
    ),
    "matrix_norm-narrowing-dtype": (
        lambda m, t: m.linalg.matrix_norm(t(2, 2), dtype=m.float32),
        dg.errors.DTypeError,
        r"linalg.matrix_norm: the dtype of the input \(float64\) should be convertible without narrowing",
    ),
    "matrix_norm-int-with-dtype": (
        lambda m, t: m.linalg.matrix_norm(t(2, 2).long(), dtype=m.float64),
        dg.errors.DTypeError,
        r"linalg.matrix_norm: Expected a floating point or complex tensor as input",
    ),
    "mv-batched": (
        lambda m, t: m.mv(t(2, 3, 4), t(4)),
        dg.errors.ShapeError,
        r"mv: expected a 2-D matrix and a 1-D vector, got shapes \(2, 3, 4\) and \(4,\)",
    ),
    "outer-2d": (
        lambda m, t: m.outer(t(2, 3), t(4)),
        dg.errors.ShapeError,
        r"outer: Expected 1-D argument self, but got 2-D",
    ),
    "outer-2d-vec2": (
        lambda m, t: m.outer(t(4), t(2, 3)),
        dg.errors.ShapeError,
        r"outer: Expected 1-D argument vec2, but got 2-D",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused_like_torch(name):
    fn, error, message = REFUSED[name]
    with pytest.raises(RuntimeError):
        fn(torch, lambda *s: torch.ones(s, dtype=torch.float64))
    with pytest.raises(error, match=message):
        fn(dg, lambda *s: dg.ones(s, dtype=dg.float64))


def test_vector_norm_widening_dtype_is_accepted_like_torch():
    check(
        lambda x: dg.linalg.vector_norm(x.float(), dtype=dg.float64),
        lambda x: torch.linalg.vector_norm(x.float(), dtype=torch.float64),
        RNG.standard_normal(5),
        rtol=1e-6,
    )


@pytest.mark.parametrize("fn", ["eigh", "eigvalsh"])
@pytest.mark.parametrize("uplo", ["u", "l"])
def test_eigh_accepts_lowercase_uplo_like_torch(fn, uplo):
    def call(m):
        def f(x):
            out = getattr(m.linalg, fn)(x, uplo)
            return out if fn == "eigvalsh" else out.eigenvalues

        return f

    check(call(dg), call(torch), RNG.standard_normal((2, 3, 3)))
