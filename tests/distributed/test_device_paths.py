"""The distributed paths end to end on each device: the same runs on "cpu" (here and in CI) and on "cuda" (cupy
in the workers) where a GPU is found — `tools/gpu_check.sh` runs them on the GPU machine.

On cuda each rank holds a GPU of its own, so the world is as many ranks as the Ray session has GPUs, two at most
(NCCL refuses two ranks on one device): one GPU still runs every path through its worker, its device placement
and its cupy arrays, though the all-reduce then has no peer. Each run is checked against the same training in
this process on the same device."""

import os
import tempfile

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.checkpoint as dcp
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from distgraph.distributed.fsdp import FSDP, MixedPrecision

pytestmark = pytest.mark.ray
STEPS, ROWS, LR = 4, 8, 0.05  # ROWS per rank


def _world(ray, device):
    if device == "cpu":
        return 2
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus == 0:
        pytest.skip("the Ray session has no GPU resource")
    return min(2, gpus)


def _model(device):
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)


def _data(rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * rows, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _host(tensors):
    return [t.detach().cpu().numpy() for t in tensors]


def _local_sgd(device, world):
    """Every step's global batch (world × ROWS rows) in one process → the parameters."""
    model = _model(device)
    opt = dg.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    x, y = _data(world * ROWS)
    n = world * ROWS
    for t in range(STEPS):
        opt.zero_grad()
        xb, yb = dg.tensor(x[t * n : (t + 1) * n], device=device), dg.tensor(y[t * n : (t + 1) * n], device=device)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return _host(model.parameters())


def _ddp_rank(device):
    """DDP on this rank's rows of every global batch; also the collectives on the device's arrays."""
    r, n = dist.rank(), dist.world_size()
    a = dg.tensor(np.arange(3, dtype=np.float32) + r, device=device)
    dist.all_reduce(a)
    b = dg.tensor(np.full(2, float(r), np.float32), device=device)
    dist.broadcast(b, src=n - 1)
    model = dist.DistributedDataParallel(_model(device))
    opt = dg.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    x, y = _data(n * ROWS)
    for t in range(STEPS):
        rows = slice(t * n * ROWS + r * ROWS, t * n * ROWS + (r + 1) * ROWS)
        opt.zero_grad()
        F.cross_entropy(model(dg.tensor(x[rows], device=device)), dg.tensor(y[rows], device=device)).backward()
        opt.step()
    placed = {str(p.device) for p in model.parameters()}
    return _host([a, b]), _host(model.parameters()), placed


def test_ddp_and_collectives_on_the_device_give_the_local_run(ray_session, device):
    world = _world(ray_session, device)
    out = dist.launch(_ddp_rank, workers=world, args=(device,), device=device, cpus_per_worker=0.5, timeout_s=120)
    expect = _local_sgd(device, world)
    for (a, b), params, placed in out:
        np.testing.assert_array_equal(a, np.arange(3) * world + sum(range(world)))
        np.testing.assert_array_equal(b, np.full(2, world - 1.0))
        assert placed == {str(dg.tensor(0.0, device=device).device)}
        for got, want in zip(params, expect):
            assert np.abs(got - want).max() <= 1e-6


def _fsdp_rank(device, folder):
    """FSDP with float16 compute on the device: train, save the sharded state with dcp, scramble, load it back."""
    r, n = dist.rank(), dist.world_size()
    model = FSDP(_model(device), mixed_precision=MixedPrecision(param_dtype=dg.float16))
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    x, y = _data(n * ROWS)
    losses = []
    for t in range(STEPS):
        rows = slice(t * n * ROWS + r * ROWS, t * n * ROWS + (r + 1) * ROWS)
        opt.zero_grad()
        loss = F.cross_entropy(model(dg.tensor(x[rows], device=device)), dg.tensor(y[rows], device=device))
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=folder)
    saved = _host(model.parameters())
    with dg.no_grad():
        for p in model.parameters():
            p.zero_()
    state = {"model": get_state_dict(model, opt)[0], "optim": get_state_dict(model, opt)[1]}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    dtypes = {p.dtype for p in model.parameters()}
    return losses, saved, _host(model.parameters()), dtypes


def test_fsdp_in_float16_saves_and_loads_its_shards_on_the_device(ray_session, device):
    world = _world(ray_session, device)
    with tempfile.TemporaryDirectory() as folder:
        out = dist.launch(
            _fsdp_rank, workers=world, args=(device, folder), device=device, cpus_per_worker=0.5, timeout_s=120
        )
        assert os.path.exists(os.path.join(folder, ".metadata"))
    for losses, saved, loaded, dtypes in out:
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert dtypes == {dg.float32}  # the shards and the optimizer stay float32; float16 is the compute's
        for a, b in zip(saved, loaded):
            np.testing.assert_array_equal(a, b)


def _local_then_ray(device, world, rows, **options):
    """The same training with a local Trainer, then a Ray one, each on `device` → [(parameters, losses, accuracy,
    the Ray workers' array modules or None)] — the second's parameters and losses checked against the first's."""
    x, y = _data(rows)
    runs = []
    for backend in ("local", "ray"):
        model = _model("cpu")
        opt = dg.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        with dg.Trainer(
            model, F.cross_entropy, opt, workers=world, backend=backend, device=device, cpus_per_worker=0.5,
            progress=False, **options,
        ) as trainer:  # fmt: skip
            history = trainer.fit((x, y), epochs=2, batch_size=rows)
            plan = getattr(trainer._cluster, "executor", None) if backend == "ray" else None
            modules = None if plan is None else dist.runtime.gather([a.computes_on.remote() for a in plan.actors], 60)
            runs.append((_host(model.parameters()), history["loss"], trainer.evaluate((x, y))["accuracy"], modules))
    (local, local_loss, _, _), (remote, remote_loss, _, _) = runs
    for a, b in zip(local, remote):
        assert np.abs(a - b).max() <= 1e-6
    np.testing.assert_allclose(remote_loss, local_loss, rtol=1e-6)
    return runs


def test_the_trainer_on_ray_workers_matches_the_local_trainer_on_the_device(ray_session, device):
    world = _world(ray_session, device)
    _, (_, _, accuracy, _) = _local_then_ray(device, world, world * ROWS)
    assert accuracy > 0.4


def test_a_pipeline_on_ray_workers_computes_on_their_device_and_matches_the_local_one(ray_session, device):
    """The driver captures the step on its host; each worker runs its stages on its own device (cupy on a GPU)."""
    world = _world(ray_session, device)
    _, (_, _, _, modules) = _local_then_ray(device, world, 2 * ROWS, strategy="pipeline", micro_batches=2)
    assert modules == ["cupy" if device == "cuda" else "numpy"] * world
