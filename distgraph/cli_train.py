"""`distgraph train CONFIG.yaml`: train from a validated config, locally or on a Ray cluster.

Command-line options override the config's `trainer` section (as `ray job submit -- distgraph train
... --workers 8 --address auto` needs). The config is validated completely before any worker starts.
With `--resume`, training continues from the checkpoint in `trainer.checkpoint_dir` (model, optimizer,
scheduler, epoch and history; batches are a pure function of seed and epoch); a folder without one
is an error, not a fresh start. `--epochs` is the total to reach: the resumed epochs count.
"""

import os
import time

import click

from distgraph.bench._util import writable_file, write_json


def _device_option(ctx, param, value):
    """click callback: --device is a device string distgraph knows (whether this machine has it is the
    Trainer's to say), so a typo is a usage error naming the option."""
    from distgraph.backend import DEVICE_STRING
    from distgraph.config import DEVICE_HELP

    if value is not None and not DEVICE_STRING.fullmatch(value):
        raise click.BadParameter(f"unknown device {value!r}: {DEVICE_HELP}")
    return value


@click.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--workers", type=int, default=None, help="number of data-parallel workers")
@click.option("--backend", type=click.Choice(["local", "ray"]), default=None)
@click.option("--address", default=None, help="Ray address: auto, host:port or ray://host:port (implies --backend ray)")
@click.option("--device", default=None, callback=_device_option, help="cpu, cuda or cuda:N")
@click.option("--sync", type=click.Choice(["sync", "async"]), default=None)
@click.option("--staleness", type=int, default=None, help="async: versions a worker may run ahead of the slowest")
@click.option(
    "--strategy", type=click.Choice(["data", "branches", "pipeline", "auto"]), default=None,
    help="how the step is split over the workers",
)  # fmt: skip
@click.option("--allreduce", type=click.Choice(["auto", "shm", "gloo", "nccl"]), default=None)
@click.option(
    "--bind-to", type=click.Choice(["none", "core"]), default=None,
    help="core: bind each Ray worker to cores of its own on its node (as mpirun --bind-to core)",
)  # fmt: skip
@click.option("--epochs", type=click.IntRange(0), default=None, help="total epochs to reach (resumed epochs count)")
@click.option("--checkpoint-dir", default=None)
@click.option("--resume", is_flag=True, help="continue from the checkpoint in the checkpoint folder (it must hold one)")
@click.option("--json-out", default=None, callback=writable_file, help="write the history and final metrics as JSON")
@click.option("--quiet", is_flag=True)
def train(
    config, workers, backend, address, device, sync, staleness, strategy, allreduce, bind_to, epochs, checkpoint_dir,
    resume, json_out, quiet,
):  # fmt: skip
    """Train the model described by CONFIG (YAML)."""
    import distgraph as dg
    from distgraph import config as cfgmod
    from distgraph import datasets
    from distgraph.errors import ConfigError, DeviceError

    try:
        overrides = {
            "workers": workers, "address": address, "device": device, "sync": sync, "staleness": staleness,
            "strategy": strategy, "allreduce": allreduce, "bind_to": bind_to, "checkpoint_dir": checkpoint_dir or None,
            "backend": backend or ("ray" if address else None),  # --address implies Ray, over the file's backend
        }  # fmt: skip
        # validated with the options given here (a file's checkpoint_every with --checkpoint-dir is valid)
        cfg = cfgmod.load_config(config, {k: v for k, v in overrides.items() if v is not None})
        t = dict(cfg.get("trainer", {}))
        train_cfg = cfg["train"]
        seed = train_cfg.get("seed", 0)
        dg.manual_seed(seed)
        data = dict(cfg["data"])
        train_set, test_set = datasets.load(data.pop("name"), **data)
        model, loss_fn = cfgmod.build_model(cfg, config), cfgmod.build_loss(cfg)
        cfgmod.check_model_fits(cfg, model, loss_fn, train_set, config)
        optimizer = cfgmod.build_optimizer(cfg, model.parameters(), config)
        scheduler = cfgmod.build_scheduler(cfg, optimizer, config)
        if "loss_scaling" in cfg:
            from distgraph.amp import GradScaler

            t["grad_scaler"] = GradScaler(**cfg["loss_scaling"])
        interval = cfgmod.scheduler_interval(cfg)
        if resume and not t.get("checkpoint_dir"):
            raise ConfigError("--resume needs a checkpoint folder: give --checkpoint-dir or trainer.checkpoint_dir")
        try:
            trainer = dg.Trainer(
                model, loss_fn, optimizer, scheduler=scheduler, scheduler_interval=interval, seed=seed,
                progress=not quiet, **t,
            )  # fmt: skip
        except DeviceError as exc:  # a device this machine lacks (cuda without a GPU): which setting asked for it
            raise ConfigError(f"{'--device' if device else f'{config}: trainer.device'}: {exc}") from None
        if resume and not os.path.exists(trainer.checkpoint_path()):  # the Trainer would silently start afresh
            trainer.close()
            raise ConfigError(f"--resume: no checkpoint in {t['checkpoint_dir']} (no {trainer.checkpoint_path()})")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    start = time.perf_counter()
    with trainer:
        history = trainer.fit(
            train_set, epochs=train_cfg.get("epochs", 1) if epochs is None else epochs, batch_size=train_cfg.get("batch_size", 32),
            val_data=test_set, resume=resume,
        )  # fmt: skip
        result = trainer.evaluate(test_set)
    elapsed = time.perf_counter() - start
    summary = {k: v for k, v in result.items() if k != "count"}
    click.echo("test " + "  ".join(f"{k} {v:.4f}" for k, v in summary.items()) + f"  ({elapsed:.1f} s)")
    rates = sorted(e["samples_per_s"] for e in history.epochs if "samples_per_s" in e)
    if rates:  # the median epoch's: the first pays for the workers' start and warm-up
        click.echo(f"train samples/s: {rates[len(rates) // 2]:,.0f} (median of {len(rates)} epochs)")
    if history.epochs and "skipped_steps" in history.epochs[-1]:  # epochs: 0 trains nothing
        click.echo(f"loss scaling: {sum(history['skipped_steps'])} step(s) skipped on overflow")
    for event in history.events:
        click.echo(f"event: {event}")
    write_json(json_out, {"history": history.state_dict(), "test": summary, "seconds": elapsed})
