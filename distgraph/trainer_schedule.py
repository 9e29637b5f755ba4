"""Per-step lr schedules (`Trainer(scheduler_interval="step")`): each step's hyperparameters, fixed ahead.

A torch loop steps such a scheduler (OneCycleLR, a warm-up) after every optimizer step. On Ray the
steps of an epoch run in chunks of many steps per call (`run_sharded`), in store actors, or claimed by
async workers in any order, so the driver cannot step its scheduler between them. Instead, at the
epoch's start, `StepSchedule` runs a copy of the scheduler ahead — on copies of the optimizer's
param groups, hyperparameters only — and step t of the epoch uses row t wherever it runs: the
local loop and the graph strategies write it into the optimizer before the update, the sharded
workers set it before step t of their call, the store actors and async claims get it by step index.
A replay after a worker fault reads the same cached rows, so it stays bit-identical to an
uninterrupted run. The real scheduler is stepped once per applied step afterwards (`catch_up`: at the
epoch's end and before a mid-epoch checkpoint), so a checkpoint's scheduler state is that of the step
it records, and a resumed run computes the same rows from it.
"""

import copy

from distgraph.errors import ConfigError

INTERVALS = ("epoch", "step")


def check_interval(interval, scheduler_name, where="Trainer", key="scheduler_interval"):
    """ConfigError for an interval other than "epoch"/"step", or "step" with ReduceLROnPlateau (it is
    stepped with a metric: one per epoch, val_loss, not one per batch)."""
    if interval not in INTERVALS:
        raise ConfigError(f"{where}: {key} must be 'epoch' or 'step', got {interval!r}")
    if interval == "step" and scheduler_name == "ReduceLROnPlateau":
        raise ConfigError(
            f"{where}: {key}='step' cannot drive ReduceLROnPlateau: it steps on a metric (the epoch's "
            "val_loss), which a step does not have; use scheduler_interval='epoch'"
        )


def check_scheduler(scheduler, optimizer, factory=False, where="Trainer"):
    """Refuse an lr scheduler attached to another optimizer than the Trainer's: stepping it changed that
    optimizer's lr, and the Trainer's trained on with its own, silently."""
    if scheduler is None or getattr(scheduler, "optimizer", optimizer) is optimizer:
        return
    name = type(scheduler).__name__
    if factory:
        raise ConfigError(
            f"{where}: scheduler {name} cannot drive the optimizer the optimizer factory builds (it is attached "
            "to another one): build the optimizer yourself, the scheduler on it, and pass both"
        )
    raise ConfigError(
        f"{where}: scheduler {name} is attached to another optimizer than the Trainer's, whose lr it would "
        "never change: build it on the optimizer passed to the Trainer"
    )


class _Groups:
    """What a scheduler reads of an optimizer: `param_groups` (without the parameters) and `defaults`."""

    def __init__(self, optimizer):
        self.defaults = dict(optimizer.defaults)
        self.param_groups = [
            {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]


class StepSchedule:
    """Rows of hyperparameters (one dict per param group) for the steps of one epoch from `start` on,
    computed lazily — a schedule is never run further than the steps asked for, so OneCycleLR's
    total_steps bound holds ahead as it does for the real scheduler."""

    def __init__(self, scheduler, optimizer, start):
        self.keys = tuple(optimizer.hyperparameters)
        self.groups = _Groups(optimizer)
        # every reference to the optimizer (SequentialLR's children hold it too) becomes the copy
        self.ahead = copy.deepcopy(scheduler, memo={id(optimizer): self.groups})
        self.rows = {start: self._row()}
        self.last = start

    def _row(self):
        return [{k: g[k] for k in self.keys if k in g} for g in self.groups.param_groups]

    def row(self, t):
        """The hyperparameters of epoch step t, per param group (the scheduler stepped t − start times)."""
        while self.last < t:
            self.ahead.step()
            self.last += 1
            self.rows[self.last] = self._row()
        return self.rows[t]

    def apply(self, optimizer, t):
        """Set step t's hyperparameters on `optimizer` (before its update of step t)."""
        for g, row in zip(optimizer.param_groups, self.row(t), strict=True):
            g.update(row)


class Schedules:
    """The Trainer's lr scheduler: stepped per epoch, or per step through an epoch's `StepSchedule`
    (`self._schedule`, `self._scheduled`: the epoch steps the real scheduler has been stepped for)."""

    def _step_scheduler(self, record):
        """Step the lr scheduler once, at the epoch's end after validation, as a torch loop does after its
        epoch: ReduceLROnPlateau is given the metric it watches, the epoch's val_loss (its training loss
        without val_data; Keras's callback watches val_loss too); it used to be called with none and fail."""
        from distgraph.optim.lr_scheduler import ReduceLROnPlateau

        if self.lr_scheduler is None or self._schedule is not None:
            return  # a per-step schedule was stepped after each step (`_catch_up_scheduler`)
        if isinstance(self.lr_scheduler, ReduceLROnPlateau):
            self.lr_scheduler.step(record.get("val_loss", record["loss"]))
        else:
            self.lr_scheduler.step()

    def _start_schedule(self, first):
        """At an epoch's start (its step `first` on a resume): the rows of its steps, run ahead from the
        scheduler's state now; None with an epoch interval or no scheduler."""
        per_step = self.lr_scheduler is not None and self.scheduler_interval == "step"
        self._schedule = StepSchedule(self.lr_scheduler, self.optimizer, first) if per_step else None
        self._scheduled = first

    def step_hypers(self, t):
        """Epoch step t's hyperparameters, one dict per param group; None unless per step (then the
        driver's optimizer holds the hyperparameters every step uses)."""
        return None if self._schedule is None else self._schedule.row(t)

    def apply_step_hypers(self, t):
        """Before the driver's optimizer applies epoch step t (local, graph strategies): set its row."""
        if self._schedule is not None:
            self._schedule.apply(self.optimizer, t)

    def _catch_up_scheduler(self, epoch_step):
        """Step the real scheduler once per step applied up to `epoch_step` (at the epoch's end and before
        a mid-epoch checkpoint, whose scheduler state must be that of the step it records)."""
        if self._schedule is None or epoch_step <= self._scheduled:
            return
        # the optimizer holds the last applied step's row; the real scheduler last left it at row
        # `_scheduled`, and a chainable one (StepLR, CosineAnnealingLR: lr from the group's lr) steps from there
        self._schedule.apply(self.optimizer, self._scheduled)
        for _ in range(self._scheduled, epoch_step):
            self.lr_scheduler.step()
        self._scheduled = epoch_step

    def _last_lr(self, t):
        """The lr (first param group) the epoch's last step used: its row per step, else the optimizer's."""
        if self._schedule is not None:
            return self._schedule.rows[t][0].get("lr") if t in self._schedule.rows else None
        return self.optimizer.param_groups[0].get("lr") if self.lr_scheduler is not None else None
