"""Random differential testing of the local Trainer against the loop a PyTorch user writes by hand.

Each seed draws a configuration — an MLP or two towers into a head (widths, depth, ReLU/Tanh/GELU,
LayerNorm, BatchNorm1d, Dropout with p=0, a frozen weight, a layer the forward never uses), a loss
(cross entropy with label smoothing / class weights, mse, huber, bce with logits), an optimizer with
one or two param groups, a scheduler stepped per epoch or per step, 1–3 local workers, the data as
arrays, tensors, a TensorDataset, a list of batches, a one-pass generator or a DataLoader (shuffled or
not), a GradScaler (with steps that overflow), validation data, fit called twice (and once with
nothing left to do), a checkpoint saved and loaded between the two calls or a crash inside a step and
a resume from step checkpoints — and runs it in distgraph and in torch from the same float64 weights.
The torch loop is DDP's rule emulated in one process (`torch_step`): each rank's shard, the gradient
the shard-size weighted sum of the shard losses', batch norm from rank 0's buffers. Parameters,
buffers, the history (loss, accuracy, lr, val_*, loss_scale, skipped_steps) and `evaluate()` must
agree to 1e-10. Strategies "branches" and "pipeline" are checked against one worker (`draw_split`).
"""

import itertools
import math
import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.amp import GradScaler
from distgraph.data import DataLoader, TensorDataset

torch = pytest.importorskip("torch")
TF = torch.nn.functional
ATOL = 1e-10  # and relative: running variances of 2-sample shards grow to 10 and more
# torch warns when a scheduler steps after a step the loss scaler skipped (a torch loop steps it anyway)
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


# ---- configurations ----------------------------------------------------------------------------------
def draw(seed):
    """A random configuration (a dict of plain values: printable, so a failing seed says what it ran)."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    workers = int(rng.integers(1, 4))
    norm = pick(["none", "none", "layer", "batch"])
    # hidden widths ≥ 3: layer norm over 2 features is ±1 whatever its input, its gradient rounding noise
    widths = [int(rng.integers(3, 9))] + [int(rng.integers(3, 10)) for _ in range(int(rng.integers(1, 4)))]
    # no l1 loss: its gradients are ±1/N, which cancel exactly in one summation order and leave 1e-17 in
    # another, and Adagrad or Rprop turn that into a step of lr
    task = pick(["ce", "ce", "mse", "bce", "huber"])
    out = int(rng.integers(2, 5))
    epochs = [int(rng.integers(1, 3)), int(rng.integers(0, 3))]  # fit twice: to epochs[0], then further
    batch = int(rng.integers(2, 20))
    if norm == "batch":  # torch's batch norm refuses a shard of one sample in training
        batch = max(batch, 2 * workers + 2)
    n = int(rng.integers(batch + 1, 4 * batch + 2))
    if norm == "batch":
        while 0 < n % batch < 2 * workers:
            n += 1
    scheduler, interval = pick(["none", "none", "plateau", *SCHEDULERS]), pick(["epoch", "step"])
    if scheduler == "plateau":  # stepped on a metric: once per epoch only
        interval = "epoch"
    # a resumed process iterates its own DataLoader afresh: a shuffled one's passes cannot be those of the
    # crashed run, so "crash" is drawn for the deterministic forms only
    data = pick(["arrays", "arrays", "tensors", "tensordataset", "list", "generator", "loader", "loader_shuffle"])
    return {
        "seed": seed,
        "widths": widths,
        "out": out,
        "act": pick(["relu", "tanh", "gelu"]),
        "towers": bool(rng.integers(3) == 0),
        "unused": bool(rng.integers(2)),  # with towers: a layer the forward leaves out
        "frozen": bool(rng.integers(4) == 0),  # the first weight: requires_grad=False, still in the optimizer
        "val_form": pick(["arrays", "batches", "loader"]),  # validation and evaluate data
        "again": bool(rng.integers(3) == 0),  # fit to the epoch reached once more (nothing to train) in between
        "norm": norm,
        "dropout": bool(rng.integers(2)),
        "task": task,
        "smoothing": float(pick([0.0, 0.1])) if task == "ce" else 0.0,
        "class_weight": bool(rng.integers(2)) if task == "ce" else False,
        "optimizer": pick(sorted(OPTIMIZERS)),
        "groups": bool(rng.integers(2)),
        "scheduler": scheduler,
        "interval": interval,
        "workers": workers,
        "n": n,
        "batch": batch,
        "data": data,
        "scaler": bool(rng.integers(4) == 0),
        # no overflow: where float64 gradients overflow near 2**1023 depends on each op's order of operations
        "scale_exp": pick([8, 30]),
        "gate": bool(rng.integers(2)),  # with the scaler: a layer whose gradient overflows above GATE
        "val": bool(rng.integers(2)),
        "epochs": epochs,
        # "save": saved after the first fit, loaded by a fresh Trainer; "crash": the run dies inside a step
        # (the `crash_at`-th loss) and a fresh Trainer resumes from its step checkpoints
        "checkpoint": pick(["none", "save", "crash"] if data != "loader_shuffle" else ["none", "save"]),
        "crash_at": int(rng.integers(1, sum(epochs) * -(-n // batch) + 1)),
        "every_steps": int(rng.integers(1, 4)),
        "eval_batch": int(rng.integers(3, 64)),
        "data_seed": int(rng.integers(1000)),
    }


GATE = 1e6


def gate(lib, function):
    """A layer that passes its input on and whose backward overflows (inf) where the incoming gradient
    exceeds GATE: loss scaling's skipped steps, decided the same way in both libraries (where float64
    itself overflows depends on each op's order of operations)."""

    class Overflow(function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return g * math.inf if float(g.abs().max().item()) > GATE else g

    class Gate(lib.Module):
        def forward(self, x):
            return Overflow.apply(x)

    return Gate()


def layers(cfg, lib):
    """The hidden layers of the configuration in `lib` (distgraph.nn or torch.nn), the output layer left out."""
    act = {"relu": lib.ReLU, "tanh": lib.Tanh, "gelu": lib.GELU}[cfg["act"]]
    out = []
    for a, b in itertools.pairwise(cfg["widths"]):
        # no bias before batch norm: its gradient is rounding noise, which Adam/Adagrad scale up to steps
        out.append(lib.Linear(a, b, bias=cfg["norm"] != "batch"))
        if cfg.get("gate") and cfg.get("scaler") and len(out) == 1:
            out.append(gate(lib, dg.autograd.Function if lib is nn else torch.autograd.Function))
        out += {"layer": [lib.LayerNorm(b)], "batch": [lib.BatchNorm1d(b)], "none": []}[cfg["norm"]]
        out += [act()] + ([lib.Dropout(0.0)] if cfg["dropout"] else [])
    return out


def towers(base, cat):
    """Two MLP towers on the same input, concatenated into a head: independent branches of the graph;
    `spare`, when given, is a layer the forward never uses (its parameters get no gradient)."""

    class Towers(base):
        def __init__(self, left, right, head, spare=None):
            super().__init__()
            self.left, self.right, self.head = left, right, head
            if spare is not None:
                self.spare = spare

        def forward(self, x):
            return self.head(cat([self.left(x), self.right(x)], 1))

    return Towers


def build(cfg):
    """(distgraph model in float64, its torch twin with the same weights and buffers)."""
    dg.manual_seed(cfg["seed"])
    models = []
    for lib, cat in ((nn, dg.cat), (torch.nn, torch.cat)):
        if cfg.get("towers"):
            head = lib.Linear(2 * cfg["widths"][-1], cfg["out"])
            spare = lib.Linear(3, 2) if cfg.get("unused") else None
            left, right = lib.Sequential(*layers(cfg, lib)), lib.Sequential(*layers(cfg, lib))
            model = towers(lib.Module, cat)(left, right, head, spare)
        else:
            model = lib.Sequential(*layers(cfg, lib), lib.Linear(cfg["widths"][-1], cfg["out"]))
        models.append(model.double())
    model, ref = models
    if cfg.get("frozen"):
        next(iter(model.parameters())).requires_grad_(False)
        next(iter(ref.parameters())).requires_grad_(False)
    ref.load_state_dict({k: torch.from_numpy(np.array(v.numpy())) for k, v in model.state_dict().items()})
    return model, ref


def dataset(cfg, n=None, shift=0.0):
    rng = np.random.default_rng(cfg["data_seed"] + int(shift * 100))
    x = rng.standard_normal((n or cfg["n"], cfg["widths"][0])) + shift
    if cfg["task"] == "ce":
        return x, rng.integers(0, cfg["out"], len(x)).astype(np.int64)
    if cfg["task"] == "bce":
        return x, (rng.random((len(x), cfg["out"])) > 0.5).astype(np.float64)
    return x, rng.standard_normal((len(x), cfg["out"]))


def loss_fns(cfg):
    if cfg["task"] == "mse":
        return F.mse_loss, TF.mse_loss
    if cfg["task"] == "bce":
        return F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits
    if cfg["task"] == "huber":
        return (lambda o, y: F.huber_loss(o, y, delta=0.5)), (lambda o, y: TF.huber_loss(o, y, delta=0.5))
    w = np.linspace(0.5, 2.0, cfg["out"]) if cfg["class_weight"] else None
    dw, tw = (dg.tensor(w), torch.from_numpy(w)) if w is not None else (None, None)
    s = cfg["smoothing"]
    return (
        lambda o, y: F.cross_entropy(o, y, weight=dw, label_smoothing=s),
        lambda o, y: TF.cross_entropy(o, y, weight=tw, label_smoothing=s),
    )


OPTIMIZERS = {
    "sgd": lambda o: (o.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    "sgd_nesterov": lambda o: (o.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "dampening": 0.0}),
    "adam": lambda o: (o.Adam, {"lr": 0.01, "weight_decay": 1e-3}),
    "adamw": lambda o: (o.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
    "amsgrad": lambda o: (o.Adam, {"lr": 0.01, "amsgrad": True}),
    "rmsprop": lambda o: (o.RMSprop, {"lr": 0.005, "momentum": 0.5, "centered": True}),
    "nadam": lambda o: (o.NAdam, {"lr": 0.01, "weight_decay": 1e-3}),
    "radam": lambda o: (o.RAdam, {"lr": 0.01, "weight_decay": 1e-3, "decoupled_weight_decay": True}),
    "adagrad": lambda o: (o.Adagrad, {"lr": 0.05, "lr_decay": 0.01}),
    "adamax": lambda o: (o.Adamax, {"lr": 0.01, "weight_decay": 1e-3}),
    "adadelta": lambda o: (o.Adadelta, {"lr": 1.0, "rho": 0.8, "weight_decay": 1e-3}),
    "asgd": lambda o: (o.ASGD, {"lr": 0.05, "t0": 3, "lambd": 0.01}),
}  # no Rprop: it steps by the gradient's sign, and a gradient that is rounding noise (a sum that cancels) has
# either sign

SCHEDULERS = {  # (scheduler module, optimizer, steps it will be stepped) -> scheduler
    "step": lambda s, opt, n: s.StepLR(opt, step_size=2, gamma=0.5),
    "onecycle": lambda s, opt, n: s.OneCycleLR(
        opt, max_lr=0.05, total_steps=n, cycle_momentum=opt.defaults.get("momentum", 0) > 0 or "betas" in opt.defaults
    ),
    "cosine": lambda s, opt, n: s.CosineAnnealingLR(opt, T_max=5, eta_min=1e-4),
    "lambda": lambda s, opt, n: s.LambdaLR(opt, lambda k: 1.0 / (1 + 0.3 * k)),
    "exponential": lambda s, opt, n: s.ExponentialLR(opt, gamma=0.8),
    "multistep": lambda s, opt, n: s.MultiStepLR(opt, milestones=[1, 3], gamma=0.5),
    "poly": lambda s, opt, n: s.PolynomialLR(opt, total_iters=4, power=2.0),
    "warm_restarts": lambda s, opt, n: s.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=1e-4),
    "linear": lambda s, opt, n: s.LinearLR(opt, start_factor=0.3, total_iters=3),
    "sequential": lambda s, opt, n: s.SequentialLR(
        opt, [s.LinearLR(opt, start_factor=0.5, total_iters=2), s.ExponentialLR(opt, gamma=0.9)], milestones=[2]
    ),
    "chained": lambda s, opt, n: s.ChainedScheduler(
        [s.ConstantLR(opt, factor=0.5, total_iters=2), s.ExponentialLR(opt, gamma=0.9)]
    ),
    "multiplicative": lambda s, opt, n: s.MultiplicativeLR(opt, lambda k: 0.9),
    "cyclic": lambda s, opt, n: s.CyclicLR(opt, base_lr=0.001, max_lr=0.02, step_size_up=2, cycle_momentum=False),
}


def steps_per_epoch(cfg):
    return math.ceil(cfg["n"] / cfg["batch"])


def make_optimizer(cfg, module, model):
    cls, kw = OPTIMIZERS[cfg["optimizer"]](module.optim)
    params = list(model.parameters())
    if cfg["groups"]:
        params = [{"params": params[:2], "lr": kw["lr"] * 0.5}, {"params": params[2:]}]
    opt = cls(params, **kw)
    s, total = module.optim.lr_scheduler, sum(cfg["epochs"])
    per_step = cfg["interval"] == "step"
    name = cfg["scheduler"]
    if name == "none":
        return opt, None
    if name == "plateau":
        return opt, s.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    # "extra_steps": steps applied beyond the epochs' (a failed fit's, before its error; the Ray fuzzer)
    steps = total * steps_per_epoch(cfg) + cfg.get("extra_steps", 0)
    return opt, SCHEDULERS[name](s, opt, steps if per_step else total)


# ---- distgraph ---------------------------------------------------------------------------------------
def data_for(cfg, x, y):
    """The training data in the configuration's form, fresh (a generator can be read once)."""
    b, kind = cfg["batch"], cfg["data"]
    if kind == "arrays":
        return x, y
    if kind == "tensors":
        return dg.tensor(x), dg.tensor(y)
    if kind == "tensordataset":
        return TensorDataset(dg.tensor(x), dg.tensor(y))
    if kind in ("list", "generator"):
        pairs = [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]
        return pairs if kind == "list" else iter(pairs)
    shuffle = kind == "loader_shuffle"
    gen = np.random.default_rng(cfg["data_seed"]) if shuffle else None
    return DataLoader(TensorDataset(dg.tensor(x), dg.tensor(y)), batch_size=b, shuffle=shuffle, generator=gen)


def as_form(cfg, x, y):
    """Validation or evaluate data in the configuration's `val_form`."""
    b = 7
    if cfg.get("val_form") == "batches":
        return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]
    if cfg.get("val_form") == "loader":
        return DataLoader(TensorDataset(dg.tensor(x), dg.tensor(y)), batch_size=b)
    return x, y


def run_distgraph(cfg, tmp_path):
    x, y = dataset(cfg)
    val = as_form(cfg, *dataset(cfg, n=max(cfg["n"] // 2, 2), shift=0.3)) if cfg["val"] else None
    model, _ = build(cfg)
    loss_fn, _ = loss_fns(cfg)

    crash = cfg["checkpoint"] == "crash"

    def trainer_for(model, loss_fn=loss_fn):
        opt, sched = make_optimizer(cfg, dg, model)
        scaler = GradScaler(init_scale=2.0 ** cfg["scale_exp"], growth_interval=3) if cfg["scaler"] else None
        return dg.Trainer(model, loss_fn, opt, workers=cfg["workers"], scheduler=sched,
                          strategy=cfg.get("strategy", "data"), micro_batches=cfg.get("micro_batches", 4),
                          scheduler_interval=cfg["interval"], grad_scaler=scaler, seed=cfg["seed"],
                          progress=False, checkpoint_dir=str(tmp_path / "run") if crash else None,
                          checkpoint_every_steps=cfg["every_steps"] if crash else None)  # fmt: skip

    if crash:
        calls = [0]

        def dying(out, target):
            calls[0] += 1
            if calls[0] == cfg["crash_at"]:
                raise Crash
            return loss_fn(out, target)

        with pytest.raises(Crash):
            trainer_for(model, dying).fit(data_for(cfg, x, y), epochs=sum(cfg["epochs"]), batch_size=cfg["batch"],
                                          val_data=val)  # fmt: skip
        model, _ = build(cfg)
        trainer = trainer_for(model)
        history = trainer.fit(data_for(cfg, x, y), epochs=sum(cfg["epochs"]), batch_size=cfg["batch"],
                              val_data=val, resume=True)  # fmt: skip
        return model, history, trainer.evaluate(as_form(cfg, x, y), batch_size=cfg["eval_batch"])
    trainer = trainer_for(model)
    data = data_for(cfg, x, y)  # one object for both fits: a DataLoader goes on with its own generator
    trainer.fit(data, epochs=cfg["epochs"][0], batch_size=cfg["batch"], val_data=val)
    if cfg.get("again") and cfg["data"] != "generator":
        trainer.fit(data, epochs=cfg["epochs"][0], batch_size=cfg["batch"], val_data=val)
    if cfg["checkpoint"] == "save":
        path = trainer.save_checkpoint(str(tmp_path / "mid.dg"))
        model, _ = build(cfg)  # a fresh process: new model, optimizer, scheduler, scaler
        trainer = trainer_for(model)
        trainer.load_checkpoint(path)
    if cfg["data"] == "generator":
        data = data_for(cfg, x, y)
    history = trainer.fit(data, epochs=sum(cfg["epochs"]), batch_size=cfg["batch"], val_data=val)
    return model, history, trainer.evaluate(as_form(cfg, x, y), batch_size=cfg["eval_batch"])


class Crash(Exception):
    """The process dies inside a step."""


# ---- torch -------------------------------------------------------------------------------------------
def epoch_batches(cfg, epoch, loader_rng):
    n, b = cfg["n"], cfg["batch"]
    if cfg["data"] in ("arrays", "tensors", "tensordataset"):  # the Trainer's own shuffle
        perm = np.random.default_rng([cfg["seed"], epoch]).permutation(n)
    elif cfg["data"] == "loader_shuffle":
        perm = loader_rng.permutation(n)
        loader_rng.permutation(n)[:0]  # a RandomSampler pass draws n % n of one more, as torch's does
    else:
        perm = np.arange(n)
    return [perm[i : i + b] for i in range(0, n - b + 1 if cfg.get("drop_last") else n, b)]


def torch_step(ref, opt, loss_fn, X, Y, idx, workers, scale=None):
    """One step of DDP in one process: rank r's contiguous shard (sizes differ by ≤ 1, rank 0 first),
    the gradient of Σ (shard size / batch) × shard loss, batch norm from rank 0's buffers; with a loss
    `scale`, as torch's GradScaler: the step skipped when a gradient is inf/NaN.
    Returns (Σ shard loss × shard size, Σ correct, samples, skipped)."""
    buffers = list(ref.buffers())
    start = [b.clone() for b in buffers]
    sizes = [len(idx) // workers + (r < len(idx) % workers) for r in range(workers)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    opt.zero_grad()
    total, loss_sum, correct, kept = 0.0, 0.0, 0, None
    for rank in range(workers):
        sel = idx[bounds[rank] : bounds[rank + 1]]
        if len(sel) == 0:
            continue
        for b, s in zip(buffers, start):
            b.data.copy_(s)
        out = ref(X[sel])
        loss = loss_fn(out, Y[sel])
        total = total + loss * (len(sel) / len(idx))
        loss_sum += loss.item() * len(sel)
        if Y.ndim == 1:
            correct += int((out.argmax(1) == Y[sel]).sum())
        if rank == 0:
            kept = [b.clone() for b in buffers]
    (total * scale if scale else total).backward()
    grads = [p.grad for p in ref.parameters() if p.grad is not None]
    skipped = bool(scale) and not all(bool(torch.isfinite(g).all()) for g in grads)
    if not skipped:
        for g in grads if scale else ():
            g.mul_(1.0 / scale)
        opt.step()
    for b, k in zip(buffers, kept):
        b.data.copy_(k)
    return loss_sum, correct, len(idx), skipped


def torch_evaluate(ref, loss_fn, x, y, batch):
    """evaluate(): the count-weighted mean of per-batch losses, in eval mode."""
    ref.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = ref(torch.from_numpy(x[i : i + batch]))
            yy = torch.from_numpy(y[i : i + batch])
            loss_sum += loss_fn(out, yy).item() * len(yy)
            if yy.ndim == 1:
                correct += int((out.argmax(1) == yy).sum())
    ref.train()
    out = {"loss": loss_sum / len(x), "count": len(x)}
    if y.ndim == 1:
        out["accuracy"] = correct / len(x)
    return out


def run_torch(cfg):
    x, y = dataset(cfg)
    val = dataset(cfg, n=max(cfg["n"] // 2, 2), shift=0.3) if cfg["val"] else None
    _, ref = build(cfg)
    _, loss_fn = loss_fns(cfg)
    opt, sched = make_optimizer(cfg, torch, ref)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    loader_rng = np.random.default_rng(cfg["data_seed"])
    history, scale, good = [], 2.0 ** cfg["scale_exp"], 0
    for epoch in range(sum(cfg["epochs"])):
        loss_sum = correct = count = skips = 0
        for idx in epoch_batches(cfg, epoch, loader_rng):
            lr = opt.param_groups[0]["lr"]
            ls, c, k, skipped = torch_step(
                ref, opt, loss_fn, X, Y, torch.from_numpy(idx), cfg["workers"], cfg["scaler"] and scale
            )
            loss_sum, correct, count, skips = loss_sum + ls, correct + c, count + k, skips + skipped
            good = 0 if skipped else good + 1  # GradScaler.update: back off on inf, grow every 3 clean steps
            scale = scale * 0.5 if skipped else scale * 2.0 if good % 3 == 0 else scale
            if sched is not None and cfg["interval"] == "step":
                sched.step()
        record = {"loss": loss_sum / count}
        if cfg["task"] == "ce":
            record["accuracy"] = correct / count
        if sched is not None:
            record["lr"] = lr
        if cfg["scaler"]:
            record["loss_scale"], record["skipped_steps"] = scale, skips
        if val is not None:
            v = torch_evaluate(ref, loss_fn, *val, 1024)
            record.update({f"val_{k}": value for k, value in v.items() if k != "count"})
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(record.get("val_loss", record["loss"]))
        elif sched is not None and cfg["interval"] == "epoch":
            sched.step()
        history.append(record)
    return ref, history, torch_evaluate(ref, loss_fn, x, y, cfg["eval_batch"])


# ---- the comparison ----------------------------------------------------------------------------------
def check(cfg, tmp_path, keys=None):
    model, history, evaluated = run_distgraph(cfg, tmp_path)
    ref, expected, expected_eval = run_torch({**cfg, "workers": cfg.get("ddp_workers", cfg["workers"])})
    theirs = ref.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(
            np.asarray(value.numpy(), np.float64), theirs[name].double().numpy(), atol=ATOL, rtol=ATOL, err_msg=name
        )
    assert len(history.epochs) == len(expected)
    for got, want in zip(history.epochs, expected):
        for key, value in want.items():
            if keys is not None and key not in keys:
                continue
            assert got[key] == pytest.approx(value, abs=ATOL, rel=ATOL), (key, got, want)
    assert evaluated.keys() == expected_eval.keys()
    for key, value in expected_eval.items():
        assert evaluated[key] == pytest.approx(value, abs=ATOL, rel=ATOL), key


def draw_split(seed):
    """A configuration for strategy "branches" or "pipeline": the step is split by the graph, so the
    reference is one worker's loop. Left out: batch norm (micro-batches normalize by their own
    statistics), class weights (a mean of micro-batch weighted means is not the batch's), the scaler
    (refused) and a crash (the loss function runs at capture only). A last partial batch is dropped (a
    captured step has a static shape), as by a torch DataLoader with drop_last=True."""
    rng = np.random.default_rng([seed, 1])
    micro = int(rng.integers(1, 4))
    cfg = draw(seed)
    batch = micro * int(rng.integers(1, 5))
    return {**cfg, "strategy": str(rng.choice(["branches", "pipeline"])), "micro_batches": micro, "ddp_workers": 1,
            "norm": "layer" if cfg["norm"] == "batch" else cfg["norm"], "class_weight": False, "scaler": False,
            "batch": batch, "n": batch * int(rng.integers(1, 5)) + int(rng.integers(0, batch)), "drop_last": True,
            "checkpoint": "save" if cfg["checkpoint"] == "crash" else cfg["checkpoint"]}  # fmt: skip


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_trainer_configuration_matches_a_torch_ddp_loop(seed, tmp_path):
    check(draw(seed), tmp_path)


@pytest.mark.parametrize("seed", range(100, 106))
def test_random_configuration_with_overflowing_loss_scaled_steps_matches_a_torch_loop(seed, tmp_path):
    """Loss scaling from 2**30 with a layer whose gradient overflows above GATE: skipped steps, the scale
    backing off and growing, as torch's GradScaler in a loop (history: skipped_steps, loss_scale)."""
    check({**draw(seed), "scaler": True, "gate": True, "scale_exp": 30}, tmp_path)


@pytest.mark.parametrize("seed", range(16))
def test_random_branches_or_pipeline_configuration_matches_one_worker(seed, tmp_path):
    """The history of a split step has no accuracy (its graph outputs the loss and gradients only)."""
    check(draw_split(seed), tmp_path, keys=("loss", "lr", "val_loss", "val_accuracy"))


# ---- what the fuzzer found, pinned -------------------------------------------------------------------
def pinned(**changes):
    """A small configuration (arrays, one worker, SGD, no scheduler) with `changes`."""
    cfg = {**draw(0), "widths": [5, 7], "out": 3, "act": "tanh", "norm": "none", "dropout": False, "task": "ce",
           "smoothing": 0.0, "class_weight": False, "optimizer": "sgd", "groups": False, "scheduler": "none",
           "interval": "epoch", "workers": 1, "n": 30, "batch": 8, "data": "arrays", "scaler": False,
           "val": False, "epochs": [3, 0], "checkpoint": "none"}  # fmt: skip
    return {**cfg, **changes}


@pytest.mark.parametrize("scheduler", ["cosine", "step"])
def test_a_chainable_scheduler_stepped_per_step_follows_torch(scheduler, tmp_path):
    """CosineAnnealingLR and StepLR compute the next lr from the group's current one. After an epoch's
    steps (each set to its precomputed row) the real scheduler was caught up from the optimizer holding
    the last row, not the row it had left, so from the second epoch on every lr was wrong."""
    check(pinned(scheduler=scheduler, interval="step", groups=True), tmp_path)


def test_a_second_fit_goes_on_with_the_next_pass_of_a_shuffling_dataloader(tmp_path):
    """fit read a DataLoader's first pass to find its arrays, then, on a second fit (or a resume), read
    another for its first epoch: one shuffled pass skipped, where a torch loop takes the next one."""
    check(pinned(data="loader_shuffle", epochs=[1, 2], optimizer="adam"), tmp_path)


def test_an_epoch_resumed_from_a_step_checkpoint_records_all_its_steps(tmp_path):
    """A run that dies inside an epoch resumes from its step checkpoint with the same parameters, but
    the epoch's history record (loss, accuracy) held only the steps after the resume."""
    check(pinned(checkpoint="crash", crash_at=3, every_steps=1, epochs=[2, 0]), tmp_path)


def test_a_resumed_run_shuffles_with_the_checkpoints_seed(tmp_path):
    """fit(resume=True) loads the checkpoint's seed, but the epochs' permutations had already been set
    up from the new Trainer's own: the resumed epochs saw other batches than the interrupted run would."""
    x, y = dataset(pinned())

    def trainer(seed, folder):
        model, _ = build(pinned())
        opt = dg.optim.SGD(model.parameters(), lr=0.1)
        return model, dg.Trainer(model, F.cross_entropy, opt, seed=seed, checkpoint_dir=folder, progress=False)

    model, whole = trainer(3, None)
    whole.fit((x, y), epochs=3, batch_size=8)
    trainer(3, str(tmp_path))[1].fit((x, y), epochs=1, batch_size=8)
    resumed, second = trainer(0, str(tmp_path))
    second.fit((x, y), epochs=3, batch_size=8, resume=True)
    assert second.seed == 3
    for (name, want), got in zip(model.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=name)


@pytest.mark.parametrize("strategy", ["data", "branches", "pipeline"])
def test_a_parameter_the_forward_leaves_out_is_not_updated(strategy, tmp_path):
    """A layer the forward never uses has no gradient in torch (DDP leaves it None too), so the optimizer
    skips it. The Trainer gave it zeros, and Adam's weight decay and moments moved it every step."""
    cfg = pinned(towers=True, unused=True, optimizer="adam", workers=2, n=24, epochs=[2, 0], micro_batches=2)
    check({**cfg, "strategy": strategy, "ddp_workers": 2 if strategy == "data" else 1}, tmp_path, keys=("loss",))


def test_a_fit_with_no_epoch_left_takes_no_pass_of_a_dataloader(tmp_path):
    """fit(epochs=the epoch already reached) trains nothing but iterated a DataLoader to find its arrays:
    a shuffled pass consumed, so the next fit's epochs saw other batches than a torch loop's."""
    check(pinned(data="loader_shuffle", epochs=[1, 2], again=True), tmp_path)


def test_overflowing_loss_scaled_shards_combine_without_a_numpy_warning(tmp_path):
    """Under loss scaling an overflow is expected and the step skipped quietly: the shards' backward ran
    under np.errstate, but summing their gradients (inf + -inf) warned 'invalid value encountered'."""
    cfg = pinned(scaler=True, gate=True, scale_exp=30, workers=2, epochs=[1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = run_distgraph(cfg, tmp_path)[1]
    assert history["skipped_steps"][0] > 0
