"""grid_sample(mode="bicubic") against torch in float64: values and gradients to input and grid for every
padding_mode and align_corners, on random shapes (1-pixel images included), grids far past the image
(several reflections), grids on pixel centres and half-pixels, float32, non-finite coordinates, finite
differences, and the errors."""

import itertools
import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.errors import ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
PADDINGS = ["zeros", "border", "reflection"]
CASES = list(itertools.product(PADDINGS, [False, True]))


def _bicubic(padding_mode, align_corners):
    return (lambda x, g: F.grid_sample(x, g, "bicubic", padding_mode, align_corners),
            lambda x, g: TF.grid_sample(x, g, "bicubic", padding_mode, align_corners))  # fmt: skip


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
@pytest.mark.parametrize("seed", range(6))
def test_bicubic_random_shapes_match_torch(padding_mode, align_corners, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = (int(v) for v in rng.integers(1, 4, 4))
    h, w = (h, w) if seed % 3 else (int(rng.integers(1, 7)), int(rng.integers(1, 7)))
    reach = [1.2, 2.5, 6.0][seed % 3]  # inside, past the edges, several reflections away
    x = rng.standard_normal((n, c, h, w))
    grid = rng.uniform(-reach, reach, (n, int(rng.integers(1, 5)), int(rng.integers(1, 5)), 2))
    check(*_bicubic(padding_mode, align_corners), x, grid)


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_bicubic_on_pixel_centres_and_half_pixels(padding_mode, align_corners):
    """Whole and half pixel positions: floor's steps, taps landing exactly on the edges and mirrors."""
    steps = np.array([-1.5, -1.0, -0.75, -0.5, 0.0, 1 / 3, 0.5, 1.0, 1.25, 2.0])
    grid = np.stack(np.meshgrid(steps, steps[::-1], indexing="xy"), axis=-1)[None]  # (1, 10, 10, 2)
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 4))
    check(*_bicubic(padding_mode, align_corners), x, grid)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 5), (2, 1, 4, 1)])
@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_bicubic_one_pixel_wide_images(shape, padding_mode, align_corners):
    """A size of 1: reflection about a single pixel (twice_low == twice_high under align_corners)."""
    rng = np.random.default_rng(2)
    check(*_bicubic(padding_mode, align_corners), rng.standard_normal(shape),
          rng.uniform(-2, 2, (shape[0], 3, 2, 2)))  # fmt: skip


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_bicubic_float32_and_gradcheck(padding_mode):
    rng = np.random.default_rng(3)
    x, grid = rng.standard_normal((2, 2, 4, 5)), rng.uniform(-1.5, 1.5, (2, 3, 3, 2))
    for align_corners in (False, True):
        check(*_bicubic(padding_mode, align_corners), x, grid, dtype=np.float32, rtol=1e-5, atol=1e-5)
        inputs = [dg.tensor(x[:1, :1], requires_grad=True), dg.tensor(grid[:1, :2], requires_grad=True)]
        assert dg.autograd.gradcheck(lambda x, g: F.grid_sample(x, g, "bicubic", padding_mode, align_corners), inputs)


def test_bicubic_second_order_gradient_matches_torch():
    """The weights are differentiable ops, so the grid's gradient differentiates again (as torch's)."""
    rng = np.random.default_rng(4)
    x, grid = rng.standard_normal((1, 2, 4, 4)), rng.uniform(-1.1, 1.1, (1, 2, 3, 2))

    def twice(lib, x, g):
        fn = F.grid_sample if lib is dg else TF.grid_sample
        out = fn(x, g, "bicubic", "reflection", False)
        (gg,) = lib.autograd.grad((out * out).sum(), [g], create_graph=True)
        return (gg * gg).sum()

    check(lambda x, g: twice(dg, x, g), lambda x, g: twice(torch, x, g), x, grid)


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_bicubic_non_finite_grid_gives_nan_as_torch(padding_mode, align_corners):
    x = np.random.default_rng(5).standard_normal((1, 1, 3, 3))
    grid = np.array([[[[np.inf, 0.0], [np.nan, 0.2], [0.3, 0.4], [-np.inf, 0.1], [0.2, 1e30]]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = F.grid_sample(dg.tensor(x), dg.tensor(grid), "bicubic", padding_mode, align_corners)
    want = TF.grid_sample(torch.tensor(x), torch.tensor(grid), "bicubic", padding_mode, align_corners)
    np.testing.assert_allclose(out.numpy(), want.numpy(), equal_nan=True)
    assert np.isnan(out.numpy()[0, 0, 0, [0, 1, 3]]).all()


def test_bicubic_identity_grid_reproduces_the_image():
    """Keys' kernel interpolates: at the pixel centres it returns the pixels."""
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5))
    for align_corners in (False, True):
        grid = F.affine_grid(dg.tensor(np.tile(np.eye(2, 3), (2, 1, 1))), (2, 3, 4, 5), align_corners)
        out = F.grid_sample(dg.tensor(x), grid, "bicubic", "zeros", align_corners)
        np.testing.assert_allclose(out.numpy(), x, atol=1e-12)


def test_bicubic_needs_4d_input():
    x, grid = dg.tensor(np.zeros((1, 1, 2, 3, 4))), dg.tensor(np.zeros((1, 2, 2, 2, 3)))
    with pytest.raises(ShapeError, match="grid_sample: mode 'bicubic' needs 4-D input, got \\(1, 1, 2, 3, 4\\)"):
        F.grid_sample(x, grid, "bicubic", align_corners=False)
    with pytest.raises(RuntimeError, match="bicubic"):  # torch refuses it too
        TF.grid_sample(torch.zeros(1, 1, 2, 3, 4), torch.zeros(1, 2, 2, 2, 3), "bicubic", align_corners=False)
