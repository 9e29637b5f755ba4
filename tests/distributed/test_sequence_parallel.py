"""Sequence parallelism (distributed/tensor/parallel.py's SequenceParallel and the Shard(1) layouts around a
Colwise → Rowwise pair): on 2 real Ray ranks a transformer block, and a tiny language model around it, give the
unsharded model's outputs, loss and gradients in float64 — the norms' replicated parameters' gradients summed over
the ranks, the sharded weights' gradients the matching slices; bad sequence lengths and modules named."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
from distgraph.distributed.tensor import Replicate, Shard
from distgraph.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from distgraph.errors import ConfigError, ShapeError

B, S, H, F, V = 2, 6, 8, 12, 10  # batch, sequence, features, hidden features, vocabulary
TOL = 1e-10


class Block(nn.Module):
    """x + fc2(gelu(fc1(norm1(x)))) → norm2, with a dropout (p=0) on the residual branch: (B, S, H) → (B, S, H)."""

    def __init__(self):
        super().__init__()
        self.norm1, self.fc1, self.act = nn.LayerNorm(H), nn.Linear(H, F), nn.GELU()
        self.fc2, self.drop, self.norm2 = nn.Linear(F, H), nn.Dropout(0.0), nn.LayerNorm(H)

    def forward(self, x):
        return self.norm2(x + self.drop(self.fc2(self.act(self.fc1(self.norm1(x))))))


class TinyLM(nn.Module):
    """ids (B, S) → embedding → Block → RMSNorm → logits (B, S, V)."""

    def __init__(self):
        super().__init__()
        self.embed, self.block, self.norm, self.head = nn.Embedding(V, H), Block(), nn.RMSNorm(H), nn.Linear(H, V)

    def forward(self, ids):
        return self.head(self.norm(self.block(self.embed(ids))))


BLOCK_PLAN = {  # torch's Megatron plan for one block
    "norm1": SequenceParallel(),
    "fc1": ColwiseParallel(input_layouts=Shard(1)),
    "fc2": RowwiseParallel(output_layouts=Shard(1)),
    "drop": SequenceParallel(),
    "norm2": SequenceParallel(use_local_output=True),
}
LM_PLAN = {  # torch's TP tutorial's, around the block: the embedding's sum reduce-scattered, the logits gathered
    "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
    **{f"block.{name}": style for name, style in BLOCK_PLAN.items()},
    "norm": SequenceParallel(),
    "head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
}


def _randomised(model, seed):
    """`model` with every parameter drawn from `seed` (the norms' too, so their broadcast is seen), in float64."""
    dg.manual_seed(seed)
    model = model.to(dg.float64)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model


def _data(step):
    rng = np.random.default_rng(step)
    return rng.standard_normal((B, S, H)), rng.integers(0, V, (B, S)), rng.standard_normal((B, S, V))


def _block_steps(model, rank=None, steps=2):
    """SGD steps on (y · w).sum() over this rank's shard of the sequence (all of it: rank None) → per step its
    output, loss, input gradient and parameters' gradients, and the parameters after."""
    opt, out = dg.optim.SGD(model.parameters(), lr=0.1), []
    cut = slice(None) if rank is None else slice(rank * S // 2, (rank + 1) * S // 2)
    for step in range(steps):
        x, _, _ = _data(step)
        xt = dg.tensor(x[:, cut], requires_grad=True)
        opt.zero_grad()
        y = model(xt)
        loss = (y * dg.tensor(_data(step + 7)[0][:, cut])).sum()
        loss.backward()
        out.append(
            (y.detach().numpy(), loss.item(), xt.grad.numpy(), [p.grad.numpy().copy() for p in model.parameters()])
        )
        opt.step()
    return out, [p.detach().numpy() for p in model.parameters()]


def _lm_step(model):
    _, ids, w = _data(3)
    logits = model(dg.tensor(ids))
    loss = (logits * dg.tensor(w)).sum()  # the logits whole on every rank: the same loss on each
    loss.backward()
    return logits.detach().numpy(), loss.item(), [(n, p.grad.numpy()) for n, p in model.named_parameters()]


def _on_each_rank():
    mesh, rank = dist.init_device_mesh("cpu", (2,)), dist.get_rank()
    block = parallelize_module(_randomised(Block(), seed=rank), mesh, BLOCK_PLAN)  # rank 0's parameters are cut
    steps, params = _block_steps(block, rank)
    lm = _lm_step(parallelize_module(_randomised(TinyLM(), seed=10 + rank), mesh, LM_PLAN))

    # a whole input cut by the style itself (sequence dim 0 here), and ids gathered by a Colwise embedding
    x, ids, _ = _data(5)
    xt = dg.tensor(x.transpose(1, 0, 2).copy(), requires_grad=True)  # (S, B, H)
    rms = parallelize_module(
        _randomised(nn.RMSNorm(H), 4), mesh, SequenceParallel(sequence_dim=0, input_layouts=Replicate())
    )
    y = rms(xt)
    (y * y).sum().backward()
    lookup = parallelize_module(
        _randomised(nn.Embedding(V, H), 6), mesh, ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    )
    extras = {"rms": y.detach().numpy(), "rms_x_grad": xt.grad.numpy(), "rms_w_grad": rms.weight.grad.numpy(),
              "lookup": lookup(dg.tensor(ids[:, rank * S // 2 : (rank + 1) * S // 2])).detach().numpy()}  # fmt: skip
    drop = parallelize_module(nn.Dropout(0.4), mesh, SequenceParallel())
    dg.manual_seed(99)  # seeded alike on every rank: each keeps its part of one mask for the whole sequence
    extras["dropout"] = drop(dg.tensor(x[:, rank * S // 2 : (rank + 1) * S // 2])).numpy()

    errors = []
    for error, call in (
        (ConfigError, lambda: parallelize_module(Block(), mesh, {"fc1": SequenceParallel()})),
        (ConfigError, lambda: parallelize_module(Block(), mesh, {"fc1": ColwiseParallel(input_layouts=Shard(-1))})),
        (ShapeError, lambda: parallelize_module(nn.LayerNorm(H), mesh, SequenceParallel(input_layouts=Replicate()))(dg.randn(B, 5, H))),
        (ShapeError, lambda: parallelize_module(Block(), mesh, {"fc2": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))}).fc2(dg.randn(B, 5, F))),
        (ShapeError, lambda: parallelize_module(Block(), mesh, {"fc1": ColwiseParallel(input_layouts=Shard(1))}).fc1(dg.randn(B, H))),
        (ShapeError, lambda: parallelize_module(Block(), mesh, {"norm1": SequenceParallel(sequence_dim=2)}).norm1(dg.randn(B, S, H))),
    ):  # fmt: skip
        with pytest.raises(error) as err:
            call()
        errors.append(str(err.value))
    return {"steps": steps, "params": params, "lm": lm, "extras": extras, "errors": errors}


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def ranks(ray_session):
    return dist.launch(_on_each_rank, workers=2, cpus_per_worker=0.5, timeout_s=120)


def _cuts(r):
    """Rank r's slice of fc1's output features (its weight's rows, its bias) and fc2's input features (columns)."""
    return slice(r * F // 2, (r + 1) * F // 2)


@pytest.mark.ray
def test_a_sequence_parallel_block_on_two_ranks_is_the_plain_block_forward_backward_and_steps(ranks):
    plain_steps, plain_params = _block_steps(_randomised(Block(), seed=0))
    half = S // 2
    for step, (py, ploss, pgx, pgrads) in enumerate(plain_steps):
        _close(np.concatenate([ranks[r]["steps"][step][0] for r in (0, 1)], axis=1), py)  # the outputs, gathered
        _close(ranks[0]["steps"][step][1] + ranks[1]["steps"][step][1], ploss)  # each rank's loss is its shard's part
        for r, out in enumerate(ranks):
            _, _, gx, grads = out["steps"][step]
            _close(gx, pgx[:, r * half : (r + 1) * half])
            n1w, n1b, f1w, f1b, f2w, f2b, n2w, n2b = pgrads
            c = _cuts(r)  # the norms' and fc2's bias: summed over the ranks, whole on each
            for g, want in zip(grads, [n1w, n1b, f1w[c], f1b[c], f2w[:, c], f2b, n2w, n2b]):
                _close(g, want)
    for r, out in enumerate(ranks):  # two SGD steps later, still the plain model's (slices)
        n1w, n1b, f1w, f1b, f2w, f2b, n2w, n2b = plain_params
        c = _cuts(r)
        for p, want in zip(out["params"], [n1w, n1b, f1w[c], f1b[c], f2w[:, c], f2b, n2w, n2b]):
            _close(p, want)


@pytest.mark.ray
def test_a_tiny_language_model_cut_as_torchs_tutorial_gives_the_plain_logits_loss_and_gradients(ranks):
    logits, loss, grads = _lm_step(_randomised(TinyLM(), seed=10))
    plain = dict(grads)
    for r, out in enumerate(ranks):
        got_logits, got_loss, got_grads = out["lm"]
        _close(got_logits, logits)
        _close(got_loss, loss)
        c, rows = _cuts(r), slice(r * V // 2, (r + 1) * V // 2)  # rows: the embedding's ids, the head's outputs
        want = {"embed.weight": plain["embed.weight"][rows], "block.fc1.weight": plain["block.fc1.weight"][c],
                "block.fc1.bias": plain["block.fc1.bias"][c], "block.fc2.weight": plain["block.fc2.weight"][:, c],
                "head.weight": plain["head.weight"][rows], "head.bias": plain["head.bias"][rows]}  # fmt: skip
        assert [n for n, _ in got_grads] == [n for n, _ in grads]
        for name, g in got_grads:
            _close(g, want.get(name, plain[name]))  # the rest (norms, fc2's bias): summed, whole


@pytest.mark.ray
def test_a_whole_input_is_cut_by_the_style_and_sequence_shards_of_ids_are_gathered(ranks):
    x, ids, _ = _data(5)
    rms = _randomised(nn.RMSNorm(H), 4)
    xt = dg.tensor(x.transpose(1, 0, 2).copy(), requires_grad=True)
    y = rms(xt)
    (y * y).sum().backward()
    lookup = _randomised(nn.Embedding(V, H), 6)(dg.tensor(ids)).detach().numpy()
    for r, out in enumerate(ranks):
        got = out["extras"]
        _close(got["rms"], y.detach().numpy()[r * S // 2 : (r + 1) * S // 2])
        _close(got["rms_x_grad"], xt.grad.numpy())  # each rank's shard's gradient, joined: whole on every rank
        _close(got["rms_w_grad"], rms.weight.grad.numpy())
        _close(got["lookup"], lookup)


@pytest.mark.ray
def test_a_module_or_sequence_the_styles_cannot_cut_is_named(ranks):
    want = [
        "SequenceParallel: only nn.LayerNorm, nn.RMSNorm and nn.Dropout run on a sequence shard here, got Linear 'fc1'",
        "input_layouts must be one of (Replicate(),) or Shard(d) of a sequence dim d >= 0, got Shard(dim=-1)",
        "SequenceParallel: LayerNorm: its input of shape (2, 5, 8) does not split evenly over 2 ranks along its "
        "sequence dim 1",
        "RowwiseParallel: Linear 'fc2': its output of shape (2, 5, 8) does not split evenly over 2 ranks along its "
        "sequence dim 1",
        "ColwiseParallel: Linear 'fc1': its input of shape (2, 8) has no sequence dim 1 before its features",
        "SequenceParallel: LayerNorm 'norm1': its input of shape (2, 6, 8) has no sequence dim 2 before the 1 dim(s) "
        "it normalizes",
    ]
    for out in ranks:
        for got, message in zip(out["errors"], want, strict=True):
            assert message in got


@pytest.mark.ray
def test_sequence_parallel_dropout_shards_are_the_plain_dropout_of_the_whole_sequence(ranks):
    """Ranks seeded alike draw one mask for the whole sequence and keep their part: not one pattern per shard."""
    x = _data(5)[0]
    dg.manual_seed(99)
    want = nn.Dropout(0.4)(dg.tensor(x)).numpy()
    got = np.concatenate([out["extras"]["dropout"] for out in ranks], axis=1)
    assert (want == 0).any() and (want != 0).any()
    _close(got, want)
    assert not np.array_equal(ranks[0]["extras"]["dropout"] == 0, ranks[1]["extras"]["dropout"] == 0)
