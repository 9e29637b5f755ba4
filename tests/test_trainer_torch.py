"""The local Trainer against the loop a PyTorch user writes by hand: same weights (float64), the same
batches (the Trainer's permutation from numpy.random.default_rng([seed, epoch])), same parameters after
several epochs; with one worker and with two (the batch cut into shards, combined as the Ray all-reduce)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def models(batch_norm=False, dropout=False):
    """A distgraph MLP in float64 and a torch copy of it, weights and buffers included."""
    dg.manual_seed(0)
    mid = [nn.BatchNorm1d(16)] if batch_norm else []
    model = nn.Sequential(nn.Linear(8, 16), *mid, nn.Tanh(), *([nn.Dropout(0.5)] if dropout else []), nn.Linear(16, 3))
    model = model.double()
    ref = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        *([torch.nn.BatchNorm1d(16)] if batch_norm else []),
        torch.nn.Tanh(),
        *([torch.nn.Dropout(0.5)] if dropout else []),
        torch.nn.Linear(16, 3),
    ).double()
    ref.load_state_dict({k: torch.from_numpy(np.array(v.numpy())) for k, v in model.state_dict().items()})
    return model, ref


def data(n=100):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def batches(n, batch_size, epoch, seed=0):
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [torch.from_numpy(perm[i : i + batch_size]) for i in range(0, n, batch_size)]


def assert_same(model, ref, atol=1e-10):
    theirs = ref.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(
            np.asarray(value.numpy(), np.float64), theirs[name].double().numpy(), atol=atol, err_msg=name
        )


OPTIMIZERS = {
    "sgd": lambda o, p: o.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda o, p: o.Adam(p, lr=0.01, weight_decay=1e-3),
    "adamw": lambda o, p: o.AdamW(p, lr=0.01, amsgrad=True),
    "nadam": lambda o, p: o.NAdam(p, lr=0.01, weight_decay=1e-3, decoupled_weight_decay=True),
    "asgd": lambda o, p: o.ASGD(p, lr=0.05, t0=3, lambd=0.01),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_and_an_epoch_scheduler_match_a_torch_loop(name, workers):
    """Parameters after 3 epochs (a last partial batch each) and the history's loss, the per-sample mean
    of the epoch's batch losses, as a torch loop that sums loss × batch size."""
    x, y = data()
    model, ref = models()
    opt, topt = OPTIMIZERS[name](dg.optim, model.parameters()), OPTIMIZERS[name](torch.optim, ref.parameters())
    sched, tsched = dg.optim.lr_scheduler.StepLR(opt, 1, 0.5), torch.optim.lr_scheduler.StepLR(topt, 1, 0.5)
    trainer = dg.Trainer(model, F.cross_entropy, opt, workers=workers, scheduler=sched, progress=False)
    history = trainer.fit((x, y), epochs=3, batch_size=32)
    X, Y, losses = torch.from_numpy(x), torch.from_numpy(y), []
    for epoch in range(3):
        total = 0.0
        for idx in batches(len(x), 32, epoch):
            topt.zero_grad()
            loss = TF.cross_entropy(ref(X[idx]), Y[idx])
            loss.backward()
            topt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
        tsched.step()
    assert_same(model, ref)
    np.testing.assert_allclose(history["loss"], losses, atol=1e-12)
    assert opt.param_groups[0]["lr"] == topt.param_groups[0]["lr"] == topt.defaults["lr"] * 0.5**3


def test_reduce_lr_on_plateau_steps_on_the_validation_loss_after_each_epoch():
    """ReduceLROnPlateau.step needs the metric: the Trainer called step() with none and failed with a
    TypeError at the first epoch's end. It now gets val_loss (the epoch's training loss without val_data),
    as a torch loop calls scheduler.step(val_loss) after validating."""
    x, y = data()
    vx, vy = x[:40] + 0.5, y[:40]
    model, ref = models()
    opt, topt = dg.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(ref.parameters(), lr=0.5)
    sched = dg.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.5, patience=0)
    trainer = dg.Trainer(model, F.cross_entropy, opt, scheduler=sched, progress=False)
    trainer.fit((x, y), epochs=6, batch_size=32, val_data=(vx, vy))
    X, Y, lrs = torch.from_numpy(x), torch.from_numpy(y), []
    for epoch in range(6):
        for idx in batches(len(x), 32, epoch):
            topt.zero_grad()
            TF.cross_entropy(ref(X[idx]), Y[idx]).backward()
            topt.step()
        with torch.no_grad():
            val_loss = TF.cross_entropy(ref(torch.from_numpy(vx)), torch.from_numpy(vy)).item()
        tsched.step(val_loss)
        lrs.append(topt.param_groups[0]["lr"])
    assert_same(model, ref)
    assert opt.param_groups[0]["lr"] == lrs[-1] < lrs[0]  # the plateau was reached: the lr was cut
    assert sched.best == tsched.best and sched.num_bad_epochs == tsched.num_bad_epochs
    model, _ = models()
    opt = dg.optim.SGD(model.parameters(), lr=0.5)
    sched = dg.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, mode="max")  # on the loss, rising
    dg.Trainer(model, F.cross_entropy, opt, scheduler=sched, progress=False).fit((x, y), epochs=3, batch_size=32)
    assert opt.param_groups[0]["lr"] < 0.5 and sched.last_epoch == 3


def ddp_step(ref, opt, X, Y, idx, workers):
    """One step of torch DDP emulated in one process: each rank normalizes its shard with its own batch
    statistics (no SyncBatchNorm) and starts from rank 0's buffers (broadcast_buffers=True), so the
    buffers that remain are rank 0's; the gradient is the shard-size-weighted sum of the shard losses."""
    buffers = list(ref.buffers())
    start = [b.clone() for b in buffers]
    sizes = [len(idx) // workers + (r < len(idx) % workers) for r in range(workers)]  # differ by ≤ 1, rank 0 first
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    opt.zero_grad()
    loss, kept = 0.0, None
    for rank in range(workers):
        for b, s in zip(buffers, start):
            b.data.copy_(s)  # .data: torch's batch norm saved the buffer for backward
        sel = idx[bounds[rank] : bounds[rank + 1]]
        loss = loss + TF.cross_entropy(ref(X[sel]), Y[sel]) * (len(sel) / len(idx))
        if rank == 0:
            kept = [b.clone() for b in buffers]
    loss.backward()
    opt.step()
    for b, k in zip(buffers, kept):
        b.data.copy_(k)


@pytest.mark.parametrize("workers", [1, 2])
def test_batchnorm_running_statistics_are_rank_0s_as_ddp(workers):
    """With two local workers each shard's forward updated the one model's running statistics in turn:
    two updates a step (num_batches_tracked counted 2 per step) from a mix of the shards. As DDP (and as
    the Ray workers, each on its own replica) the statistics kept are rank 0's; evaluate then matches a
    torch eval loop, and the model is back in training mode after it."""
    x, y = data()
    model, ref = models(batch_norm=True)
    opt, topt = dg.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    trainer = dg.Trainer(model, F.cross_entropy, opt, workers=workers, progress=False)
    trainer.fit((x, y), epochs=2, batch_size=32)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(2):
        for idx in batches(len(x), 32, epoch):
            ddp_step(ref, topt, X, Y, idx, workers)
    assert_same(model, ref)
    assert int(model[1].num_batches_tracked.item()) == 2 * 4
    result = trainer.evaluate((x, y))
    ref.eval()
    with torch.no_grad():
        out = ref(X)
    assert result["loss"] == pytest.approx(TF.cross_entropy(out, Y).item(), abs=1e-12)
    assert result["accuracy"] == (out.argmax(1) == Y).double().mean().item()
    assert model.training and all(m.training for m in model.modules())


def test_evaluate_leaves_the_model_in_the_mode_it_found():
    """evaluate() runs in eval mode (Dropout off: two calls agree) and restores the caller's mode; it
    switched a model the user had put in eval mode back to training mode."""
    x, y = data()
    model, _ = models(dropout=True)
    trainer = dg.Trainer(model, F.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1), progress=False)
    trainer.fit((x, y), epochs=1, batch_size=32)
    assert trainer.evaluate((x, y)) == trainer.evaluate((x, y)) and model.training
    model.eval()
    trainer.evaluate((x, y))
    assert not model.training and not model[2].training
    model.train()
    model[2].eval()  # a mix (a frozen layer) is given back as it was
    trainer.evaluate((x, y))
    assert model.training and not model[2].training and model[0].training
