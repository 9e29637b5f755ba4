"""Every reduction, scan and statistic over inf, -inf, NaN, zeros and empty dims: torch's values (NaN
where torch's are NaN) and no RuntimeWarning reaching the user, as torch prints none.

distgraph silences numpy's RuntimeWarnings raised from its own modules with one warnings filter (see
distgraph/__init__.py: cheaper than an np.errstate per op); a warning raised inside numpy's Python code
(np.prod, ndarray.mean, np.cumprod) escaped it. The test turns every other warning into an error and
keeps only that filter, the state a user's program runs in.

torch computes a float32 variance in float64 but its answer at the edge of float32's range depends on its
kernel's path (a row of 3e38 gives var inf and std 1.7e38 in one layout, both inf in another): the
overflow row is left out of var/std/cov/corrcoef.
"""

import warnings

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import torch

inf, nan = np.inf, np.nan
SPECIAL = np.array(
    [
        [1, inf, 2, 3],
        [-inf, 3, 0, 1],
        [nan, 1, 2, 0],
        [inf, -inf, 0, 1],
        [0, 0, 0, 0],
        [inf, inf, inf, inf],
        [-inf, -inf, 1, 2],
        [0, -0.0, 5, -1],
    ]
)
OVERFLOW = np.array([[3e38, 3e38, -1, 1], [1, 2, 3, 4]], dtype=np.float32)  # float32 sums and squares overflow
INPUTS = [SPECIAL, SPECIAL.astype(np.float32), OVERFLOW, np.zeros((0, 3)), np.zeros((3, 0))]
PATH_DEPENDENT = {"var", "var-correction0", "std", "var_mean", "std_mean", "cov", "corrcoef"}

OPS = {
    "sum": lambda m, x, d: m.sum(x, d),
    "nansum": lambda m, x, d: m.nansum(x, d),
    "mean": lambda m, x, d: m.mean(x, d),
    "nanmean": lambda m, x, d: m.nanmean(x, d),
    "prod": lambda m, x, d: m.prod(x, d),
    "amax": lambda m, x, d: m.amax(x, d),
    "amin": lambda m, x, d: m.amin(x, d),
    "max": lambda m, x, d: m.max(x, d) if d is None else tuple(m.max(x, d)),
    "min": lambda m, x, d: m.min(x, d) if d is None else tuple(m.min(x, d)),
    "argmax": lambda m, x, d: m.argmax(x, d),
    "argmin": lambda m, x, d: m.argmin(x, d),
    "var": lambda m, x, d: m.var(x, d),
    "var-correction0": lambda m, x, d: m.var(x, d, correction=0),
    "std": lambda m, x, d: m.std(x, d),
    "var_mean": lambda m, x, d: m.var_mean(x, d),
    "std_mean": lambda m, x, d: m.std_mean(x, d),
    "norm": lambda m, x, d: m.norm(x, 2, d),
    "norm-p1": lambda m, x, d: m.norm(x, 1, d),
    "norm-p3": lambda m, x, d: m.norm(x, 3, d),
    "norm-p0": lambda m, x, d: m.norm(x, 0, d),
    "norm-p0.5": lambda m, x, d: m.norm(x, 0.5, d),
    "norm-p-1": lambda m, x, d: m.norm(x, -1, d),
    "norm-inf": lambda m, x, d: m.norm(x, float("inf"), d),
    "logsumexp": lambda m, x, d: m.logsumexp(x, d),
    "softmax": lambda m, x, d: m.softmax(x, d),
    "log_softmax": lambda m, x, d: m.log_softmax(x, d),
    "cumsum": lambda m, x, d: m.cumsum(x, d),
    "cumprod": lambda m, x, d: m.cumprod(x, d),
    "cummax": lambda m, x, d: tuple(m.cummax(x, d)),
    "cummin": lambda m, x, d: tuple(m.cummin(x, d)),
    "logcumsumexp": lambda m, x, d: m.logcumsumexp(x, d),
    "median": lambda m, x, d: m.median(x, d) if d is None else m.median(x, d).values,
    "nanmedian": lambda m, x, d: m.nanmedian(x, d) if d is None else m.nanmedian(x, d).values,
    "quantile": lambda m, x, d: m.quantile(x, 0.3, d),
    "nanquantile": lambda m, x, d: m.nanquantile(x, m.tensor([0.2, 0.7], dtype=x.dtype), d, interpolation="nearest"),
    "aminmax": lambda m, x, d: tuple(m.aminmax(x, dim=d)),
    "count_nonzero": lambda m, x, d: m.count_nonzero(x, d),
    "any": lambda m, x, d: m.any(x, d) if d is not None else m.any(x),
    "all": lambda m, x, d: m.all(x, d) if d is not None else m.all(x),
    "sort": lambda m, x, d: m.sort(x, d).values,
    "msort": lambda m, x, d: m.msort(x),
    "cov": lambda m, x, d: m.cov(x),
    "corrcoef": lambda m, x, d: m.corrcoef(x),
    # torch's mode sorts with `<`, which leaves NaN anywhere: NaN rows have no defined answer, so none here
    "mode": lambda m, x, d: tuple(m.mode(m.where(m.isnan(x), m.full_like(x, 7.0), x), d)),
}


def _torch(fn, a, d):
    """torch's result, or None where torch refuses the call (a dim it does not take, an empty reduction)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own UserWarnings (no degrees of freedom)
        try:
            return fn(torch, torch.tensor(a, requires_grad=a.size > 0), d)
        except (RuntimeError, TypeError, IndexError):
            return None


@pytest.mark.parametrize("name", list(OPS))
def test_special_values_match_torch_without_runtime_warnings(name):
    fn = OPS[name]
    for a in INPUTS:
        if a is OVERFLOW and name in PATH_DEPENDENT:
            continue
        for d in (0, 1, None):
            want = _torch(fn, a, d)
            if want is None:
                continue
            x = dg.tensor(a, requires_grad=a.size > 0)
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "error", RuntimeWarning
                )  # (cov's UserWarning of no degrees of freedom is torch's)
                warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"distgraph\.")
                got = fn(dg, x, d)
                outs = got if isinstance(got, tuple) else (got,)
                diffable = [o for o in outs if o.requires_grad]
                if diffable:  # backward too: its rules meet the same values
                    dg.autograd.backward(diffable, [dg.ones_like(o) for o in diffable])
            wants = want if isinstance(want, tuple) else (want,)
            for g, w in zip(outs, wants, strict=True):
                assert tuple(g.shape) == tuple(w.shape), (name, a.shape, a.dtype, d)
                np.testing.assert_allclose(
                    g.detach().numpy(),
                    w.detach().numpy(),
                    rtol=1e-6,
                    equal_nan=True,
                    err_msg=f"{name} of {a.shape} {a.dtype}, dim {d}",
                )
