"""conv2d and 2-D pooling against torch on random shapes and arguments (hypothesis): every stride,
padding, dilation, groups and ceil_mode combination torch accepts must give torch's values and
gradients."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    span = [d[i] * (k[i] - 1) + 1 - 2 * p[i] for i in range(2)]  # the input must hold one window
    size = [max(1, span[i]) + draw(st.integers(0, 9)) for i in range(2)]
    return (
        (draw(st.integers(1, 3)), c, *size),
        (o, c // groups, *k),
        dict(stride=s, padding=p, dilation=d, groups=groups),
    )


@FAST
@given(conv_case(), st.integers(0, 2**31 - 1))
def test_conv2d_random_arguments_match_torch(case, seed):
    xs, ws, kw = case
    rng = np.random.default_rng(seed)
    check(lambda x, w: F.conv2d(x, w, **kw), lambda x, w: TF.conv2d(x, w, **kw),
          rng.standard_normal(xs), rng.standard_normal(ws))  # fmt: skip


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    kind = draw(st.sampled_from(["max", "avg"]))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind == "max" else (1, 1)
    size = [d[i] * (k[i] - 1) + 1 + draw(st.integers(0, 8)) for i in range(2)]
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=draw(st.booleans()))
    if kind == "max":
        kw["dilation"] = d
    else:
        kw["count_include_pad"] = draw(st.booleans())
    return kind, (2, 2, *size), kw


@FAST
@given(pool_case(), st.integers(0, 2**31 - 1))
def test_pool2d_random_arguments_match_torch(case, seed):
    kind, shape, kw = case
    x = np.random.default_rng(seed).standard_normal(shape)
    check(lambda a: getattr(F, f"{kind}_pool2d")(a, **kw), lambda a: getattr(TF, f"{kind}_pool2d")(a, **kw), x)
