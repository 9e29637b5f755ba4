"""A Trainer whose step is split by the graph, not by the batch: strategies `branches` (independent
subgraphs of the training step on different workers at once) and `pipeline` (contiguous stages, one
per worker, with micro-batches) — on Ray workers (`RayPlanExecutor`) or, with backend="local", on
the threads of this process (`LocalExecutor`), the same Plan either way.

The training step — forward, loss, backward — is captured once with `dg.compile` at the batch size
(the micro-batch size for a pipeline), partitioned into a Plan, and run each step by the
executor; its outputs are the loss and the gradients, which the driver's optimizer applies
(the parameters are the step's inputs, so the next step runs on the new ones). A captured graph has
static shapes, so an epoch's last, smaller batch is left out (PyTorch's `drop_last`), and the
history says so once. The history has no accuracy: the step's outputs are the loss and the gradients.

`choose(trainer, x, y, batch_size)` resolves `strategy="auto"` with the cost model of
`placement.choose_strategy` and records why in the history: on the trainer's backend (a local data
step runs its shards one after another), with uneven data shards allowed (the data path cuts any batch).
"""

from distgraph.backend import to_device
from distgraph.errors import ConfigError


def _capture(trainer, x, y):
    """(graph, its parameter inputs in order, the parameters its gradient outputs follow, the indices of
    those the loss does not depend on) of the training step on batch (x, y)."""
    from distgraph.autograd.grad_mode import no_grad
    from distgraph.autograd.tensor import Tensor
    from distgraph.graph.compile import compile as dg_compile

    dev = trainer.step_fn.device  # where the model is (cuda under a local Trainer on a GPU)
    xt, yt = Tensor(to_device(x, dev), device=dev), Tensor(to_device(y, dev), device=dev)
    step = dg_compile(trainer.model, (xt, yt), loss_fn=trainer.loss_fn)
    with no_grad():
        variant = next(iter(step.variants.values()))
    if isinstance(variant, str):
        raise ConfigError(
            "Trainer: the training step could not be captured as a graph (see the CompileWarning), so it "
            "cannot be split by strategy 'branches' or 'pipeline'; use strategy='data'"
        )
    runner, params, _, _ = variant
    return runner.graph, params, step.params, step.unused(variant)


def choose(trainer, x, y, batch_size):
    """The strategy for `strategy="auto"`, with the cost model's reason in the history."""
    from distgraph.distributed.placement import choose_strategy

    graph, *_ = _capture(trainer, x[:batch_size], y[:batch_size])
    strategy, reason = choose_strategy(
        graph, trainer.workers, trainer.micro_batches, backend=trainer.backend, even_shards=False
    )
    trainer.history.events.append(f"strategy auto → {strategy}: {reason}")
    return strategy


class PlanTrainer:
    """What the Trainer delegates a step to for strategies 'branches' and 'pipeline'."""

    def __init__(self, trainer, strategy):
        if trainer.sync != "sync":
            raise ConfigError(f"Trainer: strategy {strategy!r} runs synchronously; sync='async' needs strategy='data'")
        if trainer.backend == "ray":
            from distgraph.distributed import runtime

            runtime.init(trainer.address)
        self.trainer, self.strategy = trainer, strategy
        self.executor = self.batch = None
        self.x = self.y = None
        self.data_refs = None
        self._dropped_noted = False

    def set_data(self, x, y):
        self.x, self.y = x, y

    def _executor_for(self, batch):
        from distgraph.graph.partition import independent, pipeline

        if self.executor is not None and self.batch == batch:
            return self.executor
        self.close()
        t = self.trainer
        micro = t.micro_batches if self.strategy == "pipeline" else 1
        if batch % micro:
            raise ConfigError(f"Trainer: pipeline batch size {batch} is not divisible by micro_batches={micro}")
        graph, self.graph_params, self.params, self.unused = _capture(
            t, self.x[: batch // micro], self.y[: batch // micro]
        )
        if self.strategy == "pipeline":  # x and y are cut into micro-batches; loss and gradients averaged
            plan = pipeline(graph, t.workers, micro_batches=micro, batch_inputs=(0, 1),
                            combine=["mean"] * len(graph.outputs))  # fmt: skip
        else:
            plan = independent(graph)
        if t.backend == "ray":
            from distgraph.distributed.plan_runner import RayPlanExecutor

            self.executor = RayPlanExecutor(
                plan,
                t.workers,
                schedule="1f1b",
                device=t.device,
                cpus_per_worker=t.cpus_per_worker,
                bind_to=t.bind_to,
                timeout_s=t.timeout_s,
            )
        else:
            from distgraph.graph.executor import LocalExecutor

            self.executor = LocalExecutor(plan, workers=t.workers, schedule="1f1b")  # ≤ k live micro-batches a stage
        self.batch = batch
        t.history.events.append(
            f"strategy {self.strategy}: {len(plan.subgraphs)} subgraphs on {t.workers} workers "
            f"(batch {batch}{f', {micro} micro-batches' if micro > 1 else ''})"
        )
        return self.executor

    def run_epoch(self, batches, on_step, start=0, segment=None, on_segment=None):
        """Steps [start, len) of the epoch on the plan's executor; `on_segment(step)` is called every
        `segment` steps (the Trainer's step checkpoints). Returns the number of steps run."""
        from distgraph.autograd.tensor import Tensor

        full = len(batches[0])
        kept = _kept(batches, self.strategy)
        if len(kept) < len(batches) and not self._dropped_noted:
            self._dropped_noted = True
            self.trainer.history.events.append(
                f"strategy {self.strategy}: the captured step has a static batch of {full}; the last batch of each "
                f"epoch ({len(batches[-1])} samples) is left out (drop_last)"
            )
        executor = self._executor_for(full)
        opt, dev = self.trainer.optimizer, self.trainer.step_fn.device
        for t in range(start, len(kept)):
            idx = kept[t]
            outs = executor.run(
                to_device(self.x[idx], dev), to_device(self.y[idx], dev), *[p.array for p in self.graph_params]
            )
            loss, grads = outs[0], outs[1:]
            for i, (p, g) in enumerate(zip(self.params, grads)):  # an unused one's zeros: no grad, as in torch
                grad = None if i in self.unused else to_device(g, p.device).astype(p.array.dtype, copy=False)
                p.grad = None if grad is None else Tensor(grad, device=p.device)
            self.trainer.apply_step_hypers(t)  # a per-step lr schedule's row for this step
            opt.step()
            self.trainer.global_step += 1  # here, not after the epoch: an error in a later step keeps this one
            on_step(t, {"loss": float(loss), "count": len(idx)})
            if on_segment is not None and segment and (t + 1 - start) % segment == 0 and t + 1 < len(kept):
                on_segment(t + 1)
        return max(len(kept) - start, 0)

    def pull(self):
        """The driver's model is the authoritative copy here: nothing to fetch."""

    def push(self):
        """Nothing to send: every step sends the driver's current parameters."""

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
        self.executor = None


def _kept(batches, strategy):
    """The epoch's batches the captured step runs: all but a smaller last one (PyTorch's drop_last). A batch
    of another size elsewhere is a ConfigError: every batch of another size was dropped, silently, wherever
    it was (a DataLoader with uneven batches lost some of its data each epoch)."""
    full = len(batches[0])
    for i, b in enumerate(batches):
        if len(b) != full and (i < len(batches) - 1 or len(b) > full):
            raise ConfigError(
                f"Trainer: strategy {strategy!r}: batch {i} of the epoch has {len(b)} samples, but the captured step "
                f"has a static batch of {full} (batch 0's); only the last batch may be smaller (it is left out): "
                "give batches of one size, or use strategy='data'"
            )
    return batches if len(batches[-1]) == full else batches[:-1]
