"""The one parity helper: run the same function in distgraph and torch (float64), compare forward
values and gradients of every input. Used by hundreds of op and layer tests.
"""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


def to_torch(x, requires_grad=None):
    if isinstance(x, dg.Tensor):
        t = torch.from_numpy(np.array(x.__array__(), copy=True))
        if requires_grad if requires_grad is not None else x.requires_grad:
            t.requires_grad_(True)
        return t
    if isinstance(x, list | tuple):
        return type(x)(to_torch(v) for v in x)
    return x


def _np(t):
    if isinstance(t, dg.Tensor):
        return np.asarray(t.__array__())
    return t.detach().cpu().numpy()


def check(dg_fn, torch_fn, *arrays, grad=True, rtol=1e-7, atol=1e-10, device="cpu", dtype=np.float64, seed_grad=True):
    """Compare dg_fn(*dg_tensors) with torch_fn(*torch_tensors): values, then input gradients.

    `arrays` are numpy arrays (or other arguments passed through unchanged). Float arrays become
    tensors that require grad when `grad` is True.
    """
    dg_in, th_in = [], []
    for a in arrays:
        if isinstance(a, np.ndarray):
            req = grad and a.dtype.kind == "f"
            a = a.astype(dtype) if a.dtype.kind == "f" else a
            dg_in.append(dg.tensor(a, device=device, requires_grad=req))
            th_in.append(torch.tensor(a, requires_grad=req))
        else:
            dg_in.append(a)
            th_in.append(a)
    previous = dg.get_default_device()
    dg.set_default_device(device)  # tensors a row makes inside dg_fn (an index, a mask) land where its inputs are
    try:
        out_dg = dg_fn(*dg_in)
    finally:
        dg.set_default_device(previous)
    out_th = torch_fn(*th_in)
    outs_dg = out_dg if isinstance(out_dg, tuple | list) else (out_dg,)
    outs_th = out_th if isinstance(out_th, tuple | list) else (out_th,)
    assert len(outs_dg) == len(outs_th)
    for d, t in zip(outs_dg, outs_th):
        assert tuple(d.shape) == tuple(t.shape), f"shape {tuple(d.shape)} != torch {tuple(t.shape)}"
        np.testing.assert_allclose(_np(d), _np(t), rtol=rtol, atol=atol, equal_nan=True)
    if not grad:
        return out_dg
    for i, (d, t) in enumerate(zip(outs_dg, outs_th)):  # an output that lost its graph must not pass
        assert d.requires_grad == t.requires_grad, (
            f"output {i}: requires_grad {d.requires_grad}, torch {t.requires_grad}"
        )
    rng = np.random.default_rng(1)
    diffable = [(d, t) for d, t in zip(outs_dg, outs_th) if d.requires_grad]
    if not diffable:
        return out_dg
    seeds = [rng.standard_normal(d.shape).astype(dtype) if seed_grad else np.ones(d.shape, dtype) for d, _ in diffable]
    dg.autograd.backward([d for d, _ in diffable], [dg.tensor(s, device=device) for s in seeds])
    torch.autograd.backward([t for _, t in diffable], [torch.tensor(s) for s in seeds])
    for i, (d, t) in enumerate(zip(dg_in, th_in)):
        if isinstance(d, dg.Tensor) and d.requires_grad:
            if t.grad is None:
                assert d.grad is None or not np.any(_np(d.grad)), f"input {i}: torch has no grad, distgraph does"
                continue
            assert d.grad is not None, f"input {i}: distgraph produced no gradient"
            assert tuple(d.grad.shape) == tuple(t.grad.shape)
            np.testing.assert_allclose(_np(d.grad), _np(t.grad), rtol=rtol, atol=atol, err_msg=f"grad of input {i}")
    return out_dg
