"""Tensor parallelism (distributed/tensor/parallel.py): on 2 real Ray ranks an MLP whose first Linear is
ColwiseParallel and second RowwiseParallel gives the unsharded model's outputs and input gradient, each rank's
weight shards get their slices of its gradients, and SGD steps keep the shards equal to the plain model's slices
(float64); the other layouts, and what is not done, named."""

import copy

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
from distgraph.distributed.tensor import Replicate, Shard
from distgraph.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from distgraph.errors import ConfigError, InputRangeError

STEPS = 3


def _model(seed=0):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).to(dg.float64)


def _batch(step):
    rng = np.random.default_rng(step)
    return rng.standard_normal((5, 6)), rng.standard_normal((5, 4))


def _run(model, rank=None):
    """STEPS SGD steps on (out · w).sum() → outputs, input gradients, parameters after each step."""
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    out = []
    for step in range(STEPS):
        x, w = _batch(step)
        xt = dg.tensor(x, requires_grad=True)
        opt.zero_grad()
        y = model(xt)
        (y * dg.tensor(w)).sum().backward()
        out.append((y.detach().numpy(), xt.grad.numpy(), [p.grad.numpy().copy() for p in model.parameters()]))
        opt.step()
    return out, [p.detach().numpy() for p in model.parameters()]


def _on_each_rank():
    mesh = dist.init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
    model = _model(seed=dist.get_rank())  # the group's first rank's parameters are the ones cut
    parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    shapes = [tuple(p.shape) for p in model.parameters()]
    steps, params = _run(model)

    def linear():  # one layer, the same on every rank and each time
        dg.manual_seed(5)
        return nn.Linear(6, 4).to(dg.float64)

    single = linear()  # and each way, with the other layouts: the same outputs
    col = parallelize_module(linear(), mesh, ColwiseParallel(output_layouts=Replicate()))
    row = parallelize_module(linear(), mesh, RowwiseParallel(input_layouts=Replicate()))
    x = dg.tensor(_batch(9)[0])
    copied = copy.deepcopy(col)  # its own shards: changing the copy's leaves the original's output alone
    with dg.no_grad():
        copied.weight.fill_(0.0)
    copy_out = (copied(x).detach().numpy(), col(x).detach().numpy())
    errors = []
    for call in (
        lambda: parallelize_module(_model(), mesh, {"1": ColwiseParallel()}),
        lambda: parallelize_module(nn.Linear(5, 4), mesh, RowwiseParallel()),
        lambda: parallelize_module(_model(), mesh, {"fc9": ColwiseParallel()}),
        lambda: parallelize_module(_model(), mesh, {"0": ColwiseParallel(input_layouts=Shard(-1))}),
        lambda: parallelize_module(_model(), mesh, {"0": ColwiseParallel(), "[0-2]": RowwiseParallel()}),
        lambda: ColwiseParallel(use_local_output=False),
        lambda: parallelize_module(nn.Embedding(8, 6, max_norm=1.0), mesh, RowwiseParallel(input_layouts=Replicate())),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        errors.append(str(err.value))
    return {"shapes": shapes, "steps": steps, "params": params, "single": [p.detach().numpy() for p in single.parameters()],
            "col": col(x).detach().numpy(), "copy": copy_out, "row": row(x).detach().numpy(), "x": x.numpy(), "errors": errors}  # fmt: skip


@pytest.mark.ray
def test_colwise_then_rowwise_on_two_ranks_is_the_plain_mlp_forward_backward_and_steps(ray_session):
    ranks = dist.launch(_on_each_rank, workers=2, cpus_per_worker=0.5, timeout_s=60)
    plain_steps, plain_params = _run(_model(seed=0))
    for r, out in enumerate(ranks):
        assert out["shapes"] == [(4, 6), (4,), (4, 4), (4,)]  # rows of fc1 (and its bias), columns of fc2
        rows, cols = slice(4 * r, 4 * r + 4), slice(4 * r, 4 * r + 4)
        for (y, gx, grads), (py, pgx, pgrads) in zip(out["steps"], plain_steps):
            np.testing.assert_allclose(y, py, rtol=0, atol=1e-12)
            np.testing.assert_allclose(gx, pgx, rtol=0, atol=1e-12)  # partial input gradients summed
            for g, want in zip(grads, [pgrads[0][rows], pgrads[1][rows], pgrads[2][:, cols], pgrads[3]]):
                np.testing.assert_allclose(g, want, rtol=0, atol=1e-12)
        want = [plain_params[0][rows], plain_params[1][rows], plain_params[2][:, cols], plain_params[3]]
        for p, w in zip(out["params"], want):
            np.testing.assert_allclose(p, w, rtol=0, atol=1e-12)
        weight, bias = out["single"]  # the same Linear, whole, on every rank: the sharded ones must give its output
        np.testing.assert_allclose(out["col"], out["x"] @ weight.T + bias, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["row"], out["x"] @ weight.T + bias, rtol=0, atol=1e-12)
        assert "only nn.Linear and nn.Embedding are parallelized here, got ReLU" in out["errors"][0]
        assert "weight of shape (4, 5) does not split evenly over 2 ranks along dim 1" in out["errors"][1]
        assert "no submodule of the model is named 'fc9'" in out["errors"][2]
        assert "of (Replicate(),) or Shard(d) of a sequence dim d >= 0, got Shard(dim=-1)" in out["errors"][3]
        assert "'0' is matched by both '0' and '[0-2]'" in out["errors"][4]
        assert "use_local_output=False asks for a DTensor" in out["errors"][5]
        assert "an Embedding with max_norm or scale_grad_by_freq is not split by ids here" in out["errors"][6]
        # the copy: zero weights, its bias shards gathered; the original: unchanged
        np.testing.assert_allclose(out["copy"][0], np.broadcast_to(bias, out["copy"][0].shape), rtol=0, atol=0)
        np.testing.assert_allclose(out["copy"][1], out["col"], rtol=0, atol=0)


def _embedder():
    dg.manual_seed(1)
    return nn.Sequential(nn.Embedding(8, 6, padding_idx=5), nn.Linear(6, 4)).to(dg.float64)


PLANS = {  # the embedding cut by rows (ids), then by columns (features), each with the Linear that fits after it
    "rows": lambda: {"0": RowwiseParallel(input_layouts=Replicate()), "1": ColwiseParallel(output_layouts=Replicate())},
    "columns": lambda: {"0": ColwiseParallel(), "1": RowwiseParallel()},
}
IDS = [[0, 3, 5, 7], [6, 1, 4, 2], [7, 7, 0, 5]]  # every shard's ids, the padding id among them


def _embedding_rank(plan):
    model = parallelize_module(_embedder(), dist.init_device_mesh("cpu", (2,)), PLANS[plan]())
    if plan == "rows":  # an id past the table, as the plain layer says it
        with pytest.raises(InputRangeError, match=r"index out of range in self \(ids 0\.\.9, 8 rows\)"):
            model(dg.tensor(np.array([[0, 9]])))
    out = model(dg.tensor(np.array(IDS)))
    (out * dg.tensor(np.arange(48.0).reshape(3, 4, 4))).sum().backward()
    return out.detach().numpy(), [p.grad.numpy() for p in model.parameters()]


@pytest.mark.ray
@pytest.mark.parametrize("plan", list(PLANS))
def test_an_embedding_cut_by_ids_or_by_features_gives_the_plain_lookup_and_gradients(ray_session, plan):
    ranks = dist.launch(_embedding_rank, workers=2, cpus_per_worker=0.5, args=(plan,), timeout_s=60)
    plain = _embedder()
    out = plain(dg.tensor(np.array(IDS)))
    (out * dg.tensor(np.arange(48.0).reshape(3, 4, 4))).sum().backward()
    table, weight, bias = (p.grad.numpy() for p in plain.parameters())
    assert not table[5].any()  # the padding row gets no gradient
    for r, (got, grads) in enumerate(ranks):
        np.testing.assert_allclose(got, out.detach().numpy(), rtol=0, atol=1e-12)
        if plan == "rows":  # the table's ids 4r..4r+3; the Linear's output features 2r, 2r+1
            want = [table[4 * r : 4 * r + 4], weight[2 * r : 2 * r + 2], bias[2 * r : 2 * r + 2]]
        else:  # the table's features 3r..3r+2, and the Linear's input features alike; its bias whole
            want = [table[:, 3 * r : 3 * r + 3], weight[:, 3 * r : 3 * r + 3], bias]
        for g, w in zip(grads, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
