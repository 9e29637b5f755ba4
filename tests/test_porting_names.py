"""Names a torch script uses at its top or in passing, which made a port fail with AttributeError or TypeError:
memory formats (a real channels-last layout, strides as torch's), `dg.dtype`, `DType.is_complex`, `Tensor.layout`
and `dg.backends`' switches."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(("shape", "fmt"), [((2, 3, 4, 5), "channels_last"), ((2, 3, 2, 4, 5), "channels_last_3d")])
def test_a_channels_last_copy_has_torchs_strides_and_passes_the_gradient(shape, fmt):
    x = np.random.default_rng(0).standard_normal(shape)
    d = dg.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    dy, ty = d.contiguous(memory_format=getattr(dg, fmt)), t.contiguous(memory_format=getattr(torch, fmt))
    assert dy.stride() == ty.stride() and dy.shape == tuple(ty.shape)
    assert dy.is_contiguous(memory_format=getattr(dg, fmt)) and not dy.is_contiguous()
    assert dy.contiguous(memory_format=getattr(dg, fmt)) is dy  # already laid out so: itself, as torch
    assert d.to(memory_format=getattr(dg, fmt)).stride() == ty.stride()
    (dy * dg.tensor(x)).sum().backward()
    (ty * torch.tensor(x)).sum().backward()
    np.testing.assert_array_equal(d.grad.numpy(), t.grad.numpy())
    assert dy.contiguous().stride() == ty.contiguous().stride()


def test_a_module_moved_to_channels_last_lays_out_its_4d_weights_as_torchs():
    dg.manual_seed(0)
    m = dg.nn.Sequential(dg.nn.Conv2d(3, 4, 3), dg.nn.Flatten())
    m = m.to(memory_format=dg.channels_last)
    tm = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert m[0].weight.stride() == tm.weight.stride() and m[0].weight.is_leaf
    assert m[0].bias.stride() == (1,)


def test_formats_torch_refuses_are_refused():
    with pytest.raises(ValueError, match="preserve memory format is unsupported by the contiguous operator"):
        dg.ones(2, 3, 4, 5).contiguous(memory_format=dg.preserve_format)
    with pytest.raises(ValueError, match="required rank 4 tensor to use torch.channels_last format"):
        dg.ones(2, 3).contiguous(memory_format=dg.channels_last)
    with pytest.raises(RuntimeError):
        torch.ones(2, 3).contiguous(memory_format=torch.channels_last)


def test_dtype_layout_and_format_names():
    assert isinstance(dg.ones(1).dtype, dg.dtype) and not dg.float32.is_complex
    assert dg.ones(1).layout is dg.strided and repr(dg.strided) == "torch.strided"
    assert repr(dg.channels_last) == "torch.channels_last" and dg.contiguous_format == "contiguous_format"
    import pickle

    assert pickle.loads(pickle.dumps(dg.channels_last)) is dg.channels_last


def test_backends_switches_are_kept_and_deterministic_is_passed_on():
    assert (dg.backends.cudnn.benchmark, dg.backends.cuda.matmul.allow_tf32) == (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
    )
    dg.backends.cudnn.benchmark = True
    assert dg.backends.cudnn.benchmark is True
    dg.backends.cudnn.benchmark = False
    try:
        dg.backends.cudnn.deterministic = True
        assert dg.are_deterministic_algorithms_enabled()
    finally:
        dg.backends.cudnn.deterministic = False
    assert not dg.are_deterministic_algorithms_enabled()
    assert dg.backends.mps.is_available() is False and dg.backends.mps.is_built() is False
    assert dg.backends.cudnn.is_available() == (dg.backends.cudnn.version() is not None)
    assert dg.backends.cuda.is_built() == dg.cuda.is_available()


def test_deepcopy_of_a_leaf_keeps_its_grad_and_of_a_computed_tensor_is_refused_as_torchs():
    import copy

    for lib in (dg, torch):
        w = lib.ones(2, requires_grad=True)
        (w * 2).sum().backward()
        c = copy.deepcopy(w)
        assert c is not w and c.requires_grad and c.grad.tolist() == [2.0, 2.0]
        c.grad.zero_()
        assert w.grad.tolist() == [2.0, 2.0]  # its own copy
        with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user"):
            copy.deepcopy(w * 2)


def test_factories_take_torchs_layout_pin_memory_and_memory_format_keywords():
    x = dg.ones(2, 3, 4, 5)
    for make in (lambda lib, **k: lib.zeros(2, 3, **k), lambda lib, **k: lib.rand(2, **k),
                 lambda lib, **k: lib.arange(3, **k)):  # fmt: skip
        assert make(dg, layout=dg.strided, pin_memory=False).shape == tuple(make(torch, layout=torch.strided).shape)
    assert dg.tensor([1.0, 2.0], pin_memory=False).tolist() == torch.tensor([1.0, 2.0], pin_memory=False).tolist()
    e = dg.empty(2, 3, 4, 5, memory_format=dg.channels_last, requires_grad=True)
    assert e.stride() == torch.empty(2, 3, 4, 5, memory_format=torch.channels_last).stride() and e.is_leaf
    assert dg.zeros_like(x, memory_format=dg.channels_last).stride() == (60, 1, 15, 3)
    with pytest.raises(dg.errors.DTypeError, match="zeros: layout 'sparse_coo' is not supported"):
        dg.zeros(2, layout="sparse_coo")


def test_module_set_submodule_to_empty_and_parameter_dict_order_as_torchs():
    m = dg.nn.Sequential(dg.nn.Linear(2, 2), dg.nn.Sequential(dg.nn.ReLU()))
    m.set_submodule("1.0", dg.nn.Tanh())
    assert isinstance(m[1][0], dg.nn.Tanh)
    with pytest.raises(AttributeError, match="has no attribute `x`"):
        m.set_submodule("x", dg.nn.ReLU(), strict=True)
    w = m[0].weight
    assert m.to_empty(device="cpu") is m and m[0].weight is w and w.shape == (2, 2)
    for lib in (dg, torch):
        p = lib.nn.ParameterDict({"z": lib.nn.Parameter(lib.ones(1)), "a": lib.nn.Parameter(lib.ones(1))})
        assert list(p.keys()) == ["a", "z"] and [k for k, _ in p.named_parameters()] == ["a", "z"]
