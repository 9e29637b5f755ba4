"""Found by porting torch scripts: jvp through the decompositions, torch's LinAlgError, empty batches and
matrices, and norm's 'nuc'."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

A = [[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]]


def _both(fn, *arrays):
    """fn on distgraph's and torch's float64 tensors of `arrays` → (distgraph's result, torch's) as numpy."""
    got = fn(dg, *[dg.tensor(np.asarray(a, np.float64)) for a in arrays])
    want = fn(torch, *[torch.tensor(np.asarray(a, np.float64)) for a in arrays])
    return np.asarray(got.numpy()), want.numpy()


@pytest.mark.parametrize(
    "f",
    [
        lambda lib, x: lib.linalg.eigvalsh(x),
        lambda lib, x: lib.linalg.svdvals(x),
        lambda lib, x: lib.linalg.eigh(x)[1].abs(),
        lambda lib, x: lib.linalg.svd(x)[0].abs() * lib.linalg.svd(x)[1],
        lambda lib, x: lib.linalg.qr(x)[1],
        lambda lib, x: lib.linalg.matrix_norm(x, 2).reshape(1),
        lambda lib, x: lib.linalg.matrix_norm(x, "nuc").reshape(1),
    ],
    ids=["eigvalsh", "svdvals", "eigh vectors", "svd U·S", "qr R", "spectral norm", "nuclear norm"],
)
def test_jvp_through_the_decompositions_is_torchs(f):
    """The double-backward trick's dummy was zeros, which the decompositions' backward took for factors the
    loss did not read: every J·v through them was 0."""
    v = np.random.default_rng(0).standard_normal((3, 3))
    v = v + v.T  # a symmetric direction (along others eigh's derivative is a convention: it reads one triangle)
    got, want = _both(lambda lib, a, t: lib.func.jvp(lambda x: f(lib, x), (a,), (t,))[1], A, v)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    got, want = _both(lambda lib, a, t: lib.autograd.functional.jvp(lambda x: f(lib, x), a, t)[1], A, v)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_singular_matrix_raises_torchs_linalg_error_a_runtime_error():
    for call in (
        lambda: dg.linalg.inv(dg.ones(2, 3, 3, dtype=dg.float64)),
        lambda: dg.linalg.solve(dg.ones(3, 3, dtype=dg.float64), dg.ones(3, dtype=dg.float64)),
        lambda: dg.linalg.cholesky(-dg.eye(3, dtype=dg.float64)),
        lambda: dg.linalg.lu_factor(dg.zeros(2, 2, dtype=dg.float64)),
    ):
        with pytest.raises(dg.linalg.LinAlgError) as caught:
            call()
        assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, dg.errors.InputRangeError)


@pytest.mark.parametrize(
    "f",
    [
        lambda lib, x: lib.linalg.eigh(x)[0],
        lambda lib, x: lib.linalg.svd(x)[1],
        lambda lib, x: lib.linalg.qr(x)[0],
        lambda lib, x: lib.linalg.lu(x)[2],
        lambda lib, x: lib.linalg.cond(x),
    ],
    ids=["eigh", "svd", "qr", "lu", "cond"],
)
@pytest.mark.parametrize("shape", [(0, 3, 3), (0, 0), (3, 0, 0), (2, 0, 3)])
def test_empty_batches_and_matrices_give_torchs_shapes(f, shape):
    if shape[-1] != shape[-2] and f.__code__.co_code == (lambda lib, x: lib.linalg.eigh(x)[0]).__code__.co_code:
        pytest.skip("eigh takes square matrices only")
    x = np.zeros(shape)
    try:
        want = f(torch, torch.tensor(x))
    except RuntimeError:
        pytest.skip("torch refuses this one too")
    got = f(dg, dg.tensor(x))
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_norm_takes_nuc_as_torch():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    got, want = _both(lambda lib, t: lib.norm(t, p="nuc", dim=(1, 2)), x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got, want = _both(lambda lib, t: lib.norm(t[0], p="nuc"), x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="dim must be a 2-tuple"):
        dg.norm(dg.tensor(x), p="nuc")
