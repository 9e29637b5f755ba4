"""Divergences the second module-fuzz menu (tests/nn/module_menu_new.py) found, each minimized to one case."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from tests.nn.test_module_fuzz import module_parity

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_without_weight_or_statistics_takes_any_channel_count(name, train):
    """torch checks the channel count only through the weight and running statistics: BatchNorm1d(2) without
    both normalizes a 3-channel input (distgraph refused it with a ShapeError)."""
    x = np.random.default_rng(0).standard_normal((2, 3, *(2,) * (int(name[-2]) if name[-2].isdigit() else 1)))
    a = dict(affine=False, track_running_stats=False)
    module_parity(getattr(nn, name)(2, **a), getattr(torch.nn, name)(2, **a), [x], train=train)


@pytest.mark.parametrize("name", ["LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d"])
def test_lazy_batch_norm_without_weight_or_statistics_runs(name):
    """With nothing to materialize, a LazyBatchNorm becomes BatchNorm*d(0), which torch runs on any input."""
    a = dict(affine=False, track_running_stats=False)
    dm, tm = getattr(nn, name)(**a), getattr(torch.nn, name)(**a)
    x = np.random.default_rng(1).standard_normal((2, 3, *(2,) * int(name[-2])))
    dm(dg.tensor(x)), tm(torch.tensor(x))
    module_parity(dm, tm, [x])


def test_batch_norm_with_a_weight_still_checks_channels():
    """The weight (or running statistics) fixes the count: a mismatch stays a clear error, as torch's."""
    x = dg.randn(2, 3, 2)
    with pytest.raises(Exception, match="BatchNorm1d\\(2\\).*3, 2"):
        nn.BatchNorm1d(2, track_running_stats=False)(x)
    with pytest.raises(Exception, match="BatchNorm1d\\(2\\).*3, 2"):
        nn.BatchNorm1d(2, affine=False)(x)
