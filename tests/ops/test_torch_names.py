"""torch's top-level names added as aliases, the *_copy family (against torch, float64, forward and
gradient), constants, predicates, asarray/frombuffer/scalar_tensor, and the process-wide switches."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ConfigError, InputRangeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)

COPIES = [
    ("view_copy", ((2, 3, 4),), ((6, 4),)),
    ("t_copy", ((3, 4),), ()),
    ("permute_copy", ((2, 3, 4),), ((2, 0, 1),)),
    ("expand_copy", ((3, 1),), ((2, 3, 4),)),
    ("transpose_copy", ((2, 3, 4),), (0, 2)),
    ("squeeze_copy", ((2, 1, 4),), (1,)),
    ("unsqueeze_copy", ((2, 4),), (1,)),
    ("diagonal_copy", ((3, 4),), (1,)),
    ("select_copy", ((3, 4),), (1, 2)),
    ("unbind_copy", ((3, 4),), (1,)),
    ("split_copy", ((5, 4),), (2,)),
    ("split_with_sizes_copy", ((5, 4),), ((1, 4),)),
    ("unfold_copy", ((7, 2),), (0, 3, 2)),
    ("detach_copy", ((3,),), ()),
    ("alias_copy", ((3, 2),), ()),
    ("slice_copy", ((4, 6),), (1, 1, 5, 2)),
    ("narrow_copy", ((4, 6),), (1, 2, 3)),
]


@pytest.mark.parametrize("name,shapes,args", COPIES, ids=[c[0] for c in COPIES])
def test_copy_variants_match_torch_and_are_not_views(name, shapes, args):
    arrays = [rng.standard_normal(s) for s in shapes]
    # torch's detach_copy keeps requires_grad with a backward that raises 'not implemented'; distgraph's is detached
    grad = name != "detach_copy"
    out = check(lambda *t: getattr(dg, name)(*t, *args), lambda *t: getattr(torch, name)(*t, *args), *arrays, grad=grad)
    if not grad:
        assert not dg.detach_copy(dg.ones(2, requires_grad=True)).requires_grad
    x = dg.tensor(arrays[0])
    outs = getattr(dg, name)(x, *args)
    for o in outs if isinstance(outs, tuple | list) else (outs,):
        assert not np.shares_memory(o.array, x.array)
    assert out is not None


@pytest.mark.parametrize(
    "name,args", [("unsafe_chunk", (3, 1)), ("unsafe_split", (2, 0)), ("split_with_sizes", ([1, 3], 1))]
)
def test_unsafe_chunk_and_split_match_torch(name, args):
    check(lambda t: getattr(dg, name)(t, *args), lambda t: getattr(torch, name)(t, *args), rng.standard_normal((4, 4)))


def test_constants_predicates_and_typename_are_torchs():
    assert (dg.pi, dg.e, dg.inf, dg.newaxis) == (torch.pi, torch.e, torch.inf, torch.newaxis)
    assert np.isnan(dg.nan)
    assert dg.is_tensor(dg.zeros(1)) and not dg.is_tensor(np.zeros(1)) and not dg.is_storage(dg.zeros(1))
    for dt in ("float64", "float32", "int64", "bool", "uint8"):
        assert dg.typename(dg.zeros(1, dtype=getattr(dg, dt))) == torch.typename(
            torch.zeros(1, dtype=getattr(torch, dt))
        )
    assert dg.typename(3) == torch.typename(3) == "int"
    assert dg.typename(np.zeros(1)) == torch.typename(np.zeros(1))


def test_scalar_tensor_asarray_and_frombuffer():
    for s in (3, 2.5, True):
        d, t = dg.scalar_tensor(s), torch.scalar_tensor(s)
        assert d.shape == () and d.dtype.name == str(t.dtype).split(".")[-1] and float(d) == float(t)
    a = np.arange(4.0)
    shared = dg.asarray(a)
    a[0] = 7
    assert float(shared[0]) == 7  # no copy
    assert float(dg.asarray(a, copy=True)[0]) == 7 and not np.shares_memory(dg.asarray(a, copy=True).array, a)
    with pytest.raises(ConfigError, match="copy=False"):
        dg.asarray(a, dtype=dg.float32, copy=False)
    assert dg.asarray([1, 2], dtype=dg.float64, requires_grad=True).requires_grad
    buf = bytearray(np.arange(5, dtype=np.int32).tobytes())
    d = dg.frombuffer(buf, dtype=dg.int32, count=3, offset=4)
    t = torch.frombuffer(buf, dtype=torch.int32, count=3, offset=4)
    assert d.tolist() == t.tolist() == [1, 2, 3]


def test_switches_read_back_as_set_and_check_their_input():
    assert not dg.are_deterministic_algorithms_enabled()
    dg.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert dg.are_deterministic_algorithms_enabled() and dg.is_deterministic_algorithms_warn_only_enabled()
    finally:
        dg.use_deterministic_algorithms(False)
    assert not dg.is_deterministic_algorithms_warn_only_enabled()
    with pytest.raises(TypeError):
        dg.use_deterministic_algorithms(1)
    assert dg.get_float32_matmul_precision() == torch.get_float32_matmul_precision() == "highest"
    dg.set_float32_matmul_precision("high")
    try:
        assert dg.get_float32_matmul_precision() == "high"
    finally:
        dg.set_float32_matmul_precision("highest")
    with pytest.raises(InputRangeError, match="Invalid precision 'low'"):
        dg.set_float32_matmul_precision("low")
    assert dg.get_num_interop_threads() >= 1
    with pytest.raises(InputRangeError):
        dg.set_num_interop_threads(0)


def test_anomaly_switch_is_detect_anomalys():
    assert not dg.is_anomaly_enabled()
    with dg.autograd.detect_anomaly():
        assert dg.is_anomaly_enabled()
    dg.set_anomaly_enabled(True)
    try:
        assert dg.is_anomaly_enabled()
        x = dg.tensor([0.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="nan|NaN"):
            (dg.sqrt(x) * 0).sum().backward()
    finally:
        dg.set_anomaly_enabled(False)
    assert not dg.is_anomaly_enabled()
