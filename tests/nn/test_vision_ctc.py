"""affine_grid and grid_sample against torch in float64 (values, and gradients to input, grid and theta):
every mode, padding_mode and align_corners on 4-D and 5-D input, grids reaching past the image, grids
landing exactly on pixel centers and edges (where clipping passes no gradient), float32, finite
differences, the align_corners warning and the argument errors. (CTC is in test_ctc.py.)"""

import itertools
import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.errors import DTypeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)
SAMPLE_CASES = list(itertools.product(["bilinear", "nearest"], ["zeros", "border", "reflection"], [False, True]))


@pytest.mark.parametrize("mode,padding_mode,align_corners", SAMPLE_CASES)
def test_grid_sample_4d_matches_torch(mode, padding_mode, align_corners):
    x, grid = rng.standard_normal((2, 3, 5, 6)), rng.uniform(-1.6, 1.6, (2, 4, 7, 2))  # reaches past the image
    check(lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
          lambda x, g: TF.grid_sample(x, g, mode, padding_mode, align_corners), x, grid)  # fmt: skip


@pytest.mark.parametrize("mode,padding_mode,align_corners", SAMPLE_CASES)
def test_grid_sample_5d_matches_torch(mode, padding_mode, align_corners):
    x, grid = rng.standard_normal((2, 2, 3, 4, 5)), rng.uniform(-3.5, 3.5, (2, 3, 2, 4, 3))  # several reflections
    check(lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
          lambda x, g: TF.grid_sample(x, g, mode, padding_mode, align_corners), x, grid)  # fmt: skip


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_on_pixel_centers_and_edges(padding_mode, align_corners):
    """Exact pixel positions, the image's edges and ±1: where ATen's clipping passes no gradient."""
    steps = np.array([-1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5])
    grid = np.stack(np.meshgrid(steps, steps[::-1], indexing="xy"), axis=-1)[None]  # (1, 8, 8, 2)
    x = rng.standard_normal((1, 2, 3, 5))
    check(lambda x, g: F.grid_sample(x, g, "bilinear", padding_mode, align_corners),
          lambda x, g: TF.grid_sample(x, g, "bilinear", padding_mode, align_corners), x, grid)  # fmt: skip
    check(lambda x, g: F.grid_sample(x, g, "nearest", padding_mode, align_corners),
          lambda x, g: TF.grid_sample(x, g, "nearest", padding_mode, align_corners), x, grid)  # fmt: skip


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch_and_feeds_grid_sample(align_corners):
    theta2, theta3 = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 3, 4))
    check(lambda t: F.affine_grid(t, (2, 3, 4, 5), align_corners),
          lambda t: TF.affine_grid(t, (2, 3, 4, 5), align_corners), theta2)  # fmt: skip
    check(lambda t: F.affine_grid(t, (2, 1, 3, 4, 5), align_corners),
          lambda t: TF.affine_grid(t, (2, 1, 3, 4, 5), align_corners), theta3)  # fmt: skip
    x = rng.standard_normal((2, 3, 6, 5))
    check(lambda x, t: F.grid_sample(x, F.affine_grid(t, (2, 3, 4, 7), align_corners), align_corners=align_corners),
          lambda x, t: TF.grid_sample(x, TF.affine_grid(t, (2, 3, 4, 7), align_corners), align_corners=align_corners),
          x, theta2 * 0.7)  # fmt: skip


def test_affine_grid_identity_reproduces_the_image():
    theta = np.tile(np.eye(2, 3), (2, 1, 1))
    x = rng.standard_normal((2, 3, 4, 5))
    for align_corners in (False, True):
        grid = F.affine_grid(dg.tensor(theta), (2, 3, 4, 5), align_corners)
        out = F.grid_sample(dg.tensor(x), grid, align_corners=align_corners)
        np.testing.assert_allclose(out.numpy(), x, atol=1e-12)


def test_grid_sample_float32_and_gradcheck():
    x, grid = rng.standard_normal((1, 2, 4, 4)), rng.uniform(-1.2, 1.2, (1, 3, 3, 2))
    for pad in ("zeros", "reflection"):
        check(lambda x, g: F.grid_sample(x, g, padding_mode=pad, align_corners=False),
              lambda x, g: TF.grid_sample(x, g, padding_mode=pad, align_corners=False), x, grid,
              dtype=np.float32, rtol=1e-5, atol=1e-6)  # fmt: skip
        inputs = [dg.tensor(x, requires_grad=True), dg.tensor(grid, requires_grad=True)]
        assert dg.autograd.gradcheck(lambda x, g: F.grid_sample(x, g, padding_mode=pad, align_corners=True), inputs)


def test_align_corners_none_warns_as_torch():
    x, grid = dg.tensor(rng.standard_normal((1, 1, 3, 3))), dg.tensor(rng.uniform(-1, 1, (1, 2, 2, 2)))
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.grid_sample(x, grid)
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.affine_grid(dg.tensor(np.eye(2, 3)[None]), (1, 1, 3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.grid_sample(x, grid, align_corners=False)


def test_grid_sample_non_finite_grid_warns_nothing():
    """NaN/inf coordinates give NaN where torch does (bilinear, zeros), and no numpy RuntimeWarning."""
    x = dg.tensor(rng.standard_normal((1, 1, 3, 3)), requires_grad=True)
    grid = dg.tensor(np.array([[[[np.inf, 0.0], [np.nan, 0.2], [0.3, 0.4]]]]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = F.grid_sample(x, grid, align_corners=False)
        out.sum().backward()
    want = TF.grid_sample(torch.tensor(x.detach().numpy()), torch.tensor(grid.detach().numpy()), align_corners=False)
    np.testing.assert_allclose(out.detach().numpy(), want.numpy(), equal_nan=True)


def test_vision_errors_name_the_op():
    x, grid = dg.tensor(rng.standard_normal((2, 3, 4, 5))), dg.tensor(rng.uniform(-1, 1, (2, 3, 3, 2)))
    cases = [
        (ValueError, "grid_sample: expected mode", lambda: F.grid_sample(x, grid, "linear", align_corners=False)),
        (ValueError, "grid_sample: expected padding_mode", lambda: F.grid_sample(x, grid, padding_mode="wrap")),
        (ShapeError, "grid_sample: expected input .* got input \\(2, 3, 4, 5\\) and grid \\(2, 3, 3, 3\\)",
         lambda: F.grid_sample(x, dg.tensor(np.zeros((2, 3, 3, 3))), align_corners=False)),
        (ShapeError, "grid_sample: .* same batch size",
         lambda: F.grid_sample(x, dg.tensor(np.zeros((1, 3, 3, 2))), align_corners=False)),
        (DTypeError, "grid_sample: .* float64 and float32",
         lambda: F.grid_sample(x, grid.float(), align_corners=False)),
        (ShapeError, "affine_grid: expected a batch of 2-D affine matrices of shape \\(N, 2, 3\\)",
         lambda: F.affine_grid(dg.tensor(np.zeros((2, 3, 4))), (2, 3, 4, 5), False)),
        (NotImplementedError, "affine_grid: only 4-D and 5-D", lambda: F.affine_grid(dg.tensor(np.zeros((2, 2, 3))),
                                                                                      (2, 3, 4), False)),
        (ValueError, "affine_grid: expected non-zero", lambda: F.affine_grid(dg.tensor(np.zeros((2, 2, 3))),
                                                                             (2, 3, 0, 5), False)),
        (DTypeError, "affine_grid: expected theta to have floating point",
         lambda: F.affine_grid(dg.tensor(np.zeros((2, 2, 3), np.int64)), (2, 3, 4, 5), False)),
    ]  # fmt: skip
    for err, msg, call in cases:
        with pytest.raises(err, match=msg):
            call()
